//! Persisting the root: restarts keep it, the key file is private, broken files are named in errors
//! that never quote key material.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use osm_ca::{CaError, CertificateAuthority, ROOT_CERT_FILE, ROOT_KEY_FILE, ServiceIdentity, TrustDomain};
use x509_parser::prelude::{FromDer as _, X509Certificate};

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

fn load(dir: &std::path::Path) -> Result<CertificateAuthority, CaError> {
    CertificateAuthority::load_or_create(dir, TrustDomain::default(), YEAR)
}

/// The second start loads the root the first one wrote, and certificates issued after the restart
/// verify against the original root.
#[test]
fn load_or_create_keeps_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested/ca");
    let first = load(&dir).unwrap();
    let second = load(&dir).unwrap();
    assert_eq!(first.root_cert_pem(), second.root_cert_pem());
    assert_eq!(first.root_cert_der(), second.root_cert_der());
    assert_eq!(first.root_not_after(), second.root_not_after());
    assert_eq!(
        fs::read_to_string(dir.join(ROOT_CERT_FILE)).unwrap(),
        first.root_cert_pem()
    );

    let leaf = second
        .issue_service_cert(&ServiceIdentity::new("sa", "ns"), Duration::from_secs(3600))
        .unwrap();
    let (_, leaf_pem) = x509_parser::pem::parse_x509_pem(leaf.cert_pem.as_bytes()).unwrap();
    let (_, leaf) = X509Certificate::from_der(&leaf_pem.contents).unwrap();
    let (_, root) = X509Certificate::from_der(first.root_cert_der()).unwrap();
    leaf.verify_signature(Some(root.public_key())).unwrap();
    // The authority key identifier still points at the original root.
    assert_eq!(leaf.issuer(), root.subject());
}

/// The key file is 0600, the directory 0700, and no temporary files are left behind.
#[test]
fn key_file_is_private() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    load(&dir).unwrap();
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join(ROOT_KEY_FILE)), 0o600);
    assert_eq!(mode(&dir), 0o700);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [ROOT_CERT_FILE, ROOT_KEY_FILE]);
}

/// A corrupt key file: the error names the file and quotes nothing from it.
#[test]
fn corrupt_key_file_named_without_key_material() {
    let tmp = tempfile::tempdir().unwrap();
    load(tmp.path()).unwrap();
    let key_path = tmp.path().join(ROOT_KEY_FILE);
    let key = fs::read_to_string(&key_path).unwrap();
    // Damage the body but keep the PEM frame, and separately mismatch the labels.
    let damaged = key.replacen("M", "!", 3);
    for corrupt in [
        damaged,
        key.replace("END PRIVATE KEY", "END PRIVATE KEY X"),
        "junk".into(),
    ] {
        fs::write(&key_path, &corrupt).unwrap();
        let err = load(tmp.path()).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(text.contains(&key_path.display().to_string()), "{text}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        assert!(matches!(err, CaError::InvalidRootKey { .. }), "{text}");
    }
}

/// A corrupt certificate file, or the key placed in the certificate file: the error names the file.
#[test]
fn corrupt_cert_file_named() {
    let tmp = tempfile::tempdir().unwrap();
    load(tmp.path()).unwrap();
    let cert_path = tmp.path().join(ROOT_CERT_FILE);
    let key = fs::read_to_string(tmp.path().join(ROOT_KEY_FILE)).unwrap();
    for corrupt in ["garbage".to_owned(), key] {
        fs::write(&cert_path, &corrupt).unwrap();
        let err = load(tmp.path()).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(text.contains(&cert_path.display().to_string()), "{text}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
    }
}

/// A key from another root is detected.
#[test]
fn mismatched_key_is_refused() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    load(a.path()).unwrap();
    load(b.path()).unwrap();
    fs::copy(b.path().join(ROOT_KEY_FILE), a.path().join(ROOT_KEY_FILE)).unwrap();
    let err = load(a.path()).unwrap_err();
    assert!(matches!(err, CaError::RootKeyMismatch { .. }), "{err}");
}

/// With only one of the two files present the CA neither loads nor silently replaces the root.
#[test]
fn incomplete_root_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    load(tmp.path()).unwrap();
    let cert = fs::read_to_string(tmp.path().join(ROOT_CERT_FILE)).unwrap();
    fs::remove_file(tmp.path().join(ROOT_KEY_FILE)).unwrap();
    let err = load(tmp.path()).unwrap_err();
    assert!(matches!(err, CaError::IncompleteRoot { .. }), "{err}");
    assert!(err.to_string().contains(ROOT_KEY_FILE), "{err}");
    // Nothing was rewritten.
    assert_eq!(fs::read_to_string(tmp.path().join(ROOT_CERT_FILE)).unwrap(), cert);
    assert!(!tmp.path().join(ROOT_KEY_FILE).exists());
}

/// `from_pem` accepts what `generate` produced plus its key, and refuses a leaf as root.
#[test]
fn from_pem_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = load(tmp.path()).unwrap();
    let key_pem = fs::read_to_string(tmp.path().join(ROOT_KEY_FILE)).unwrap();
    let again = CertificateAuthority::from_pem(ca.root_cert_pem(), &key_pem, TrustDomain::default()).unwrap();
    assert_eq!(again.root_cert_der(), ca.root_cert_der());

    let leaf = ca
        .issue_service_cert(&ServiceIdentity::new("sa", "ns"), Duration::from_secs(60))
        .unwrap();
    let err = CertificateAuthority::from_pem(
        &leaf.cert_pem,
        leaf.private_key.expose_pem(),
        TrustDomain::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not a CA"), "{err}");
}

/// An unreadable location is an I/O error naming the path.
#[test]
fn io_error_names_path() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    fs::write(&file, "x").unwrap();
    let err = load(&file.join("ca")).unwrap_err();
    assert!(matches!(err, CaError::Io { .. }), "{err}");
    assert!(err.to_string().contains("a-file"), "{err}");
    assert!(std::error::Error::source(&err).is_some());
}
