//! One manifest file → its validated documents.
//!
//! Everything that can be checked by looking at one document alone happens here: YAML syntax, the
//! CRD schema and semantic validation of our kinds (through `osm-api`), and the required fields and
//! name rules of the core kinds. A Deployment is expanded into its pods here too. What needs other
//! documents (namespaces, named target ports, duplicates) is left to [`crate::assemble`].

use osm_api::contract::{self, PROXY_UUID_LABEL, SIDECAR_INJECTION_ANNOTATION};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, PodSpec, Service, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use osm_api::MeshObject;
use osm_api::validate::Validate;
use osm_model::ObjectRef;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{Problem, Problems, SourceError};
use crate::names;

/// Pod (or pod template) annotation giving the workload's address(es) on a host without Kubernetes.
pub const WORKLOAD_IP_ANNOTATION: &str = "openservicemesh.io/workload-ip";
/// Most replicas a Deployment may ask for in a manifest directory (each becomes a pod in the input).
pub const MAX_REPLICAS: i32 = 1000;

/// A validated document, ready for assembly.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Document {
    /// 1-based among the file's non-empty documents.
    pub index: usize,
    /// `Kind namespace/name`, for messages.
    pub label: String,
    pub object: Object,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Object {
    Namespace(NamespaceInfo),
    ServiceAccount(ObjectRef),
    Service(LocalService),
    /// A Pod (one pod), a Deployment or a StatefulSet (its replicas).
    Workload {
        kind: &'static str,
        id: ObjectRef,
        pods: Vec<LocalPod>,
    },
    Mesh(Box<MeshObject>),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NamespaceInfo {
    pub name: String,
    /// The Namespace's labels: [`osm_api::contract::membership`] reads them.
    pub labels: Option<contract::Map>,
    pub injection: Option<bool>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LocalService {
    pub id: ObjectRef,
    pub cluster_ip: Option<IpAddr>,
    pub ports: Vec<LocalServicePort>,
    pub selector: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LocalServicePort {
    /// Position in `spec.ports`, for messages.
    pub index: usize,
    pub name: Option<String>,
    pub port: u16,
    pub target: TargetPort,
    pub app_protocol: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LocalPod {
    pub id: ObjectRef,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    /// The pod's own `sidecar-injection` annotation.
    pub injection: Option<bool>,
    pub ip: Option<IpAddr>,
    /// Named TCP container ports.
    pub named_ports: Vec<(String, u16)>,
    /// Where this pod's address came from, for messages about it.
    pub ip_field: String,
    /// `spec.hostname` and `spec.subdomain` (a StatefulSet's pods: their name and its `serviceName`).
    pub hostname: Option<String>,
    pub subdomain: Option<String>,
}

/// Parses and validates one file. `file` is the path shown in errors.
pub(crate) fn parse_file(file: &Path, bytes: &[u8]) -> Result<Vec<Document>, Vec<SourceError>> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        vec![SourceError::file(
            file,
            format!("not valid UTF-8 (byte {})", e.valid_up_to()),
        )]
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let values: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| vec![SourceError::file(file, yaml_message(&e))])?;
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let index = i + 1;
        let mut problems = Problems::default();
        let (label, object) = parse_document(file, index, value, &mut problems);
        if problems.is_empty() {
            if let Some(object) = object {
                docs.push(Document { index, label, object });
            }
        } else {
            let object = (!label.is_empty()).then_some(label);
            errors.extend(problems.0.into_iter().map(|p| SourceError {
                file: file.to_path_buf(),
                document: index,
                object: object.clone(),
                field: p.field,
                message: p.message,
            }));
        }
    }
    if errors.is_empty() { Ok(docs) } else { Err(errors) }
}

/// A YAML syntax error by position only: a source snippet could quote a Secret.
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let e = e.without_snippet();
    let mut text = e.to_string();
    // Keep messages on one line whatever the parser produced.
    text = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        // Advice for Rust callers, not for someone editing YAML.
        .replace("; use Option<String>", "");
    match e.location() {
        Some(loc) if !text.contains("line") => {
            format!(
                "invalid YAML at line {}, column {}: {text}",
                loc.line(),
                loc.column()
            )
        }
        _ => format!("invalid YAML: {text}"),
    }
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Kinds the core group and `apps` serve, with the one version we read.
fn core_version(group: &str, kind: &str) -> Option<&'static str> {
    match (group, kind) {
        ("", "Namespace" | "ServiceAccount" | "Service" | "Pod") => Some("v1"),
        ("apps", "Deployment" | "StatefulSet") => Some("apps/v1"),
        _ => None,
    }
}

