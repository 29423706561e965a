//! IngressBackend policies (`policy.openservicemesh.io/v1alpha1`) → what each backend pod admits from
//! outside the mesh ([`IngressBackendIntent`]), and each policy's status.
//!
//! Upstream OSM's semantics (`pkg/catalog/ingress.go`): a backend names a Service in the policy's
//! namespace and the application port (`port.number`, the pod's port); `Service` sources admit their
//! endpoints' addresses, `IPRange` sources their CIDR, and no such source admits any address. `http`
//! cannot tell clients apart beyond their address; `https` terminates TLS with the backend's service
//! certificate and, unless `skipClientCertValidation`, admits only a client certificate from the mesh CA
//! whose principal is an `AuthenticatedPrincipal` source. Where upstream misbehaved we differ: a
//! `Service` source without endpoints fails that source only (upstream dropped the whole policy), two
//! policies for one backend port keep the first instead of a listener Envoy refuses, and a backend
//! port may also be given as the Service's port.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use osm_api::policy::{
    IngressBackendSpec, IngressBackendStatus, KIND_AUTHENTICATED_PRINCIPAL, KIND_IP_RANGE, KIND_SERVICE,
    PROTOCOL_HTTPS,
};

use crate::input::{MeshInput, ObjectRef, Service, ServiceRef};
use crate::intent::{IngressBackendIntent, IngressClients, IngressTransport, IpRange};

/// `status.currentStatus` values, as upstream writes them.
pub const STATUS_COMMITTED: &str = "committed";
pub const STATUS_ERROR: &str = "error";
/// `status.reason` of a policy applied in full.
pub const REASON_COMMITTED: &str = "successfully committed by the system";

/// What one backend entry of a policy admits, before it is matched to a pod's ports.
#[derive(Clone, Debug)]
struct Backend {
    policy: ObjectRef,
    /// `port.number`: the pod's port, or one of the Service's ports.
    port: u16,
    source_ranges: Vec<IpRange>,
    transport: IngressTransport,
}

/// Every IngressBackend read once: backends by Service, the Services whose endpoints are sources, and
/// each policy's status.
#[derive(Default)]
pub(crate) struct IngressIndex {
    by_service: HashMap<ServiceRef, Vec<Backend>>,
    /// Services named as `Service` sources: their endpoints are in the intents.
    sources: BTreeSet<ServiceRef>,
    /// Services named as backends: their ports decide which pod port a backend means.
    backends: BTreeSet<ServiceRef>,
    pub(crate) status: BTreeMap<ObjectRef, IngressBackendStatus>,
}

