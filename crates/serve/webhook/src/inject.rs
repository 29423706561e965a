//! Sidecar injection, pure: whether a Pod gets a sidecar ([`decide`]), the JSON patch that adds it
//! ([`mutate`]) and the Secret holding its Envoy bootstrap ([`bootstrap_secret`]).
//!
//! Names, ports and annotations are upstream OSM's: label `osm-proxy-uuid`, init container `osm-init`,
//! sidecar `envoy` running as UID 1500, Secret `envoy-bootstrap-config-<uuid>` mounted at `/etc/envoy`,
//! probes rewritten as upstream ([`plan_probes`]: HTTP and HTTPS to 15901/15902/15903, TCP to the
//! `osm-healthcheck` container on 15904), Prometheus annotations when the namespace has
//! `openservicemesh.io/metrics`.
//! Nothing here does I/O; the server module reads the Namespace and writes the Secret.

use osm_api::contract::{
    self, APP_NAME_LABEL, APP_NAME_VALUE, ENVOY_CONTAINER_NAME, HEALTHCHECK_CONTAINER_NAME, IGNORE_LABEL,
    INBOUND_PORT_EXCLUSION_ANNOTATION, INIT_CONTAINER_NAME, InjectionRequest, METRICS_ANNOTATION,
    MONITORED_BY_LABEL, Membership, OUTBOUND_IP_RANGE_EXCLUSION_ANNOTATION,
    OUTBOUND_IP_RANGE_INCLUSION_ANNOTATION, OUTBOUND_PORT_EXCLUSION_ANNOTATION, PROMETHEUS_PATH_ANNOTATION,
    PROMETHEUS_PORT_ANNOTATION, PROMETHEUS_SCRAPE_ANNOTATION, PROXY_UUID_LABEL, SIDECAR_INJECTION_ANNOTATION,
};
use std::collections::BTreeMap;
use std::fmt;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, HTTPGetAction, HTTPHeader, Namespace, Pod, PodSpec,
    Probe as K8sProbe, ResourceRequirements, Secret, SecretVolumeSource, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use osm_api::config::MeshConfigSpec;
use osm_ca::{CertificateAuthority, TrustDomain};
use osm_xds::bootstrap::{AdsApi, Probe, ProbeScheme};
use osm_xds::names;
use serde_json::{Value, json};

/// The pod volume holding the bootstrap Secret.
pub const BOOTSTRAP_VOLUME_NAME: &str = "envoy-bootstrap-config-volume";
/// Where the bootstrap Secret is mounted in the sidecar.
pub const BOOTSTRAP_MOUNT_PATH: &str = "/etc/envoy";
/// The bootstrap's key in the Secret (and file name under [`BOOTSTRAP_MOUNT_PATH`]).
pub const BOOTSTRAP_KEY: &str = "bootstrap.yaml";
/// Envoy's UID (upstream `constants.EnvoyUID`); `osm-init` leaves its traffic alone.
pub const ENVOY_UID: i64 = osm_init::PROXY_UID as i64;

/// Namespaces never injected, whatever their labels (upstream: kube-system, kube-public and the
/// control plane's own namespace).
const SYSTEM_NAMESPACES: [&str; 2] = ["kube-system", "kube-public"];

/// The name of the Secret holding the bootstrap of the proxy `uuid`.
pub fn bootstrap_secret_name(uuid: &str) -> String {
    format!("envoy-bootstrap-config-{uuid}")
}

/// What the injector needs besides the Pod and its Namespace. Held in a `watch` channel by the server
/// so MeshConfig changes apply to the next admission.
#[derive(Clone, Debug, PartialEq)]
pub struct InjectConfig {
    /// This mesh's name: namespaces labelled `openservicemesh.io/monitored-by=<mesh_name>` are ours.
    pub mesh_name: String,
    /// The control plane's namespace (never injected).
    pub osm_namespace: String,
    /// Must be the CA's trust domain; names the proxy's certificate.
    pub trust_domain: TrustDomain,
    /// The sidecar image, unless MeshConfig `spec.sidecar.envoyImage` names one.
    pub envoy_image: String,
    /// The init image (it must provide `osm-init`), unless MeshConfig `spec.sidecar.initContainerImage`
    /// names one.
    pub init_image: String,
    /// Where sidecars reach the ADS server, `osm-controller.<osmns>.svc.cluster.local`.
    /// The port is always [`names::ADS_PORT`] (15128).
    pub ads_host: String,
    /// The DNS name on the ADS server's certificate.
    pub ads_server_name: String,
    /// State-of-the-world or incremental ADS.
    pub ads_api: AdsApi,
    /// The mesh-wide configuration: sidecar log level, privileged init container, exclusion lists,
    /// images, sidecar resources.
    pub mesh_config: MeshConfigSpec,
}

