//! The certificate authority: one self-signed root and the leaf certificates it issues.
//!
//! The root is ECDSA P-256 and, through [`CertificateAuthority::load_or_create`], persisted as
//! `root-cert.pem` / `root-key.pem` (mode 0600) so that a restarted control plane keeps trusting the
//! certificates proxies already hold. Leaves get a fresh P-256 key each, a random serial, a `not_before`
//! slightly in the past (clock skew between control plane and proxies) and a rotation time
//! ([`IssuedCert::renew_at`]) at two thirds of their lifetime.
//!
//! Key material leaves this module only as [`PrivateKeyPem`], whose `Debug` is redacted and which has no
//! `Display`; errors never quote it.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use ring::rand::{SecureRandom as _, SystemRandom};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use crate::error::{CaError, Result};
use crate::identity::{ServiceIdentity, TrustDomain, XdsClientIdentity, is_dns_label};

/// File name of the persisted root certificate inside the directory given to `load_or_create`.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
/// File name of the persisted root private key (mode 0600).
pub const ROOT_KEY_FILE: &str = "root-key.pem";

/// Common name of generated roots, as upstream OSM's Tresor names its CA.
const ROOT_COMMON_NAME: &str = "osm-ca.openservicemesh.io";
const ORGANIZATION: &str = "Open Service Mesh";
/// Upper bound of the backdating of `not_before`.
const MAX_SKEW_SECS: u64 = 60;
/// 16 random bytes: well above the 64 bits of entropy CA/B asks for, under the 20-byte limit of RFC 5280.
const SERIAL_LEN: usize = 16;

/// Extended key usage of an issued certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertUsage {
    /// TLS server authentication (ADS server, webhooks).
    Server,
    /// TLS client authentication (a proxy's xDS connection).
    Client,
    /// Both: a workload certificate used for inbound and outbound mTLS.
    ServerAndClient,
}

impl CertUsage {
    fn extended_key_usages(self) -> Vec<ExtendedKeyUsagePurpose> {
        match self {
            Self::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Self::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Self::ServerAndClient => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        }
    }
}

/// What to put into a leaf certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertRequest {
    /// Subject common name.
    pub common_name: String,
    /// DNS subject alternative names; an entry that parses as an IP address becomes an IP SAN (for a
    /// server reached by address).
    pub dns_names: Vec<String>,
    /// URI subject alternative names (e.g. SPIFFE ids).
    pub uri_names: Vec<String>,
    /// Lifetime from now; at least one second. Clamped to the root's expiry.
    pub validity: Duration,
    /// Extended key usage.
    pub usage: CertUsage,
}

/// A PEM-encoded PKCS#8 private key. `Debug` is redacted and there is no `Display`, so it cannot end
/// up in logs by accident; read it with [`Self::expose_pem`].
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyPem(String);

impl PrivateKeyPem {
    /// The PEM text (`-----BEGIN PRIVATE KEY-----`). Call only where the key is handed to its user.
    pub fn expose_pem(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPem(<redacted>)")
    }
}

/// A signed leaf certificate and its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificate's private key.
    pub private_key: PrivateKeyPem,
    /// Start of validity, exactly as encoded in the certificate (whole seconds).
    pub not_before: SystemTime,
    /// End of validity, exactly as encoded in the certificate (whole seconds).
    pub not_after: SystemTime,
    /// Serial number, lowercase hex without separators.
    pub serial_hex: String,
}

impl IssuedCert {
    /// When to replace this certificate: two thirds into its lifetime, leaving the last third for the
    /// new certificate to reach the proxy (SDS push) before this one expires.
    pub fn renew_at(&self) -> SystemTime {
        let lifetime = self.not_after.duration_since(self.not_before).unwrap_or_default();
        self.not_before + lifetime * 2 / 3
    }
}

