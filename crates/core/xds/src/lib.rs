//! Proxy intent → Envoy resources. Pure: no I/O. One module per xDS type (`lds`, `cds`, `eds`, `rds`,
//! `sds`); `generator` memoises and shares encoded resources across proxies; `bootstrap` and
//! `proxy_bootstrap` render the sidecar's starting config. (Tests decode configs back into a readable
//! tree with the test-only `describe`.)
#![forbid(unsafe_code)]

pub mod access_log;
pub mod bootstrap;
pub mod cds;
mod common;
#[cfg(test)]
mod describe;
pub mod eds;
pub mod egress;
pub mod ext_authz;
pub mod generator;
#[cfg(test)]
mod golden_tests;
pub mod ingress;
pub mod lds;
pub mod names;
pub mod proxy_bootstrap;
pub mod rate_limit;
pub mod rds;
pub mod resource;
pub mod sds;
pub mod tracing;

pub use generator::{Generator, GeneratorStats, identity_secrets};
pub use resource::{PerType, ProxyConfig, RESOURCES_FIELD, Resource, ResourceSet, TypeKind};
