//! The figures a run produces, printed for people and as one JSON line.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::client::Api;
use crate::mesh::{ChurnKind, MeshSpec};

/// min / average / max over proxies.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Summary {
    pub min: f64,
    pub avg: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let (mut n, mut sum, mut min, mut max) = (0usize, 0.0, f64::INFINITY, f64::NEG_INFINITY);
        for v in values {
            n += 1;
            sum += v;
            min = min.min(v);
            max = max.max(v);
        }
        if n == 0 {
            return Self::default();
        }
        Self {
            min,
            avg: sum / n as f64,
            max,
        }
    }
}

/// Nearest-rank percentile of `sorted` (ascending); `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[derive(Debug, Serialize)]
pub struct Controller {
    /// `ControlPlane::new` for the initial mesh: wall and CPU seconds.
    pub init_wall_s: f64,
    pub init_cpu_s: f64,
    /// CPU seconds from process start until every proxy was in sync, less building the synthetic input.
    pub cold_cpu_s: f64,
    /// Peak RSS (VmHWM) when every proxy was in sync, in MB (10^6 bytes).
    pub cold_peak_rss_mb: f64,
    /// Current RSS when every proxy was in sync and at the end of the churn phase (drift).
    pub synced_rss_mb: f64,
    pub churn_end_rss_mb: f64,
    /// CPU seconds spent during the churn phase.
    pub churn_cpu_s: f64,
    /// Peak and current RSS at the end of the run.
    pub peak_rss_mb: f64,
    pub rss_mb: f64,
    /// Building the synthetic MeshInput (not controller work; excluded above).
    pub input_cpu_s: f64,
    /// Controller CPU while nothing changed (`--idle-s`), in millicores; `None` when not measured.
    pub idle_millicores: Option<f64>,
    /// How long the idle window lasted, in seconds.
    pub idle_s: f64,
}

#[derive(Debug, Serialize)]
pub struct ColdStart {
    /// From the moment the clients started connecting until the server saw the last proxy's last ACK.
    pub convergence_s: f64,
    /// From spawning the controller process until then (includes its start-up).
    pub from_spawn_s: f64,
    pub synced: usize,
    pub total: usize,
    pub missing: Vec<String>,
    pub nacks: u64,
    /// Driver-side: issuing the proxies' xDS client certificates (not timed above).
    pub client_certs_s: f64,
}

#[derive(Debug, Serialize)]
pub struct PerProxy {
    /// gRPC message bytes received until the cold start converged.
    pub bytes_cold: Summary,
    pub responses_cold: Summary,
    /// Resources held at cold start, by xDS type.
    pub resources: BTreeMap<String, Summary>,
    /// The largest single response seen, by xDS type (bytes): each server stream keeps an encode
    /// buffer this large.
    pub largest_response: BTreeMap<String, u64>,
    /// Streams that failed or were ended by the server (reconnected after 500 ms).
    pub stream_errors: u64,
    pub last_error: Option<String>,
    pub client_nacks: u64,
}

#[derive(Debug, Serialize)]
pub struct SmiCheck {
    pub checked: usize,
    /// Proxies whose upstream (EDS) clusters differ from the services they are allowed to call.
    pub violations: usize,
    pub example: Option<String>,
    pub max_upstream_clusters: usize,
}

#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub changes: usize,
    /// Changes that affected at least one connected proxy and completed.
    pub measured: usize,
    pub timeouts: usize,
    pub affected_avg: f64,
    pub update_ms_avg: f64,
    /// `update()` call → the last affected proxy's ACK, as the server saw it.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// `update()` call → the last response arriving at an affected client (driver's view).
    pub client_p50_ms: Option<f64>,
    pub client_p99_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Churn {
    pub all: Latency,
    pub by_kind: BTreeMap<String, Latency>,
    /// Bytes received by all proxies during the churn phase, per change.
    pub bytes_per_change: f64,
    /// How long the churn phase lasted, and the rate of changes it achieved (each change waits for the
    /// proxies it affected before the next starts).
    pub duration_s: f64,
    pub changes_per_s: f64,
}

