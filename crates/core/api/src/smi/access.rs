//! `access.smi-spec.io/v1alpha3` `TrafficTarget`: which ServiceAccounts may reach a destination
//! ServiceAccount, and over which routes.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::{Errors, Validate, ValidationErrors};

/// The only subject kind SMI access control knows.
pub const KIND_SERVICE_ACCOUNT: &str = "ServiceAccount";
/// Rule kind referring to an `HTTPRouteGroup`.
pub const RULE_KIND_HTTP_ROUTE_GROUP: &str = "HTTPRouteGroup";
/// Rule kind referring to a `TCPRoute`.
pub const RULE_KIND_TCP_ROUTE: &str = "TCPRoute";

/// Allows traffic from `sources` to `destination` over `rules`. The object must live in the
/// destination's namespace.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "access.smi-spec.io",
    version = "v1alpha3",
    kind = "TrafficTarget",
    plural = "traffictargets",
    shortname = "tt",
    namespaced,
    derive = "PartialEq",
    doc = "SMI TrafficTarget: allows traffic from source ServiceAccounts to a destination ServiceAccount."
)]
#[serde(rename_all = "camelCase")]
pub struct TrafficTargetSpec {
    /// The destination of this traffic target.
    pub destination: IdentityBindingSubject,
    /// Sources of this traffic target.
    pub sources: Vec<IdentityBindingSubject>,
    /// Routes the sources may use.
    pub rules: Vec<TrafficTargetRule>,
}

/// A ServiceAccount, by name and namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityBindingSubject {
    /// Kind of the subject; must be `ServiceAccount`.
    pub kind: String,
    /// Name of the ServiceAccount.
    pub name: String,
    /// Namespace of the ServiceAccount; defaults to the TrafficTarget's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A reference to route specs (an `HTTPRouteGroup` or `TCPRoute` in the same namespace).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficTargetRule {
    /// Kind of the referenced spec: `HTTPRouteGroup` or `TCPRoute`.
    #[schemars(extend("enum" = ["HTTPRouteGroup", "TCPRoute"]))]
    pub kind: String,
    /// Name of the referenced spec.
    pub name: String,
    /// Names of the matches in the referenced spec to allow; empty means all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<String>,
}

fn subject(errs: &mut Errors, path: &str, s: &IdentityBindingSubject) {
    if s.kind != KIND_SERVICE_ACCOUNT {
        errs.add(
            format!("{path}.kind"),
            format!("must be {KIND_SERVICE_ACCOUNT} (got {:?})", s.kind),
        );
    }
    errs.non_empty(format!("{path}.name"), &s.name);
    if let Some(ns) = &s.namespace {
        errs.non_empty(format!("{path}.namespace"), ns);
    }
}

impl Validate for TrafficTargetSpec {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = Errors::default();
        subject(&mut errs, "spec.destination", &self.destination);
        if self.sources.is_empty() {
            errs.add("spec.sources", "must list at least one source");
        }
        for (i, s) in self.sources.iter().enumerate() {
            subject(&mut errs, &format!("spec.sources[{i}]"), s);
        }
        for (i, r) in self.rules.iter().enumerate() {
            errs.one_of(
                format!("spec.rules[{i}].kind"),
                &r.kind,
                &[RULE_KIND_HTTP_ROUTE_GROUP, RULE_KIND_TCP_ROUTE],
            );
            errs.non_empty(format!("spec.rules[{i}].name"), &r.name);
            for (j, m) in r.matches.iter().enumerate() {
                errs.non_empty(format!("spec.rules[{i}].matches[{j}]"), m);
            }
        }
        errs.finish()
    }
}

impl Validate for TrafficTarget {
    /// The spec rules, plus: the object's namespace equals the destination's namespace (when both
    /// are known; a manifest without a namespace gets one only when applied).
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = Errors::default();
        errs.extend(self.spec.validate());
        if let (Some(own), Some(dest)) = (&self.metadata.namespace, &self.spec.destination.namespace)
            && own != dest
        {
            errs.add(
                "spec.destination.namespace",
                format!("must equal the TrafficTarget's namespace {own:?} (got {dest:?})"),
            );
        }
        errs.finish()
    }
}

impl TrafficTarget {
    /// The destination's namespace, defaulting to the object's own namespace.
    pub fn destination_namespace(&self) -> Option<&str> {
        self.spec
            .destination
            .namespace
            .as_deref()
            .or(self.metadata.namespace.as_deref())
    }
}
