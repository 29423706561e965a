//! The ingress gateway certificate on a real kube-apiserver: the Secret store on its own (created,
//! replaced in place keeping foreign metadata, deleted, deleting a missing one is fine), then the whole
//! path — MeshConfig `spec.certificate.ingressGateway` read by `KubeSource`, the control plane's
//! keeper, the Secret — including rotation of a short-lived certificate, a move to another Secret and
//! the removal of the spec.
//!
//! Each test starts its own apiserver; without the binaries it skips loudly (fails under `CI=true`).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use osm_api::config::{MeshConfig, SecretReference};
use osm_ca::ingress_gateway::{CA_CERT_KEY, TLS_CERT_KEY, TLS_KEY_KEY};
use osm_ca::{CertificateAuthority, IngressGatewayCertStore as _, TlsBundle, TrustDomain};
use osm_controller::ControlPlane;
use osm_controller::runner::{self, Listeners};
use osm_k8s::ingress_gateway_secret::{IngressGatewaySecretStore, TLS_SECRET_TYPE};
use osm_k8s::{KubeOptions, KubeSource};
use osm_model::MeshInput;
use serde_json::json;
use tokio::sync::watch;
use x509_parser::pem::parse_x509_pem;
use x509_parser::prelude::{FromDer as _, X509Certificate};

const WAIT: Duration = Duration::from_secs(30);
const OSM_NS: &str = "osm-system";
const GW_NS: &str = "ingress";

fn new_ca() -> anyhow::Result<CertificateAuthority> {
    Ok(CertificateAuthority::generate(
        TrustDomain::default(),
        Duration::from_secs(24 * 3600),
    )?)
}