/// Returns the object label and, when the document is one we read and valid, the object.
fn parse_document(
    file: &Path,
    index: usize,
    mut value: Value,
    problems: &mut Problems,
) -> (String, Option<Object>) {
    // Secrets first, before anything reads (or could quote) their contents.
    if str_at(&value, "kind") == Some("Secret") {
        tracing::debug!(file = %file.display(), document = index, "ignoring a Secret");
        return (String::new(), None);
    }
    let Value::Object(map) = &mut value else {
        problems.push(Problem::whole("document is not an object (a YAML mapping)"));
        return (String::new(), None);
    };
    let (api_version, kind) = match (
        map.get("apiVersion").and_then(Value::as_str),
        map.get("kind").and_then(Value::as_str),
    ) {
        (Some(a), Some(k)) if !a.is_empty() && !k.is_empty() => (a.to_string(), k.to_string()),
        (a, k) => {
            if a.is_none_or(str::is_empty) {
                problems.add("apiVersion", "Required value: apiVersion must be set");
            }
            if k.is_none_or(str::is_empty) {
                problems.add("kind", "Required value: kind must be set");
            }
            return (String::new(), None);
        }
    };
    let cluster_scoped = kind == "Namespace" && !api_version.contains('/');
    if !cluster_scoped {
        default_namespace(map);
    }
    let label = object_label(&kind, &value, cluster_scoped);
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    if let Some(served) = core_version(group, &kind) {
        if api_version != served {
            problems.add(
                "apiVersion",
                format!("no matches for kind {kind:?} in version {api_version:?} (served: {served})"),
            );
            return (label, None);
        }
        let object = match kind.as_str() {
            "Namespace" => decode::<Namespace>(&value, problems).and_then(|o| namespace(o, problems)),
            "ServiceAccount" => {
                decode::<ServiceAccount>(&value, problems).and_then(|o| service_account(o, problems))
            }
            "Service" => decode::<Service>(&value, problems).and_then(|o| service(o, problems)),
            "Pod" => decode::<Pod>(&value, problems).and_then(|o| pod(o, problems)),
            _ if value.get("spec").is_none_or(Value::is_null) => {
                problems.add("spec", "Required value");
                None
            }
            "StatefulSet" => stateful_set(value, problems),
            _ => decode::<Deployment>(&value, problems).and_then(|o| deployment(o, problems)),
        };
        return (label, object);
    }
    let object = mesh_object(file, index, value, problems);
    (label, object)
}

/// Objects without a namespace land in `default`, as `kubectl apply` does.
fn default_namespace(map: &mut Map<String, Value>) {
    let meta = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(meta) = meta
        && meta.get("namespace").is_none_or(Value::is_null)
    {
        meta.insert("namespace".into(), Value::String("default".into()));
    }
}

fn object_label(kind: &str, value: &Value, cluster_scoped: bool) -> String {
    let meta = value.get("metadata");
    let name = meta.and_then(|m| str_at(m, "name"));
    let namespace = meta.and_then(|m| str_at(m, "namespace")).unwrap_or("default");
    match (name, cluster_scoped) {
        (None, _) => kind.to_string(),
        (Some(name), true) => format!("{kind} {name}"),
        (Some(name), false) => format!("{kind} {namespace}/{name}"),
    }
}

fn decode<T: DeserializeOwned>(value: &Value, problems: &mut Problems) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let path = e.path().to_string();
            let field = (path != ".").then_some(path);
            problems.push(Problem {
                field,
                message: e.inner().to_string(),
            });
            None
        }
    }
}