impl InjectConfig {
    /// Upstream's defaults for a mesh installed in `osm_namespace`: trust domain `cluster.local`, ADS at
    /// `osm-controller.<osm_namespace>.svc.cluster.local:15128` (SotW), default MeshConfig.
    pub fn new(
        mesh_name: impl Into<String>,
        osm_namespace: impl Into<String>,
        envoy_image: impl Into<String>,
        init_image: impl Into<String>,
    ) -> Self {
        let osm_namespace = osm_namespace.into();
        let ads = contract::ads_server_name(&osm_namespace);
        InjectConfig {
            mesh_name: mesh_name.into(),
            trust_domain: TrustDomain::default(),
            envoy_image: envoy_image.into(),
            init_image: init_image.into(),
            ads_host: ads.clone(),
            ads_server_name: ads,
            ads_api: AdsApi::StateOfTheWorld,
            mesh_config: MeshConfigSpec::default(),
            osm_namespace,
        }
    }

    fn envoy_image(&self) -> &str {
        non_empty(self.mesh_config.sidecar.envoy_image.as_deref()).unwrap_or(&self.envoy_image)
    }

    fn init_image(&self) -> &str {
        non_empty(self.mesh_config.sidecar.init_container_image.as_deref()).unwrap_or(&self.init_image)
    }
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.trim().is_empty())
}

/// Why a Pod must not be admitted as it is: every message names the object and the field.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// An annotation whose value is not one we understand.
    #[error("{object}: annotation {key}: invalid value {value:?} (expected {expected})")]
    InvalidAnnotation {
        /// `pod shop/web-1` or `namespace shop`.
        object: String,
        /// The annotation.
        key: &'static str,
        /// Its value.
        value: String,
        /// What would be accepted.
        expected: &'static str,
    },
    /// A pod annotation's exclusion/inclusion list `osm-init` would refuse.
    #[error("{object}: annotation {key}: {source}")]
    InvalidList {
        /// `pod shop/web-1`.
        object: String,
        /// The annotation.
        key: &'static str,
        /// What is wrong with it.
        source: osm_init::InitError,
    },
    /// A MeshConfig exclusion/inclusion list `osm-init` would refuse.
    #[error("MeshConfig spec.traffic.{field}: {source}")]
    InvalidMeshConfigList {
        /// The field under `spec.traffic`.
        field: &'static str,
        /// What is wrong with it.
        source: osm_init::InitError,
    },
    /// More HTTP/HTTPS probes than the sidecar has probe ports for ([`TooManyProbes`]).
    #[error("{0}: too many HTTP/HTTPS probes for the sidecar's probe ports (15901-15903, 15905-15999)")]
    TooManyProbes(String),
    /// No image to run.
    #[error("no {0} image is configured (MeshConfig spec.sidecar or the injector's default)")]
    MissingImage(&'static str),
    /// The admitted Pod has no `spec`.
    #[error("{0}: the pod has no spec")]
    NoSpec(String),
    /// The configuration's trust domain is not the CA's.
    #[error("the injector's trust domain {config} is not the CA's ({ca})")]
    TrustDomainMismatch {
        /// From [`InjectConfig::trust_domain`].
        config: String,
        /// The CA's.
        ca: String,
    },
    /// Issuing the proxy's certificate or rendering its bootstrap failed.
    #[error("creating the bootstrap of proxy {uuid}")]
    Bootstrap {
        /// The proxy.
        uuid: String,
        /// Why.
        #[source]
        source: osm_xds::proxy_bootstrap::BootstrapError,
    },
}

/// Whether a Pod gets a sidecar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InjectDecision {
    /// Add the sidecar.
    Inject,
    /// Admit the Pod unchanged.
    Skip {
        /// Why.
        reason: SkipReason,
    },
}

/// Why a Pod is admitted without a sidecar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// `spec.hostNetwork`: interception rules would break the node's networking.
    HostNetwork,
    /// kube-system, kube-public or the control plane's namespace.
    ProtectedNamespace(String),
    /// The namespace carries `openservicemesh.io/ignore`.
    IgnoredNamespace(String),
    /// The namespace is not labelled `openservicemesh.io/monitored-by=<this mesh>`.
    NotMonitored {
        /// The namespace.
        namespace: String,
        /// The label's value, if any.
        monitored_by: Option<String>,
    },
    /// The Pod already has an `envoy` container or an `osm-proxy-uuid` label.
    AlreadyInjected,
    /// The Pod is annotated `openservicemesh.io/sidecar-injection: disabled`.
    DisabledOnPod,
    /// The namespace is annotated `disabled` and the Pod does not override it.
    DisabledOnNamespace,
    /// Neither the Pod nor the namespace asks for injection (upstream's default: `osm namespace add`
    /// annotates the namespace `enabled`).
    NotRequested,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::HostNetwork => f.write_str("the pod uses the host network"),
            SkipReason::ProtectedNamespace(ns) => write!(f, "namespace {ns} is never injected"),
            SkipReason::IgnoredNamespace(ns) => write!(f, "namespace {ns} is labelled {IGNORE_LABEL}"),
            SkipReason::NotMonitored {
                namespace,
                monitored_by: None,
            } => write!(f, "namespace {namespace} is not monitored by a mesh"),
            SkipReason::NotMonitored {
                namespace,
                monitored_by: Some(mesh),
            } => write!(f, "namespace {namespace} is monitored by mesh {mesh:?}"),
            SkipReason::AlreadyInjected => f.write_str("the pod already has a sidecar"),
            SkipReason::DisabledOnPod => {
                write!(f, "the pod is annotated {SIDECAR_INJECTION_ANNOTATION}: disabled")
            }
            SkipReason::DisabledOnNamespace => {
                write!(
                    f,
                    "the namespace is annotated {SIDECAR_INJECTION_ANNOTATION}: disabled"
                )
            }
            SkipReason::NotRequested => write!(
                f,
                "neither the pod nor its namespace is annotated {SIDECAR_INJECTION_ANNOTATION}: enabled"
            ),
        }
    }
}

