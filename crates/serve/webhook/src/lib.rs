//! OSM's two admission webhooks, as a library.
//!
//! - [`inject`]: pure sidecar injection — [`inject::decide`] (does this Pod get a sidecar?),
//!   [`inject::mutate`] (the JSON patch adding `osm-init`, `envoy`, the bootstrap volume, the
//!   `osm-proxy-uuid` label, rewritten probes and Prometheus annotations) and
//!   [`inject::bootstrap_secret`] (Secret `envoy-bootstrap-config-<uuid>` with the Envoy bootstrap).
//! - [`validate`]: [`validate::validate_object`] checks SMI and OSM objects with `osm_api`'s rules.
//! - [`server`]: the HTTPS servers (axum + rustls with ring) — [`server::Injector`] on
//!   `/mutate-pod-creation`, [`server::Validator`] on `/validate`, [`server::serve`], and the serving
//!   certificate helpers.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod inject;
pub mod server;
pub mod validate;

pub use inject::{
    InjectConfig, InjectDecision, InjectError, Injection, SkipReason, bootstrap_secret, decide, mutate,
};
pub use server::{Injector, Validator, WebhookError, injector_router, serve, tls_config, validator_router};
pub use validate::{admission_warnings, validate_object};
