//! The local mode's store of the ingress gateway certificate: `ca.crt`, `tls.crt` and `tls.key` in one
//! directory, the key private to its owner, replaced in place and deleted on request.

use std::future::Future;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use osm_api::config::SecretReference;
use osm_ca::ingress_gateway::{CA_CERT_KEY, TLS_CERT_KEY, TLS_KEY_KEY};
use osm_ca::{CertificateAuthority, DirectoryStore, IngressGatewayCertStore, TlsBundle, TrustDomain};

/// The directory store does no asynchronous work: its futures are ready at the first poll.
fn now<T>(f: impl Future<Output = T>) -> T {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the directory store's future was not ready"),
    }
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn mode(dir: &Path, name: &str) -> u32 {
    std::fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777
}

fn bundle(ca: &CertificateAuthority) -> TlsBundle {
    let cert = ca
        .issue_ingress_gateway_cert(&["gw.ingress.cluster.local".to_owned()], Duration::from_secs(60))
        .unwrap();
    TlsBundle::new(ca, &cert)
}

#[test]
fn directory_store_writes_replaces_and_deletes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ingress").join("certs");
    let store = DirectoryStore::new(&dir);
    let secret = SecretReference {
        name: "gw-cert".into(),
        namespace: "ingress".into(),
    };
    assert_eq!(store.location(&secret), dir.display().to_string());
    let ca = CertificateAuthority::generate(TrustDomain::default(), Duration::from_secs(3600)).unwrap();

    let first = bundle(&ca);
    now(store.store(&secret, &first)).unwrap();
    assert_eq!(read(&dir, CA_CERT_KEY), ca.root_cert_pem());
    assert_eq!(read(&dir, TLS_CERT_KEY), first.cert_chain_pem);
    assert_eq!(read(&dir, TLS_KEY_KEY), first.private_key.expose_pem());
    assert_eq!(mode(&dir, TLS_KEY_KEY), 0o600, "the key is private");
    assert_eq!(mode(&dir, TLS_CERT_KEY), 0o644);
    assert_eq!(mode(&dir, CA_CERT_KEY), 0o644);

    // A new certificate replaces the files; no temporary file is left behind.
    let second = bundle(&ca);
    assert_ne!(first.cert_chain_pem, second.cert_chain_pem);
    now(store.store(&secret, &second)).unwrap();
    assert_eq!(read(&dir, TLS_CERT_KEY), second.cert_chain_pem);
    assert_eq!(read(&dir, TLS_KEY_KEY), second.private_key.expose_pem());
    assert_eq!(mode(&dir, TLS_KEY_KEY), 0o600);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["ca.crt", "tls.crt", "tls.key"]);

    // Deleting removes the three files, and deleting again is fine.
    now(store.remove(&secret)).unwrap();
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    now(store.remove(&secret)).unwrap();
    now(DirectoryStore::new(tmp.path().join("never-created")).remove(&secret)).unwrap();
}

/// A store failure names the directory and never the key.
#[test]
fn directory_store_error_names_the_place() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let store = DirectoryStore::new(&file);
    let ca = CertificateAuthority::generate(TrustDomain::default(), Duration::from_secs(3600)).unwrap();
    let b = bundle(&ca);
    let err = now(store.store(&SecretReference::default(), &b)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert!(!msg.contains("PRIVATE KEY"), "{msg}");
    assert!(!format!("{b:?}").contains("PRIVATE KEY"));
}
