//! The CustomResourceDefinitions for every kind in this crate, generated from the Rust types (so the
//! schemas cannot drift from what we parse), and the table of kinds other crates use to watch or
//! route objects.
//!
//! MeshConfig is one CRD serving `v1alpha1` (deprecated) and `v1alpha2` (storage), as upstream does.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{config, policy, smi};

/// Group, version, kind and plural of one served resource version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KindInfo {
    /// API group, e.g. `access.smi-spec.io`.
    pub group: &'static str,
    /// Version, e.g. `v1alpha3`.
    pub version: &'static str,
    /// Kind, e.g. `TrafficTarget`.
    pub kind: &'static str,
    /// Plural resource name, e.g. `traffictargets`.
    pub plural: &'static str,
    /// True for the version stored (and preferred) by the apiserver.
    pub storage: bool,
}

impl KindInfo {
    /// `group/version`, the `apiVersion` of objects of this kind.
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    /// The CRD name, `plural.group`.
    pub fn crd_name(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }
}

const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    storage: bool,
) -> KindInfo {
    KindInfo {
        group,
        version,
        kind,
        plural,
        storage,
    }
}

/// Every served (group, version, kind), storage versions marked.
pub const KINDS: [KindInfo; 11] = [
    kind(
        "access.smi-spec.io",
        "v1alpha3",
        "TrafficTarget",
        "traffictargets",
        true,
    ),
    kind(
        "specs.smi-spec.io",
        "v1alpha4",
        "HTTPRouteGroup",
        "httproutegroups",
        true,
    ),
    kind("specs.smi-spec.io", "v1alpha4", "TCPRoute", "tcproutes", true),
    kind(
        "split.smi-spec.io",
        "v1alpha2",
        "TrafficSplit",
        "trafficsplits",
        true,
    ),
    kind(
        "config.openservicemesh.io",
        "v1alpha2",
        "MeshConfig",
        "meshconfigs",
        true,
    ),
    kind(
        "config.openservicemesh.io",
        "v1alpha1",
        "MeshConfig",
        "meshconfigs",
        false,
    ),
    kind(
        "config.openservicemesh.io",
        "v1alpha2",
        "MeshRootCertificate",
        "meshrootcertificates",
        true,
    ),
    kind(
        "policy.openservicemesh.io",
        "v1alpha1",
        "Egress",
        "egresses",
        true,
    ),
    kind(
        "policy.openservicemesh.io",
        "v1alpha1",
        "IngressBackend",
        "ingressbackends",
        true,
    ),
    kind("policy.openservicemesh.io", "v1alpha1", "Retry", "retries", true),
    kind(
        "policy.openservicemesh.io",
        "v1alpha1",
        "UpstreamTrafficSetting",
        "upstreamtrafficsettings",
        true,
    ),
];

/// Every served (group, version, kind).
pub fn kinds() -> &'static [KindInfo] {
    &KINDS
}

/// The served versions of `group`/`kind`, storage version first; empty when the kind is not ours.
pub fn versions_of(group: &str, kind: &str) -> Vec<&'static str> {
    let mut found: Vec<&KindInfo> = KINDS
        .iter()
        .filter(|k| k.group == group && k.kind == kind)
        .collect();
    found.sort_by_key(|k| !k.storage);
    found.into_iter().map(|k| k.version).collect()
}

/// Label upstream puts on its CRDs; `osm` tooling selects CRDs by it.
const CRD_LABEL: (&str, &str) = ("app.kubernetes.io/name", "openservicemesh.io");

/// All CRDs, one per kind, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    let mesh_config = kube::core::crd::merge_crds(
        vec![config::v1alpha1::MeshConfig::crd(), config::MeshConfig::crd()],
        "v1alpha2",
    )
    .expect("both MeshConfig CRDs are generated for the same group, kind and scope");
    let mut crds = vec![
        smi::access::TrafficTarget::crd(),
        smi::specs::HTTPRouteGroup::crd(),
        smi::specs::TCPRoute::crd(),
        smi::split::TrafficSplit::crd(),
        mesh_config,
        config::MeshRootCertificate::crd(),
        policy::Egress::crd(),
        policy::IngressBackend::crd(),
        policy::Retry::crd(),
        policy::UpstreamTrafficSetting::crd(),
    ];
    for crd in &mut crds {
        crd.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(CRD_LABEL.0.to_string(), CRD_LABEL.1.to_string());
    }
    crds
}

/// The CRD named `plural.group`.
pub fn by_name(name: &str) -> Option<CustomResourceDefinition> {
    all()
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some(name))
}

/// All CRDs as one multi-document YAML stream, ready for `kubectl apply -f -`.
pub fn render_yaml() -> String {
    serde_saphyr::to_string_multiple(&all())
        .expect("CRDs are plain maps, lists, strings, numbers and booleans")
}
