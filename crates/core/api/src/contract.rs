//! The upstream contract: the labels, annotations, names and ports that OSM v1.2.4's users, charts,
//! dashboards and scripts rely on, each defined once, and the predicates that read them.
//!
//! Every crate (the Kubernetes source, the directory source, the injector, the CLI, the installer,
//! the xDS layer) takes these from here, so two readings of one label cannot drift apart.
//!
//! Semantics, as upstream's `pkg/k8s/informers` and `pkg/injector` implement them:
//! - A namespace belongs to mesh `M` when its label `openservicemesh.io/monitored-by` is `M`.
//! - `openservicemesh.io/ignore` works by **presence**: upstream's injector webhook selects namespaces
//!   with `DoesNotExist` on that key, so any value, `""` and `"false"` included, keeps the namespace's
//!   pods out of the mesh (upstream's `osm namespace list` shows such a namespace as "disabled
//!   (ignored)" whatever the value). We apply the same rule in the controller, so a namespace whose pods
//!   cannot get a sidecar is not half in the mesh.
//! - `openservicemesh.io/sidecar-injection` is read case-insensitively: `enabled`/`yes`/`true` or
//!   `disabled`/`no`/`false`; any other value, the empty string included, is an error. The pod's
//!   annotation wins over its namespace's; with neither, upstream does not inject.

use std::collections::BTreeMap;
use std::fmt;

/// Namespace label naming the mesh that monitors the namespace.
pub const MONITORED_BY_LABEL: &str = "openservicemesh.io/monitored-by";
/// Namespace label that keeps a namespace out of the mesh, whatever its value.
pub const IGNORE_LABEL: &str = "openservicemesh.io/ignore";
/// Label the injector puts on each injected pod: the proxy's UUID.
pub const PROXY_UUID_LABEL: &str = "osm-proxy-uuid";

/// Namespace or pod annotation switching sidecar injection (the pod's wins).
pub const SIDECAR_INJECTION_ANNOTATION: &str = "openservicemesh.io/sidecar-injection";
/// Namespace annotation enabling Prometheus scraping of its sidecars.
pub const METRICS_ANNOTATION: &str = "openservicemesh.io/metrics";
/// Pod annotation: outbound IP ranges that bypass the sidecar.
pub const OUTBOUND_IP_RANGE_EXCLUSION_ANNOTATION: &str =
    "openservicemesh.io/outbound-ip-range-exclusion-list";
/// Pod annotation: the only outbound IP ranges redirected to the sidecar.
pub const OUTBOUND_IP_RANGE_INCLUSION_ANNOTATION: &str =
    "openservicemesh.io/outbound-ip-range-inclusion-list";
/// Pod annotation: outbound ports that bypass the sidecar.
pub const OUTBOUND_PORT_EXCLUSION_ANNOTATION: &str = "openservicemesh.io/outbound-port-exclusion-list";
/// Pod annotation: inbound ports that bypass the sidecar.
pub const INBOUND_PORT_EXCLUSION_ANNOTATION: &str = "openservicemesh.io/inbound-port-exclusion-list";

/// The mesh name when none is given.
pub const DEFAULT_MESH_NAME: &str = "osm";
/// The MeshConfig the control plane reads, in its own namespace.
pub const MESH_CONFIG_NAME: &str = "osm-mesh-config";
/// The sidecar container the injector adds.
pub const ENVOY_CONTAINER_NAME: &str = "envoy";
/// The init container that installs the iptables redirection.
pub const INIT_CONTAINER_NAME: &str = "osm-init";
/// The container answering rewritten TCP probes on [`HEALTHCHECK_PORT`], added only to pods with one.
pub const HEALTHCHECK_CONTAINER_NAME: &str = "osm-healthcheck";