/// The mesh CA: a root certificate and key that sign leaf certificates.
///
/// Cheap to share behind an `Arc`; issuing takes `&self`.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    root_cert_pem: String,
    root_cert_der: Vec<u8>,
    root_not_after: OffsetDateTime,
    trust_domain: TrustDomain,
    rng: SystemRandom,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("root_not_after", &self.root_not_after)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl CertificateAuthority {
    /// Generates a new self-signed ECDSA P-256 root valid for `validity`.
    pub fn generate(trust_domain: TrustDomain, validity: Duration) -> Result<Self> {
        let refuse = |reason: &str| CaError::InvalidRequest {
            subject: ROOT_COMMON_NAME.to_owned(),
            reason: reason.to_owned(),
        };
        if validity < Duration::from_secs(1) {
            return Err(refuse("validity must be at least one second"));
        }
        let rng = SystemRandom::new();
        let now = now_whole_seconds();
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(ROOT_COMMON_NAME);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0)); // signs leaves only
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - time::Duration::seconds(MAX_SKEW_SECS as i64);
        params.not_after = add_secs(now, ceil_secs(validity))
            .filter(|t| t.year() <= 9999) // the largest year X.509 time can encode
            .ok_or_else(|| refuse("validity too long"))?;
        params.serial_number = Some(random_serial(&rng, ROOT_COMMON_NAME)?.0);

        let issue_err = |e: rcgen::Error| CaError::Issue {
            subject: ROOT_COMMON_NAME.to_owned(),
            reason: e.to_string(),
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(issue_err)?;
        let cert = params.self_signed(&key).map_err(issue_err)?;
        Ok(Self {
            root_cert_pem: cert.pem(),
            root_cert_der: cert.der().to_vec(),
            root_not_after: params.not_after,
            issuer: Issuer::new(params, key),
            trust_domain,
            rng,
        })
    }

    /// Loads the root from `dir/root-cert.pem` and `dir/root-key.pem`, or, when neither exists, generates
    /// one and writes both (creating `dir` with mode 0700 and the key with mode 0600).
    ///
    /// Only one file present is an error rather than a silent regeneration: a new root would invalidate
    /// every certificate proxies hold.
    pub fn load_or_create(dir: &Path, trust_domain: TrustDomain, validity: Duration) -> Result<Self> {
        let cert_path = dir.join(ROOT_CERT_FILE);
        let key_path = dir.join(ROOT_KEY_FILE);
        match (exists(&cert_path)?, exists(&key_path)?) {
            (true, true) => {
                let cert_pem = read(&cert_path)?;
                let key_pem = read(&key_path)?;
                Self::from_pem_labelled(
                    &cert_pem,
                    &key_pem,
                    trust_domain,
                    &cert_path.display().to_string(),
                    &key_path.display().to_string(),
                )
            }
            (false, false) => {
                let ca = Self::generate(trust_domain, validity)?;
                ca.persist(dir, &cert_path, &key_path)?;
                Ok(ca)
            }
            (true, false) => Err(CaError::IncompleteRoot {
                present: cert_path,
                missing: key_path,
            }),
            (false, true) => Err(CaError::IncompleteRoot {
                present: key_path,
                missing: cert_path,
            }),
        }
    }

    /// Builds the CA from a PEM root certificate (the first `CERTIFICATE` block) and its PEM PKCS#8 key.
    /// The certificate must be a CA and the key must be its key.
    pub fn from_pem(cert_pem: &str, key_pem: &str, trust_domain: TrustDomain) -> Result<Self> {
        Self::from_pem_labelled(cert_pem, key_pem, trust_domain, "(PEM input)", "(PEM input)")
    }

    fn from_pem_labelled(
        cert_pem: &str,
        key_pem: &str,
        trust_domain: TrustDomain,
        cert_label: &str,
        key_label: &str,
    ) -> Result<Self> {
        let bad_cert = |reason: String| CaError::InvalidRootCert {
            what: cert_label.to_owned(),
            reason,
        };
        // Find the block by label without echoing anything from the input: a swapped file would
        // otherwise put a key into the error.
        let der = x509_parser::pem::Pem::iter_from_buffer(cert_pem.as_bytes())
            .map_while(|pem| pem.ok())
            .find(|pem| pem.label == "CERTIFICATE")
            .map(|pem| pem.contents)
            .ok_or_else(|| bad_cert("no PEM block labelled CERTIFICATE".to_owned()))?;
        let (rest, cert) = X509Certificate::from_der(&der)
            .map_err(|e| bad_cert(format!("not an X.509 certificate: {e}")))?;
        if !rest.is_empty() {
            return Err(bad_cert("trailing bytes after the certificate".to_owned()));
        }
        let is_ca = cert
            .basic_constraints()
            .map_err(|e| bad_cert(format!("basicConstraints: {e}")))?
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(bad_cert(
                "not a CA certificate (basicConstraints CA:TRUE missing)".to_owned(),
            ));
        }
        let root_not_after = cert.validity().not_after.to_datetime();

        // rcgen's parse errors may quote PEM labels of the input; use a fixed reason instead.
        let key = KeyPair::from_pem(key_pem).map_err(|_| CaError::InvalidRootKey {
            what: key_label.to_owned(),
            reason: "not a PEM-encoded PKCS#8 signing key (ECDSA, Ed25519 or RSA)",
        })?;
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(CaError::RootKeyMismatch {
                cert: cert_label.to_owned(),
                key: key_label.to_owned(),
            });
        }
        let issuer =
            Issuer::from_ca_cert_der(&der.as_slice().into(), key).map_err(|e| bad_cert(e.to_string()))?;
        Ok(Self {
            issuer,
            root_cert_pem: pem_encode_cert(&der),
            root_cert_der: der,
            root_not_after,
            trust_domain,
            rng: SystemRandom::new(),
        })
    }

    /// Writes key, then certificate, each through a temporary file and a rename, so a crash never
    /// leaves a half-written file and the certificate only appears once its key is durable.
    fn persist(&self, dir: &Path, cert_path: &Path, key_path: &Path) -> Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| io_err("creating", dir, source))?;
        write_atomically(key_path, self.issuer.key().serialize_pem().as_bytes(), 0o600)?;
        write_atomically(cert_path, self.root_cert_pem.as_bytes(), 0o644)?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| io_err("syncing", dir, source))
    }

    /// The root's private key, for storing the CA where its other replicas load it (e.g. the Kubernetes
    /// Secret `osm-ca-bundle`). Redacted in `Debug`, like every key this crate hands out.
    pub fn root_key_pem(&self) -> PrivateKeyPem {
        PrivateKeyPem(self.issuer.key().serialize_pem())
    }

    /// The root certificate, PEM: the trust bundle for every proxy and the ADS server.
    pub fn root_cert_pem(&self) -> &str {
        &self.root_cert_pem
    }

    /// The root certificate, DER.
    pub fn root_cert_der(&self) -> &[u8] {
        &self.root_cert_der
    }

    /// When the root expires; leaves never outlive it.
    pub fn root_not_after(&self) -> SystemTime {
        self.root_not_after.into()
    }

    /// The trust domain of principals this CA issues.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Issues a leaf certificate with a fresh ECDSA P-256 key.
    pub fn issue(&self, req: &CertRequest) -> Result<IssuedCert> {
        self.issue_with(req, SanForm::IpWhereParsable)
    }

    fn issue_with(&self, req: &CertRequest, san_form: SanForm) -> Result<IssuedCert> {
        let refuse = |reason: &str| CaError::InvalidRequest {
            subject: req.common_name.clone(),
            reason: reason.to_owned(),
        };
        if req.common_name.is_empty() {
            return Err(refuse("empty common name"));
        }
        if req.validity < Duration::from_secs(1) {
            return Err(refuse("validity must be at least one second"));
        }

        let now = now_whole_seconds();
        let validity_secs = ceil_secs(req.validity);
        // Backdate to tolerate clocks slightly behind ours, but by at most 1/30 of the lifetime so a
        // short-lived certificate is still rotated close to 2/3 of its requested validity.
        let skew = MAX_SKEW_SECS.min(validity_secs / 30);
        let not_before = now - time::Duration::seconds(skew as i64);
        let not_after =
            add_secs(now, validity_secs).map_or(self.root_not_after, |t| t.min(self.root_not_after));
        if not_after <= now {
            return Err(refuse("the root certificate has expired"));
        }

        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(&req.common_name);
        params.subject_alt_names = subject_alt_names(req, san_form).map_err(|r| refuse(&r))?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = req.usage.extended_key_usages();
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        let (serial, serial_hex) = random_serial(&self.rng, &req.common_name)?;
        params.serial_number = Some(serial);

        let issue_err = |e: rcgen::Error| CaError::Issue {
            subject: req.common_name.clone(),
            reason: e.to_string(),
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(issue_err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(issue_err)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            private_key: PrivateKeyPem(key.serialize_pem()),
            not_before: not_before.into(),
            not_after: not_after.into(),
            serial_hex,
        })
    }

    /// A workload certificate: CN and DNS SAN are the principal `<sa>.<ns>.<trustDomain>`, usable as
    /// TLS server and client.
    pub fn issue_service_cert(&self, id: &ServiceIdentity, validity: Duration) -> Result<IssuedCert> {
        let principal = id.principal(&self.trust_domain);
        // A dot inside sa or ns would make the principal ambiguous.
        if !is_dns_label(&id.service_account) || !is_dns_label(&id.namespace) {
            return Err(CaError::InvalidRequest {
                subject: principal,
                reason: "service account and namespace must be DNS labels".to_owned(),
            });
        }
        self.issue(&CertRequest {
            common_name: principal.clone(),
            dns_names: vec![principal],
            uri_names: Vec::new(),
            validity,
            usage: CertUsage::ServerAndClient,
        })
    }

    /// A proxy's xDS client certificate: CN `<uuid>.sidecar.<sa>.<ns>.<trustDomain>`, client auth only.
    /// Refuses identities whose CN the ADS server could not parse back.
    pub fn issue_xds_client_cert(&self, id: &XdsClientIdentity, validity: Duration) -> Result<IssuedCert> {
        let cn = id.common_name();
        if id.trust_domain != self.trust_domain {
            return Err(CaError::InvalidRequest {
                subject: cn,
                reason: format!("trust domain is not this CA's ({})", self.trust_domain),
            });
        }
        if XdsClientIdentity::parse(&cn, &self.trust_domain).ok().as_ref() != Some(id) {
            return Err(CaError::InvalidRequest {
                subject: cn,
                reason: "does not parse back to the same identity".to_owned(),
            });
        }
        self.issue(&CertRequest {
            common_name: cn,
            dns_names: Vec::new(),
            uri_names: Vec::new(),
            validity,
            usage: CertUsage::Client,
        })
    }

    /// A TLS server certificate (ADS server, webhooks): CN is the first name, every name a SAN
    /// (IP addresses as IP SANs).
    pub fn issue_server_cert(&self, dns_names: &[String], validity: Duration) -> Result<IssuedCert> {
        let Some(first) = dns_names.first() else {
            return Err(CaError::InvalidRequest {
                subject: String::new(),
                reason: "a server certificate needs at least one name".to_owned(),
            });
        };
        self.issue(&CertRequest {
            common_name: first.clone(),
            dns_names: dns_names.to_vec(),
            uri_names: Vec::new(),
            validity,
            usage: CertUsage::Server,
        })
    }

    /// The ingress gateway's certificate (MeshConfig `spec.certificate.ingressGateway`, upstream's
    /// `pkg/ingress/gateway.go`): an ingress controller presents it as the TLS client of its
    /// connections to meshed backends. CN is the first name and every name is a DNS SAN, exactly as
    /// written (no IP or URI SAN): sidecars' RBAC matches the DNS SAN as the client's principal. Usable
    /// as TLS client and server.
    pub fn issue_ingress_gateway_cert(
        &self,
        subject_alt_names: &[String],
        validity: Duration,
    ) -> Result<IssuedCert> {
        let Some(first) = subject_alt_names.first() else {
            return Err(CaError::InvalidRequest {
                subject: String::new(),
                reason: "an ingress gateway certificate needs at least one subject alternative name"
                    .to_owned(),
            });
        };
        self.issue_with(
            &CertRequest {
                common_name: first.clone(),
                dns_names: subject_alt_names.to_vec(),
                uri_names: Vec::new(),
                validity,
                usage: CertUsage::ServerAndClient,
            },
            SanForm::DnsOnly,
        )
    }
}

