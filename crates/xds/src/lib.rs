//! Proxy intent → Envoy resources. Pure: no I/O. One module per xDS type (`lds`, `cds`, `eds`, `rds`,
//! `sds`); `generator` memoises and shares encoded resources across proxies; `bootstrap` renders the
//! sidecar's starting config; `describe` decodes a config back into a readable tree.
#![forbid(unsafe_code)]

pub mod bootstrap;
pub mod cds;
mod common;
pub mod describe;
pub mod eds;
pub mod generator;
pub mod lds;
pub mod names;
pub mod proxy_bootstrap;
pub mod rds;
pub mod resource;
pub mod sds;

pub use describe::{describe, describe_resource};
pub use generator::{Generator, GeneratorStats, identity_secrets};
pub use resource::{PerType, ProxyConfig, RESOURCES_FIELD, Resource, ResourceSet, TypeKind};