fn skip(reason: SkipReason) -> Result<InjectDecision, InjectError> {
    Ok(InjectDecision::Skip { reason })
}

/// `pod <ns>/<name>` for messages; at admission the name may still be empty (generateName).
fn pod_label(pod: &Pod, namespace: &str) -> String {
    let name = pod
        .metadata
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .or_else(|| pod.metadata.generate_name.as_ref().map(|g| format!("{g}*")))
        .unwrap_or_else(|| "<unnamed>".into());
    format!("pod {namespace}/{name}")
}

fn namespace_name(namespace: &Namespace) -> &str {
    namespace.metadata.name.as_deref().unwrap_or("")
}

/// Reads an enabled/disabled annotation: `Ok(None)` when absent.
fn switch(
    annotations: Option<&BTreeMap<String, String>>,
    key: &'static str,
    object: impl FnOnce() -> String,
) -> Result<Option<bool>, InjectError> {
    let Some(value) = annotations.and_then(|a| a.get(key)) else {
        return Ok(None);
    };
    match value.to_ascii_lowercase().as_str() {
        "enabled" | "yes" | "true" => Ok(Some(true)),
        "disabled" | "no" | "false" => Ok(Some(false)),
        _ => Err(InjectError::InvalidAnnotation {
            object: object(),
            key,
            value: value.clone(),
            expected: "enabled or disabled",
        }),
    }
}

/// Reads the sidecar-injection annotation by upstream's rule ([`contract::injection_annotation`]).
fn injection_switch(
    annotations: Option<&BTreeMap<String, String>>,
    object: impl FnOnce() -> String,
) -> Result<Option<bool>, InjectError> {
    contract::injection_annotation(annotations).map_err(|e| InjectError::InvalidAnnotation {
        object: object(),
        key: SIDECAR_INJECTION_ANNOTATION,
        value: e.value,
        expected: "enabled or disabled",
    })
}

/// Whether `pod`, being created in `namespace`, gets a sidecar.
///
/// In order: host-network pods, protected namespaces (kube-system, kube-public, the control plane's),
/// namespaces labelled `openservicemesh.io/ignore` or not monitored by this mesh, and pods that already
/// have a sidecar are skipped. Then the annotations decide, the Pod's winning over the namespace's;
/// with neither, the Pod is skipped, as upstream does (`osm namespace add` annotates the namespace).
/// An annotation value other than enabled/disabled (yes/no, true/false) is an error, as upstream.
pub fn decide(
    namespace: &Namespace,
    pod: &Pod,
    config: &InjectConfig,
) -> Result<InjectDecision, InjectError> {
    let ns = namespace_name(namespace);
    if pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false) {
        return skip(SkipReason::HostNetwork);
    }
    if ns == config.osm_namespace || SYSTEM_NAMESPACES.contains(&ns) {
        return skip(SkipReason::ProtectedNamespace(ns.into()));
    }
    match contract::membership(namespace.metadata.labels.as_ref(), &config.mesh_name) {
        Membership::Monitored => {}
        Membership::Ignored => return skip(SkipReason::IgnoredNamespace(ns.into())),
        Membership::OtherMesh(_) | Membership::Unlabelled => {
            return skip(SkipReason::NotMonitored {
                namespace: ns.into(),
                monitored_by: namespace
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(MONITORED_BY_LABEL))
                    .cloned(),
            });
        }
    }
    if already_injected(pod) {
        return skip(SkipReason::AlreadyInjected);
    }
    let on_pod = injection_switch(pod.metadata.annotations.as_ref(), || pod_label(pod, ns))?;
    let on_namespace = injection_switch(namespace.metadata.annotations.as_ref(), || {
        format!("namespace {ns}")
    })?;
    match contract::injection_request(on_pod, on_namespace) {
        InjectionRequest::Inject => Ok(InjectDecision::Inject),
        InjectionRequest::DisabledOnPod => skip(SkipReason::DisabledOnPod),
        InjectionRequest::DisabledOnNamespace => skip(SkipReason::DisabledOnNamespace),
        InjectionRequest::NotRequested => skip(SkipReason::NotRequested),
    }
}

fn already_injected(pod: &Pod) -> bool {
    let labelled = pod
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(PROXY_UUID_LABEL));
    let has_envoy = pod.spec.as_ref().is_some_and(|s| {
        s.containers.iter().any(|c| c.name == ENVOY_CONTAINER_NAME)
            || s.init_containers
                .as_ref()
                .is_some_and(|ic| ic.iter().any(|c| c.name == INIT_CONTAINER_NAME))
    });
    labelled || has_envoy
}

