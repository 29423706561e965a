//! The line protocol between the driver and the controller process: one JSON object per line, commands
//! on the controller's stdin, replies on its stdout. Timestamps are [`crate::sys::now_ns`] values.

use serde::{Deserialize, Serialize};

use crate::mesh::ChangeKind;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Reply once every proxy of the mesh is connected and in sync (or the timeout passed).
    WaitSync {
        timeout_ms: u64,
    },
    /// Apply change `index` of the churn script and reply once every affected proxy is in sync again.
    Change {
        index: usize,
        timeout_ms: u64,
    },
    /// Rotate every service certificate now; meanwhile apply change `change_index` (when given), to
    /// see whether the rotation holds other pushes up. Reply once every proxy is in sync again.
    Rotate {
        change_index: Option<usize>,
        timeout_ms: u64,
    },
    /// The churn script at `rate_per_s` for `duration_s`, as a watcher would deliver it: every change that
    /// arrived while the previous batch propagated goes into the next `update()`. Each change's latency
    /// runs from its arrival to the last affected proxy's ACK of the batch that carried it.
    Soak {
        rate_per_s: f64,
        duration_s: f64,
        timeout_ms: u64,
    },
    /// Kubernetes mode: note every proxy's config generation and start counting sync events; the
    /// driver then writes a change to the apiserver and sends [`Command::Observe`]. Replies `Armed`.
    Arm,
    /// Kubernetes mode, after `Arm`: wait for the source's next delivery, reply `Delivered` as it
    /// hands the input over (before the recompute), then `Observed` once every proxy it affected
    /// ACKed.
    Observe {
        timeout_ms: u64,
    },
    Quit,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Ready(Ready),
    Synced(Synced),
    Changed(Changed),
    Rotated(Rotated),
    Soaked(Soaked),
    Armed,
    Delivered { at_ns: u64 },
    Observed(Observed),
    Error { message: String },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Ready {
    /// The controller's own pid (not a wrapper's), for reading its CPU time and memory.
    pub pid: u32,
    pub addr: String,
    /// CPU seconds spent building the synthetic input (not controller work).
    pub input_cpu_s: f64,
    /// `ControlPlane::new`: model, certificates, resources and snapshots for every proxy.
    pub init_wall_s: f64,
    pub init_cpu_s: f64,
    pub proxies: usize,
    pub at_ns: u64,
    /// Kubernetes mode: from process start until the source delivered its first input (connect,
    /// every initial list, assembly); `init_*` then cover everything until that input was applied.
    #[serde(default)]
    pub list_s: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Synced {
    /// When the last proxy became in sync (its last ACK as the server saw it).
    pub at_ns: u64,
    pub synced: usize,
    pub total: usize,
    /// Proxies not in sync at the timeout (a few names).
    pub missing: Vec<String>,
    pub nacks: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Changed {
    pub index: usize,
    pub kind: ChangeKind,
    /// When `update()` was called.
    pub started_ns: u64,
    /// Wall time of `update()` (recompute + publish to the cache).
    pub update_us: u64,
    /// Proxies whose config changed (connected or not).
    pub changed: usize,
    /// Connected proxies whose config changed: the ones waited for.
    pub affected: usize,
    /// From the `update()` call to the last affected proxy's ACK; `None` when nothing was affected
    /// or the timeout passed.
    pub latency_us: Option<u64>,
    pub missing: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Rotated {
    /// `ControlPlane::rotate_due`: issuing every identity's certificate (outside the lock), then
    /// installing them and the recompute.
    pub rotate_us: u64,
    /// Proxies whose config changed (their secrets did).
    pub affected: usize,
    /// From the start of the rotation until the last proxy ACKed its new secrets.
    pub latency_us: Option<u64>,
    pub missing: usize,
    /// The change applied during the rotation, measured as in the churn phase.
    pub change: Option<Changed>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Soaked {
    pub changes: usize,
    pub batches: usize,
    pub duration_s: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Changes whose proxies were not all in sync within the timeout.
    pub timeouts: usize,
    /// The controller's RSS before and after (drift), and its peak.
    pub rss_start_mb: f64,
    pub rss_end_mb: f64,
    pub peak_rss_mb: f64,
}

/// Kubernetes mode: one change as the controller saw it, from the source's delivery to the last ACK.
#[derive(Debug, Serialize, Deserialize)]
pub struct Observed {
    /// When the source handed the input over (`None`: nothing was delivered within the timeout).
    pub delivered_ns: Option<u64>,
    /// When `ControlPlane::replace` returned, and its wall time (recompute + publish).
    pub applied_ns: Option<u64>,
    pub update_us: u64,
    /// Proxies whose config changed (connected or not).
    pub changed: usize,
    /// Connected proxies whose config changed: the ones waited for.
    pub affected: usize,
    /// When the last affected proxy ACKed (`None` when none was affected or the timeout passed).
    pub done_ns: Option<u64>,
    pub missing: usize,
    /// Inputs the source delivered while this change was waited for (normally 1).
    pub deliveries: usize,
    /// CPU the harness's own bookkeeping took in the controller process for this change (noting
    /// every proxy's generation at `Arm` and again here, waiting for the ACKs): the driver takes it
    /// out of the controller's CPU per event, which measures the control plane.
    #[serde(default)]
    pub harness_cpu_us: u64,
}
