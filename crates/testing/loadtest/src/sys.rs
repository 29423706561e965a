//! Process-level measurements and limits: a clock both processes share, CPU time and memory of a
//! process from `/proc`, and the open-files limit.

use std::time::Duration;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::time::{ClockId, clock_gettime};

/// Nanoseconds on `CLOCK_MONOTONIC`: system-wide, so timestamps from the driver and the controller
/// process compare directly.
pub fn now_ns() -> u64 {
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always available");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// Raises the soft open-files limit to the hard limit (each proxy is one socket on each side).
/// Returns the new soft limit.
pub fn raise_nofile_limit() -> nix::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}

/// Linux reports utime/stime in USER_HZ ticks, which is 100 on every architecture it supports.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time (user + system) a process has used so far; `pid` `None` is this process.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let stat = std::fs::read_to_string(proc_path(pid, "stat")).ok()?;
    // The command name may contain spaces; fields after it start with `state` (field 3).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) / TICKS_PER_SECOND))
}

/// Peak (`VmHWM`) and current (`VmRSS`) resident memory in bytes.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Memory {
    pub peak_rss: u64,
    pub rss: u64,
}

pub fn memory(pid: Option<u32>) -> Option<Memory> {
    let status = std::fs::read_to_string(proc_path(pid, "status")).ok()?;
    let kib = |field: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(Memory {
        peak_rss: kib("VmHWM:")? * 1024,
        rss: kib("VmRSS:")? * 1024,
    })
}

fn proc_path(pid: Option<u32>, file: &str) -> String {
    match pid {
        Some(pid) => format!("/proc/{pid}/{file}"),
        None => format!("/proc/self/{file}"),
    }
}

/// Children of this process whose command name is one of `names` (e.g. the envtest apiserver and
/// etcd, to read their CPU time).
pub fn children_named(names: &[&str]) -> Vec<u32> {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(proc_path(Some(*pid), "stat")) else {
                return false;
            };
            // `pid (comm) state ppid …`; comm may contain spaces, so split at the parentheses.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                return false;
            };
            let comm = &stat[open + 1..close];
            let ppid = stat[close + 1..].split_whitespace().nth(1);
            ppid == Some(me.as_str()) && names.contains(&comm)
        })
        .collect()
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
