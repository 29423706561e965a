//! The pure mesh model: a snapshot of services, endpoints, pods and SMI policies in ([`MeshInput`]),
//! each sidecar's intent out ([`ProxyIntent`]). No I/O, no Kubernetes client, no Envoy types.
#![forbid(unsafe_code)]

mod compute;
pub mod diff;
mod egress;
pub mod explain;
pub mod ingress;
pub mod input;
pub mod intent;
mod retry;
pub mod source;
mod upstream_traffic;

pub use compute::{MeshModel, MeshState, ModelChange, compute};
pub use input::*;
pub use intent::*;
pub use source::{Source, SourceEvent, Stop};