/// The result of [`mutate`]: the patch for the admission response and what the bootstrap Secret needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Injection {
    /// JSON patch (RFC 6902) against the Pod as admitted.
    pub patch: Patch,
    /// The proxy's uuid (label `osm-proxy-uuid`).
    pub proxy_uuid: String,
    /// `envoy-bootstrap-config-<uuid>`, which the Pod mounts: it must exist before the Pod starts.
    pub bootstrap_secret_name: String,
    /// The app's HTTP and HTTPS probes as the bootstrap must proxy them (listener port → original
    /// port/path).
    pub probes: Vec<Probe>,
    /// The Pod's ServiceAccount (`default` when unset), part of the proxy's identity.
    pub service_account: String,
}

/// One of the three probe kinds the sidecar can proxy.
struct ProbeKind {
    /// Also the bootstrap's listener/cluster prefix (`liveness_listener`).
    name: &'static str,
    /// Envoy's listener port for it.
    port: u16,
    /// The path the kubelet is given.
    path: &'static str,
    /// The sidecar's container port name (at most 15 characters).
    port_name: &'static str,
    /// The Pod JSON field.
    field: &'static str,
    get: fn(&Container) -> Option<&K8sProbe>,
}

const PROBE_KINDS: [ProbeKind; 3] = [
    ProbeKind {
        name: "liveness",
        port: names::LIVENESS_PROBE_PORT,
        path: "/osm-liveness-probe",
        port_name: "liveness-port",
        field: "livenessProbe",
        get: |c| c.liveness_probe.as_ref(),
    },
    ProbeKind {
        name: "readiness",
        port: names::READINESS_PROBE_PORT,
        path: "/osm-readiness-probe",
        port_name: "readiness-port",
        field: "readinessProbe",
        get: |c| c.readiness_probe.as_ref(),
    },
    ProbeKind {
        name: "startup",
        port: names::STARTUP_PROBE_PORT,
        path: "/osm-startup-probe",
        port_name: "startup-port",
        field: "startupProbe",
        get: |c| c.startup_probe.as_ref(),
    },
];

/// Listener ports for HTTP/HTTPS probes beyond upstream's three (a later container's, see
/// [`plan_probes`]); the injector adds each one it uses to `osm-init`'s inbound exclusions.
const EXTRA_PROBE_PORTS: std::ops::RangeInclusive<u16> = 15905..=15999;

/// How one probe is rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeRewrite {
    /// `httpGet` (scheme HTTP or unset): port and path become the sidecar listener's.
    Http,
    /// `httpGet` with scheme HTTPS: only the port changes (the listener is a TCP proxy; TLS and the
    /// path go end to end to the app).
    Https,
    /// `tcpSocket`: replaced by `httpGet` on 15904 `/osm-healthcheck` with header
    /// `Original-Tcp-Port: <port>`, answered by the `osm-healthcheck` container.
    Tcp,
}

/// One rewritten probe of one container.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeEdit {
    /// Index in `spec.containers`.
    pub container: usize,
    /// `livenessProbe`, `readinessProbe` or `startupProbe`.
    pub field: &'static str,
    /// Which rewrite, and so which fields the patch sets.
    pub rewrite: ProbeRewrite,
    /// The probe's `httpGet` as the kubelet will send it.
    pub http_get: HTTPGetAction,
}

/// [`plan_probes`] ran out of listener ports.
#[derive(Debug, thiserror::Error)]
#[error("too many HTTP/HTTPS probes for the sidecar's probe ports (15901-15903, 15905-15999)")]
pub struct TooManyProbes;

/// What the injector does to a Pod's probes ([`plan_probes`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbePlan {
    /// The rewritten probes, in container then kind order.
    pub edits: Vec<ProbeEdit>,
    /// The HTTP/HTTPS probes the sidecar's bootstrap must proxy.
    pub probes: Vec<Probe>,
    /// The ports of the TCP probes rewritten, sorted: the Pod needs the `osm-healthcheck` container,
    /// which dials only these.
    pub healthcheck_ports: Vec<u16>,
    /// Listener ports used beyond 15901-15903, to exempt from the inbound redirect.
    pub extra_ports: Vec<u16>,
}

impl ProbePlan {
    /// The containers' probes as the patch leaves them (what the kubelet will probe).
    pub fn apply(&self, spec: &mut PodSpec) {
        for edit in &self.edits {
            let Some(c) = spec.containers.get_mut(edit.container) else {
                continue;
            };
            let probe = match edit.field {
                "livenessProbe" => c.liveness_probe.as_mut(),
                "readinessProbe" => c.readiness_probe.as_mut(),
                _ => c.startup_probe.as_mut(),
            };
            if let Some(probe) = probe {
                probe.tcp_socket = None;
                probe.http_get = Some(edit.http_get.clone());
            }
        }
    }
}

