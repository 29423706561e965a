//! `Egress`: lets ServiceAccounts reach hosts, IP ranges and ports outside the mesh.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    KIND_HTTP_ROUTE_GROUP, KIND_SERVICE_ACCOUNT, KIND_UPSTREAM_TRAFFIC_SETTING, PROTOCOL_HTTP,
    PROTOCOL_HTTPS, PROTOCOL_TCP, PROTOCOL_TCP_SERVER_FIRST, PortSpec, TypedLocalObjectReference,
    check_matches, check_port_spec,
};
use crate::validate::{Errors, Validate, ValidationErrors};

/// Protocols an Egress port may name.
pub const EGRESS_PROTOCOLS: [&str; 4] = [
    PROTOCOL_HTTP,
    PROTOCOL_HTTPS,
    PROTOCOL_TCP,
    PROTOCOL_TCP_SERVER_FIRST,
];

/// Allows `sources` to reach external `hosts` / `ipAddresses` on `ports`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "policy.openservicemesh.io",
    version = "v1alpha1",
    kind = "Egress",
    plural = "egresses",
    shortname = "egress",
    namespaced,
    derive = "PartialEq",
    doc = "OSM Egress policy: lets ServiceAccounts reach destinations outside the mesh."
)]
#[serde(rename_all = "camelCase")]
pub struct EgressSpec {
    /// ServiceAccounts the policy applies to.
    pub sources: Vec<EgressSourceSpec>,
    /// External host names (HTTP Host / TLS SNI) the sources may reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// External CIDR ranges the sources may reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
    /// Destination ports the policy applies to.
    pub ports: Vec<PortSpec>,
    /// HTTPRouteGroups or UpstreamTrafficSettings refining the policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<TypedLocalObjectReference>,
}

/// A ServiceAccount the Egress policy applies to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressSourceSpec {
    /// Kind of the source; must be ServiceAccount.
    #[schemars(extend("enum" = ["ServiceAccount"]))]
    pub kind: String,
    /// Name of the ServiceAccount.
    pub name: String,
    /// Namespace of the ServiceAccount.
    pub namespace: String,
}

impl Validate for EgressSpec {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = Errors::default();
        if self.sources.is_empty() {
            errs.add("spec.sources", "must list at least one source");
        }
        for (i, s) in self.sources.iter().enumerate() {
            errs.one_of(
                format!("spec.sources[{i}].kind"),
                &s.kind,
                &[KIND_SERVICE_ACCOUNT],
            );
            errs.non_empty(format!("spec.sources[{i}].name"), &s.name);
            errs.non_empty(format!("spec.sources[{i}].namespace"), &s.namespace);
        }
        for (i, h) in self.hosts.iter().enumerate() {
            errs.non_empty(format!("spec.hosts[{i}]"), h);
        }
        for (i, c) in self.ip_addresses.iter().enumerate() {
            errs.cidr(format!("spec.ipAddresses[{i}]"), c);
        }
        if self.ports.is_empty() {
            errs.add("spec.ports", "must list at least one port");
        }
        for (i, p) in self.ports.iter().enumerate() {
            check_port_spec(&mut errs, &format!("spec.ports[{i}]"), p, &EGRESS_PROTOCOLS);
        }
        check_matches(
            &mut errs,
            &self.matches,
            &[KIND_HTTP_ROUTE_GROUP, KIND_UPSTREAM_TRAFFIC_SETTING],
        );
        errs.finish()
    }
}

impl Validate for Egress {
    fn validate(&self) -> Result<(), ValidationErrors> {
        self.spec.validate()
    }
}
