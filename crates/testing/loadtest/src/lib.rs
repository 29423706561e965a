//! An ADS load harness: the control plane in its own process on 127.0.0.1 and thousands of simulated
//! proxies — real gRPC ADS clients over mTLS, one connection each, subscribing as Envoy does — on a
//! small tokio runtime in the driver. It measures the cold start (until every proxy ACKed its config),
//! the controller's CPU time and peak RSS, the bytes and resources each proxy receives, and the
//! propagation latency of scripted changes. See `docs/scale.md`.
//!
//! - [`mesh`]: the synthetic mesh (services × endpoints, proxies, permissive or SMI, splits) and churn.
//! - [`controller`]: the controller process (`osm-loadtest controller`), driven over [`protocol`].
//! - [`client`]: a simulated proxy (SotW or delta) on its [`call`]; [`decode`] derives its subscriptions.
//! - [`driver`]: runs a test and builds the [`report::Report`].
//! - [`envtest`]: the same through a real kube-apiserver and the Kubernetes source
//!   (`osm-loadtest envtest`), reported as an [`envtest::EnvtestReport`].
#![forbid(unsafe_code)]

pub mod call;
pub mod client;
pub mod controller;
pub mod decode;
pub mod driver;
pub mod envtest;
pub mod light;
pub mod mesh;
pub mod protocol;
pub mod report;
pub mod sys;

pub use driver::{RunArgs, run};
