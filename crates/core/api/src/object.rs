//! [`MeshObject`]: any OSM or SMI object, decoded from an untyped document by its `apiVersion` and
//! `kind`. Sources that read manifests or watch several kinds use it to handle every kind in one place.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::{self, MeshConfig, MeshRootCertificate};
use crate::crds;
use crate::policy::{Egress, IngressBackend, Retry, UpstreamTrafficSetting};
use crate::smi::access::TrafficTarget;
use crate::smi::specs::{HTTPRouteGroup, TCPRoute};
use crate::smi::split::TrafficSplit;
use crate::validate::{Validate, ValidationErrors};

/// One object of any kind this crate knows. It serializes as the object itself.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
// Objects are decoded and handed on one at a time; boxing every variant would only add noise.
#[allow(clippy::large_enum_variant)]
pub enum MeshObject {
    /// `access.smi-spec.io/v1alpha3` TrafficTarget.
    TrafficTarget(TrafficTarget),
    /// `specs.smi-spec.io/v1alpha4` HTTPRouteGroup.
    HTTPRouteGroup(HTTPRouteGroup),
    /// `specs.smi-spec.io/v1alpha4` TCPRoute.
    TCPRoute(TCPRoute),
    /// `split.smi-spec.io/v1alpha2` TrafficSplit.
    TrafficSplit(TrafficSplit),
    /// `config.openservicemesh.io` MeshConfig; a v1alpha1 document is converted to v1alpha2.
    MeshConfig(MeshConfig),
    /// `config.openservicemesh.io/v1alpha2` MeshRootCertificate.
    MeshRootCertificate(MeshRootCertificate),
    /// `policy.openservicemesh.io/v1alpha1` Egress.
    Egress(Egress),
    /// `policy.openservicemesh.io/v1alpha1` IngressBackend.
    IngressBackend(IngressBackend),
    /// `policy.openservicemesh.io/v1alpha1` Retry.
    Retry(Retry),
    /// `policy.openservicemesh.io/v1alpha1` UpstreamTrafficSetting.
    UpstreamTrafficSetting(UpstreamTrafficSetting),
}

/// Why a document of one of our kinds could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum MeshObjectError {
    /// The document is not an object with string `apiVersion` and `kind`.
    #[error("document has no apiVersion and kind")]
    MissingTypeMeta,
    /// One of our kinds, in a version we do not serve.
    #[error("{kind} {api_version} is not supported (served: {})", .supported.join(", "))]
    UnsupportedVersion {
        /// The kind.
        kind: String,
        /// The document's apiVersion.
        api_version: String,
        /// The `group/version`s we serve for this kind.
        supported: Vec<String>,
    },
    /// The document does not have the shape of its kind (missing field, wrong type, bad duration).
    #[error("invalid {kind} ({api_version})")]
    Decode {
        /// The kind.
        kind: String,
        /// The document's apiVersion.
        api_version: String,
        /// What serde refused.
        #[source]
        source: serde_json::Error,
    },
}

fn decode<T: DeserializeOwned>(value: Value, kind: &str, api_version: &str) -> Result<T, MeshObjectError> {
    serde_json::from_value(value).map_err(|source| MeshObjectError::Decode {
        kind: kind.to_string(),
        api_version: api_version.to_string(),
        source,
    })
}

