#![forbid(unsafe_code)]
//! Rust types for every custom resource OSM users apply: SMI access, specs and split ([`smi`]), the
//! mesh configuration and root certificates ([`config`]) and OSM policies ([`policy`]), with upstream
//! group/version/kind and field names.
//!
//! Also: Go-style durations ([`duration`]), semantic validation naming the offending field
//! ([`validate`]), the generated CRD manifests ([`crds`]), an offline check of an object against a CRD
//! schema the way the apiserver does it ([`schema`]), and [`MeshObject`], one enum over every kind.

pub mod config;
pub mod contract;
pub mod crds;
pub mod duration;
mod object;
pub mod policy;
pub mod schema;
pub mod smi;
pub mod unsupported;
pub mod validate;

pub use object::{MeshObject, MeshObjectError};
