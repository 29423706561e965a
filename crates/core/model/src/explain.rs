//! Why may (or may not) one pod call another? The pure part of `osm policy check-pods` and of the
//! policy check of `osm verify connectivity`.
//!
//! [`explain`] looks at the same things the model does — permissive mode in the MeshConfig, and in
//! SMI mode the TrafficTargets whose destination is the destination pod's ServiceAccount — and says
//! which TrafficTargets let the source in, over which routes (HTTPRouteGroup matches, TCPRoute
//! ports), or why nothing does: no TrafficTarget for that destination, none lists the source, or the
//! ones that do refer only to route specs that do not exist. The [`Explanation`] prints as the text
//! the CLI shows and serializes for `-o json|yaml`.
//!
//! The verdict is worked out from the TrafficTargets (so it can name them), not from the computed
//! intent; [`Explanation::admits`] narrows it to one request with the model's own rules for ports
//! and matches. `osm-xds`'s `explain_agrees` property test holds it to the Envoy config generated
//! for the destination: explain admits a request exactly when that config does.

use std::collections::BTreeSet;
use std::fmt;

use osm_api::smi::access::{
    IdentityBindingSubject, RULE_KIND_HTTP_ROUTE_GROUP, RULE_KIND_TCP_ROUTE, TrafficTargetSpec,
};
use osm_api::smi::specs::HttpMatch;
use serde::Serialize;

use crate::compute::{http_route_match, local_ports, tcp_route_covers};
use crate::input::{AppProtocol, MeshInput, ObjectRef, PodRef, ServiceIdentity, ServiceRef};

/// The answer for one (source pod, destination pod) pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    pub source: PodRef,
    pub destination: PodRef,
    pub source_identity: ServiceIdentity,
    pub destination_identity: ServiceIdentity,
    pub verdict: Verdict,
}

impl Explanation {
    /// True when the source may send (some) traffic to the destination.
    pub fn allowed(&self) -> bool {
        matches!(
            self.verdict,
            Verdict::AllowedByPermissiveMode | Verdict::AllowedByTrafficTargets { .. }
        )
    }
}

/// One request from the source pod to the destination pod through a service port. On a TCP port it
/// stands for the connection, and method, path and headers play no part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub service: ServiceRef,
    /// The service port (not the pod's target port).
    pub port: u16,
    pub method: String,
    /// The normalised path, as routes see it; a query string plays no part in matching.
    pub path: String,
    /// Header name → value.
    pub headers: Vec<(String, String)>,
}

impl Explanation {
    /// Whether `request` gets through: the destination pod backs the service port, and permissive
    /// mode or a rule of a TrafficTarget listing the source covers it — a TCPRoute covering the port
    /// (any request, on either protocol), or on an HTTP port an HTTPRouteGroup match the request
    /// matches. `input` must be the one the explanation was made from.
    pub fn admits(&self, input: &MeshInput, request: &Request) -> bool {
        let Some((protocol, target_port, service_ports)) = self.local_port(input, request) else {
            return false;
        };
        let targets = match &self.verdict {
            Verdict::AllowedByPermissiveMode => return true,
            Verdict::AllowedByTrafficTargets { targets } => targets,
            Verdict::Denied { .. } => return false,
        };
        targets.iter().flat_map(|t| &t.rules).any(|rule| match rule {
            RuleExplanation::Tcp { ports, .. } => {
                let ports = (!ports.is_empty()).then(|| ports.iter().copied().collect());
                tcp_route_covers(ports.as_ref(), target_port, &service_ports)
            }
            RuleExplanation::Http { matches, .. } => {
                protocol == AppProtocol::Http
                    && matches.iter().any(|m| {
                        http_route_match(m).matches(&request.method, &request.path, &request.headers)
                    })
            }
            RuleExplanation::MissingRoute { .. } => false,
        })
    }

    /// The destination pod's port the request lands on, as the model sees it: (protocol, target
    /// port, the ports of every service routing to that target port). `None` when the pod does not
    /// back the service port.
    fn local_port(&self, input: &MeshInput, request: &Request) -> Option<(AppProtocol, u16, BTreeSet<u16>)> {
        let service = input.services.get(&request.service)?;
        let target_port = service.ports.iter().find(|p| p.port == request.port)?.target_port;
        let backing = input.services.values().filter(|svc| {
            input
                .endpoints_of(svc)
                .iter()
                .any(|ep| ep.pod.as_ref() == Some(&self.destination))
        });
        let (protocol, services) = local_ports(backing).remove(&target_port)?;
        services
            .iter()
            .any(|s| s.service == request.service)
            .then(|| (protocol, target_port, services.iter().map(|s| s.port).collect()))
    }
}

/// Allowed (and by what) or not (and why).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "result")]
pub enum Verdict {
    /// The MeshConfig enables permissive traffic policy mode: every meshed pod may call every other.
    AllowedByPermissiveMode,
    /// SMI mode; these TrafficTargets let the source reach the destination.
    AllowedByTrafficTargets { targets: Vec<TargetExplanation> },
    /// SMI mode; nothing lets the source in.
    Denied { reason: DenyReason },
}