/// How [`CertRequest::dns_names`] are encoded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SanForm {
    /// A name that parses as an IP address becomes an IP SAN (servers reached by address).
    IpWhereParsable,
    /// Every name is a DNS SAN, as written (names matched as principals).
    DnsOnly,
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn
}

fn subject_alt_names(req: &CertRequest, form: SanForm) -> std::result::Result<Vec<SanType>, String> {
    let dns = req.dns_names.iter().map(|name| {
        if name.is_empty() {
            return Err("empty DNS name".to_owned());
        }
        let ip = match form {
            SanForm::IpWhereParsable => name.parse::<IpAddr>().ok(),
            SanForm::DnsOnly => None,
        };
        Ok(match ip {
            Some(ip) => SanType::IpAddress(ip),
            None => SanType::DnsName(
                name.as_str()
                    .try_into()
                    .map_err(|_| format!("DNS name {name:?} is not ASCII"))?,
            ),
        })
    });
    let uris = req.uri_names.iter().map(|uri| {
        if uri.is_empty() {
            return Err("empty URI".to_owned());
        }
        Ok(SanType::URI(
            uri.as_str()
                .try_into()
                .map_err(|_| format!("URI {uri:?} is not ASCII"))?,
        ))
    });
    dns.chain(uris).collect()
}

