//! Resource usage of a process, read from /proc (Linux).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Usage {
    pub peak_rss_bytes: u64,
    pub cpu_seconds: f64,
}

/// Peak RSS and user+system CPU of `pid` ("self" for this process).
pub fn of(pid: &str) -> Option<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let peak_kb: u64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Usage { peak_rss_bytes: peak_kb * 1024, cpu_seconds: ticks as f64 / clock_ticks() })
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux architecture swarmfs targets.
    100.0
}

pub fn write_self_usage(path: &std::path::Path) {
    if let Some(u) = of("self") {
        let _ = std::fs::write(path, serde_json::to_vec(&u).unwrap_or_default());
    }
}