/// How the injector rewrites a Pod's liveness, readiness and startup probes, as upstream
/// (`pkg/injector/health_probes.go`): HTTP → the sidecar's listener for that kind (15901/15902/15903,
/// path `/osm-<kind>-probe`), which forwards exactly that path to the app's port and path; HTTPS →
/// the same ports, path and scheme unchanged, a TCP proxy to the app port; TCP → HTTP on 15904
/// `/osm-healthcheck` with header `Original-Tcp-Port`. gRPC and exec probes, and probes naming a port
/// the container does not declare, are left alone (a gRPC probe reaches the app port through the
/// inbound redirect, so such a port needs `openservicemesh.io/inbound-port-exclusion-list`).
///
/// Beyond upstream (its issue #4948): upstream gives every container's probe of one kind the same
/// port and path and proxies only the last one, so with two probing containers one of them is probed
/// against the other's endpoint. Here the first container with an HTTP/HTTPS probe of a kind gets
/// upstream's port and path exactly (so a single-probing-container Pod, the common case, looks as
/// upstream made it), and each later container's probe of that kind gets its own listener: the next
/// free port from 15905 (skipping ports any container declares) and, for HTTP, the path
/// `/osm-<kind>-probe/<container>`. A port of their own rather than a second route on the kind's
/// listener, because an HTTPS probe is a TCP proxy that cannot be shared by path, and one rule for
/// both schemes keeps the rewritten spec predictable. TCP probes never collide: each carries its
/// port in the header. Fails only when the extra ports run out (some 95 probes).
pub fn plan_probes(spec: &PodSpec) -> Result<ProbePlan, TooManyProbes> {
    let declared: Vec<u16> = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    let mut free = EXTRA_PROBE_PORTS.filter(|p| !declared.contains(p));
    let mut plan = ProbePlan::default();
    let mut kind_taken = [false; PROBE_KINDS.len()];
    for (i, c) in spec.containers.iter().enumerate() {
        for (k, kind) in PROBE_KINDS.iter().enumerate() {
            let Some(probe) = (kind.get)(c) else { continue };
            if let Some(tcp) = &probe.tcp_socket {
                let Some(port) = probe_port(&tcp.port, c) else {
                    continue;
                };
                if let Err(at) = plan.healthcheck_ports.binary_search(&port) {
                    plan.healthcheck_ports.insert(at, port);
                }
                plan.edits.push(ProbeEdit {
                    container: i,
                    field: kind.field,
                    rewrite: ProbeRewrite::Tcp,
                    http_get: HTTPGetAction {
                        port: IntOrString::Int(i32::from(names::HEALTHCHECK_PORT)),
                        path: Some(osm_init::healthcheck::PATH.into()),
                        http_headers: Some(vec![HTTPHeader {
                            name: osm_init::healthcheck::PORT_HEADER.into(),
                            value: port.to_string(),
                        }]),
                        ..HTTPGetAction::default()
                    },
                });
                continue;
            }
            let Some(get) = &probe.http_get else { continue };
            let Some(app_port) = probe_port(&get.port, c) else {
                continue;
            };
            let https = get
                .scheme
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
            let app_path = get.path.clone().filter(|p| !p.is_empty());
            let (name, listener_port, kubelet_path) = if kind_taken[k] {
                let port = free.next().ok_or(TooManyProbes)?;
                plan.extra_ports.push(port);
                (
                    format!("{}_{}", kind.name, c.name),
                    port,
                    format!("{}/{}", kind.path, c.name),
                )
            } else {
                kind_taken[k] = true;
                (kind.name.to_owned(), kind.port, kind.path.to_owned())
            };
            let mut http_get = get.clone();
            http_get.port = IntOrString::Int(i32::from(listener_port));
            let (rewrite, scheme, kubelet_path) = if https {
                let unchanged = app_path.clone().unwrap_or_else(|| "/".into());
                (ProbeRewrite::Https, ProbeScheme::Https, unchanged)
            } else {
                http_get.path = Some(kubelet_path.clone());
                (ProbeRewrite::Http, ProbeScheme::Http, kubelet_path)
            };
            plan.probes.push(Probe {
                name,
                listener_port,
                scheme,
                kubelet_path,
                path: app_path.unwrap_or_else(|| "/".into()),
                app_port,
            });
            plan.edits.push(ProbeEdit {
                container: i,
                field: kind.field,
                rewrite,
                http_get,
            });
        }
    }
    Ok(plan)
}

/// The container port a probe names: a number, or the name of one of the container's ports.
fn probe_port(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok().filter(|p| *p != 0),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Some(n).filter(|p| *p != 0);
            }
            container
                .ports
                .as_ref()?
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
        }
    }
}

/// Collects JSON-patch operations; every path is built from unescaped tokens, so `/` and `~` in keys
/// are escaped (`~1`, `~0`).
#[derive(Default)]
struct PatchBuilder(Vec<PatchOperation>);

