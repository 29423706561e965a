//! `osm install` as a library: chart-style [`Values`] with upstream key names, the control plane
//! rendered as Kubernetes objects ([`render`]), server-side apply with a per-object report
//! ([`apply`]), [`uninstall`] and [`mesh_list`].
//!
//! The rendering is the single source: `osm install`, `osm install --dry-run`, `osm mesh upgrade`
//! and the Helm chart under `charts/osm` all come from it.

#![forbid(unsafe_code)]

pub mod chart;
pub mod cluster;
pub mod render;
pub mod values;

pub use cluster::{
    AppliedObject, ApplyOutcome, ApplyReport, ClusterError, FIELD_MANAGER, MeshInfo, UninstallOptions,
    UninstallReport, apply, apply_with_progress, check_mesh_conflicts, mesh_list, recorded_set, uninstall,
    wait_for_deployments,
};
pub use render::{InstallOptions, describe, render, render_yaml};
pub use values::{VERSION, Values, ValuesError};
