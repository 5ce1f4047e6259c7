//! A PostgreSQL cluster of a test's own: `initdb` and `pg_ctl` from Debian's postgresql
//! package, run as its unprivileged `postgres` user when the test runs as root (the server
//! refuses root), in a temporary directory, on a free port of 127.0.0.1, trust
//! authentication; stopped when dropped. No system service, nothing left running.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

/// The newest `/usr/lib/postgresql/N/bin`.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (scripts/install-deps installs the postgresql package)")
        .filter_map(|e| {
            let e = e.ok()?;
            Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no initdb under /usr/lib/postgresql").1
}

fn as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root.
fn pg_tool(bin: &Path, tool: &str, args: &[&str]) -> Output {
    let exe = bin.join(tool);
    let mut cmd = if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    cmd.args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("running {tool}: {e}"))
}

impl PgCluster {
    pub fn start() -> PgCluster {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("swarmfs-pg-").tempdir().unwrap();
        if as_root() {
            let out = Command::new("chown").args(["postgres:postgres"]).arg(dir.path()).output().unwrap();
            assert!(out.status.success(), "chown: {}", String::from_utf8_lossy(&out.stderr));
        }
        let data = dir.path().join("data");
        let data_s = data.to_str().unwrap();
        let out = pg_tool(
            &bin,
            "initdb",
            &["-D", data_s, "--auth=trust", "-U", "postgres", "--no-sync", "--locale=C", "-E", "UTF8"],
        );
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = super::free_port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            dir.path().display()
        );
        let log = dir.path().join("server.log");
        let out = pg_tool(&bin, "pg_ctl", &["-D", data_s, "-l", log.to_str().unwrap(), "-w", "-o", &options, "start"]);
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        PgCluster { dir, bin, port }
    }

    /// Runs `psql` against the cluster's `postgres` database (over TCP, trust: no runuser).
    pub fn psql(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("psql"))
            .args(["-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"])
            .args(args)
            .arg("postgres")
            .stdin(Stdio::null())
            .output()
            .expect("running psql")
    }

    /// The database the tracker is pointed at.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = pg_tool(&self.bin, "pg_ctl", &["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
    }
}