/// Our CRD kinds: the CRD schema first (type errors read like the apiserver's), then decoding,
/// then semantic validation. `None` (with no problem) for kinds we do not know.
fn mesh_object(file: &Path, index: usize, value: Value, problems: &mut Problems) -> Option<Object> {
    if let Err(errs) = osm_api::schema::check_object(&value) {
        for e in errs {
            problems.add(e.field, e.message);
        }
        return None;
    }
    let (api_version, kind) = (
        str_at(&value, "apiVersion").unwrap_or_default().to_string(),
        str_at(&value, "kind").unwrap_or_default().to_string(),
    );
    let object = match MeshObject::from_value(value) {
        Ok(Some(object)) => object,
        Ok(None) => {
            tracing::debug!(
                file = %file.display(),
                document = index,
                %api_version,
                %kind,
                "ignoring a kind the local source does not read"
            );
            return None;
        }
        Err(e @ osm_api::MeshObjectError::UnsupportedVersion { .. }) => {
            problems.add("apiVersion", e.to_string());
            return None;
        }
        Err(e) => {
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            problems.push(Problem::whole(format!("{e}{cause}")));
            return None;
        }
    };
    object_meta(object.metadata(), names::dns1123_subdomain, problems);
    if let Err(errs) = object.validate() {
        for e in errs {
            problems.add(e.field, e.message);
        }
    }
    problems.is_empty().then(|| Object::Mesh(Box::new(object)))
}

/// Checks `metadata.name` with `name_rule` and `metadata.namespace` (when set) as a label.
fn object_meta(meta: &ObjectMeta, name_rule: fn(&str) -> Result<(), String>, problems: &mut Problems) {
    match meta.name.as_deref() {
        None | Some("") => problems.add("metadata.name", "Required value: name is required"),
        Some(name) => {
            if let Err(m) = name_rule(name) {
                problems.add("metadata.name", m);
            }
        }
    }
    if let Some(ns) = meta.namespace.as_deref()
        && let Err(m) = names::dns1123_label(ns)
    {
        problems.add("metadata.namespace", m);
    }
}