impl MeshObject {
    /// Decodes a document by its `apiVersion` and `kind`. `Ok(None)` when the kind is not one of
    /// ours (a Deployment, a Service...); an error when it is ours but malformed or of a version we
    /// do not serve.
    pub fn from_value(value: Value) -> Result<Option<Self>, MeshObjectError> {
        let (api_version, kind) = match (
            value.get("apiVersion").and_then(Value::as_str),
            value.get("kind").and_then(Value::as_str),
        ) {
            (Some(a), Some(k)) => (a.to_string(), k.to_string()),
            _ => return Err(MeshObjectError::MissingTypeMeta),
        };
        // Core-group objects (`apiVersion: v1`) have no slash and are never ours.
        let Some((group, version)) = api_version.split_once('/') else {
            return Ok(None);
        };
        let served = crds::versions_of(group, &kind);
        if served.is_empty() {
            return Ok(None);
        }
        if !served.contains(&version) {
            return Err(MeshObjectError::UnsupportedVersion {
                supported: served.iter().map(|v| format!("{group}/{v}")).collect(),
                kind,
                api_version,
            });
        }
        let (k, av) = (kind.as_str(), api_version.as_str());
        let object = match (k, version) {
            ("TrafficTarget", _) => MeshObject::TrafficTarget(decode(value, k, av)?),
            ("HTTPRouteGroup", _) => MeshObject::HTTPRouteGroup(decode(value, k, av)?),
            ("TCPRoute", _) => MeshObject::TCPRoute(decode(value, k, av)?),
            ("TrafficSplit", _) => MeshObject::TrafficSplit(decode(value, k, av)?),
            ("MeshConfig", "v1alpha1") => {
                let old: config::v1alpha1::MeshConfig = decode(value, k, av)?;
                MeshObject::MeshConfig(old.into())
            }
            ("MeshConfig", _) => MeshObject::MeshConfig(decode(value, k, av)?),
            ("MeshRootCertificate", _) => MeshObject::MeshRootCertificate(decode(value, k, av)?),
            ("Egress", _) => MeshObject::Egress(decode(value, k, av)?),
            ("IngressBackend", _) => MeshObject::IngressBackend(decode(value, k, av)?),
            ("Retry", _) => MeshObject::Retry(decode(value, k, av)?),
            ("UpstreamTrafficSetting", _) => MeshObject::UpstreamTrafficSetting(decode(value, k, av)?),
            // `crds::KINDS` and this match list the same kinds; a kind added to one only is a bug.
            _ => return Ok(None),
        };
        Ok(Some(object))
    }

    /// The kind, e.g. `TrafficTarget`.
    pub fn kind(&self) -> &'static str {
        match self {
            MeshObject::TrafficTarget(_) => "TrafficTarget",
            MeshObject::HTTPRouteGroup(_) => "HTTPRouteGroup",
            MeshObject::TCPRoute(_) => "TCPRoute",
            MeshObject::TrafficSplit(_) => "TrafficSplit",
            MeshObject::MeshConfig(_) => "MeshConfig",
            MeshObject::MeshRootCertificate(_) => "MeshRootCertificate",
            MeshObject::Egress(_) => "Egress",
            MeshObject::IngressBackend(_) => "IngressBackend",
            MeshObject::Retry(_) => "Retry",
            MeshObject::UpstreamTrafficSetting(_) => "UpstreamTrafficSetting",
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            MeshObject::TrafficTarget(o) => &o.metadata,
            MeshObject::HTTPRouteGroup(o) => &o.metadata,
            MeshObject::TCPRoute(o) => &o.metadata,
            MeshObject::TrafficSplit(o) => &o.metadata,
            MeshObject::MeshConfig(o) => &o.metadata,
            MeshObject::MeshRootCertificate(o) => &o.metadata,
            MeshObject::Egress(o) => &o.metadata,
            MeshObject::IngressBackend(o) => &o.metadata,
            MeshObject::Retry(o) => &o.metadata,
            MeshObject::UpstreamTrafficSetting(o) => &o.metadata,
        }
    }

    /// The object's name (empty when the document had none).
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or("")
    }

    /// The object's namespace, if the document named one.
    pub fn namespace(&self) -> Option<&str> {
        self.metadata().namespace.as_deref()
    }
}

impl Validate for MeshObject {
    fn validate(&self) -> Result<(), ValidationErrors> {
        match self {
            MeshObject::TrafficTarget(o) => o.validate(),
            MeshObject::HTTPRouteGroup(o) => o.validate(),
            MeshObject::TCPRoute(o) => o.validate(),
            MeshObject::TrafficSplit(o) => o.validate(),
            MeshObject::MeshConfig(o) => o.validate(),
            MeshObject::MeshRootCertificate(o) => o.validate(),
            MeshObject::Egress(o) => o.validate(),
            MeshObject::IngressBackend(o) => o.validate(),
            MeshObject::Retry(o) => o.validate(),
            MeshObject::UpstreamTrafficSetting(o) => o.validate(),
        }
    }
}
