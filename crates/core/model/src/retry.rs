//! Retry policies (`policy.openservicemesh.io/v1alpha1` Retry) → how each source identity retries
//! requests to each destination Service ([`RetryPolicy`] on its outbound services).
//!
//! Upstream OSM's semantics (`pkg/catalog/retry.go`): with `featureFlags.enableRetryPolicy` on, a policy
//! applies to the ServiceAccount named as its `source` (whatever namespace the Retry object lives in)
//! and to the Services named as `destinations`, on every route the source has to them — and to the
//! per-pod names of a headless destination. Upstream's first match wins; here the first policy in
//! namespace/name order wins and the others are reported. Unlike upstream (#4038), it works in
//! permissive mode too: the source gets outbound routes of its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use osm_api::policy::{KIND_SERVICE, KIND_SERVICE_ACCOUNT, RetrySpec};

use crate::input::{MeshInput, ObjectRef, ServiceIdentity, ServiceRef};
use crate::intent::RetryPolicy;

/// Each source identity's retry policies, by destination Service.
pub(crate) type RetriesBySource = HashMap<ServiceIdentity, BTreeMap<ServiceRef, Arc<RetryPolicy>>>;

/// The retry policies of every source identity some Retry names. Empty when the feature flag is off.
/// Problems are pushed to `warnings`, naming the object.
pub(crate) fn by_source(input: &MeshInput, warnings: &mut Vec<String>) -> RetriesBySource {
    if !input.mesh_config.feature_flags.enable_retry_policy {
        if !input.retries.is_empty() {
            warnings.push(format!(
                "{} Retry policies are not applied: featureFlags.enableRetryPolicy is false",
                input.retries.len()
            ));
        }
        return HashMap::new();
    }
    let mut out: RetriesBySource = HashMap::new();
    let mut claimed: HashMap<(ServiceIdentity, ServiceRef), &ObjectRef> = HashMap::new();
    for (id, spec) in &input.retries {
        if spec.source.kind != KIND_SERVICE_ACCOUNT {
            continue; // refused by validation
        }
        let source = ServiceIdentity::new(&spec.source.namespace, &spec.source.name);
        let policy = Arc::new(read(spec));
        for (i, dest) in spec.destinations.iter().enumerate() {
            if dest.kind != KIND_SERVICE {
                continue; // refused by validation
            }
            let service = ServiceRef::new(&dest.namespace, &dest.name);
            if !input.services.contains_key(&service) {
                warnings.push(format!(
                    "Retry {id}: spec.destinations[{i}]: Service {service} does not exist (yet)"
                ));
            }
            let key = (source.clone(), service.clone());
            if let Some(first) = claimed.get(&key) {
                warnings.push(format!(
                    "Retry {id}: spec.destinations[{i}]: requests from {source} to {service} already \
                     follow Retry {first}; this one is not applied to them"
                ));
                continue;
            }
            claimed.insert(key, id);
            out.entry(source.clone())
                .or_default()
                .insert(service, policy.clone());
        }
    }
    out
}

/// Whether a Retry names this Service as a destination (policies are few; services change rarely).
pub(crate) fn refers_to(input: &MeshInput, service: &ServiceRef) -> bool {
    input.retries.values().any(|r| {
        r.destinations
            .iter()
            .any(|d| d.kind == KIND_SERVICE && d.name == service.name && d.namespace == service.namespace)
    })
}

fn read(spec: &RetrySpec) -> RetryPolicy {
    let p = &spec.retry_policy;
    let millis =
        |d: &osm_api::duration::GoDuration| u64::try_from(d.as_std().as_millis()).unwrap_or(u64::MAX);
    RetryPolicy {
        retry_on: p
            .retry_on
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>()
            .join(","),
        num_retries: p.num_retries,
        per_try_timeout_ms: (!p.per_try_timeout.is_zero()).then(|| millis(&p.per_try_timeout)),
        backoff_base_interval_ms: millis(&p.retry_backoff_base_interval),
    }
}