/// The namespace the control plane is installed in when none is given.
pub const DEFAULT_OSM_NAMESPACE: &str = "osm-system";
/// The control plane's Deployments and Services.
pub const CONTROLLER: &str = "osm-controller";
pub const INJECTOR: &str = "osm-injector";
pub const BOOTSTRAP: &str = "osm-bootstrap";
pub const VALIDATOR_SERVICE: &str = "osm-validator";
/// The ADS server's TLS name, as sidecars check it: the controller Service's cluster DNS name.
pub fn ads_server_name(osm_namespace: &str) -> String {
    format!("{CONTROLLER}.{osm_namespace}.svc.cluster.local")
}
/// The injector webhook's path.
pub const INJECTOR_PATH: &str = "/mutate-pod-creation";
/// The validating webhook's path.
pub const VALIDATOR_PATH: &str = "/validate";
/// The ConfigMap (and its key) holding the MeshConfig the chart was installed with.
pub const PRESET_CONFIG_MAP: &str = "preset-mesh-config";
pub const PRESET_KEY: &str = "preset-mesh-config.json";
/// Kubernetes' recommended labels, as upstream's chart sets them on the control plane.
pub const APP_NAME_LABEL: &str = "app.kubernetes.io/name";
pub const APP_NAME_VALUE: &str = "openservicemesh.io";

/// Pod annotations Prometheus' Kubernetes discovery reads (set on pods of metrics-enabled namespaces).
pub const PROMETHEUS_SCRAPE_ANNOTATION: &str = "prometheus.io/scrape";
pub const PROMETHEUS_PORT_ANNOTATION: &str = "prometheus.io/port";
pub const PROMETHEUS_PATH_ANNOTATION: &str = "prometheus.io/path";
/// What Prometheus scrapes on [`PROMETHEUS_PORT`]: the only path that listener forwards to Envoy.
pub const PROMETHEUS_SCRAPE_PATH: &str = "/stats/prometheus";

// Ports, as upstream: Envoy's in every meshed pod, then the control plane's.
/// Envoy's admin API (bound to 127.0.0.1 only).
pub const ADMIN_PORT: u16 = 15000;
/// The outbound listener iptables redirects to.
pub const OUTBOUND_PORT: u16 = 15001;
/// The inbound listener iptables redirects to.
pub const INBOUND_PORT: u16 = 15003;
/// The Prometheus scrape listener.
pub const PROMETHEUS_PORT: u16 = 15010;
/// The listeners of the rewritten liveness, readiness and startup probes.
pub const LIVENESS_PROBE_PORT: u16 = 15901;
pub const READINESS_PROBE_PORT: u16 = 15902;
pub const STARTUP_PROBE_PORT: u16 = 15903;
/// The `osm-healthcheck` container's port: rewritten TCP probes (`GET /osm-healthcheck`).
pub const HEALTHCHECK_PORT: u16 = 15904;
/// The ADS (xDS) server, mTLS only.
pub const ADS_PORT: u16 = 15128;
/// The injector webhook.
pub const INJECTOR_PORT: u16 = 9090;
/// The control plane's HTTP server: `/health/ready`, `/health/alive`, `/metrics`, `/version`.
pub const HTTP_PORT: u16 = 9091;
/// The debug server.
pub const DEBUG_PORT: u16 = 9092;
/// The validating webhook.
pub const VALIDATOR_PORT: u16 = 9093;

/// The second label of a sidecar's proxy key.
pub const PROXY_KIND_SIDECAR: &str = "sidecar";

/// A proxy's key: `<uuid>.sidecar.<serviceaccount>.<namespace>.<trustDomain>`, the CN of its xDS
/// client certificate, its Envoy node id and the ADS cache key.
pub fn proxy_key(uuid: &str, service_account: &str, namespace: &str, trust_domain: &str) -> String {
    format!("{uuid}.{PROXY_KIND_SIDECAR}.{service_account}.{namespace}.{trust_domain}")
}

/// Labels or annotations, as Kubernetes' `ObjectMeta` holds them.
pub type Map = BTreeMap<String, String>;

