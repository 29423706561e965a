//! IngressBackend on a real kube-apiserver, as upstream OSM's nginx ingress demo sets it up: the
//! backend's and the ingress controller's namespaces in the mesh (the controller's without sidecar
//! injection), the demo's IngressBackend YAML applied unchanged. The controller (`KubeSource`, the
//! control plane and the status writer, wired as `osm-control-plane controller` wires them) watches it
//! and writes its status as upstream: `error` naming the source Service while it has no endpoints,
//! `committed` once it has; a second policy for the same backend port is in `error` naming the first.
//!
//! Starts its own apiserver; without the binaries it skips loudly (fails under `CI=true`).

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Service};
use kube::Client;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use osm_api::policy::IngressBackend;
use osm_ca::{CertificateAuthority, TrustDomain};
use osm_controller::ControlPlane;
use osm_controller::runner::{self, Listeners};
use osm_k8s::{KubeOptions, KubeSource};
use osm_model::MeshInput;
use serde_json::json;
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(30);
const OSM_NS: &str = "osm-system";
const BACKEND_NS: &str = "httpbin";
const INGRESS_NS: &str = "ingress-nginx";

/// The http IngressBackend of upstream's "Ingress with Kubernetes Nginx Ingress Controller" demo, its
/// shell variables (`$nginx_ingress_namespace`, `$nginx_ingress_service`) filled in.
const DEMO_HTTP: &str = r#"
kind: IngressBackend
apiVersion: policy.openservicemesh.io/v1alpha1
metadata:
  name: httpbin
  namespace: httpbin
spec:
  backends:
  - name: httpbin
    port:
      number: 14001 # targetPort of httpbin service
      protocol: http
  sources:
  - kind: Service
    namespace: ingress-nginx
    name: ingress-nginx-controller
"#;

/// The demo's https variant (mTLS to the backend), a second policy for the same backend port.
const DEMO_HTTPS: &str = r#"
kind: IngressBackend
apiVersion: policy.openservicemesh.io/v1alpha1
metadata:
  name: httpbin-https
  namespace: httpbin
spec:
  backends:
  - name: httpbin
    port:
      number: 14001
      protocol: https
    tls:
      skipClientCertValidation: false
  sources:
  - kind: Service
    name: ingress-nginx-controller
    namespace: ingress-nginx
  - kind: AuthenticatedPrincipal
    name: ingress-nginx.ingress-nginx.cluster.local
"#;

async fn create<K>(api: &Api<K>, value: serde_json::Value) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), &serde_json::from_value(value)?)
        .await?;
    Ok(())
}

/// `osm namespace add <ns>` (with `--disable-sidecar-injection` for the ingress controller's).
async fn mesh_namespace(client: &Client, name: &str, injection: bool) -> anyhow::Result<()> {
    let mut annotations = serde_json::Map::new();
    if !injection {
        annotations.insert("openservicemesh.io/sidecar-injection".into(), json!("disabled"));
    }
    create(
        &Api::<Namespace>::all(client.clone()),
        json!({"metadata": {"name": name, "labels": {"openservicemesh.io/monitored-by": "osm"},
                            "annotations": annotations}}),
    )
    .await
}

