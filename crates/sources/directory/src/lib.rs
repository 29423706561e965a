//! Sources of the mesh input. For now one: a **local directory of manifests** — the YAML a user would
//! `kubectl apply`, read, validated and watched without Kubernetes, so workloads on plain hosts can be
//! meshed. (Upstream OSM only read Kubernetes.) `README.md` beside this crate is the user's guide.
//!
//! - Files: `*.yaml` / `*.yml` below the directory, recursively, in path order; hidden entries
//!   (`.name`) are skipped. Each file may hold several `---`-separated documents.
//! - Kinds: core/v1 `Namespace`, `ServiceAccount`, `Service`, `Pod`; apps/v1 `Deployment` (N replicas
//!   become pods `<name>-0` … `<name>-(N-1)`); every SMI and OSM kind of `osm-api`. `Secret`s are
//!   skipped unread; other kinds are ignored (debug log).
//! - Validation: our kinds get the CRD schema check and semantic validation the Kubernetes path uses
//!   (`osm_api::schema::check_object`, `osm_api::validate::Validate`); core kinds get their required
//!   fields, ranges and name rules. Each problem is a [`SourceError`] naming file, document, object
//!   and field.
//! - Monitored namespaces: every namespace is part of the mesh unless its Namespace object has the
//!   label `openservicemesh.io/ignore` (any value, as upstream: `osm_api::contract`) or an
//!   `openservicemesh.io/monitored-by` label naming another mesh. A namespace without a Namespace
//!   object is monitored. Objects of other namespaces are left out.
//! - Sidecars: a pod of a monitored namespace has one unless `openservicemesh.io/sidecar-injection:
//!   disabled` is set on the pod, or on its namespace and not overridden by the pod (the pod wins).
//!   Its proxy uuid is its `osm-proxy-uuid` label, else [`derived_proxy_uuid`]; the label is added to
//!   the pod's labels as the injector would.
//! - Addresses (hosts without Kubernetes): a Pod's address is its annotation
//!   `openservicemesh.io/workload-ip` or its `status.podIP`; a Deployment's pod template annotation
//!   lists one address per replica, comma-separated. A pod without an address is valid (no endpoint).
//! - Last good state, per file: [`ManifestSource`] (and [`ManifestDir::load`] for a one-off read).
//! - Watching: [`watch()`] and [`ManifestSource::watch`], inotify with a polling fallback.
#![forbid(unsafe_code)]

mod assemble;
mod document;
mod error;
mod names;
mod source;
mod watch;

#[cfg(test)]
mod no_panic;

pub use assemble::{LoadResult, derived_proxy_uuid};
pub use document::{MAX_REPLICAS, WORKLOAD_IP_ANNOTATION};
pub use error::SourceError;
pub use source::{MAX_DEPTH, MAX_FILE_BYTES, ManifestDir, ManifestSource, Reload};
pub use watch::{WatchOptions, watch};