/// How a namespace stands towards one mesh, read from its labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership<'a> {
    /// Labelled `openservicemesh.io/ignore` (any value): out of every mesh.
    Ignored,
    /// `openservicemesh.io/monitored-by` names this mesh.
    Monitored,
    /// `openservicemesh.io/monitored-by` names another mesh.
    OtherMesh(&'a str),
    /// No (or an empty) `openservicemesh.io/monitored-by` label.
    Unlabelled,
}

/// Whether a namespace with these labels is monitored by `mesh_name`, ignored, or neither.
pub fn membership<'a>(labels: Option<&'a Map>, mesh_name: &str) -> Membership<'a> {
    let Some(labels) = labels else {
        return Membership::Unlabelled;
    };
    if labels.contains_key(IGNORE_LABEL) {
        return Membership::Ignored;
    }
    match labels.get(MONITORED_BY_LABEL).map(String::as_str) {
        None | Some("") => Membership::Unlabelled,
        Some(m) if m == mesh_name => Membership::Monitored,
        Some(other) => Membership::OtherMesh(other),
    }
}

/// True when a namespace with these labels is ignored (the label is present, whatever its value).
pub fn is_ignored(labels: Option<&Map>) -> bool {
    labels.is_some_and(|l| l.contains_key(IGNORE_LABEL))
}

/// An `openservicemesh.io/sidecar-injection` value that is neither enabled nor disabled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidInjectionValue {
    pub value: String,
}

impl fmt::Display for InvalidInjectionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Unsupported value: {:?}: supported values: \"enabled\", \"disabled\" (or yes/no, true/false)",
            self.value
        )
    }
}

impl std::error::Error for InvalidInjectionValue {}

/// The `openservicemesh.io/sidecar-injection` annotation: `Ok(None)` when absent.
pub fn injection_annotation(annotations: Option<&Map>) -> Result<Option<bool>, InvalidInjectionValue> {
    let Some(value) = annotations.and_then(|a| a.get(SIDECAR_INJECTION_ANNOTATION)) else {
        return Ok(None);
    };
    match value.to_ascii_lowercase().as_str() {
        "enabled" | "yes" | "true" => Ok(Some(true)),
        "disabled" | "no" | "false" => Ok(Some(false)),
        _ => Err(InvalidInjectionValue { value: value.clone() }),
    }
}

/// What the injection annotations of a pod and its namespace ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectionRequest {
    /// Enabled on the pod, or on the namespace and not disabled on the pod.
    Inject,
    /// Disabled on the pod (whatever the namespace says).
    DisabledOnPod,
    /// Disabled on the namespace, and the pod says nothing.
    DisabledOnNamespace,
    /// Neither says anything: upstream's injector does not inject.
    NotRequested,
}

/// Combines the pod's and its namespace's injection annotations (the pod's wins).
pub fn injection_request(on_pod: Option<bool>, on_namespace: Option<bool>) -> InjectionRequest {
    match (on_pod, on_namespace) {
        (Some(true), _) | (None, Some(true)) => InjectionRequest::Inject,
        (Some(false), _) => InjectionRequest::DisabledOnPod,
        (None, Some(false)) => InjectionRequest::DisabledOnNamespace,
        (None, None) => InjectionRequest::NotRequested,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Map {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn proxy_key_is_upstreams_common_name() {
        let key = proxy_key("u-1", "bookbuyer", "shop", "cluster.local");
        assert_eq!(key, "u-1.sidecar.bookbuyer.shop.cluster.local");
    }

    #[test]
    fn ignore_wins_over_monitored_by() {
        let labels = map(&[(MONITORED_BY_LABEL, "osm"), (IGNORE_LABEL, "false")]);
        assert_eq!(membership(Some(&labels), "osm"), Membership::Ignored);
        let labels = map(&[(MONITORED_BY_LABEL, "other")]);
        assert_eq!(membership(Some(&labels), "osm"), Membership::OtherMesh("other"));
        assert_eq!(membership(None, "osm"), Membership::Unlabelled);
    }
}