impl PatchBuilder {
    fn add(&mut self, path: &[&str], value: Value) {
        self.0.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(path.iter().copied()),
            value,
        }));
    }

    fn remove(&mut self, path: &[&str]) {
        self.0.push(PatchOperation::Remove(json_patch::RemoveOperation {
            path: PointerBuf::from_tokens(path.iter().copied()),
        }));
    }

    /// Adds `entries` to the string map at `map` (`/metadata/labels`), creating the map when absent.
    fn add_to_map(&mut self, map: &[&str], exists: bool, entries: &[(&str, String)]) {
        if exists {
            for (k, v) in entries {
                let mut path = map.to_vec();
                path.push(k);
                self.add(&path, Value::String(v.clone()));
            }
        } else {
            let object: serde_json::Map<String, Value> = entries
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::String(v.clone())))
                .collect();
            self.add(map, Value::Object(object));
        }
    }

    /// Appends `item` to the array at `array`, creating the array when absent.
    fn append(&mut self, array: &[&str], exists: bool, item: Value) {
        if exists {
            let mut path = array.to_vec();
            path.push("-");
            self.add(&path, item);
        } else {
            self.add(array, Value::Array(vec![item]));
        }
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("Kubernetes API types always serialise to JSON")
}

/// The patch that adds the sidecar to `pod` (created in `namespace`) as proxy `uuid`:
/// label `osm-proxy-uuid`, init container `osm-init`, sidecar `envoy`, the bootstrap volume, probes
/// rewritten by [`plan_probes`] (plus the `osm-healthcheck` container when a TCP probe needs it), and
/// the Prometheus annotations when the namespace has metrics enabled. Call it only after [`decide`] said [`InjectDecision::Inject`].
pub fn mutate(
    pod: &Pod,
    namespace: &Namespace,
    uuid: &str,
    config: &InjectConfig,
) -> Result<Injection, InjectError> {
    let ns = namespace_name(namespace);
    let object = || pod_label(pod, ns);
    let spec = pod.spec.as_ref().ok_or_else(|| InjectError::NoSpec(object()))?;
    let envoy_image = config.envoy_image();
    if envoy_image.is_empty() {
        return Err(InjectError::MissingImage("envoy"));
    }
    let init_image = config.init_image();
    if init_image.is_empty() {
        return Err(InjectError::MissingImage("init container"));
    }
    let metrics = switch(
        namespace.metadata.annotations.as_ref(),
        METRICS_ANNOTATION,
        || format!("namespace {ns}"),
    )?
    .unwrap_or(false);
    let plan = plan_probes(spec).map_err(|TooManyProbes| InjectError::TooManyProbes(object()))?;
    let init_args = init_args(pod, config, &plan.extra_ports, &object)?;
    let service_account = spec
        .service_account_name
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    let secret_name = bootstrap_secret_name(uuid);

    let mut patch = PatchBuilder::default();
    patch.add_to_map(
        &["metadata", "labels"],
        pod.metadata.labels.is_some(),
        &[(PROXY_UUID_LABEL, uuid.to_owned())],
    );
    if metrics {
        patch.add_to_map(
            &["metadata", "annotations"],
            pod.metadata.annotations.is_some(),
            &[
                (PROMETHEUS_SCRAPE_ANNOTATION, "true".into()),
                (PROMETHEUS_PORT_ANNOTATION, names::PROMETHEUS_PORT.to_string()),
                (PROMETHEUS_PATH_ANNOTATION, names::PROMETHEUS_SCRAPE_PATH.into()),
            ],
        );
    }

    for edit in &plan.edits {
        let index = edit.container.to_string();
        let base = ["spec", "containers", index.as_str(), edit.field];
        let get = |leaf: &'static str| [&base[..], &["httpGet", leaf]].concat();
        match edit.rewrite {
            ProbeRewrite::Http => {
                patch.add(&get("port"), json!(edit.http_get.port));
                patch.add(&get("path"), json!(edit.http_get.path));
            }
            ProbeRewrite::Https => patch.add(&get("port"), json!(edit.http_get.port)),
            ProbeRewrite::Tcp => {
                patch.remove(&[&base[..], &["tcpSocket"]].concat());
                patch.add(&[&base[..], &["httpGet"]].concat(), to_value(&edit.http_get));
            }
        }
    }

    patch.append(
        &["spec", "initContainers"],
        spec.init_containers.is_some(),
        to_value(&init_container(init_image, init_args, config)),
    );
    if !plan.healthcheck_ports.is_empty() {
        // Before the sidecar, as upstream orders them.
        patch.append(
            &["spec", "containers"],
            true,
            to_value(&healthcheck_container(init_image, &plan.healthcheck_ports)),
        );
    }
    patch.append(
        &["spec", "containers"],
        true,
        to_value(&envoy_container(
            envoy_image,
            &service_account,
            ns,
            &plan.probes,
            config,
        )),
    );
    patch.append(
        &["spec", "volumes"],
        spec.volumes.is_some(),
        to_value(&Volume {
            name: BOOTSTRAP_VOLUME_NAME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret_name.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        }),
    );

    Ok(Injection {
        patch: Patch(patch.0),
        proxy_uuid: uuid.to_owned(),
        bootstrap_secret_name: secret_name,
        probes: plan.probes,
        service_account,
    })
}

