//! `HOME/config.toml`: settings kept beside the home, for what a node runs with every time.
//!
//! Precedence, highest first: a flag on the command line, its `SWARMFS_*` environment
//! variable, the config file, the built-in default. The file is flat TOML, one `name =
//! value` per line, where `name` is a flag's long name (`repair-rate = "50M"`,
//! `heartbeat-ms = 500`, `json = true`); `#` starts a comment. Each setting becomes its
//! flag's environment variable when that is not set already, so it is parsed and checked
//! exactly as the flag would be. A name that is no flag's, or a line that is not `name =
//! value`, is refused with its line number.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::PathBuf;

/// Reads the config file of the home `args` and the environment name, if there is one,
/// and exports its settings (see the module docs). Returns the file it read.
pub fn apply(args: &[OsString], command: &clap::Command) -> Result<Option<PathBuf>, String> {
    let path = crate::expand_home(&home_of(args)).join("config.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let known = env_names(command);
    for (i, line) in text.lines().enumerate() {
        let at = || format!("{} line {}", path.display(), i + 1);
        let Some((name, value)) = parse_line(line).map_err(|why| format!("{}: {why}", at()))? else { continue };
        let var = format!("SWARMFS_{}", name.to_uppercase().replace('-', "_"));
        if var == "SWARMFS_HOME" || !known.contains(&var) {
            return Err(format!("{}: no setting {name:?} (settings are flags' long names, e.g. repair-rate)", at()));
        }
        if std::env::var_os(&var).is_none() {
            // Before any thread exists (called first thing in main).
            std::env::set_var(&var, value);
        }
    }
    Ok(Some(path))
}

/// The home named by `--home` in `args`, or `SWARMFS_HOME`, or the default.
fn home_of(args: &[OsString]) -> String {
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = it.next() {
        if a == "--home" {
            if let Some(v) = it.next() {
                return v;
            }
        } else if let Some(v) = a.strip_prefix("--home=") {
            return v.to_string();
        }
    }
    std::env::var("SWARMFS_HOME").unwrap_or_else(|_| "~/.swarmfs".to_string())
}

/// Every environment variable a flag of `command` or its subcommands reads.
fn env_names(command: &clap::Command) -> HashSet<String> {
    let mut names: HashSet<String> =
        command.get_arguments().filter_map(|a| a.get_env()).map(|e| e.to_string_lossy().into_owned()).collect();
    for sub in command.get_subcommands() {
        names.extend(env_names(sub));
    }
    names
}

/// `name = value` (value a quoted string, a number or a boolean), or nothing for a blank or
/// comment line.
fn parse_line(line: &str) -> Result<Option<(String, String)>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    if line.starts_with('[') {
        return Err("sections are not supported: one `name = value` per line".into());
    }
    let (name, value) = line.split_once('=').ok_or("expected `name = value`")?;
    let name = name.trim().trim_matches('"').replace('_', "-");
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(format!("{name:?} is not a setting name"));
    }
    let value = value.trim();
    let value = if let Some(rest) = value.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars();
        loop {
            match chars.next() {
                None => return Err("unterminated string".into()),
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    other => return Err(format!("unknown escape \\{}", other.map(String::from).unwrap_or_default())),
                },
                Some(c) => out.push(c),
            }
        }
        let rest: String = chars.collect();
        let rest = rest.trim();
        if !rest.is_empty() && !rest.starts_with('#') {
            return Err(format!("unexpected {rest:?} after the string"));
        }
        out
    } else {
        let bare = value.split('#').next().unwrap_or("").trim();
        let ok = bare == "true" || bare == "false" || (!bare.is_empty() && bare.parse::<f64>().is_ok());
        if !ok {
            return Err(format!("{bare:?}: quote strings (\"...\"); bare values are numbers and booleans"));
        }
        bare.to_string()
    };
    Ok(Some((name, value)))
}

#[cfg(test)]
mod tests {
    use super::parse_line;

    fn ok(line: &str) -> Option<(String, String)> {
        parse_line(line).unwrap()
    }

    #[test]
    fn lines_are_names_and_values() {
        assert_eq!(ok("repair-rate = \"50M\""), Some(("repair-rate".into(), "50M".into())));
        assert_eq!(ok("heartbeat_ms = 500  # faster"), Some(("heartbeat-ms".into(), "500".into())));
        assert_eq!(ok("json = true"), Some(("json".into(), "true".into())));
        assert_eq!(ok("log = \"a \\\"b\\\"\""), Some(("log".into(), "a \"b\"".into())));
        assert_eq!(ok("   # a comment"), None);
        assert_eq!(ok(""), None);
    }

    #[test]
    fn what_is_not_flat_toml_is_refused_with_a_reason() {
        assert!(parse_line("[tracker]").unwrap_err().contains("sections"));
        assert!(parse_line("listen 0.0.0.0:7000").unwrap_err().contains("name = value"));
        assert!(parse_line("listen = 0.0.0.0:7000").unwrap_err().contains("quote strings"));
        assert!(parse_line("log = \"open").unwrap_err().contains("unterminated"));
    }
}
