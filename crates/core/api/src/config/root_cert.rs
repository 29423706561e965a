//! `config.openservicemesh.io/v1alpha2` `MeshRootCertificate`: which certificate provider (Tresor,
//! cert-manager or Vault) holds a mesh root, the trust domain it issues for, and its role in a
//! rotation (active, passive, inactive).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SecretReference;
use crate::validate::{Errors, Validate, ValidationErrors};

/// A mesh root certificate and where it comes from.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "config.openservicemesh.io",
    version = "v1alpha2",
    kind = "MeshRootCertificate",
    plural = "meshrootcertificates",
    shortname = "mrc",
    namespaced,
    status = "MeshRootCertificateStatus",
    derive = "PartialEq",
    printcolumn(
        name = "Role",
        type_ = "string",
        json_path = ".spec.role",
        description = "Role of the root certificate in the mesh."
    ),
    doc = "OSM MeshRootCertificate: a mesh root certificate, its provider, trust domain and role."
)]
#[serde(rename_all = "camelCase")]
pub struct MeshRootCertificateSpec {
    /// The certificate provider; exactly one of tresor, certManager, vault.
    pub provider: ProviderSpec,
    /// Trust domain used as the suffix of certificate names, e.g. `cluster.local`.
    pub trust_domain: String,
    /// Role of this root: `active` signs and validates, `passive` only validates, `inactive` is
    /// unused. A root written without a role is active. (Later upstream releases call this `intent`.)
    #[serde(default, alias = "intent")]
    pub role: MeshRootCertificateRole,
    /// Add SPIFFE IDs to issued certificates.
    #[serde(default)]
    pub spiffe_enabled: bool,
}

/// Role of a root certificate during rotation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MeshRootCertificateRole {
    /// Signs new certificates and validates peers.
    #[default]
    Active,
    /// Only validates peers.
    Passive,
    /// Not used.
    Inactive,
}

/// Status written by the control plane.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshRootCertificateStatus {
    /// State of the certificate provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Human-readable detail of the state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The certificate provider: set exactly one field.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderSpec {
    /// cert-manager issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_manager: Option<CertManagerProviderSpec>,
    /// HashiCorp Vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultProviderSpec>,
    /// The built-in CA; its root lives in a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tresor: Option<TresorProviderSpec>,
}

/// A cert-manager Issuer or ClusterIssuer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertManagerProviderSpec {
    /// Name of the issuer.
    pub issuer_name: String,
    /// Kind of the issuer: Issuer or ClusterIssuer.
    pub issuer_kind: String,
    /// API group of the issuer, e.g. cert-manager.io.
    pub issuer_group: String,
}

/// A Vault PKI endpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultProviderSpec {
    /// Host name of the Vault server.
    pub host: String,
    /// Port of the Vault server.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Vault role used by the control plane.
    pub role: String,
    /// Protocol for Vault connections: http or https.
    pub protocol: String,
    /// Where the Vault token is stored.
    pub token: VaultTokenSpec,
}

/// Where the Vault token is stored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VaultTokenSpec {
    /// Secret key holding the token.
    pub secret_key_ref: SecretKeyReferenceSpec,
}

/// A key of a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyReferenceSpec {
    /// Name of the Secret.
    pub name: String,
    /// Namespace of the Secret.
    pub namespace: String,
    /// Key within the Secret.
    pub key: String,
}

/// The built-in CA.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TresorProviderSpec {
    /// The CA root.
    pub ca: TresorCASpec,
}

/// Where the built-in CA keeps its root.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TresorCASpec {
    /// Secret holding the root certificate and key.
    pub secret_ref: SecretReference,
}

impl Validate for MeshRootCertificateSpec {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errs = Errors::default();
        errs.non_empty("spec.trustDomain", &self.trust_domain);
        if self
            .trust_domain
            .contains(|c: char| c.is_whitespace() || c == '/')
        {
            errs.add("spec.trustDomain", "must be a domain name such as cluster.local");
        }
        let p = &self.provider;
        let set = [p.cert_manager.is_some(), p.vault.is_some(), p.tresor.is_some()]
            .iter()
            .filter(|s| **s)
            .count();
        if set != 1 {
            errs.add(
                "spec.provider",
                format!("must set exactly one of tresor, certManager, vault (got {set})"),
            );
        }
        if let Some(cm) = &p.cert_manager {
            errs.non_empty("spec.provider.certManager.issuerName", &cm.issuer_name);
            errs.one_of(
                "spec.provider.certManager.issuerKind",
                &cm.issuer_kind,
                &["Issuer", "ClusterIssuer"],
            );
            errs.non_empty("spec.provider.certManager.issuerGroup", &cm.issuer_group);
        }
        if let Some(v) = &p.vault {
            errs.non_empty("spec.provider.vault.host", &v.host);
            errs.port("spec.provider.vault.port", i64::from(v.port));
            errs.non_empty("spec.provider.vault.role", &v.role);
            errs.one_of("spec.provider.vault.protocol", &v.protocol, &["http", "https"]);
            let r = &v.token.secret_key_ref;
            errs.non_empty("spec.provider.vault.token.secretKeyRef.name", &r.name);
            errs.non_empty("spec.provider.vault.token.secretKeyRef.namespace", &r.namespace);
            errs.non_empty("spec.provider.vault.token.secretKeyRef.key", &r.key);
        }
        if let Some(t) = &p.tresor {
            errs.non_empty("spec.provider.tresor.ca.secretRef.name", &t.ca.secret_ref.name);
            errs.non_empty(
                "spec.provider.tresor.ca.secretRef.namespace",
                &t.ca.secret_ref.namespace,
            );
        }
        errs.finish()
    }
}

impl Validate for MeshRootCertificate {
    fn validate(&self) -> Result<(), ValidationErrors> {
        self.spec.validate()
    }
}