/// Waits until the object's `status.currentStatus` is `want` with a reason containing `reason`, and
/// returns the reason.
async fn status_until(client: &Client, name: &str, want: &str, reason: &str) -> anyhow::Result<String> {
    let api = Api::<IngressBackend>::namespaced(client.clone(), BACKEND_NS);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = api.get(name).await?.status;
        if let Some(s) = &status
            && s.current_status.as_deref() == Some(want)
            && s.reason.as_deref().unwrap_or_default().contains(reason)
        {
            return Ok(s.reason.clone().unwrap_or_default());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "IngressBackend {BACKEND_NS}/{name}: status not {want:?} ({reason:?}) within {WAIT:?}: {status:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn ingress_backend_demo_yaml_is_watched_and_its_status_written() -> anyhow::Result<()> {
    let Some(assets) =
        osm_envtest::require_or_skip("ingress_backend_demo_yaml_is_watched_and_its_status_written")
    else {
        return Ok(());
    };
    let server = osm_envtest::ApiServer::start_with(&assets).await?;
    let client = server.client();
    osm_envtest::apply_crds(&client, &osm_api::crds::all()).await?;
    create(
        &Api::<Namespace>::all(client.clone()),
        json!({"metadata": {"name": OSM_NS}}),
    )
    .await?;
    mesh_namespace(&client, BACKEND_NS, true).await?;
    mesh_namespace(&client, INGRESS_NS, false).await?;
    let services = |ns| Api::<Service>::namespaced(client.clone(), ns);
    create(
        &services(BACKEND_NS),
        json!({"metadata": {"name": "httpbin"},
               "spec": {"selector": {"app": "httpbin"},
                        "ports": [{"name": "http", "port": 14001, "targetPort": 14001}]}}),
    )
    .await?;
    create(
        &services(INGRESS_NS),
        json!({"metadata": {"name": "ingress-nginx-controller"},
               "spec": {"selector": {"app.kubernetes.io/name": "ingress-nginx"},
                        "ports": [{"name": "http", "port": 80, "targetPort": 80}]}}),
    )
    .await?;

    // The controller as `osm-control-plane controller` wires it.
    let ca = Arc::new(CertificateAuthority::generate(
        TrustDomain::default(),
        Duration::from_secs(24 * 3600),
    )?);
    let cp = Arc::new(ControlPlane::new(ca, MeshInput::default()));
    let (_stop, shutdown) = watch::channel(false);
    tokio::spawn(osm_k8s::ingress_backend_status::write_statuses(
        client.clone(),
        cp.ingress_backend_status(),
        shutdown.clone(),
    ));
    let listeners = Listeners {
        ads: std::net::TcpListener::bind("127.0.0.1:0")?,
        http: None,
        osm_namespace: OSM_NS.into(),
    };
    tokio::spawn(runner::run(
        cp.clone(),
        KubeSource::new(client.clone(), KubeOptions::new("osm", OSM_NS)),
        listeners,
        shutdown,
        |_| {},
    ));

    // The demo's YAML, unchanged, through the generic API (as `kubectl apply` sends it).
    let gvk = GroupVersionKind::gvk("policy.openservicemesh.io", "v1alpha1", "IngressBackend");
    let dynamic =
        Api::<DynamicObject>::namespaced_with(client.clone(), BACKEND_NS, &ApiResource::from_gvk(&gvk));
    for yaml in [DEMO_HTTP, DEMO_HTTPS] {
        let object: DynamicObject = serde_saphyr::from_str(yaml)?;
        dynamic.create(&PostParams::default(), &object).await?;
    }

    // The ingress controller has no endpoints yet: the policy admits nobody and says why.
    status_until(
        &client,
        "httpbin",
        "error",
        "endpoints not found for service ingress-nginx/ingress-nginx-controller",
    )
    .await?;
    // Its pod gets an address: committed, as upstream words it.
    create(
        &Api::<Endpoints>::namespaced(client.clone(), INGRESS_NS),
        json!({"metadata": {"name": "ingress-nginx-controller"},
               "subsets": [{"addresses": [{"ip": "10.244.1.7"}], "ports": [{"name": "http", "port": 80}]}]}),
    )
    .await?;
    let reason = status_until(&client, "httpbin", "committed", "").await?;
    assert_eq!(reason, "successfully committed by the system");
    // The second policy for the same backend port is refused in its status, naming the first.
    status_until(
        &client,
        "httpbin-https",
        "error",
        "already admitted by IngressBackend httpbin/httpbin",
    )
    .await?;
    // And the controller's input holds both, as the demo wrote them.
    let input = cp.input();
    let http = &input.ingress_backends[&osm_model::ObjectRef::new(BACKEND_NS, "httpbin")];
    assert_eq!(http.backends[0].port.number, 14001);
    assert_eq!(http.sources[0].name, "ingress-nginx-controller");
    assert_eq!(input.ingress_backends.len(), 2);
    Ok(())
}