impl IngressIndex {
    /// Reads every policy; `endpoints_of` gives a Service's ready addresses. Empty when the feature
    /// flag `enableIngressBackendPolicy` is off. Problems are pushed to `warnings`, naming the object.
    pub(crate) fn new(
        input: &MeshInput,
        endpoints_of: impl Fn(&ServiceRef) -> Vec<std::net::IpAddr>,
        warnings: &mut Vec<String>,
    ) -> Self {
        let mut index = Self::default();
        if !input.mesh_config.feature_flags.enable_ingress_backend_policy {
            if !input.ingress_backends.is_empty() {
                warnings.push(format!(
                    "{} IngressBackend policies are not applied: featureFlags.enableIngressBackendPolicy is false",
                    input.ingress_backends.len()
                ));
            }
            return index;
        }
        // (service, port) → the policy that admits it first.
        let mut claimed: HashMap<(ServiceRef, u16), ObjectRef> = HashMap::new();
        for (id, spec) in &input.ingress_backends {
            // Recorded first: a source or backend appearing later must bring the policy to life.
            for (i, source) in spec.sources.iter().enumerate() {
                if source.kind == KIND_SERVICE {
                    index.sources.insert(ServiceRef::new(
                        source.namespace.as_deref().unwrap_or_default(),
                        &source.name,
                    ));
                } else if source.kind != KIND_AUTHENTICATED_PRINCIPAL && source.kind != KIND_IP_RANGE {
                    warnings.push(format!(
                        "IngressBackend {id}: spec.sources[{i}].kind {:?} is not supported",
                        source.kind
                    ));
                }
            }
            for b in &spec.backends {
                index.backends.insert(ServiceRef::new(&id.namespace, &b.name));
            }
            let mut errors = Vec::new();
            let Some(source_ranges) = read_sources(input, id, spec, &endpoints_of, &mut errors, warnings)
            else {
                index.set_status(id, errors, warnings);
                continue;
            };
            let principals: BTreeSet<String> = spec
                .sources
                .iter()
                .filter(|s| s.kind == KIND_AUTHENTICATED_PRINCIPAL)
                .map(|s| s.name.clone())
                .collect();
            for (i, m) in spec.matches.iter().enumerate() {
                warnings.push(format!(
                    "IngressBackend {id}: spec.matches[{i}] ({} {}) is not supported yet and is not applied",
                    m.kind, m.name
                ));
            }
            for (i, b) in spec.backends.iter().enumerate() {
                let service = ServiceRef::new(&id.namespace, &b.name);
                let Some(svc) = input.services.get(&service) else {
                    errors.push(format!("backend service {service} does not exist"));
                    continue;
                };
                if !names_port(svc, b.port.number) {
                    errors.push(format!(
                        "backend service {service} has no port or target port {}",
                        b.port.number
                    ));
                    continue;
                }
                if let Some(first) = claimed.get(&(service.clone(), b.port.number)) {
                    errors.push(format!(
                        "backend {service} port {} is already admitted by IngressBackend {first}",
                        b.port.number
                    ));
                    continue;
                }
                claimed.insert((service.clone(), b.port.number), id.clone());
                let transport = if b.port.protocol.eq_ignore_ascii_case(PROTOCOL_HTTPS) {
                    let tls = b.tls.clone().unwrap_or_default();
                    let clients = if tls.skip_client_cert_validation {
                        IngressClients::Unverified
                    } else {
                        if principals.is_empty() {
                            warnings.push(format!(
                                "IngressBackend {id}: spec.backends[{i}] is https with client certificate \
                                 validation but no AuthenticatedPrincipal source; no client is admitted"
                            ));
                        }
                        IngressClients::Principals(principals.clone())
                    };
                    let mut sni_hosts = tls.sni_hosts.clone();
                    sni_hosts.sort();
                    sni_hosts.dedup();
                    IngressTransport::Https { sni_hosts, clients }
                } else {
                    if source_ranges.is_empty() {
                        warnings.push(format!(
                            "IngressBackend {id}: spec.backends[{i}] is http and no Service or IPRange source \
                             restricts its clients; any address may reach {service}"
                        ));
                    }
                    IngressTransport::Http
                };
                index.by_service.entry(service).or_default().push(Backend {
                    policy: id.clone(),
                    port: b.port.number,
                    source_ranges: source_ranges.clone(),
                    transport,
                });
            }
            index.set_status(id, errors, warnings);
        }
        index
    }

    /// Records a policy's status; an error is also a warning (local mode has no status to write).
    fn set_status(&mut self, id: &ObjectRef, errors: Vec<String>, warnings: &mut Vec<String>) {
        if !errors.is_empty() {
            warnings.push(format!("IngressBackend {id}: {}", errors.join("; ")));
        }
        let status = if errors.is_empty() {
            IngressBackendStatus {
                current_status: Some(STATUS_COMMITTED.to_string()),
                reason: Some(REASON_COMMITTED.to_string()),
            }
        } else {
            IngressBackendStatus {
                current_status: Some(STATUS_ERROR.to_string()),
                reason: Some(errors.join("; ")),
            }
        };
        self.status.insert(id.clone(), status);
    }

    /// Whether a change to this Service object can change what policies admit or their status (it is
    /// a source or a backend): everything is recomputed then.
    pub(crate) fn refers_to(&self, service: &ServiceRef) -> bool {
        self.sources.contains(service) || self.backends.contains(service)
    }