/// A positive serial of exactly `SERIAL_LEN` bytes (top bits `01`, so DER keeps every byte and the hex
/// matches what parsers print), and its hex form.
fn random_serial(rng: &SystemRandom, subject: &str) -> Result<(SerialNumber, String)> {
    let mut bytes = [0u8; SERIAL_LEN];
    rng.fill(&mut bytes).map_err(|_| CaError::Issue {
        subject: subject.to_owned(),
        reason: "system random number generator failed".to_owned(),
    })?;
    bytes[0] = (bytes[0] & 0x3f) | 0x40;
    let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok((SerialNumber::from_slice(&bytes), hex))
}

/// X.509 times have whole seconds; truncating here keeps `IssuedCert` equal to what the certificate says.
fn now_whole_seconds() -> OffsetDateTime {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("0 is a valid nanosecond")
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

fn add_secs(t: OffsetDateTime, secs: u64) -> Option<OffsetDateTime> {
    t.checked_add(time::Duration::seconds(i64::try_from(secs).ok()?))
}

fn pem_encode_cert(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

fn exists(path: &Path) -> Result<bool> {
    path.try_exists()
        .map_err(|source| io_err("checking", path, source))
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| io_err("reading", path, source))
}

/// Writes `contents` to `path` through a temporary file in the same directory (created with `mode`,
/// synced) and a rename, so readers see the old file or the new one, never a partial one.
pub(crate) fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let file_name = path
        .file_name()
        .expect("callers pass dir.join(<file name>)")
        .to_string_lossy();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // `mode` applies only when the file is created; a leftover temporary file keeps its own.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()
    };
    write().map_err(|source| io_err("writing", &tmp, source))?;
    fs::rename(&tmp, path).map_err(|source| io_err("renaming into place", path, source))
}

pub(crate) fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> CaError {
    CaError::Io {
        op,
        path: PathBuf::from(path),
        source,
    }
}