/// `--rotate`: every service certificate re-issued at once.
#[derive(Debug, Serialize)]
pub struct Rotation {
    /// `rotate_due`: issuing (outside the lock), installing and the recompute.
    pub rotate_ms: f64,
    /// Proxies whose secrets changed.
    pub affected: usize,
    /// From the start until the last of them ACKed its new secrets; `None` on timeout.
    pub converged_ms: Option<f64>,
    pub missing: usize,
    /// Controller CPU for the whole step.
    pub cpu_s: f64,
    /// The change applied meanwhile: until its affected proxies ACKed, and how many there were.
    pub change_ms: Option<f64>,
    pub change_affected: usize,
}

#[derive(Debug, Serialize)]
pub struct Driver {
    pub cpu_s: f64,
    /// CPU seconds the simulated proxies spent during the scripted changes (they share the machine's
    /// cores with the controller, so this is wall time the controller could not use).
    pub churn_cpu_s: f64,
    pub peak_rss_mb: f64,
    pub client_threads: usize,
}

#[derive(Debug, Serialize)]
pub struct Goal {
    pub name: String,
    pub target: String,
    pub measured: String,
    pub pass: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub unix_time: u64,
    pub mesh: MeshSpec,
    pub ads: Api,
    pub churn_kinds: Vec<ChurnKind>,
    pub controller_threads: usize,
    pub controller: Controller,
    pub cold_start: ColdStart,
    pub per_proxy: PerProxy,
    pub smi: Option<SmiCheck>,
    pub churn: Churn,
    pub rotation: Option<Rotation>,
    pub soak: Option<crate::protocol::Soaked>,
    pub driver: Driver,
    pub goals: Vec<Goal>,
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.1} ms"))
}

fn bytes(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} MB", v / 1e6)
    } else {
        format!("{:.1} kB", v / 1e3)
    }
}

impl Report {
    /// The goals of the "Scale and speed" issue, checked against this run.
    pub fn check_goals(&mut self) {
        let mut goals = vec![
            Goal {
                name: "cold start: every proxy ACKed its config".into(),
                target: "≤ 15 s".into(),
                measured: format!(
                    "{:.2} s ({}/{} proxies)",
                    self.cold_start.convergence_s, self.cold_start.synced, self.cold_start.total
                ),
                pass: self.cold_start.synced == self.cold_start.total
                    && self.cold_start.convergence_s <= 15.0,
            },
            Goal {
                name: "controller CPU until converged".into(),
                target: "≤ 10 CPU-s".into(),
                measured: format!("{:.2} CPU-s", self.controller.cold_cpu_s),
                pass: self.controller.cold_cpu_s <= 10.0,
            },
            Goal {
                name: "controller peak RSS".into(),
                target: "≤ 200 MB".into(),
                measured: format!("{:.1} MB", self.controller.peak_rss_mb),
                pass: self.controller.peak_rss_mb <= 200.0,
            },
        ];
        if let Some(l) = self.churn.by_kind.get("endpoint").filter(|l| l.measured > 0) {
            goals.push(Goal {
                name: format!("endpoint change propagation p50 ({:?})", self.ads).to_lowercase(),
                target: "≤ 50 ms".into(),
                measured: ms(l.p50_ms),
                pass: l.timeouts == 0 && l.p50_ms.is_some_and(|v| v <= 50.0),
            });
            goals.push(Goal {
                name: format!("endpoint change propagation p99 ({:?})", self.ads).to_lowercase(),
                target: "≤ 250 ms".into(),
                measured: ms(l.p99_ms),
                pass: l.timeouts == 0 && l.p99_ms.is_some_and(|v| v <= 250.0),
            });
        }
        if let Some(k) = &self.soak {
            goals.push(Goal {
                name: format!(
                    "churn at {:.0}/s for {:.0} s: p99 propagation",
                    k.changes as f64 / k.duration_s.max(1e-9),
                    k.duration_s
                ),
                target: "< 1000 ms".into(),
                measured: format!("{} ({} timeouts)", ms(k.p99_ms), k.timeouts),
                pass: k.timeouts == 0 && k.p99_ms.is_some_and(|v| v < 1000.0),
            });
            let drift = (k.rss_end_mb - k.rss_start_mb) / k.rss_start_mb.max(1e-9);
            goals.push(Goal {
                name: "controller RSS drift over the soak".into(),
                target: "< 10 %".into(),
                measured: format!(
                    "{:+.1} % ({:.1} → {:.1} MB)",
                    drift * 100.0,
                    k.rss_start_mb,
                    k.rss_end_mb
                ),
                pass: drift < 0.10,
            });
        }
        if let Some(r) = &self.rotation {
            goals.push(Goal {
                name: format!("rotating every certificate ({} proxies)", r.affected),
                target: "< 5 s".into(),
                measured: r
                    .converged_ms
                    .map_or_else(|| "timed out".to_string(), |v| format!("{:.0} ms", v)),
                pass: r.missing == 0 && r.converged_ms.is_some_and(|v| v < 5000.0),
            });
        }
        if let Some(m) = self.controller.idle_millicores {
            goals.push(Goal {
                name: "controller CPU when idle".into(),
                target: "≤ 5 millicores".into(),
                measured: format!("{m:.2} millicores over {:.0} s", self.controller.idle_s),
                pass: m <= 5.0,
            });
        }
        self.goals = goals;
    }

