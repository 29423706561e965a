//! The boundary every source of mesh input implements (the manifest directory in `osm-sources`, the
//! Kubernetes watchers in `osm-k8s`), so one runner (`osm_controller::runner`) serves them all.
//! No runtime here: a source is a future that runs until `stop` resolves.

use std::future::Future;
use std::pin::Pin;

use crate::{InputDelta, MeshInput};

/// Resolves when the source must stop.
pub type Stop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a source reports.
#[derive(Debug)]
pub enum SourceEvent {
    /// The complete input now in force. The first one is the source's initial sync.
    Input(Box<MeshInput>),
    /// A few entries of the input in force changed (never the first event): applied in place, so an
    /// incremental source's change costs what it touched, not a copy and compare of the whole input.
    Delta(Box<InputDelta>),
    /// Some of what the source read was refused (and reported with its location by the source); the
    /// previous input stays in force. One line for a status display.
    Rejected(String),
}

/// Where the mesh input comes from.
pub trait Source: Send + 'static {
    /// Delivers every change to `sink` until `stop` resolves, starting with the initial input.
    fn run_until(
        self,
        stop: Stop,
        sink: Box<dyn FnMut(SourceEvent) + Send>,
    ) -> impl Future<Output = ()> + Send;
}