fn object_ref(meta: &ObjectMeta) -> ObjectRef {
    ObjectRef::new(
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// The sidecar-injection annotation, by upstream's rule ([`contract::injection_annotation`]).
fn injection_annotation(meta: &ObjectMeta, prefix: &str, problems: &mut Problems) -> Option<bool> {
    contract::injection_annotation(meta.annotations.as_ref()).unwrap_or_else(|e| {
        problems.add(
            format!("{prefix}metadata.annotations[{SIDECAR_INJECTION_ANNOTATION}]"),
            e.to_string(),
        );
        None
    })
}

fn namespace(ns: Namespace, problems: &mut Problems) -> Option<Object> {
    object_meta(&ns.metadata, names::dns1123_label, problems);
    let injection = injection_annotation(&ns.metadata, "", problems);
    let info = NamespaceInfo {
        name: ns.metadata.name.unwrap_or_default(),
        labels: ns.metadata.labels,
        injection,
    };
    problems.is_empty().then_some(Object::Namespace(info))
}

fn service_account(sa: ServiceAccount, problems: &mut Problems) -> Option<Object> {
    object_meta(&sa.metadata, names::dns1123_subdomain, problems);
    problems
        .is_empty()
        .then(|| Object::ServiceAccount(object_ref(&sa.metadata)))
}

fn port_number(value: i32, field: String, problems: &mut Problems) -> Option<u16> {
    match u16::try_from(value) {
        Ok(p) if p > 0 => Some(p),
        _ => {
            problems.add(
                field,
                format!("Invalid value: {value}: must be between 1 and 65535, inclusive"),
            );
            None
        }
    }
}

fn service(svc: Service, problems: &mut Problems) -> Option<Object> {
    object_meta(&svc.metadata, names::dns1035_label, problems);
    let spec = svc.spec.unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        // A DNS alias to something outside: no ports, no pods, nothing for the mesh.
        tracing::debug!(service = ?svc.metadata.name, "ignoring an ExternalName Service");
        return None;
    }
    let cluster_ip = match spec.cluster_ip.as_deref() {
        None | Some("") | Some("None") => None,
        Some(ip) => match ip.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                problems.add(
                    "spec.clusterIP",
                    format!("Invalid value: {ip:?}: must be a valid IP address or \"None\""),
                );
                None
            }
        },
    };
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let k8s_ports = spec.ports.unwrap_or_default();
    if k8s_ports.is_empty() && !headless {
        problems.add("spec.ports", "Required value");
    }
    let port_count = k8s_ports.len();
    let mut ports = Vec::new();
    let mut seen_names = BTreeSet::new();
    let mut seen_ports = BTreeSet::new();
    for (i, p) in k8s_ports.into_iter().enumerate() {
        let at = |f: &str| format!("spec.ports[{i}].{f}");
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        if !["TCP", "UDP", "SCTP"].contains(&protocol) {
            problems.add(
                at("protocol"),
                format!("Unsupported value: {protocol:?}: supported values: \"SCTP\", \"TCP\", \"UDP\""),
            );
        }
        match p.name.as_deref().filter(|n| !n.is_empty()) {
            None if port_count > 1 => problems.add(
                at("name"),
                "Required value: must be specified when there is more than one port",
            ),
            None => {}
            Some(name) => {
                if let Err(m) = names::dns1123_label(name) {
                    problems.add(at("name"), m);
                }
                if !seen_names.insert(name.to_string()) {
                    problems.add(at("name"), format!("Duplicate value: {name:?}"));
                }
            }
        }
        let port = port_number(p.port, at("port"), problems);
        if let Some(port) = port
            && !seen_ports.insert((port, protocol.to_string()))
        {
            problems.add(
                at("port"),
                format!("Duplicate value: {{\"port\": {port}, \"protocol\": {protocol:?}}}"),
            );
        }
        let target = match &p.target_port {
            None => port.map(TargetPort::Number),
            Some(IntOrString::Int(n)) if *n == 0 => port.map(TargetPort::Number),
            Some(IntOrString::Int(n)) => port_number(*n, at("targetPort"), problems).map(TargetPort::Number),
            Some(IntOrString::String(name)) => match names::iana_svc_name(name) {
                Ok(()) => Some(TargetPort::Name(name.clone())),
                Err(m) => {
                    problems.add(at("targetPort"), m);
                    None
                }
            },
        };
        if protocol != "TCP" {
            // The mesh proxies TCP only; UDP and SCTP ports are left alone, as upstream does.
            continue;
        }
        if let (Some(port), Some(target)) = (port, target) {
            ports.push(LocalServicePort {
                index: i,
                name: p.name.filter(|n| !n.is_empty()),
                port,
                target,
                app_protocol: p.app_protocol,
            });
        }
    }
    let service = LocalService {
        id: object_ref(&svc.metadata),
        cluster_ip,
        ports,
        selector: spec.selector.unwrap_or_default(),
    };
    problems.is_empty().then_some(Object::Service(service))
}

/// The pod-level parts shared by a Pod and a Deployment's template; `prefix` locates the template.
struct PodParts {
    service_account: String,
    named_ports: Vec<(String, u16)>,
}