    pub fn human(&self) -> String {
        let mut s = String::new();
        let m = &self.mesh;
        let _ = writeln!(
            s,
            "mesh: {} services × {} endpoints, {} proxies, {:?} (allow {}), {} splits, {} namespaces; ADS {:?}",
            m.services, m.endpoints, m.proxies, m.mode, m.allow, m.splits, m.namespaces, self.ads
        );
        let c = &self.cold_start;
        let _ = writeln!(s, "cold start");
        let _ = writeln!(
            s,
            "  converged        {:.2} s after the clients started ({:.2} s after spawning the controller); {}/{} proxies in sync, {} NACKs",
            c.convergence_s, c.from_spawn_s, c.synced, c.total, c.nacks
        );
        if !c.missing.is_empty() {
            let _ = writeln!(s, "  not in sync      {}", c.missing.join(", "));
        }
        let k = &self.controller;
        let _ = writeln!(s, "controller");
        let _ = writeln!(
            s,
            "  initial compute  {:.2} s wall, {:.2} CPU-s (ControlPlane::new)",
            k.init_wall_s, k.init_cpu_s
        );
        let _ = writeln!(
            s,
            "  until converged  {:.2} CPU-s, peak RSS {:.1} MB",
            k.cold_cpu_s, k.cold_peak_rss_mb
        );
        let _ = writeln!(
            s,
            "  churn phase      {:.2} CPU-s; end of run: peak RSS {:.1} MB, RSS {:.1} MB",
            k.churn_cpu_s, k.peak_rss_mb, k.rss_mb
        );
        let _ = writeln!(
            s,
            "  RSS              {:.1} MB when in sync, {:.1} MB after the churn phase",
            k.synced_rss_mb, k.churn_end_rss_mb
        );
        if let Some(r) = &self.rotation {
            let _ = writeln!(
                s,
                "  rotation         {:.0} ms to re-issue and publish; {} proxies ACKed new secrets after {}; {:.2} CPU-s; a change meanwhile ({} proxies) ACKed after {}",
                r.rotate_ms,
                r.affected,
                ms(r.converged_ms),
                r.cpu_s,
                r.change_affected,
                ms(r.change_ms)
            );
        }
        if let Some(k) = &self.soak {
            let _ = writeln!(
                s,
                "  soak             {} changes in {:.0} s ({} updates): p50 {} p99 {} max {}, {} timeouts; RSS {:.1} → {:.1} MB (peak {:.1})",
                k.changes,
                k.duration_s,
                k.batches,
                ms(k.p50_ms),
                ms(k.p99_ms),
                ms(k.max_ms),
                k.timeouts,
                k.rss_start_mb,
                k.rss_end_mb,
                k.peak_rss_mb
            );
        }
        if let Some(m) = k.idle_millicores {
            let _ = writeln!(
                s,
                "  idle             {m:.2} millicores over {:.0} s with every proxy connected",
                k.idle_s
            );
        }
        let p = &self.per_proxy;
        let _ = writeln!(s, "per proxy (min / avg / max)");
        let _ = writeln!(
            s,
            "  bytes received   {} / {} / {}  (cold start; {} responses avg)",
            bytes(p.bytes_cold.min),
            bytes(p.bytes_cold.avg),
            bytes(p.bytes_cold.max),
            p.responses_cold.avg.round()
        );
        for (kind, v) in &p.resources {
            let largest = p.largest_response.get(kind).copied().unwrap_or_default();
            let _ = writeln!(
                s,
                "  {kind:<16} {:.0} / {:.1} / {:.0}  (largest response {})",
                v.min,
                v.avg,
                v.max,
                bytes(largest as f64)
            );
        }
        if p.stream_errors > 0 || p.client_nacks > 0 {
            let _ = writeln!(
                s,
                "  stream errors    {} (last: {}), client NACKs {}",
                p.stream_errors,
                p.last_error.as_deref().unwrap_or("-"),
                p.client_nacks
            );
        }
        if let Some(smi) = &self.smi {
            let _ = writeln!(
                s,
                "SMI check: {} proxies, {} receive clusters beyond their allowed upstreams (max {} upstream clusters){}",
                smi.checked,
                smi.violations,
                smi.max_upstream_clusters,
                smi.example
                    .as_deref()
                    .map(|e| format!("; e.g. {e}"))
                    .unwrap_or_default()
            );
        }
        let ch = &self.churn;
        if ch.all.changes > 0 {
            let _ = writeln!(
                s,
                "churn: {} changes in {:.1} s ({:.1}/s), {} per change received by all proxies",
                ch.all.changes,
                ch.duration_s,
                ch.changes_per_s,
                bytes(ch.bytes_per_change)
            );
            for (kind, l) in ch.by_kind.iter().chain([(&"all".to_string(), &ch.all)]) {
                let _ = writeln!(
                    s,
                    "  {kind:<11} n={:<3} affected {:>7.1}  update() {:>6.1} ms  ACKed p50 {:>9} p99 {:>9} max {:>9}  received p50 {:>9} p99 {:>9}{}",
                    l.changes,
                    l.affected_avg,
                    l.update_ms_avg,
                    ms(l.p50_ms),
                    ms(l.p99_ms),
                    ms(l.max_ms),
                    ms(l.client_p50_ms),
                    ms(l.client_p99_ms),
                    if l.timeouts > 0 {
                        format!("  {} TIMED OUT", l.timeouts)
                    } else {
                        String::new()
                    }
                );
            }
        }
        let d = &self.driver;
        let _ = writeln!(
            s,
            "driver (simulated proxies, {} threads): {:.2} CPU-s ({:.2} during the changes), peak RSS {:.1} MB",
            d.client_threads, d.cpu_s, d.churn_cpu_s, d.peak_rss_mb
        );
        let _ = writeln!(s, "goals");
        for g in &self.goals {
            let _ = writeln!(
                s,
                "  [{}] {:<44} {:<10} measured {}",
                if g.pass { "PASS" } else { "MISS" },
                g.name,
                g.target,
                g.measured
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v[..3], 99.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