    /// Whether this Service's endpoints are in some policy's admitted addresses. (A backend's
    /// endpoints only decide which pods get its chain, which rebuilding those pods' intents covers.)
    pub(crate) fn is_source(&self, service: &ServiceRef) -> bool {
        self.sources.contains(service)
    }

    /// What the policies admit to a pod backing `services`, whose application ports are `target_ports`:
    /// at most one backend per port (Envoy refuses two chains with the same match), the first by
    /// service then policy.
    pub(crate) fn for_pod<'a>(
        &self,
        services: impl Iterator<Item = &'a Service>,
        target_ports: &BTreeSet<u16>,
    ) -> Vec<IngressBackendIntent> {
        let mut by_port: BTreeMap<u16, IngressBackendIntent> = BTreeMap::new();
        let mut services: Vec<&Service> = services.collect();
        services.sort_by(|a, b| a.id.cmp(&b.id));
        for svc in services {
            for b in self.by_service.get(&svc.id).into_iter().flatten() {
                let Some(target_port) = target_port_of(svc, b.port).filter(|p| target_ports.contains(p))
                else {
                    continue;
                };
                by_port
                    .entry(target_port)
                    .or_insert_with(|| IngressBackendIntent {
                        service: svc.id.clone(),
                        policy: b.policy.clone(),
                        target_port,
                        source_ranges: b.source_ranges.clone(),
                        transport: b.transport.clone(),
                    });
            }
        }
        by_port.into_values().collect()
    }
}

/// The address ranges a policy's `Service` and `IPRange` sources admit (empty: there are none, any
/// address). `None` when it has such sources and none resolves: the policy admits nobody rather than
/// everybody.
fn read_sources(
    input: &MeshInput,
    id: &ObjectRef,
    spec: &IngressBackendSpec,
    endpoints_of: &impl Fn(&ServiceRef) -> Vec<std::net::IpAddr>,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<Vec<IpRange>> {
    let mut ranges = BTreeSet::new();
    let mut address_sources = 0;
    for (i, source) in spec.sources.iter().enumerate() {
        match source.kind.as_str() {
            KIND_SERVICE => {
                address_sources += 1;
                let svc = ServiceRef::new(source.namespace.as_deref().unwrap_or_default(), &source.name);
                if !input.services.contains_key(&svc) {
                    errors.push(format!(
                        "source service {svc} is not known (is namespace {} monitored by the mesh?)",
                        svc.namespace
                    ));
                    continue;
                }
                let ips = endpoints_of(&svc);
                if ips.is_empty() {
                    errors.push(format!("endpoints not found for service {svc}"));
                }
                ranges.extend(ips.into_iter().map(|addr| IpRange {
                    addr,
                    prefix_len: if addr.is_ipv4() { 32 } else { 128 },
                }));
            }
            KIND_IP_RANGE => {
                address_sources += 1;
                match IpRange::parse(&source.name) {
                    Some(r) => {
                        ranges.insert(r);
                    }
                    None => {
                        // Validation refuses these; a policy that would admit more than it says is dropped.
                        warnings.push(format!(
                            "IngressBackend {id}: spec.sources[{i}].name {:?} is not a CIDR; the policy is not applied",
                            source.name
                        ));
                        errors.push(format!("source {:?} is not a CIDR", source.name));
                        return None;
                    }
                }
            }
            _ => {}
        }
    }
    if address_sources > 0 && ranges.is_empty() {
        warnings.push(format!(
            "IngressBackend {id}: none of its Service or IPRange sources has an address; it admits nothing"
        ));
        return None;
    }
    Some(ranges.into_iter().collect())
}

/// Whether `port` is one of the Service's target ports or ports.
fn names_port(svc: &Service, port: u16) -> bool {
    target_port_of(svc, port).is_some()
}

/// The pod port a backend's `port.number` means: a target port of the Service (upstream's reading), else
/// the target port behind that Service port.
fn target_port_of(svc: &Service, port: u16) -> Option<u16> {
    if svc.ports.iter().any(|p| p.target_port == port) {
        return Some(port);
    }
    svc.ports.iter().find(|p| p.port == port).map(|p| p.target_port)
}