fn pod_spec(spec: Option<&PodSpec>, prefix: &str, problems: &mut Problems) -> PodParts {
    let mut parts = PodParts {
        service_account: "default".to_string(),
        named_ports: Vec::new(),
    };
    let Some(spec) = spec else {
        problems.add(format!("{prefix}spec"), "Required value");
        return parts;
    };
    if spec.containers.is_empty() {
        problems.add(format!("{prefix}spec.containers"), "Required value");
    }
    for (ci, c) in spec.containers.iter().enumerate() {
        for (pi, p) in c.ports.iter().flatten().enumerate() {
            let at = |f: &str| format!("{prefix}spec.containers[{ci}].ports[{pi}].{f}");
            let number = port_number(p.container_port, at("containerPort"), problems);
            let tcp = p.protocol.as_deref().unwrap_or("TCP") == "TCP";
            if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                match names::iana_svc_name(name) {
                    Err(m) => problems.add(at("name"), m),
                    Ok(()) => {
                        if let (Some(number), true) = (number, tcp) {
                            parts.named_ports.push((name.to_string(), number));
                        }
                    }
                }
            }
        }
    }
    let sa = spec
        .service_account_name
        .as_deref()
        .or(spec.service_account.as_deref())
        .filter(|s| !s.is_empty());
    if let Some(sa) = sa {
        if let Err(m) = names::dns1123_subdomain(sa) {
            problems.add(format!("{prefix}spec.serviceAccountName"), m);
        }
        parts.service_account = sa.to_string();
    }
    parts
}

fn parse_ip(value: &str, field: &str, problems: &mut Problems) -> Option<IpAddr> {
    match value.trim().parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            problems.add(
                field,
                format!("Invalid value: {value:?}: must be a valid IP address"),
            );
            None
        }
    }
}

fn uuid_label(labels: &BTreeMap<String, String>, prefix: &str, problems: &mut Problems) {
    if let Some(uuid) = labels.get(PROXY_UUID_LABEL)
        && let Err(m) = names::dns1123_label(uuid)
    {
        problems.add(format!("{prefix}metadata.labels[{PROXY_UUID_LABEL}]"), m);
    }
}

fn pod(pod: Pod, problems: &mut Problems) -> Option<Object> {
    object_meta(&pod.metadata, names::dns1123_subdomain, problems);
    let parts = pod_spec(pod.spec.as_ref(), "", problems);
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    uuid_label(&labels, "", problems);
    let injection = injection_annotation(&pod.metadata, "", problems);
    let annotation_field = format!("metadata.annotations[{WORKLOAD_IP_ANNOTATION}]");
    let from_annotation = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(WORKLOAD_IP_ANNOTATION))
        .and_then(|v| parse_ip(v, &annotation_field, problems));
    let from_status = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .filter(|s| !s.is_empty())
        .and_then(|v| parse_ip(v, "status.podIP", problems));
    let (ip, ip_field) = match (from_annotation, from_status) {
        (Some(a), Some(s)) if a != s => {
            problems.add(
                annotation_field,
                format!("Invalid value: \"{a}\": disagrees with status.podIP {s}"),
            );
            (None, String::new())
        }
        (Some(a), _) => (Some(a), annotation_field),
        (None, Some(s)) => (Some(s), "status.podIP".to_string()),
        (None, None) => (None, String::new()),
    };
    let id = object_ref(&pod.metadata);
    let local = LocalPod {
        id: id.clone(),
        service_account: parts.service_account,
        labels,
        injection,
        ip,
        named_ports: parts.named_ports,
        ip_field,
        hostname: pod
            .spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .filter(|h| !h.is_empty()),
        subdomain: pod
            .spec
            .as_ref()
            .and_then(|s| s.subdomain.clone())
            .filter(|d| !d.is_empty()),
    };
    problems.is_empty().then(|| Object::Workload {
        kind: "Pod",
        id,
        pods: vec![local],
    })
}