/// Pod annotation values first, then MeshConfig's, without duplicates (as upstream merges them).
fn merged<T: PartialEq>(first: Vec<T>, second: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(first.len() + second.len());
    for v in first.into_iter().chain(second) {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// `osm-init`'s arguments: every non-empty list, each validated as `osm-init` will parse it, so a bad
/// value refuses the Pod at admission instead of crash-looping its init container.
fn init_args(
    pod: &Pod,
    config: &InjectConfig,
    probe_ports: &[u16],
    object: &dyn Fn() -> String,
) -> Result<Vec<String>, InjectError> {
    let annotations = pod.metadata.annotations.as_ref();
    fn from_pod<T>(
        annotations: Option<&BTreeMap<String, String>>,
        key: &'static str,
        object: &dyn Fn() -> String,
        item: fn(&str) -> Result<T, osm_init::InitError>,
    ) -> Result<Vec<T>, InjectError> {
        let Some(value) = annotations.and_then(|a| a.get(key)) else {
            return Ok(Vec::new());
        };
        osm_init::parse_list(value, item).map_err(|source| InjectError::InvalidList {
            object: object(),
            key,
            source,
        })
    }
    fn from_mesh<T, S: AsRef<str>>(
        values: &[S],
        field: &'static str,
        item: impl Fn(&str) -> Result<T, osm_init::InitError>,
    ) -> Result<Vec<T>, InjectError> {
        values
            .iter()
            .map(|v| item(v.as_ref()))
            .collect::<Result<_, _>>()
            .map_err(|source| InjectError::InvalidMeshConfigList { field, source })
    }
    let cidr = |s: &str| s.trim().parse::<osm_init::Ipv4Cidr>();
    let iface = |s: &str| s.trim().parse::<osm_init::InterfaceName>();
    let traffic = &config.mesh_config.traffic;
    let mesh_ports = |ports: &[u16], field| {
        from_mesh(
            &ports.iter().map(u16::to_string).collect::<Vec<_>>(),
            field,
            osm_init::parse_port,
        )
    };

    let init = osm_init::InitConfig {
        outbound_ip_range_exclusions: merged(
            from_pod(annotations, OUTBOUND_IP_RANGE_EXCLUSION_ANNOTATION, object, cidr)?,
            from_mesh(
                &traffic.outbound_ip_range_exclusion_list,
                "outboundIPRangeExclusionList",
                cidr,
            )?,
        ),
        outbound_ip_range_inclusions: merged(
            from_pod(annotations, OUTBOUND_IP_RANGE_INCLUSION_ANNOTATION, object, cidr)?,
            from_mesh(
                &traffic.outbound_ip_range_inclusion_list,
                "outboundIPRangeInclusionList",
                cidr,
            )?,
        ),
        outbound_port_exclusions: merged(
            from_pod(
                annotations,
                OUTBOUND_PORT_EXCLUSION_ANNOTATION,
                object,
                osm_init::parse_port,
            )?,
            mesh_ports(&traffic.outbound_port_exclusion_list, "outboundPortExclusionList")?,
        ),
        // The probe ports beyond 15901-15904 (a second container's probes) must reach Envoy's probe
        // listeners unredirected, as those four always do.
        inbound_port_exclusions: merged(
            merged(
                from_pod(
                    annotations,
                    INBOUND_PORT_EXCLUSION_ANNOTATION,
                    object,
                    osm_init::parse_port,
                )?,
                mesh_ports(&traffic.inbound_port_exclusion_list, "inboundPortExclusionList")?,
            ),
            probe_ports.to_vec(),
        ),
        network_interface_exclusions: from_mesh(
            &traffic.network_interface_exclusion_list,
            "networkInterfaceExclusionList",
            iface,
        )?,
        ..osm_init::InitConfig::default()
    };

    let mut args = Vec::new();
    let mut flag = |name: &str, values: Vec<String>| {
        if !values.is_empty() {
            args.push(format!("--{name}={}", values.join(",")));
        }
    };
    let strings = |v: &[_]| -> Vec<String> { v.iter().map(ToString::to_string).collect() };
    flag(
        "outbound-ip-range-exclusion-list",
        strings(&init.outbound_ip_range_exclusions),
    );
    flag(
        "outbound-ip-range-inclusion-list",
        strings(&init.outbound_ip_range_inclusions),
    );
    flag(
        "outbound-port-exclusion-list",
        init.outbound_port_exclusions.iter().map(u16::to_string).collect(),
    );
    flag(
        "inbound-port-exclusion-list",
        init.inbound_port_exclusions.iter().map(u16::to_string).collect(),
    );
    flag(
        "network-interface-exclusion-list",
        init.network_interface_exclusions
            .iter()
            .map(|i| i.as_str().to_owned())
            .collect(),
    );
    Ok(args)
}

fn init_container(image: &str, args: Vec<String>, config: &InjectConfig) -> Container {
    Container {
        name: INIT_CONTAINER_NAME.into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["osm-init".into()]),
        args: Some(args),
        security_context: Some(SecurityContext {
            privileged: Some(config.mesh_config.sidecar.enable_privileged_init_container),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into()]),
                ..Capabilities::default()
            }),
            // iptables needs root in the pod's network namespace.
            run_as_non_root: Some(false),
            run_as_user: Some(0),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

fn container_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(port),
        ..ContainerPort::default()
    }
}