fn entry(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

/// (CN, DNS SANs, not_before, not_after) of a PEM certificate, checked to be signed by `root_pem`.
fn cert_signed_by(pem: &str, root_pem: &str) -> anyhow::Result<(String, Vec<String>, i64, i64)> {
    let (_, leaf) = parse_x509_pem(pem.as_bytes())?;
    let (_, root) = parse_x509_pem(root_pem.as_bytes())?;
    let (_, cert) = X509Certificate::from_der(&leaf.contents)?;
    let (_, root) = X509Certificate::from_der(&root.contents)?;
    cert.verify_signature(Some(root.public_key()))
        .context("tls.crt is not signed by ca.crt")?;
    Ok((
        osm_ca::peer_common_name(&leaf.contents)?,
        osm_ca::peer_dns_names(&leaf.contents)?,
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    ))
}

/// Polls Secret `ns/name` every 50 ms until `pred` holds for what is read (None: absent).
async fn secret_until(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    pred: impl Fn(Option<&Secret>) -> bool,
) -> anyhow::Result<Option<Secret>> {
    let api = Api::<Secret>::namespaced(client.clone(), ns);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = api.get_opt(name).await?;
        if pred(got.as_ref()) {
            return Ok(got);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{what}: not within {WAIT:?} (Secret {ns}/{name} is {got:?})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The three keys, the TLS type, `ca.crt` the mesh root and `tls.crt` signed by it for `sans`.
fn check_secret(secret: &Secret, ca: &CertificateAuthority, sans: &[&str]) -> anyhow::Result<(i64, i64)> {
    assert_eq!(secret.type_.as_deref(), Some(TLS_SECRET_TYPE));
    let keys: Vec<&str> = secret
        .data
        .as_ref()
        .map(|d| d.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(keys, [CA_CERT_KEY, TLS_CERT_KEY, TLS_KEY_KEY]);
    let ca_pem = entry(secret, CA_CERT_KEY).context("ca.crt")?;
    assert_eq!(ca_pem, ca.root_cert_pem());
    assert!(
        entry(secret, TLS_KEY_KEY)
            .context("tls.key")?
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    let (cn, dns, not_before, not_after) =
        cert_signed_by(&entry(secret, TLS_CERT_KEY).context("tls.crt")?, &ca_pem)?;
    assert_eq!(cn, sans[0]);
    assert_eq!(dns, sans);
    Ok((not_before, not_after))
}

async fn namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    osm_envtest::create_namespace(client, name, &[], &[])
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

/// The store alone: create, replace (keeping labels someone else set), delete, delete again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_store_creates_replaces_and_deletes() -> anyhow::Result<()> {
    let Some(assets) = osm_envtest::require_or_skip("secret_store_creates_replaces_and_deletes") else {
        return Ok(());
    };
    let server = osm_envtest::ApiServer::start_with(&assets).await?;
    let client = server.client();
    namespace(&client, GW_NS).await?;
    let ca = new_ca()?;
    let store = IngressGatewaySecretStore::new(client.clone());
    let secret = SecretReference {
        name: "gw-cert".into(),
        namespace: GW_NS.into(),
    };
    assert_eq!(store.location(&secret), "Secret ingress/gw-cert");
    let sans = ["gw.ingress.cluster.local"];
    let issue = || -> anyhow::Result<TlsBundle> {
        let cert = ca.issue_ingress_gateway_cert(&[sans[0].to_owned()], Duration::from_secs(600))?;
        Ok(TlsBundle::new(&ca, &cert))
    };
    let api = Api::<Secret>::namespaced(client.clone(), GW_NS);

    let first = issue()?;
    store.store(&secret, &first).await?;
    let got = api.get("gw-cert").await?;
    check_secret(&got, &ca, &sans)?;
    assert_eq!(entry(&got, TLS_CERT_KEY), Some(first.cert_chain_pem.clone()));

    // Someone labels it; a new certificate replaces the data and keeps the label.
    let label = json!({"metadata": {"labels": {"team": "edge"}}});
    api.patch("gw-cert", &PatchParams::default(), &Patch::Merge(&label))
        .await?;
    let second = issue()?;
    store.store(&secret, &second).await?;
    let got = api.get("gw-cert").await?;
    check_secret(&got, &ca, &sans)?;
    assert_eq!(entry(&got, TLS_CERT_KEY), Some(second.cert_chain_pem.clone()));
    assert_eq!(
        entry(&got, TLS_KEY_KEY).as_deref(),
        Some(second.private_key.expose_pem())
    );
    assert_eq!(
        got.metadata.labels,
        Some(BTreeMap::from([("team".to_owned(), "edge".to_owned())]))
    );

    store.remove(&secret).await?;
    assert!(api.get_opt("gw-cert").await?.is_none());
    store.remove(&secret).await?;

    // A namespace that does not exist: an error naming the Secret, never its contents.
    let nowhere = SecretReference {
        name: "gw-cert".into(),
        namespace: "no-such-namespace".into(),
    };
    let err = store.store(&nowhere, &second).await.unwrap_err().to_string();
    assert!(err.contains("Secret no-such-namespace/gw-cert"), "{err}");
    assert!(!err.contains("PRIVATE KEY"), "{err}");
    Ok(())
}

/// MeshConfig → Secret through the Kubernetes source and the control plane: created with the three
/// keys, rotated before expiry (3 s validity), moved to another Secret (the old one deleted) and
/// deleted when the spec is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_config_ingress_gateway_secret() -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("osm_controller=debug,osm_k8s=info")
        .with_test_writer()
        .try_init();
    let Some(assets) = osm_envtest::require_or_skip("mesh_config_ingress_gateway_secret") else {
        return Ok(());
    };
    let server = osm_envtest::ApiServer::start_with(&assets).await?;
    let client = server.client();
    osm_envtest::apply_crds(&client, &osm_api::crds::all()).await?;
    namespace(&client, OSM_NS).await?;
    namespace(&client, GW_NS).await?;

    let sans = ["ingress-nginx.ingress.cluster.local", "gw.example.com"];
    let mesh_configs = Api::<MeshConfig>::namespaced(client.clone(), OSM_NS);
    let mc: MeshConfig = serde_json::from_value(json!({
        "apiVersion": "config.openservicemesh.io/v1alpha2",
        "kind": "MeshConfig",
        "metadata": {"name": "osm-mesh-config", "namespace": OSM_NS},
        "spec": {"certificate": {"ingressGateway": {
            "subjectAltNames": sans,
            "validityDuration": "3s",
            "secret": {"name": "gw-cert", "namespace": GW_NS},
        }}},
    }))?;
    mesh_configs.create(&PostParams::default(), &mc).await?;

    // The controller as `osm-control-plane controller` wires it.
    let ca = Arc::new(new_ca()?);
    let cp = Arc::new(ControlPlane::new(ca.clone(), MeshInput::default()));
    let (stop, shutdown) = watch::channel(false);
    let keeper = cp.spawn_ingress_gateway_cert(
        Arc::new(IngressGatewaySecretStore::new(client.clone())),
        shutdown.clone(),
    );
    let listeners = Listeners {
        ads: std::net::TcpListener::bind("127.0.0.1:0")?,
        http: None,
        osm_namespace: OSM_NS.into(),
    };
    let runner = tokio::spawn(runner::run(
        cp.clone(),
        KubeSource::new(client.clone(), KubeOptions::new("osm", OSM_NS)),
        listeners,
        shutdown,
        |_| {},
    ));

    // Created, with the three keys.
    let created = secret_until(&client, GW_NS, "gw-cert", "the Secret created", |s| s.is_some())
        .await?
        .context("present")?;
    let (not_before, not_after) = check_secret(&created, &ca, &sans)?;
    assert_eq!(not_after - not_before, 3, "validityDuration 3s");

    // Rotated: a new certificate in the Secret before the one it replaces expires.
    let old = entry(&created, TLS_CERT_KEY);
    let rotated = secret_until(&client, GW_NS, "gw-cert", "the certificate rotated", |s| {
        s.is_some_and(|s| entry(s, TLS_CERT_KEY) != old)
    })
    .await?
    .context("present")?;
    let seen_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    assert!(
        seen_at < not_after,
        "rotated at {seen_at}, the old certificate expired at {not_after}"
    );
    check_secret(&rotated, &ca, &sans)?;

    // Moved to another Secret (and a longer validity): written there, the old one deleted.
    let moved = json!({"spec": {"certificate": {"ingressGateway": {
        "subjectAltNames": sans,
        "validityDuration": "1h",
        "secret": {"name": "gw-cert-2", "namespace": GW_NS},
    }}}});
    mesh_configs
        .patch("osm-mesh-config", &PatchParams::default(), &Patch::Merge(&moved))
        .await?;
    let second = secret_until(&client, GW_NS, "gw-cert-2", "the new Secret", |s| s.is_some())
        .await?
        .context("present")?;
    let (nb, na) = check_secret(&second, &ca, &sans)?;
    assert!(
        (3600..=3660).contains(&(na - nb)),
        "validityDuration 1h (not_before backdated up to 60 s): {}",
        na - nb
    );
    secret_until(&client, GW_NS, "gw-cert", "the old Secret deleted", |s| {
        s.is_none()
    })
    .await?;

    // Spec removed: the Secret deleted.
    let removed = json!({"spec": {"certificate": {"ingressGateway": null}}});
    mesh_configs
        .patch(
            "osm-mesh-config",
            &PatchParams::default(),
            &Patch::Merge(&removed),
        )
        .await?;
    secret_until(&client, GW_NS, "gw-cert-2", "the Secret deleted", |s| s.is_none()).await?;

    stop.send(true)?;
    tokio::time::timeout(WAIT, keeper)
        .await
        .context("the keeper did not stop")??;
    tokio::time::timeout(WAIT, runner)
        .await
        .context("the runner did not stop")???;
    // Deleted and stays deleted (nothing re-created it on the way out).
    assert!(
        Api::<Secret>::namespaced(client.clone(), GW_NS)
            .get_opt("gw-cert-2")
            .await?
            .is_none()
    );
    Ok(())
}
