//! `osm-init`: the sidecar's traffic interception, as upstream OSM's init container sets it up.
//!
//! Four nat-table chains send a pod's TCP through Envoy: inbound connections to the inbound listener
//! (15003), outbound ones to the outbound listener (15001), except Envoy's own traffic, loopback, and
//! whatever the pod's exclusion lists name. [`render_restore`] is the pure part (config + current nat table
//! → `iptables-restore --noflush` input); [`apply`] runs it through a [`CommandRunner`]. Applying twice in
//! one namespace leaves exactly one copy of every rule (see `rules` for how).
#![forbid(unsafe_code)]

mod config;
pub mod healthcheck;
mod rules;
mod runner;

pub use config::{
    ALWAYS_SKIPPED_INBOUND_PORTS, INBOUND_LISTENER_PORT, InitConfig, InterfaceName, Ipv4Cidr,
    OUTBOUND_LISTENER_PORT, PROXY_UID, parse_list, parse_port,
};
pub use rules::{IN_REDIRECT_CHAIN, INBOUND_CHAIN, OUT_REDIRECT_CHAIN, OUTBOUND_CHAIN, render_restore};
pub use runner::{CommandRunner, SystemRunner, apply};

/// Why the rules could not be rendered or applied.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A range is not IPv4 CIDR notation (`a.b.c.d/n`).
    #[error("invalid IPv4 CIDR {0:?} (expected a.b.c.d/n with n ≤ 32)")]
    InvalidCidr(String),
    /// A port is not in 1..=65535.
    #[error("invalid port {0:?} (expected 1-65535)")]
    InvalidPort(String),
    /// An interface name iptables would not take.
    #[error(
        "invalid network interface name {0:?} (1-15 characters: letters, digits, '-', '_', '.', '@', optional trailing '+')"
    )]
    InvalidInterface(String),
    /// A config value that is well-typed but unusable.
    #[error("invalid init config: {0}")]
    InvalidConfig(String),
    /// A command could not be started or waited for.
    #[error("cannot run `{command}`")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A command exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
}
