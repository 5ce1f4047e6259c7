//! Writing to stdout, stderr and the log without ever panicking.
//!
//! `println!` and `eprintln!` panic when the other end of the pipe has gone (`swarmfs ls |
//! head -1`, a `tee` killed by Ctrl-C). Here a closed stdout becomes [`StdoutClosed`],
//! which ends the command quietly with exit status 141 (128 + SIGPIPE, what a shell reports
//! for `cat` in the same place); a closed stderr or log is ignored, so a daemon whose log
//! pipe broke still shuts down when told to.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Exit status for a command whose reader went away (as if killed by SIGPIPE).
pub const EXIT_STDOUT_CLOSED: u8 = 141;

#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
pub struct StdoutClosed;

/// One line to stdout; a closed stdout is [`StdoutClosed`], other errors are ignored like
/// the shell's `echo` would be.
pub fn line(args: std::fmt::Arguments) -> Result<(), StdoutClosed> {
    let mut out = std::io::stdout().lock();
    match out.write_fmt(args).and_then(|_| out.write_all(b"\n")).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed),
        _ => Ok(()),
    }
}

/// One line to stderr, ignoring every error.
pub fn err_line(args: std::fmt::Arguments) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|_| err.write_all(b"\n"));
}

/// `println!` that turns a closed stdout into an early, quiet return of [`StdoutClosed`].
macro_rules! outln {
    () => { $crate::out::line(format_args!(""))? };
    ($($t:tt)*) => { $crate::out::line(format_args!($($t)*))? };
}

/// `eprintln!` that never panics.
macro_rules! errln {
    () => { $crate::out::err_line(format_args!("")) };
    ($($t:tt)*) => { $crate::out::err_line(format_args!($($t)*)) };
}

/// Where log lines go: stderr or an appended file. Writes never fail from the caller's
/// side: a log that cannot be written must not stop the program (or its shutdown).
#[derive(Clone)]
pub enum LogSink {
    Stderr,
    File(Arc<Mutex<std::fs::File>>),
}

impl LogSink {
    pub fn file(path: &Path) -> std::io::Result<LogSink> {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(LogSink::File(Arc::new(Mutex::new(f))))
    }
}

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = match self {
            LogSink::Stderr => std::io::stderr().lock().write_all(buf),
            LogSink::File(f) => f.lock().unwrap_or_else(|p| p.into_inner()).write_all(buf),
        };
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = LogSink;
    fn make_writer(&'a self) -> LogSink {
        self.clone()
    }
}

/// Escapes control characters in a remote name for a terminal, like `ls -b`: a newline or
/// an ESC in a name must not move the cursor or recolour the screen. `--json` and output to
/// a pipe keep names raw.
pub fn escaped(name: &str) -> std::borrow::Cow<'_, str> {
    if !name.chars().any(|c| c.is_control() || c == '\\') {
        return name.into();
    }
    let mut s = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\t' => s.push_str("\\t"),
            '\r' => s.push_str("\\r"),
            c if c.is_control() && (c as u32) < 0x100 => s.push_str(&format!("\\{:03o}", c as u32)),
            c if c.is_control() => s.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => s.push(c),
        }
    }
    s.into()
}

#[cfg(test)]
mod tests {
    use super::escaped;

    #[test]
    fn control_characters_are_escaped_like_ls_b() {
        assert_eq!(escaped("plain name.txt"), "plain name.txt");
        assert_eq!(escaped("a\nb"), "a\\nb");
        assert_eq!(escaped("\u{1b}[31mred"), "\\033[31mred");
        assert_eq!(escaped("back\\slash"), "back\\\\slash");
        assert_eq!(escaped("del\u{7f}"), "del\\177");
    }
}