/// Why SMI mode refuses the pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum DenyReason {
    /// No TrafficTarget has the destination's ServiceAccount as its destination.
    NoTrafficTargetForDestination,
    /// TrafficTargets exist for the destination, but none lists the source's ServiceAccount.
    SourceNotListed { targets: Vec<ObjectRef> },
    /// TrafficTargets list the source, but none of their rules refers to a usable route spec.
    NoUsableRules { targets: Vec<TargetExplanation> },
}

/// One TrafficTarget that lists the source, with each of its rules resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetExplanation {
    pub traffic_target: ObjectRef,
    pub rules: Vec<RuleExplanation>,
}

impl TargetExplanation {
    /// True when at least one rule allows some traffic.
    pub fn usable(&self) -> bool {
        self.rules.iter().any(RuleExplanation::usable)
    }
}

/// One rule of a TrafficTarget, resolved against the route specs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum RuleExplanation {
    /// HTTP requests matching any of `matches` are allowed. `unknown_matches` are names the rule
    /// lists that the HTTPRouteGroup does not have.
    #[serde(rename = "HTTPRouteGroup")]
    Http {
        route_group: ObjectRef,
        matches: Vec<HttpMatch>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        unknown_matches: Vec<String>,
    },
    /// TCP traffic to `ports` (empty: every port) is allowed.
    #[serde(rename = "TCPRoute")]
    Tcp { route: ObjectRef, ports: Vec<u16> },
    /// The rule refers to a route spec that does not exist, so it allows nothing.
    #[serde(rename = "Missing")]
    MissingRoute { route_kind: String, route: ObjectRef },
}

impl RuleExplanation {
    /// True when the rule allows some traffic.
    pub fn usable(&self) -> bool {
        match self {
            RuleExplanation::Http { matches, .. } => !matches.is_empty(),
            RuleExplanation::Tcp { .. } => true,
            RuleExplanation::MissingRoute { .. } => false,
        }
    }
}

/// A pod named in the question is not in the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pod {0} not found")]
pub struct UnknownPod(pub PodRef);

/// Explains whether pod `source` may call pod `destination` under `input`'s MeshConfig and SMI
/// policies.
pub fn explain(input: &MeshInput, source: &PodRef, destination: &PodRef) -> Result<Explanation, UnknownPod> {
    let src = input.pods.get(source).ok_or_else(|| UnknownPod(source.clone()))?;
    let dst = input
        .pods
        .get(destination)
        .ok_or_else(|| UnknownPod(destination.clone()))?;
    let (source_identity, destination_identity) = (src.identity(), dst.identity());
    let verdict = explain_identities(input, &source_identity, &destination_identity);
    Ok(Explanation {
        source: source.clone(),
        destination: destination.clone(),
        source_identity,
        destination_identity,
        verdict,
    })
}

/// The verdict for a source and destination identity (ServiceAccount).
pub fn explain_identities(
    input: &MeshInput,
    source: &ServiceIdentity,
    destination: &ServiceIdentity,
) -> Verdict {
    if input.mesh_config.traffic.enable_permissive_traffic_policy_mode {
        return Verdict::AllowedByPermissiveMode;
    }
    let for_destination: Vec<(&ObjectRef, &TrafficTargetSpec)> = input
        .traffic_targets
        .iter()
        .filter(|(id, tt)| subject_identity(&tt.destination, &id.namespace) == *destination)
        .collect();
    if for_destination.is_empty() {
        return Verdict::Denied {
            reason: DenyReason::NoTrafficTargetForDestination,
        };
    }
    let listing: Vec<TargetExplanation> = for_destination
        .iter()
        .filter(|(id, tt)| {
            tt.sources
                .iter()
                .any(|s| subject_identity(s, &id.namespace) == *source)
        })
        .map(|(id, tt)| TargetExplanation {
            traffic_target: (*id).clone(),
            rules: tt.rules.iter().map(|r| resolve_rule(input, id, r)).collect(),
        })
        .collect();
    if listing.is_empty() {
        return Verdict::Denied {
            reason: DenyReason::SourceNotListed {
                targets: for_destination.into_iter().map(|(id, _)| id.clone()).collect(),
            },
        };
    }
    if !listing.iter().any(TargetExplanation::usable) {
        return Verdict::Denied {
            reason: DenyReason::NoUsableRules { targets: listing },
        };
    }
    Verdict::AllowedByTrafficTargets { targets: listing }
}

fn subject_identity(subject: &IdentityBindingSubject, default_ns: &str) -> ServiceIdentity {
    ServiceIdentity::new(subject.namespace.as_deref().unwrap_or(default_ns), &subject.name)
}

