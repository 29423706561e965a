//! The ingress gateway certificate (MeshConfig `spec.certificate.ingressGateway`): issued for the
//! spec, written to its store, issued again when the spec or the root changes and before it expires,
//! deleted when the spec goes; failures retried. Step by step against a recording store, then end to
//! end through the control plane into a directory with a 3 s certificate rotating continuously.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use osm_api::config::{IngressGatewayCertSpec, SecretReference};
use osm_api::duration::GoDuration;
use osm_ca::ingress_gateway::{CA_CERT_KEY, StoreFuture, TLS_CERT_KEY, TLS_KEY_KEY};
use osm_ca::{
    CertStoreError, CertificateAuthority, DirectoryStore, IngressGatewayCertStore, TlsBundle, TrustDomain,
    peer_common_name, peer_dns_names,
};
use osm_controller::ControlPlane;
use osm_controller::ingress_gateway::{IngressGatewayCertKeeper, RETRY};
use osm_model::MeshInput;
use x509_parser::pem::parse_x509_pem;
use x509_parser::prelude::{FromDer as _, X509Certificate};

fn new_ca() -> CertificateAuthority {
    CertificateAuthority::generate(TrustDomain::default(), Duration::from_secs(24 * 3600)).unwrap()
}

fn spec(sans: &[&str], validity_secs: u64, name: &str) -> IngressGatewayCertSpec {
    IngressGatewayCertSpec {
        subject_alt_names: sans.iter().map(|s| s.to_string()).collect(),
        validity_duration: GoDuration::from_secs(validity_secs),
        secret: SecretReference {
            name: name.into(),
            namespace: "ingress".into(),
        },
    }
}

/// What a certificate PEM says: (CN, DNS SANs, not_before, not_after) in Unix seconds.
fn parsed(pem: &str) -> (String, Vec<String>, i64, i64) {
    let (_, pem) = parse_x509_pem(pem.as_bytes()).unwrap();
    let (_, cert) = X509Certificate::from_der(&pem.contents).unwrap();
    (
        peer_common_name(&pem.contents).unwrap(),
        peer_dns_names(&pem.contents).unwrap(),
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    )
}

fn verify_signed_by(pem: &str, ca_pem: &str) {
    let (_, leaf) = parse_x509_pem(pem.as_bytes()).unwrap();
    let (_, root) = parse_x509_pem(ca_pem.as_bytes()).unwrap();
    let (_, leaf) = X509Certificate::from_der(&leaf.contents).unwrap();
    let (_, root) = X509Certificate::from_der(&root.contents).unwrap();
    leaf.verify_signature(Some(root.public_key()))
        .expect("the certificate is signed by the bundled root");
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Store {
        secret: String,
        cert_pem: String,
        ca_pem: String,
    },
    Remove(String),
}

/// A store keeping a log of what it was asked to do; it fails while `fail` is set.
#[derive(Default)]
struct Recording {
    ops: Mutex<Vec<Op>>,
    fail: Mutex<bool>,
}

impl Recording {
    fn take(&self) -> Vec<Op> {
        std::mem::take(&mut *self.ops.lock().unwrap())
    }

    fn set_failing(&self, fail: bool) {
        *self.fail.lock().unwrap() = fail;
    }

    fn op(&self, what: &'static str, secret: &SecretReference, op: Op) -> Result<(), CertStoreError> {
        if *self.fail.lock().unwrap() {
            return Err(CertStoreError {
                op: what,
                location: self.location(secret),
                source: "the store is down".into(),
            });
        }
        self.ops.lock().unwrap().push(op);
        Ok(())
    }
}

impl IngressGatewayCertStore for Recording {
    fn location(&self, secret: &SecretReference) -> String {
        format!("{}/{}", secret.namespace, secret.name)
    }

    fn store<'a>(&'a self, secret: &'a SecretReference, bundle: &'a TlsBundle) -> StoreFuture<'a> {
        let op = Op::Store {
            secret: self.location(secret),
            cert_pem: bundle.cert_chain_pem.clone(),
            ca_pem: bundle.ca_cert_pem.clone(),
        };
        Box::pin(async move { self.op("writing", secret, op) })
    }

    fn remove<'a>(&'a self, secret: &'a SecretReference) -> StoreFuture<'a> {
        let op = Op::Remove(self.location(secret));
        Box::pin(async move { self.op("deleting", secret, op) })
    }
}

fn stored_cert(op: &Op) -> (&str, &str, &str) {
    match op {
        Op::Store {
            secret,
            cert_pem,
            ca_pem,
        } => (secret, cert_pem, ca_pem),
        other => panic!("expected a write, got {other:?}"),
    }
}