/// Does `selector` select a pod with `labels`?
fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> Result<bool, String> {
    for (k, v) in selector.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return Ok(false);
        }
    }
    for r in selector.match_expressions.iter().flatten() {
        let value = labels.get(&r.key);
        let values = r.values.as_deref().unwrap_or_default();
        let ok = match r.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => return Err(format!("{other:?} is not a valid label selector operator")),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A StatefulSet: its replicas as a Deployment's (`<name>-<i>`, the same checks), each named
/// `<pod>.<serviceName>` through its headless Service, as the StatefulSet controller sets a pod's
/// `hostname` and `subdomain`.
fn stateful_set(mut value: Value, problems: &mut Problems) -> Option<Object> {
    let service_name = value
        .pointer("/spec/serviceName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    // What a Deployment also has; the rest (serviceName, volumeClaimTemplates, …) does not matter here.
    if let Some(spec) = value.get_mut("spec").and_then(Value::as_object_mut) {
        spec.retain(|k, _| matches!(k.as_str(), "replicas" | "selector" | "template"));
    }
    value["kind"] = Value::from("Deployment");
    let Object::Workload { id, mut pods, .. } =
        decode::<Deployment>(&value, problems).and_then(|o| deployment(o, problems))?
    else {
        return None;
    };
    for pod in &mut pods {
        pod.hostname = Some(pod.id.name.clone());
        pod.subdomain = service_name.clone();
    }
    Some(Object::Workload {
        kind: "StatefulSet",
        id,
        pods,
    })
}

fn deployment(deploy: Deployment, problems: &mut Problems) -> Option<Object> {
    object_meta(&deploy.metadata, names::dns1123_subdomain, problems);
    let spec = deploy.spec;
    let replicas = spec.replicas.unwrap_or(1);
    if replicas < 0 {
        problems.add(
            "spec.replicas",
            format!("Invalid value: {replicas}: must be greater than or equal to 0"),
        );
    } else if replicas > MAX_REPLICAS {
        problems.add(
            "spec.replicas",
            format!("Invalid value: {replicas}: a manifest directory allows at most {MAX_REPLICAS}"),
        );
    }
    let template_meta = spec.template.metadata.clone().unwrap_or_default();
    let labels = template_meta.labels.clone().unwrap_or_default();
    let empty_selector = spec.selector.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && spec.selector.match_expressions.as_ref().is_none_or(Vec::is_empty);
    if empty_selector {
        problems.add(
            "spec.selector",
            "Invalid value: empty selector is invalid for deployment",
        );
    } else {
        match selector_matches(&spec.selector, &labels) {
            Ok(true) => {}
            Ok(false) => problems.add(
                "spec.template.metadata.labels",
                "Invalid value: `selector` does not match template `labels`",
            ),
            Err(m) => problems.add("spec.selector.matchExpressions", m),
        }
    }
    if labels.contains_key(PROXY_UUID_LABEL) {
        problems.add(
            format!("spec.template.metadata.labels[{PROXY_UUID_LABEL}]"),
            "must not be set in a pod template: every replica gets its own, derived from its name",
        );
    }
    let prefix = "spec.template.";
    let parts = pod_spec(spec.template.spec.as_ref(), prefix, problems);
    let injection = injection_annotation(&template_meta, prefix, problems);
    let ips_field = format!("spec.template.metadata.annotations[{WORKLOAD_IP_ANNOTATION}]");
    let ips: Option<Vec<Option<IpAddr>>> = template_meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(WORKLOAD_IP_ANNOTATION))
        .map(|list| {
            list.split(',')
                .map(|ip| parse_ip(ip, &ips_field, problems))
                .collect()
        });
    let replicas = usize::try_from(replicas.clamp(0, MAX_REPLICAS)).unwrap_or(0);
    if let Some(ips) = &ips
        && ips.len() != replicas
    {
        problems.add(
            &ips_field,
            format!(
                "lists {} address(es) for {replicas} replica(s): give one per replica, comma-separated",
                ips.len()
            ),
        );
    }
    let id = object_ref(&deploy.metadata);
    if !problems.is_empty() {
        return None;
    }
    let mut pods = Vec::with_capacity(replicas);
    for i in 0..replicas {
        let name = format!("{}-{i}", id.name);
        if let Err(m) = names::dns1123_subdomain(&name) {
            problems.add("metadata.name", format!("pod name {m}"));
            return None;
        }
        pods.push(LocalPod {
            id: ObjectRef::new(&id.namespace, name),
            service_account: parts.service_account.clone(),
            labels: labels.clone(),
            injection,
            ip: ips.as_ref().and_then(|ips| ips.get(i).copied().flatten()),
            named_ports: parts.named_ports.clone(),
            ip_field: ips_field.clone(),
            hostname: None,
            subdomain: None,
        });
    }
    Some(Object::Workload {
        kind: "Deployment",
        id,
        pods,
    })
}