fn envoy_container(
    image: &str,
    service_account: &str,
    namespace: &str,
    probes: &[Probe],
    config: &InjectConfig,
) -> Container {
    let mut ports = vec![
        container_port("proxy-admin", names::ADMIN_PORT),
        container_port("proxy-inbound", names::INBOUND_PORT),
        container_port("proxy-metrics", names::PROMETHEUS_PORT),
    ];
    for p in probes {
        match PROBE_KINDS.iter().find(|k| k.port == p.listener_port) {
            Some(kind) => ports.push(container_port(kind.port_name, kind.port)),
            None => ports.push(container_port(
                &format!("probe-{}", p.listener_port),
                p.listener_port,
            )),
        }
    }
    // MeshConfig's quantities are the same JSON as Kubernetes'; a value that does not convert is left
    // out rather than refusing the Pod.
    let resources = config
        .mesh_config
        .sidecar
        .resources
        .as_ref()
        .and_then(|r| serde_json::to_value(r).ok())
        .and_then(|v| serde_json::from_value::<ResourceRequirements>(v).ok());
    Container {
        name: ENVOY_CONTAINER_NAME.into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["envoy".into()]),
        args: Some(vec![
            "--log-level".into(),
            config.mesh_config.sidecar.log_level.clone(),
            "--config-path".into(),
            format!("{BOOTSTRAP_MOUNT_PATH}/{BOOTSTRAP_KEY}"),
            "--service-cluster".into(),
            format!("{service_account}.{namespace}"),
        ]),
        ports: Some(ports),
        resources,
        security_context: Some(SecurityContext {
            run_as_user: Some(ENVOY_UID),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: BOOTSTRAP_VOLUME_NAME.into(),
            mount_path: BOOTSTRAP_MOUNT_PATH.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

/// Upstream's `osm-healthcheck` container, answering rewritten TCP probes on 15904: here
/// `osm-init healthcheck` from the init image, so no third image is needed.
fn healthcheck_container(init_image: &str, probe_ports: &[u16]) -> Container {
    let ports: Vec<String> = probe_ports.iter().map(u16::to_string).collect();
    Container {
        name: HEALTHCHECK_CONTAINER_NAME.into(),
        image: Some(init_image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["osm-init".into()]),
        args: Some(vec![
            "healthcheck".into(),
            "--listen-port".into(),
            names::HEALTHCHECK_PORT.to_string(),
            format!("--allowed-ports={}", ports.join(",")),
        ]),
        ports: Some(vec![ContainerPort {
            container_port: i32::from(names::HEALTHCHECK_PORT),
            ..ContainerPort::default()
        }]),
        ..Container::default()
    }
}

/// The Secret `envoy-bootstrap-config-<uuid>` in the Pod's namespace, key `bootstrap.yaml`: the Envoy
/// bootstrap of proxy `uuid` running as `service_account`, with node id = its xDS client certificate's
/// CN `<uuid>.sidecar.<sa>.<ns>.<trustDomain>`, a fresh certificate from `ca`, and `probes`' listeners.
/// Labelled with the uuid; no owner (the Pod has no uid yet at admission).
///
/// The Secret holds a private key: never log it.
pub fn bootstrap_secret(
    pod_namespace: &str,
    uuid: &str,
    service_account: &str,
    probes: &[Probe],
    config: &InjectConfig,
    ca: &CertificateAuthority,
) -> Result<Secret, InjectError> {
    if &config.trust_domain != ca.trust_domain() {
        return Err(InjectError::TrustDomainMismatch {
            config: config.trust_domain.to_string(),
            ca: ca.trust_domain().to_string(),
        });
    }
    let pod = osm_model::Pod {
        id: osm_model::PodRef::new(pod_namespace, uuid),
        service_account: service_account.to_owned(),
        proxy_uuid: Some(uuid.to_owned()),
        ip: None,
        labels: BTreeMap::new(),
        hostname: None,
        subdomain: None,
    };
    let bootstrap = osm_xds::proxy_bootstrap::render(
        ca,
        &pod,
        &config.ads_host,
        &config.ads_server_name,
        config.ads_api,
        probes,
    )
    .map_err(|source| InjectError::Bootstrap {
        uuid: uuid.to_owned(),
        source,
    })?;
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(bootstrap_secret_name(uuid)),
            namespace: Some(pod_namespace.to_owned()),
            labels: Some(BTreeMap::from([
                (PROXY_UUID_LABEL.to_owned(), uuid.to_owned()),
                (APP_NAME_LABEL.to_owned(), APP_NAME_VALUE.to_owned()),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            BOOTSTRAP_KEY.to_owned(),
            ByteString(bootstrap.into_bytes()),
        )])),
        ..Secret::default()
    })
}