/// Issue, keep, renew at two thirds, re-issue on a new root, on new names (same Secret: no deletion)
/// and on a new Secret (the old one deleted), delete when the spec goes.
#[tokio::test]
async fn keeper_follows_spec_root_and_expiry() {
    let ca = new_ca();
    let store = Arc::new(Recording::default());
    let mut keeper = IngressGatewayCertKeeper::new(store.clone());
    let t0 = SystemTime::now();

    // Nothing asked: nothing done, nothing scheduled.
    assert_eq!(keeper.reconcile(&ca, None, t0).await, None);
    assert!(store.take().is_empty());

    let want = spec(&["gw.ingress.cluster.local", "gw.example.com"], 3600, "gw-cert");
    let next = keeper
        .reconcile(&ca, Some(&want), t0)
        .await
        .expect("a renewal is scheduled");
    let ops = store.take();
    assert_eq!(ops.len(), 1, "{ops:?}");
    let (secret, cert_pem, ca_pem) = stored_cert(&ops[0]);
    assert_eq!(secret, "ingress/gw-cert");
    assert_eq!(ca_pem, ca.root_cert_pem());
    verify_signed_by(cert_pem, ca_pem);
    let (cn, sans, not_before, not_after) = parsed(cert_pem);
    assert_eq!(cn, "gw.ingress.cluster.local");
    assert_eq!(sans, want.subject_alt_names);
    let lifetime = not_after - not_before;
    assert!((3600..=3600 + 61).contains(&lifetime), "{lifetime}");
    // Renewal two thirds into the lifetime, well before expiry.
    let renew = next.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((renew - (not_before + lifetime * 2 / 3)).abs() <= 1, "{renew}");
    let (serial, expiry) = keeper.current().expect("stored");
    assert_eq!(
        expiry.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64,
        not_after
    );
    let first_serial = serial.to_owned();

    // Same spec, before the renewal: nothing to do.
    let t1 = t0 + Duration::from_secs(60);
    assert_eq!(keeper.reconcile(&ca, Some(&want), t1).await, Some(next));
    assert!(store.take().is_empty());

    // At the renewal time: a new certificate in the same Secret.
    // (The CA dates certificates by the real clock: the new one's renewal is again ~40 min away.)
    let next2 = keeper.reconcile(&ca, Some(&want), next).await.unwrap();
    assert!(next2 > SystemTime::now() + Duration::from_secs(2000));
    let ops = store.take();
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(stored_cert(&ops[0]).0, "ingress/gw-cert");
    assert_ne!(keeper.current().unwrap().0, first_serial);

    // A new root: issued again at once, chaining to the new root.
    let other = new_ca();
    keeper.reconcile(&other, Some(&want), next).await.unwrap();
    let ops = store.take();
    assert_eq!(ops.len(), 1, "{ops:?}");
    let (_, cert_pem, ca_pem) = stored_cert(&ops[0]);
    assert_eq!(ca_pem, other.root_cert_pem());
    verify_signed_by(cert_pem, other.root_cert_pem());

    // New names and validity, same Secret: rewritten, nothing deleted.
    let renamed = spec(&["edge.ingress.cluster.local"], 600, "gw-cert");
    keeper.reconcile(&other, Some(&renamed), next).await.unwrap();
    let ops = store.take();
    assert_eq!(ops.len(), 1, "{ops:?}");
    let (cn, sans, not_before, not_after) = parsed(stored_cert(&ops[0]).1);
    assert_eq!(cn, "edge.ingress.cluster.local");
    assert_eq!(sans, ["edge.ingress.cluster.local"]);
    assert!((600..=620).contains(&(not_after - not_before)));

    // Another Secret: the new one written, then the old one deleted.
    let moved = spec(&["edge.ingress.cluster.local"], 600, "edge-cert");
    keeper.reconcile(&other, Some(&moved), next).await.unwrap();
    let ops = store.take();
    assert_eq!(ops.len(), 2, "{ops:?}");
    assert_eq!(stored_cert(&ops[0]).0, "ingress/edge-cert");
    assert_eq!(ops[1], Op::Remove("ingress/gw-cert".into()));

    // The spec removed: the Secret deleted, nothing scheduled any more.
    assert_eq!(keeper.reconcile(&other, None, next).await, None);
    assert_eq!(store.take(), [Op::Remove("ingress/edge-cert".into())]);
    assert!(keeper.current().is_none());
    assert_eq!(keeper.reconcile(&other, None, next + RETRY * 10).await, None);
    assert!(store.take().is_empty());
}

