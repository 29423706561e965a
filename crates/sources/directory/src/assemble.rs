//! Validated documents of every file → one [`MeshInput`], plus the problems that only show across
//! documents: an object defined twice, two pods with one address or proxy uuid, a named target port
//! no selected pod declares.
//!
//! Monitoring and injection rules (see the crate docs) are applied here, because they need the
//! Namespace objects. Cross-document problems are reported against one document — the one in a
//! *fresh* file (changed since the served state) when one is involved — so the caller can put that
//! file back to its last good contents and try again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use osm_api::MeshObject;
use osm_api::contract::{self, InjectionRequest, MESH_CONFIG_NAME, Membership, PROXY_UUID_LABEL};
use osm_model::{AppProtocol, MeshInput, ObjectRef, Pod, Service, ServicePort};

use crate::document::{Document, LocalPod, LocalService, NamespaceInfo, Object, TargetPort};
use crate::error::SourceError;

/// Everything read from a manifest directory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadResult {
    /// The model's input: objects of monitored namespaces, the mesh configuration.
    pub input: MeshInput,
    /// Valid objects of our kinds the model does not use (yet): MeshRootCertificates, MeshConfigs
    /// other than `osm-mesh-config`, and Retry policies
    /// of monitored namespaces. In file order.
    pub extra: Vec<MeshObject>,
    /// What the objects ask for that the control plane does not do yet
    /// ([`osm_api::unsupported`]): each located like an error (file, document, object, field), but
    /// the object is served. In file order.
    pub warnings: Vec<SourceError>,
}

/// Mesh-wide settings of a load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    pub mesh_name: String,
    pub trust_domain: String,
}

/// One file's documents as assembly sees them.
pub(crate) struct FileDocs<'a> {
    pub file: &'a Path,
    pub docs: &'a [Document],
    /// Changed since the served state: blamed first for cross-document problems.
    pub fresh: bool,
}

/// The sidecar proxy uuid of a pod that has no `osm-proxy-uuid` label: a UUIDv5 in the URL namespace
/// of `osm-proxy-uuid:<namespace>/<name>`, so it is stable across restarts and reloads
/// (`uuidgen --sha1 --namespace @url --name osm-proxy-uuid:bookstore/bookstore-v1-0`).
pub fn derived_proxy_uuid(namespace: &str, name: &str) -> String {
    let key = format!("osm-proxy-uuid:{namespace}/{name}");
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, key.as_bytes()).to_string()
}

/// Where a document is: (file index, document position in that file).
type At = (usize, usize);

struct Claim {
    at: At,
    field: String,
    what: String,
}

/// Names that must be unique (objects, addresses, uuids) → who claims them.
#[derive(Default)]
struct Claims(BTreeMap<String, Vec<Claim>>);

impl Claims {
    fn add(&mut self, key: String, at: At, field: impl Into<String>, what: impl Into<String>) {
        self.0.entry(key).or_default().push(Claim {
            at,
            field: field.into(),
            what: what.into(),
        });
    }