fn resolve_rule(
    input: &MeshInput,
    tt: &ObjectRef,
    rule: &osm_api::smi::access::TrafficTargetRule,
) -> RuleExplanation {
    // Route specs live in the TrafficTarget's namespace.
    let route = ObjectRef::new(&tt.namespace, &rule.name);
    let missing = |route: ObjectRef| RuleExplanation::MissingRoute {
        route_kind: rule.kind.clone(),
        route,
    };
    match rule.kind.as_str() {
        RULE_KIND_HTTP_ROUTE_GROUP => match input.http_route_groups.get(&route) {
            Some(group) => RuleExplanation::Http {
                matches: group
                    .matches
                    .iter()
                    .filter(|m| rule.matches.is_empty() || rule.matches.contains(&m.name))
                    .cloned()
                    .collect(),
                unknown_matches: rule
                    .matches
                    .iter()
                    .filter(|name| !group.matches.iter().any(|m| &m.name == *name))
                    .cloned()
                    .collect(),
                route_group: route,
            },
            None => missing(route),
        },
        RULE_KIND_TCP_ROUTE => match input.tcp_routes.get(&route) {
            Some(tcp) => RuleExplanation::Tcp {
                ports: tcp.matches.ports.clone(),
                route,
            },
            None => missing(route),
        },
        // Validation refuses other kinds; treat one that slipped through as pointing nowhere.
        _ => missing(route),
    }
}

fn write_http_match(f: &mut fmt::Formatter<'_>, m: &HttpMatch) -> fmt::Result {
    let methods = if m.any_method() {
        "any method".to_string()
    } else {
        m.methods.join(",")
    };
    write!(
        f,
        "        match {:?}: pathRegex {:?}, methods {methods}",
        m.name,
        m.path_regex.as_deref().unwrap_or(".*")
    )?;
    let headers: Vec<String> = m.header_pairs().map(|(k, v)| format!("{k}: {v:?}")).collect();
    if !headers.is_empty() {
        write!(f, ", headers {}", headers.join(", "))?;
    }
    writeln!(f)
}

fn write_target(f: &mut fmt::Formatter<'_>, t: &TargetExplanation) -> fmt::Result {
    writeln!(f, "    TrafficTarget {}:", t.traffic_target)?;
    if t.rules.is_empty() {
        writeln!(f, "      no rules: it allows nothing")?;
    }
    for rule in &t.rules {
        match rule {
            RuleExplanation::Http {
                route_group,
                matches,
                unknown_matches,
            } => {
                writeln!(f, "      HTTPRouteGroup {route_group}:")?;
                if matches.is_empty() {
                    writeln!(f, "        no matching routes: this rule allows nothing")?;
                }
                for m in matches {
                    write_http_match(f, m)?;
                }
                if !unknown_matches.is_empty() {
                    writeln!(
                        f,
                        "        warning: matches {} are not in HTTPRouteGroup {route_group}",
                        unknown_matches.join(", ")
                    )?;
                }
            }
            RuleExplanation::Tcp { route, ports } if ports.is_empty() => {
                writeln!(f, "      TCPRoute {route}: every port")?;
            }
            RuleExplanation::Tcp { route, ports } => {
                let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                writeln!(f, "      TCPRoute {route}: ports {}", ports.join(", "))?;
            }
            RuleExplanation::MissingRoute { route_kind, route } => {
                writeln!(
                    f,
                    "      {route_kind} {route} does not exist: this rule allows nothing"
                )?;
            }
        }
    }
    Ok(())
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (src, dst) = (&self.source, &self.destination);
        let (src_id, dst_id) = (&self.source_identity, &self.destination_identity);
        match &self.verdict {
            Verdict::AllowedByPermissiveMode => {
                writeln!(
                    f,
                    "[+] Permissive traffic policy mode is enabled in the MeshConfig"
                )?;
                writeln!(f, "[+] Pod {src} is allowed to communicate to pod {dst}")
            }
            Verdict::AllowedByTrafficTargets { targets } => {
                writeln!(f, "[+] SMI traffic policy mode (permissive mode is off)")?;
                writeln!(
                    f,
                    "[+] Pod {src} (ServiceAccount {src_id}) is allowed to communicate to pod {dst} \
                     (ServiceAccount {dst_id}) by:"
                )?;
                for t in targets {
                    write_target(f, t)?;
                }
                Ok(())
            }
            Verdict::Denied { reason } => {
                writeln!(f, "[+] SMI traffic policy mode (permissive mode is off)")?;
                writeln!(
                    f,
                    "[-] Pod {src} (ServiceAccount {src_id}) is not allowed to communicate to pod {dst} \
                     (ServiceAccount {dst_id}):"
                )?;
                match reason {
                    DenyReason::NoTrafficTargetForDestination => writeln!(
                        f,
                        "    no SMI TrafficTarget has destination ServiceAccount {dst_id}"
                    ),
                    DenyReason::SourceNotListed { targets } => {
                        let names: Vec<String> = targets.iter().map(ToString::to_string).collect();
                        writeln!(
                            f,
                            "    no SMI TrafficTarget for destination {dst_id} lists source ServiceAccount \
                             {src_id} (TrafficTargets for {dst_id}: {})",
                            names.join(", ")
                        )
                    }
                    DenyReason::NoUsableRules { targets } => {
                        writeln!(
                            f,
                            "    the SMI TrafficTargets listing {src_id} have no usable rule (a referenced \
                             route is missing or selects no match):"
                        )?;
                        for t in targets {
                            write_target(f, t)?;
                        }
                        Ok(())
                    }
                }
            }
        }
    }
}