/// A failed write is retried after `RETRY` (not before, unless the spec changes); a failed deletion
/// too, except when the spec came back to that Secret meanwhile.
#[tokio::test]
async fn keeper_retries_failures() {
    let ca = new_ca();
    let store = Arc::new(Recording::default());
    let mut keeper = IngressGatewayCertKeeper::new(store.clone());
    let t0 = SystemTime::now();
    let want = spec(&["gw.ingress.cluster.local"], 3600, "gw-cert");

    store.set_failing(true);
    assert_eq!(keeper.reconcile(&ca, Some(&want), t0).await, Some(t0 + RETRY));
    assert!(keeper.current().is_none());
    store.set_failing(false);
    // Not retried before its time...
    keeper
        .reconcile(&ca, Some(&want), t0 + Duration::from_secs(1))
        .await;
    assert!(store.take().is_empty());
    // ...but at once for a different spec, and at its time for the same one.
    let other_names = spec(&["other.ingress.cluster.local"], 3600, "gw-cert");
    store.set_failing(true);
    keeper
        .reconcile(&ca, Some(&other_names), t0 + Duration::from_secs(1))
        .await;
    store.set_failing(false);
    keeper.reconcile(&ca, Some(&other_names), t0 + RETRY).await;
    assert!(
        store.take().is_empty(),
        "the retry of the new spec is at 1 s + RETRY"
    );
    keeper
        .reconcile(&ca, Some(&other_names), t0 + Duration::from_secs(1) + RETRY)
        .await;
    let ops = store.take();
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert!(keeper.current().is_some());

    // A failed deletion is retried...
    let t1 = t0 + Duration::from_secs(100);
    store.set_failing(true);
    assert_eq!(keeper.reconcile(&ca, None, t1).await, Some(t1 + RETRY));
    store.set_failing(false);
    assert_eq!(keeper.reconcile(&ca, None, t1 + RETRY).await, None);
    assert_eq!(store.take(), [Op::Remove("ingress/gw-cert".into())]);

    // ...unless the spec names that Secret again by then: it is written, not deleted.
    let t2 = t1 + Duration::from_secs(100);
    keeper.reconcile(&ca, Some(&want), t2).await;
    store.take();
    store.set_failing(true);
    keeper.reconcile(&ca, None, t2).await;
    store.set_failing(false);
    keeper.reconcile(&ca, Some(&want), t2 + RETRY).await;
    let ops = store.take();
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert_eq!(stored_cert(&ops[0]).0, "ingress/gw-cert");
}

fn read(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name)).ok()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `timeout`.
async fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Through the control plane: a MeshConfig with a 3 s ingress gateway certificate puts `ca.crt`,
/// `tls.crt` and `tls.key` (0600) into the directory and keeps replacing them, each new certificate
/// in place before the previous one expires; new names are written at once; removing the spec
/// deletes the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_rotation_through_the_control_plane() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ingress-gateway");
    let ca = Arc::new(new_ca());
    let cp = ControlPlane::new(ca.clone(), MeshInput::default());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let task = cp.spawn_ingress_gateway_cert(Arc::new(DirectoryStore::new(&dir)), shutdown);

    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!dir.exists(), "nothing is written without the spec");

    let want = spec(&["gw.ingress.cluster.local"], 3, "gw-cert");
    cp.update(|input| input.mesh_config.certificate.ingress_gateway = Some(want.clone()));
    let first = eventually(Duration::from_secs(5), "the first certificate", || {
        read(&dir, TLS_CERT_KEY)
    })
    .await;
    assert_eq!(read(&dir, CA_CERT_KEY).as_deref(), Some(ca.root_cert_pem()));
    verify_signed_by(&first, ca.root_cert_pem());
    let mode = std::fs::metadata(dir.join(TLS_KEY_KEY))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the key is private");
    let (cn, sans, not_before, not_after) = parsed(&first);
    assert_eq!(cn, "gw.ingress.cluster.local");
    assert_eq!(sans, ["gw.ingress.cluster.local"]);
    assert_eq!(not_after - not_before, 3);

    // Three renewals, each written before the certificate it replaces expires.
    let mut current = first;
    for round in 0..3 {
        let (_, _, _, old_not_after) = parsed(&current);
        let next = eventually(Duration::from_secs(5), "a renewal", || {
            read(&dir, TLS_CERT_KEY).filter(|pem| *pem != current)
        })
        .await;
        let seen_at = unix_now();
        assert!(
            seen_at < old_not_after,
            "round {round}: renewed at {seen_at}, the old certificate expired at {old_not_after}"
        );
        verify_signed_by(&next, ca.root_cert_pem());
        // The key on disk belongs to the certificate on disk (the key is written first).
        let key = read(&dir, TLS_KEY_KEY).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        let (_, _, nb, na) = parsed(&next);
        assert_eq!(na - nb, 3);
        current = next;
    }

    // New names: written at once, not at the next renewal.
    let renamed = spec(
        &["edge.ingress.cluster.local", "edge.example.com"],
        3600,
        "gw-cert",
    );
    cp.update(|input| input.mesh_config.certificate.ingress_gateway = Some(renamed.clone()));
    let edge = eventually(Duration::from_secs(2), "the renamed certificate", || {
        read(&dir, TLS_CERT_KEY).filter(|pem| parsed(pem).0 == "edge.ingress.cluster.local")
    })
    .await;
    assert_eq!(parsed(&edge).1, renamed.subject_alt_names);

    // Spec removed: the files go.
    cp.update(|input| input.mesh_config.certificate.ingress_gateway = None);
    eventually(Duration::from_secs(2), "the files deleted", || {
        (!dir.join(TLS_CERT_KEY).exists()
            && !dir.join(TLS_KEY_KEY).exists()
            && !dir.join(CA_CERT_KEY).exists())
        .then_some(())
    })
    .await;

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("the keeper stops on shutdown")
        .unwrap();
}
