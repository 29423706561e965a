//! `Retry`: how a source ServiceAccount retries failed requests to destination Services.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{KIND_SERVICE, KIND_SERVICE_ACCOUNT};
use crate::duration::GoDuration;
use crate::validate::{Errors, Validate, ValidationErrors};

/// Conditions Envoy accepts in `retry_on` (HTTP and gRPC), which `retryOn` lists comma-separated.
pub const RETRY_ON_CONDITIONS: [&str; 16] = [
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Retry policy from `source` to `destinations`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "policy.openservicemesh.io",
    version = "v1alpha1",
    kind = "Retry",
    plural = "retries",
    shortname = "retry",
    namespaced,
    derive = "PartialEq",
    doc = "OSM Retry policy: retries of failed requests from a ServiceAccount to Services."
)]
#[serde(rename_all = "camelCase")]
pub struct RetrySpec {
    /// The ServiceAccount whose requests are retried.
    pub source: RetrySrcDstSpec,
    /// The Services whose failed requests are retried.
    pub destinations: Vec<RetrySrcDstSpec>,
    /// How to retry.
    pub retry_policy: RetryPolicySpec,
}

/// A ServiceAccount (source) or Service (destination).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetrySrcDstSpec {
    /// ServiceAccount for the source, Service for destinations.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
}

/// How to retry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicySpec {
    /// Comma-separated Envoy retry conditions, e.g. `5xx,connect-failure`.
    pub retry_on: String,
    /// Time allowed per attempt; 0s means no per-attempt timeout.
    pub per_try_timeout: GoDuration,
    /// Maximum number of retries.
    pub num_retries: u32,
    /// Base interval of the exponential backoff (the maximum is ten times this).
    /// Upstream's Go type reads it as `retryBackoffInterval`, which is accepted too.
    #[serde(alias = "retryBackoffInterval")]
    pub retry_backoff_base_interval: GoDuration,
}

fn src_dst(errs: &mut Errors, path: &str, s: &RetrySrcDstSpec, kind: &str) {
    errs.one_of(format!("{path}.kind"), &s.kind, &[kind]);
    errs.non_empty(format!("{path}.name"), &s.name);
    errs.non_empty(format!("{path}.namespace"), &s.namespace);
}

impl Validate for RetrySpec {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = Errors::default();
        src_dst(&mut errs, "spec.source", &self.source, KIND_SERVICE_ACCOUNT);
        if self.destinations.is_empty() {
            errs.add("spec.destinations", "must list at least one destination");
        }
        for (i, d) in self.destinations.iter().enumerate() {
            src_dst(&mut errs, &format!("spec.destinations[{i}]"), d, KIND_SERVICE);
        }
        let policy = &self.retry_policy;
        if policy.retry_on.trim().is_empty() {
            errs.add("spec.retryPolicy.retryOn", "must not be empty");
        }
        for cond in policy
            .retry_on
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            if !RETRY_ON_CONDITIONS.contains(&cond) {
                errs.add(
                    "spec.retryPolicy.retryOn",
                    format!(
                        "unknown retry condition {cond:?} (known: {})",
                        RETRY_ON_CONDITIONS.join(", ")
                    ),
                );
            }
        }
        errs.positive_duration(
            "spec.retryPolicy.retryBackoffBaseInterval",
            &policy.retry_backoff_base_interval,
        );
        errs.finish()
    }
}

impl Validate for Retry {
    fn validate(&self) -> Result<(), ValidationErrors> {
        self.spec.validate()
    }
}
