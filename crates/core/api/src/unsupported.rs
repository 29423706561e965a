//! What OSM users can write that this control plane accepts but does not act on yet: one list,
//! [`UNSUPPORTED`], and the warnings it produces for an object ([`warnings`]).
//!
//! A policy silently not applied is worse than a refusal, so every entry here is reported wherever
//! the object arrives: as an admission warning (kubectl prints it) and a controller log line on
//! Kubernetes, as a warning naming file, object and field in local mode, and by `osm install --set`.
//! The issue that implements a feature takes its entry off the list.

use std::fmt;

use crate::MeshObject;
use crate::config::{LocalProxyMode, MeshConfigSpec};

/// What an entry covers.
#[derive(Clone, Copy)]
pub enum Subject {
    /// Every object of this kind.
    Kind(&'static str),
    /// A MeshConfig field, reported when `requested` says the object asks for behaviour we do not
    /// provide (its default value, where our behaviour is upstream's, is not reported).
    MeshConfigField {
        /// JSON path, e.g. `spec.observability.tracing.enable`.
        path: &'static str,
        requested: fn(&MeshConfigSpec) -> bool,
    },
    /// A field of a policy kind, reported when `requested` says the object uses it.
    ObjectField {
        kind: &'static str,
        /// JSON path, e.g. `spec.matches[].kind=UpstreamTrafficSetting`.
        path: &'static str,
        requested: fn(&MeshObject) -> bool,
    },
}

/// One thing not supported yet, and what the user gets instead.
#[derive(Clone, Copy)]
pub struct Unsupported {
    pub subject: Subject,
    /// What happens instead, in a few words.
    pub effect: &'static str,
}

impl fmt::Debug for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.subject {
            Subject::Kind(kind) => write!(f, "kind {kind}"),
            Subject::MeshConfigField { path, .. } => write!(f, "MeshConfig {path}"),
            Subject::ObjectField { kind, path, .. } => write!(f, "{kind} {path}"),
        }
    }
}

const fn kind(kind: &'static str, effect: &'static str) -> Unsupported {
    Unsupported {
        subject: Subject::Kind(kind),
        effect,
    }
}

const fn field(
    path: &'static str,
    requested: fn(&MeshConfigSpec) -> bool,
    effect: &'static str,
) -> Unsupported {
    Unsupported {
        subject: Subject::MeshConfigField { path, requested },
        effect,
    }
}

/// Every object of `kind` whose `requested` says it uses the field at `path`.
const fn object_field(
    kind: &'static str,
    path: &'static str,
    requested: fn(&MeshObject) -> bool,
    effect: &'static str,
) -> Unsupported {
    Unsupported {
        subject: Subject::ObjectField {
            kind,
            path,
            requested,
        },
        effect,
    }
}

