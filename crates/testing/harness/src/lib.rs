//! `osm-harness`: Kubernetes-like pods on one machine, for end-to-end tests and the demo.
//!
//! A [`Hub`] is a network namespace holding a bridge (the "node network"); each [`Pod`] is a network
//! namespace joined to that bridge by a veth pair, with `eth0`, `lo` and a default route via the hub.
//! Nothing is ever configured in the host's own network namespace: the veth pair is created inside the
//! hub and its pod end is moved straight into the pod. Pods run processes through `ip netns exec` (so
//! `/etc/netns/<netns>/hosts` works as their DNS), optionally as another UID via `setpriv`, install
//! the OSM interception rules ([`Pod::apply_init`]) and run real Envoy as UID 1500
//! ([`Pod::spawn_envoy`]).
//!
//! Everything is torn down on drop (processes killed, namespaces deleted, `/etc/netns/<netns>` removed),
//! also when a test panics; [`cleanup_stale`] removes what a crashed run left behind. Tests that need
//! root and the tools start with [`require_or_skip`] / [`require_netns_or_skip`].
//!
//! Sockets can be made directly inside a namespace with [`in_netns`]: a socket keeps the namespace it
//! was created in, so a listener bound inside the hub ([`Hub::bind_tcp`]) serves pods from a test's
//! own process.
#![forbid(unsafe_code)]

mod bins;
mod envoy;
mod http;
mod hub;
mod netns;
mod pod;
mod prereqs;
mod process;

pub use bins::{demo_app_bin, workspace_bin};
pub use envoy::{ENVOY_ADMIN_DEFAULT, EnvoyProcess};
pub use http::{HttpResponse, http_exchange, http_request};
pub use hub::{Hub, cleanup_stale};
pub use netns::in_netns;
pub use pod::{Pod, PodSpec};
pub use prereqs::{MissingPrereq, Prereqs, envoy_bin, require_netns_or_skip, require_or_skip};
pub use process::PodProcess;

/// Why a harness operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// An external command (`ip`, `setpriv`, ...) exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// A file or process operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{what}")]
    Sys {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: nix::Error,
    },
    /// Installing the interception rules failed.
    #[error("applying the OSM init rules")]
    Init(#[from] osm_init::InitError),
    /// Something observable did not happen in time; the message includes relevant log tails.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A process exited when it was expected to run.
    #[error("process exited unexpectedly: {0}")]
    Exited(String),
    /// An HTTP exchange failed or was malformed.
    #[error("HTTP: {0}")]
    Http(String),
    /// A prerequisite or input is missing or invalid.
    #[error("{0}")]
    Invalid(String),
}

/// Result alias for harness operations.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

impl HarnessError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
        let what = what.into();
        move |source| HarnessError::Io { what, source }
    }
}

/// Runs a command to completion and returns its stdout; a non-zero exit is an error with stderr.
pub(crate) fn run_cmd<S: AsRef<std::ffi::OsStr>>(argv: &[S]) -> Result<String> {
    let shown = argv
        .iter()
        .map(|a| a.as_ref().to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let output = std::process::Command::new(argv[0].as_ref())
        .args(argv[1..].iter().map(AsRef::as_ref))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(HarnessError::io(format!("cannot run `{shown}`")))?;
    if !output.status.success() {
        return Err(HarnessError::Command {
            command: shown,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