    /// One error per extra claimant. The kept claim is the first in a file that is not fresh, so a
    /// fresh file is the one blamed; among fresh files, the first in path order is kept.
    fn check(self, files: &[FileDocs<'_>], errors: &mut Vec<(usize, SourceError)>) {
        for claims in self.0.into_values().filter(|c| c.len() > 1) {
            let keep = claims.iter().position(|c| !files[c.at.0].fresh).unwrap_or(0);
            let winner = &claims[keep];
            let (wf, wd) = winner.at;
            let winner_doc = &files[wf].docs[wd];
            for (_, c) in claims.iter().enumerate().filter(|(i, _)| *i != keep) {
                let doc = &files[c.at.0].docs[c.at.1];
                errors.push((
                    c.at.0,
                    SourceError {
                        file: files[c.at.0].file.to_path_buf(),
                        document: doc.index,
                        object: Some(doc.label.clone()),
                        field: Some(c.field.clone()),
                        message: format!(
                            "Duplicate value: {} is already defined by {} ({}, document {})",
                            c.what,
                            winner_doc.label,
                            files[wf].file.display(),
                            winner_doc.index
                        ),
                    },
                ));
            }
        }
    }
}

/// Upstream's membership rule, with one local-mode default: a namespace without a Namespace object
/// or without a `monitored-by` label is meshed (no `osm namespace add` runs on a plain host).
fn is_monitored(info: Option<&NamespaceInfo>, mesh_name: &str) -> bool {
    info.is_none_or(|ns| {
        matches!(
            contract::membership(ns.labels.as_ref(), mesh_name),
            Membership::Monitored | Membership::Unlabelled
        )
    })
}

/// Builds the input from every file's documents (in path order). Errors come with the index of the
/// file they belong to; when there are any, the result is not to be served.
pub(crate) fn assemble(
    files: &[FileDocs<'_>],
    settings: &Settings,
) -> (LoadResult, Vec<(usize, SourceError)>) {
    let mut errors = Vec::new();
    let mut claims = Claims::default();
    let mut namespaces: BTreeMap<&str, &NamespaceInfo> = BTreeMap::new();
    let docs = || {
        files
            .iter()
            .enumerate()
            .flat_map(|(f, fd)| fd.docs.iter().enumerate().map(move |(d, doc)| ((f, d), doc)))
    };

    for (at, doc) in docs() {
        match &doc.object {
            Object::Namespace(ns) => {
                claims.add(format!("Namespace/{}", ns.name), at, "metadata.name", &doc.label);
                namespaces.insert(&ns.name, ns);
            }
            Object::ServiceAccount(id) => {
                claims.add(format!("ServiceAccount/{id}"), at, "metadata.name", &doc.label);
            }
            Object::Service(svc) => {
                claims.add(format!("Service/{}", svc.id), at, "metadata.name", &doc.label);
                if let Some(ip) = svc.cluster_ip {
                    claims.add(
                        format!("clusterIP/{ip}"),
                        at,
                        "spec.clusterIP",
                        format!("clusterIP {ip}"),
                    );
                }
            }
            Object::Workload { kind, id, pods } => {
                if *kind != "Pod" {
                    claims.add(format!("{kind}/{id}"), at, "metadata.name", &doc.label);
                }
                for pod in pods {
                    claims.add(
                        format!("Pod/{}", pod.id),
                        at,
                        "metadata.name",
                        format!("Pod {}", pod.id),
                    );
                    if let Some(ip) = pod.ip {
                        claims.add(
                            format!("podIP/{ip}"),
                            at,
                            pod.ip_field.as_str(),
                            format!("address {ip} of Pod {}", pod.id),
                        );
                    }
                }
            }
            Object::Mesh(object) => {
                let id = ObjectRef::new(object.namespace().unwrap_or("default"), object.name());
                if matches!(**object, MeshObject::MeshConfig(_)) && object.name() == MESH_CONFIG_NAME {
                    // One mesh, one configuration, whatever namespace it was written in.
                    claims.add(
                        "MeshConfig/osm-mesh-config".into(),
                        at,
                        "metadata.name",
                        &doc.label,
                    );
                } else {
                    claims.add(format!("{}/{id}", object.kind()), at, "metadata.name", &doc.label);
                }
            }
        }
    }

    let monitored = |ns: &str| is_monitored(namespaces.get(ns).copied(), &settings.mesh_name);
    let mut input = MeshInput::new(settings.trust_domain.as_str());
    let mut extra = Vec::new();
    let mut warnings = Vec::new();

    // Pods of monitored namespaces, with their sidecar decision.
    let mut local_pods: BTreeMap<&str, Vec<&LocalPod>> = BTreeMap::new();
    for (at, doc) in docs() {
        let Object::Workload { pods, .. } = &doc.object else {
            continue;
        };
        for pod in pods.iter().filter(|p| monitored(&p.id.namespace)) {
            local_pods.entry(&pod.id.namespace).or_default().push(pod);
            let on_namespace = namespaces
                .get(pod.id.namespace.as_str())
                .and_then(|ns| ns.injection);
            // Upstream's rule; unlike upstream, a pod nobody annotated gets a sidecar (local mode
            // has no `osm namespace add` to annotate its namespace).
            let injected = match contract::injection_request(pod.injection, on_namespace) {
                InjectionRequest::Inject | InjectionRequest::NotRequested => true,
                InjectionRequest::DisabledOnPod | InjectionRequest::DisabledOnNamespace => false,
            };
            let mut labels = pod.labels.clone();
            let proxy_uuid = injected.then(|| {
                labels
                    .entry(PROXY_UUID_LABEL.to_string())
                    .or_insert_with(|| derived_proxy_uuid(&pod.id.namespace, &pod.id.name))
                    .clone()
            });
            if let Some(uuid) = &proxy_uuid {
                claims.add(
                    format!("uuid/{uuid}"),
                    at,
                    format!("metadata.labels[{PROXY_UUID_LABEL}]"),
                    format!("osm-proxy-uuid {uuid} of Pod {}", pod.id),
                );
            }
            input.pods.insert(
                pod.id.clone(),
                Pod {
                    id: pod.id.clone(),
                    service_account: pod.service_account.clone(),
                    proxy_uuid,
                    ip: pod.ip,
                    labels,
                    hostname: pod.hostname.clone(),
                    subdomain: pod.subdomain.clone(),
                },
            );
        }
    }

    for (at, doc) in docs() {
        match &doc.object {
            Object::Service(svc) if monitored(&svc.id.namespace) => {
                let pods = local_pods
                    .get(svc.id.namespace.as_str())
                    .map_or(&[][..], Vec::as_slice);
                match service(svc, pods) {
                    Ok(s) => {
                        input.services.insert(s.id.clone(), s);
                    }
                    Err(problems) => errors.extend(problems.into_iter().map(|(field, message)| {
                        (
                            at.0,
                            SourceError {
                                file: files[at.0].file.to_path_buf(),
                                document: doc.index,
                                object: Some(doc.label.clone()),
                                field: Some(field),
                                message,
                            },
                        )
                    })),
                }
            }
            Object::Mesh(object) => {
                mesh_object(object, &monitored, &mut input, &mut extra);
                warnings.extend(
                    osm_api::unsupported::warnings(object)
                        .into_iter()
                        .map(|w| SourceError {
                            file: files[at.0].file.to_path_buf(),
                            document: doc.index,
                            object: Some(doc.label.clone()),
                            field: w.field.map(str::to_owned),
                            message: match w.field {
                                Some(_) => format!("not supported yet, accepted and ignored: {}", w.effect),
                                None => format!("kind not supported yet, accepted and ignored: {}", w.effect),
                            },
                        }),
                );
            }
            _ => {}
        }
    }

    claims.check(files, &mut errors);
    errors.sort_by(|a, b| a.1.cmp(&b.1));
    (
        LoadResult {
            input,
            extra,
            warnings,
        },
        errors,
    )
}

/// A Service for the model, its named target ports resolved against the pods it selects.
fn service(svc: &LocalService, pods: &[&LocalPod]) -> Result<Service, Vec<(String, String)>> {
    let selected: Vec<&LocalPod> = if svc.selector.is_empty() {
        Vec::new()
    } else {
        pods.iter()
            .copied()
            .filter(|p| svc.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
            .collect()
    };
    let mut problems = Vec::new();
    let mut ports = Vec::new();
    for p in &svc.ports {
        let target_port = match &p.target {
            TargetPort::Number(n) => *n,
            TargetPort::Name(name) => {
                let numbers: BTreeSet<u16> = selected
                    .iter()
                    .flat_map(|pod| pod.named_ports.iter())
                    .filter(|(n, _)| n == name)
                    .map(|(_, number)| *number)
                    .collect();
                let field = format!("spec.ports[{}].targetPort", p.index);
                match numbers.len() {
                    1 => *numbers.first().expect("one element"),
                    0 => {
                        problems.push((
                            field,
                            format!(
                                "Invalid value: {name:?}: no pod selected by this Service declares a \
                                 container port with that name"
                            ),
                        ));
                        continue;
                    }
                    _ => {
                        let list: Vec<String> = numbers.iter().map(u16::to_string).collect();
                        problems.push((
                            field,
                            format!(
                                "Invalid value: {name:?}: the selected pods declare it as different ports ({})",
                                list.join(", ")
                            ),
                        ));
                        continue;
                    }
                }
            }
        };
        ports.push(ServicePort {
            name: p.name.clone(),
            port: p.port,
            target_port,
            protocol: AppProtocol::detect(p.app_protocol.as_deref(), p.name.as_deref()),
        });
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Service {
        id: svc.id.clone(),
        cluster_ip: svc.cluster_ip,
        ports,
        selector: svc.selector.clone(),
    })
}

fn mesh_object(
    object: &MeshObject,
    monitored: &dyn Fn(&str) -> bool,
    input: &mut MeshInput,
    extra: &mut Vec<MeshObject>,
) {
    let id = ObjectRef::new(object.namespace().unwrap_or("default"), object.name());
    // Mesh-wide kinds live wherever the user put them; policies only count in monitored namespaces.
    match object {
        MeshObject::MeshConfig(mc) if object.name() == MESH_CONFIG_NAME => {
            input.mesh_config = mc.spec.clone();
            return;
        }
        MeshObject::MeshConfig(_) | MeshObject::MeshRootCertificate(_) => {
            extra.push(object.clone());
            return;
        }
        _ => {}
    }
    if !monitored(&id.namespace) {
        tracing::debug!(kind = object.kind(), %id, "not monitored: namespace is ignored or another mesh's");
        return;
    }
    match object {
        MeshObject::TrafficTarget(o) => {
            input.traffic_targets.insert(id, o.spec.clone());
        }
        MeshObject::HTTPRouteGroup(o) => {
            input.http_route_groups.insert(id, o.spec.clone());
        }
        MeshObject::TCPRoute(o) => {
            input.tcp_routes.insert(id, o.spec.clone());
        }
        MeshObject::TrafficSplit(o) => {
            input.traffic_splits.insert(id, o.spec.clone());
        }
        MeshObject::Egress(o) => {
            input.egresses.insert(id, o.spec.clone());
        }
        MeshObject::IngressBackend(o) => {
            input.ingress_backends.insert(id, o.spec.clone());
        }
        MeshObject::UpstreamTrafficSetting(o) => {
            input.upstream_traffic_settings.insert(id, o.spec.clone());
        }
        MeshObject::Retry(o) => {
            input.retries.insert(id, o.spec.clone());
        }
        other => extra.push(other.clone()),
    }
}