/// Everything accepted and not acted on yet.
pub const UNSUPPORTED: &[Unsupported] = &[
    object_field(
        "IngressBackend",
        "spec.matches[].kind=UpstreamTrafficSetting",
        |o| {
            matches!(o, MeshObject::IngressBackend(i)
                if i.spec.matches.iter().any(|m| m.kind == crate::policy::KIND_UPSTREAM_TRAFFIC_SETTING))
        },
        "no rate limit is applied to the ingress traffic (the rest of the policy is)",
    ),
    kind(
        "MeshRootCertificate",
        "the mesh root is not rotated; the built-in CA keeps its root",
    ),
    field(
        "spec.sidecar.tlsMinProtocolVersion",
        |s| s.sidecar.tls_min_protocol_version != "TLSv1_2",
        "sidecars keep TLS 1.2 as the minimum version",
    ),
    field(
        "spec.sidecar.tlsMaxProtocolVersion",
        |s| s.sidecar.tls_max_protocol_version != "TLSv1_3",
        "sidecars keep TLS 1.3 as the maximum version",
    ),
    field(
        "spec.sidecar.cipherSuites",
        |s| !s.sidecar.cipher_suites.is_empty(),
        "sidecars keep Envoy's default cipher suites",
    ),
    field(
        "spec.sidecar.ecdhCurves",
        |s| !s.sidecar.ecdh_curves.is_empty(),
        "sidecars keep Envoy's default ECDH curves",
    ),
    field(
        "spec.sidecar.envoyWindowsImage",
        |s| s.sidecar.envoy_windows_image.is_some(),
        "Windows pods are not injected",
    ),
    field(
        "spec.sidecar.maxDataPlaneConnections",
        |s| s.sidecar.max_data_plane_connections != 0,
        "the number of proxy connections is not limited",
    ),
    field(
        "spec.sidecar.configResyncInterval",
        |s| !s.sidecar.config_resync_interval.is_zero(),
        "proxies are updated on change only, not resynced on a timer",
    ),
    field(
        "spec.sidecar.localProxyMode",
        |s| s.sidecar.local_proxy_mode != LocalProxyMode::Localhost,
        "sidecars reach the application over 127.0.0.1",
    ),
    field(
        "spec.observability.enableDebugServer",
        |s| s.observability.enable_debug_server,
        "no debug server is started",
    ),
    field(
        "spec.certificate.certKeyBitSize",
        |s| s.certificate.cert_key_bit_size != 2048,
        "the built-in CA's key type and size are unchanged",
    ),
    field(
        "spec.featureFlags.enableWASMStats",
        |s| s.feature_flags.enable_wasm_stats,
        "no WASM per-request stats are added to sidecars",
    ),
    field(
        "spec.featureFlags.enableMulticlusterMode",
        |s| s.feature_flags.enable_multicluster_mode,
        "the mesh stays single-cluster",
    ),
    field(
        "spec.featureFlags.enableSnapshotCacheMode",
        |s| s.feature_flags.enable_snapshot_cache_mode,
        "has no effect: the ADS server always serves from its cache",
    ),
    field(
        "spec.featureFlags.enableAsyncProxyServiceMapping",
        |s| s.feature_flags.enable_async_proxy_service_mapping,
        "has no effect: proxies are mapped to services as they connect",
    ),
    field(
        "spec.featureFlags.enableEnvoyActiveHealthChecks",
        |s| s.feature_flags.enable_envoy_active_health_checks,
        "no active health checks are configured",
    ),
];

/// One report: an object (and field) the control plane accepts but will not act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// `Egress shop/allow-google`.
    pub object: String,
    /// The field's JSON path; `None` for a whole object.
    pub field: Option<&'static str>,
    pub effect: &'static str,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(
                f,
                "{}: {field}: not supported yet, accepted and ignored: {}",
                self.object, self.effect
            ),
            None => write!(
                f,
                "{}: this kind is not supported yet, accepted and ignored: {}",
                self.object, self.effect
            ),
        }
    }
}

/// `Kind ns/name` (or `Kind name`), as warnings name an object.
fn object_name(object: &MeshObject) -> String {
    match object.namespace() {
        Some(ns) => format!("{} {ns}/{}", object.kind(), object.name()),
        None => format!("{} {}", object.kind(), object.name()),
    }
}

/// The MeshConfig fields of `spec` that ask for something we do not do, with their effect.
pub fn mesh_config_fields(spec: &MeshConfigSpec) -> Vec<(&'static str, &'static str)> {
    UNSUPPORTED
        .iter()
        .filter_map(|u| match u.subject {
            Subject::MeshConfigField { path, requested } if requested(spec) => Some((path, u.effect)),
            _ => None,
        })
        .collect()
}

/// The warnings `object` earns: its kind, or each MeshConfig field it sets that we do not act on.
pub fn warnings(object: &MeshObject) -> Vec<Warning> {
    let name = object_name(object);
    if let MeshObject::MeshConfig(mc) = object {
        return mesh_config_fields(&mc.spec)
            .into_iter()
            .map(|(path, effect)| Warning {
                object: name.clone(),
                field: Some(path),
                effect,
            })
            .collect();
    }
    UNSUPPORTED
        .iter()
        .filter_map(|u| match u.subject {
            Subject::Kind(k) if k == object.kind() => Some(Warning {
                object: name.clone(),
                field: None,
                effect: u.effect,
            }),
            Subject::ObjectField {
                kind,
                path,
                requested,
            } if kind == object.kind() && requested(object) => Some(Warning {
                object: name.clone(),
                field: Some(path),
                effect: u.effect,
            }),
            _ => None,
        })
        .collect()
}
