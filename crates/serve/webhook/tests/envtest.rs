//! Both webhooks called by a real kube-apiserver (v1.20.2, `osm-envtest`) through Service references,
//! exactly as in a cluster: the Service's ClusterIP is on this host's loopback (the fixture's
//! per-instance 127.x range), the webhook's TLS server listens on `<clusterIP>:<port>`, and the
//! apiserver checks its certificate for `<svc>.<ns>.svc` against the caBundle (our CA's root).
//!
//! Each test starts its own apiserver; without the binaries they skip loudly (fail under `CI=true`).

#![forbid(unsafe_code)]

use osm_api::contract::{
    INJECTOR, INJECTOR_PATH, INJECTOR_PORT, VALIDATOR_PATH, VALIDATOR_PORT, VALIDATOR_SERVICE,
};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference, ValidatingWebhook,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{Pod, Secret, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt as _};
use osm_ca::{CertificateAuthority, TrustDomain};
use osm_envtest::{ApiServer, require_or_skip};
use osm_webhook::server::{self};
use osm_webhook::{InjectConfig, Injector, Validator, injector_router, validator_router};
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};

#[path = "support/unsupported_samples.rs"]
mod samples;

const OSM_NAMESPACE: &str = "osm-system";
const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        ..ObjectMeta::default()
    }
}

async fn create_namespace(
    client: &Client,
    name: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
) -> anyhow::Result<()> {
    osm_envtest::create_namespace(client, name, labels, annotations)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

/// Creates Service `name` (port `port`) in osm-system and binds a listener on its ClusterIP, which the
/// fixture allocates on loopback.
async fn service_listener(client: &Client, name: &str, port: u16) -> anyhow::Result<TcpListener> {
    let svc = Service {
        metadata: meta(name),
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                port: i32::from(port),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let created = Api::<Service>::namespaced(client.clone(), OSM_NAMESPACE)
        .create(&PostParams::default(), &svc)
        .await
        .with_context(|| format!("creating Service {name}"))?;
    let ip = created
        .spec
        .and_then(|s| s.cluster_ip)
        .context("the Service got no ClusterIP")?;
    TcpListener::bind((ip.as_str(), port))
        .with_context(|| format!("binding {ip}:{port} (Service {name}'s ClusterIP)"))
}

fn service_ref(name: &str, path: &str, port: u16) -> WebhookClientConfig {
    WebhookClientConfig {
        service: Some(ServiceReference {
            namespace: OSM_NAMESPACE.into(),
            name: name.into(),
            path: Some(path.into()),
            port: Some(i32::from(port)),
        }),
        ..WebhookClientConfig::default()
    }
}

/// A running webhook server; dropping it stops the server.
struct Running {
    _stop: oneshot::Sender<()>,
}

fn start_server(listener: TcpListener, tls: Arc<rustls::ServerConfig>, router: axum::Router) -> Running {
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        if let Err(e) = server::serve(listener, tls, router, async move {
            let _ = stopped.await;
        })
        .await
        {
            eprintln!("webhook server failed: {e}");
        }
    });
    Running { _stop: stop }
}

fn ca() -> Arc<CertificateAuthority> {
    Arc::new(CertificateAuthority::generate(TrustDomain::default(), Duration::from_secs(24 * 3600)).unwrap())
}

fn pod(name: &str, annotations: Value) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "bookstore"}, "annotations": annotations},
        "spec": {
            "serviceAccountName": "bookstore",
            "containers": [{
                "name": "bookstore",
                "image": "bookstore:v1",
                "ports": [{"name": "http", "containerPort": 14001}],
                "livenessProbe": {"httpGet": {"port": "http", "path": "/liveness"}},
                "readinessProbe": {"httpGet": {"port": 14001, "path": "/readiness"}}
            }]
        }
    }))?)
}

fn names(list: &Option<Vec<k8s_openapi::api::core::v1::Container>>) -> Vec<String> {
    list.iter().flatten().map(|c| c.name.clone()).collect()
}

/// The injector behind a MutatingWebhookConfiguration: a Pod created in a meshed namespace is stored
/// with `osm-init`, `envoy`, the `osm-proxy-uuid` label and probes moved to 15901/15902 (every probe
/// kind: `probe_pod_scenario`), and its
/// bootstrap Secret exists with a node id carrying that uuid; a dry run gets the patch but no Secret;
/// a Pod annotated `disabled` is stored as sent.
#[tokio::test]
async fn injector_is_called_by_the_apiserver() -> anyhow::Result<()> {
    let Some(assets) = require_or_skip("injector_is_called_by_the_apiserver") else {
        return Ok(());
    };
    let apiserver = ApiServer::start_with(&assets).await?;
    let result = injector_scenario(&apiserver).await;
    if result.is_err() {
        eprintln!("{}", apiserver.log_tails(40));
    }
    result
}

async fn injector_scenario(apiserver: &ApiServer) -> anyhow::Result<()> {
    let client = apiserver.client();
    let ca = ca();
    create_namespace(&client, OSM_NAMESPACE, &[], &[]).await?;
    let listener = service_listener(&client, INJECTOR, INJECTOR_PORT).await?;
    eprintln!(
        "injector listening on {} (service CIDR {})",
        listener.local_addr()?,
        apiserver.service_cidr()
    );
    let tls = server::service_tls_config(&ca, INJECTOR, OSM_NAMESPACE, Duration::from_secs(3600))?;
    let (_config_tx, config) = watch::channel(InjectConfig::new(
        "osm",
        OSM_NAMESPACE,
        "envoyproxy/envoy:v1.40.0",
        "osm-init:test",
    ));
    let _server = start_server(
        listener,
        tls,
        injector_router(Injector::new(client.clone(), ca.clone(), config)),
    );

    let mwc = MutatingWebhookConfiguration {
        metadata: meta("osm-webhook-osm"),
        webhooks: Some(vec![MutatingWebhook {
            name: "osm-inject.k8s.io".into(),
            client_config: WebhookClientConfig {
                ca_bundle: Some(ByteString(ca.root_cert_pem().as_bytes().to_vec())),
                ..service_ref(INJECTOR, INJECTOR_PATH, INJECTOR_PORT)
            },
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".into()]),
                operations: Some(vec!["CREATE".into()]),
                resources: Some(vec!["pods".into()]),
                scope: None,
            }]),
            namespace_selector: Some(LabelSelector {
                match_labels: Some([("openservicemesh.io/monitored-by".to_owned(), "osm".to_owned())].into()),
                match_expressions: None,
            }),
            failure_policy: Some("Fail".into()),
            side_effects: "NoneOnDryRun".into(),
            admission_review_versions: vec!["v1".into(), "v1beta1".into()],
            timeout_seconds: Some(10),
            ..MutatingWebhook::default()
        }]),
    };
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &mwc)
        .await
        .context("creating the MutatingWebhookConfiguration")?;

    let app_ns = format!("bookstore-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    create_namespace(
        &client,
        &app_ns,
        &[("openservicemesh.io/monitored-by", "osm")],
        &[("openservicemesh.io/sidecar-injection", "enabled")],
    )
    .await?;
    let pods = Api::<Pod>::namespaced(client.clone(), &app_ns);
    let secrets = Api::<Secret>::namespaced(client.clone(), &app_ns);

    // The apiserver picks the configuration up asynchronously: dry-run creates until one comes back
    // injected. Dry runs must not leave a Secret behind.
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let deadline = Instant::now() + WAIT;
    let dry = loop {
        match pods.create(&dry_run, &pod("dry", json!({}))?).await {
            Ok(p) if names(&p.spec.as_ref().unwrap().init_containers).contains(&"osm-init".to_owned()) => {
                break p;
            }
            Ok(_) | Err(kube::Error::Api(_)) if Instant::now() < deadline => tokio::time::sleep(POLL).await,
            Ok(_) => bail!("the webhook was not called within {WAIT:?}"),
            Err(e) => return Err(e).context("dry-run pod creation"),
        }
    };
    let dry_uuid = dry
        .labels()
        .get("osm-proxy-uuid")
        .cloned()
        .context("dry-run pod without uuid label")?;
    ensure!(
        secrets
            .get_opt(&format!("envoy-bootstrap-config-{dry_uuid}"))
            .await?
            .is_none(),
        "a dry run created a bootstrap Secret"
    );

    // The real thing.
    pods.create(&PostParams::default(), &pod("bookstore-v1", json!({}))?)
        .await
        .context("creating the pod")?;
    let stored = pods.get("bookstore-v1").await?;
    let uuid = stored
        .labels()
        .get("osm-proxy-uuid")
        .cloned()
        .context("the stored pod has no osm-proxy-uuid label")?;
    ensure!(uuid != dry_uuid, "uuids must be fresh per admission");
    assert_eq!(stored.labels().get("app").map(String::as_str), Some("bookstore"));
    let spec = stored.spec.as_ref().unwrap();
    assert_eq!(names(&spec.init_containers), ["osm-init"]);
    assert_eq!(
        spec.containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["bookstore", "envoy"]
    );
    let app = &spec.containers[0];
    let live = app.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!(live.path.as_deref(), Some("/osm-liveness-probe"));
    assert_eq!(
        live.port,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(15901)
    );
    let ready = app.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!(ready.path.as_deref(), Some("/osm-readiness-probe"));
    assert_eq!(
        ready.port,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(15902)
    );
    let envoy = &spec.containers[1];
    assert_eq!(
        envoy.args.as_ref().unwrap()[4..],
        ["--service-cluster".to_owned(), format!("bookstore.{app_ns}")]
    );
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "envoy-bootstrap-config-volume")
        .context("no bootstrap volume")?;
    let secret_name = format!("envoy-bootstrap-config-{uuid}");
    assert_eq!(
        volume.secret.as_ref().and_then(|s| s.secret_name.as_deref()),
        Some(secret_name.as_str())
    );

    let secret = secrets.get(&secret_name).await.context("the bootstrap Secret")?;
    assert_eq!(secret.labels().get("osm-proxy-uuid"), Some(&uuid));
    let bootstrap: Value = serde_json::from_slice(
        &secret
            .data
            .as_ref()
            .and_then(|d| d.get("bootstrap.yaml"))
            .context("no bootstrap.yaml")?
            .0,
    )?;
    assert_eq!(
        bootstrap["node"]["id"],
        format!("{uuid}.sidecar.bookstore.{app_ns}.cluster.local")
    );
    let listeners: Vec<&str> = bootstrap["static_resources"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(listeners, ["liveness_listener", "readiness_listener"]);
    let all = secrets.list(&ListParams::default()).await?;
    assert_eq!(
        all.items
            .iter()
            .filter(|s| s.name_any().starts_with("envoy-bootstrap-config-"))
            .count(),
        1,
        "exactly one bootstrap Secret (none for the dry runs)"
    );

    probe_pod_scenario(&pods, &secrets).await?;

    // Opted out: stored exactly as sent.
    let sent = pod(
        "opted-out",
        json!({"openservicemesh.io/sidecar-injection": "disabled"}),
    )?;
    pods.create(&PostParams::default(), &sent).await?;
    let stored = pods.get("opted-out").await?;
    assert!(stored.labels().get("osm-proxy-uuid").is_none());
    let spec = stored.spec.as_ref().unwrap();
    assert!(spec.init_containers.is_none(), "{:?}", spec.init_containers);
    assert_eq!(names(&Some(spec.containers.clone())), ["bookstore"]);
    // The apiserver defaults a probe's scheme and thresholds; port and path are as sent.
    let http_get = |p: &Pod| {
        let get = p.spec.as_ref().unwrap().containers[0]
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.clone())
            .unwrap();
        (get.port, get.path)
    };
    assert_eq!(http_get(&stored), http_get(&sent));
    Ok(())
}

/// Every kind of probe, stored by the real apiserver as the injector rewrote it: HTTP to upstream's
/// port and path, HTTPS to the same ports with scheme and path kept, TCP to `osm-healthcheck` on 15904
/// with `Original-Tcp-Port` (and that container added), exec untouched, and a second container's HTTP
/// probe on its own port (exempted in `osm-init`'s arguments) and path; the bootstrap Secret holds one
/// listener per HTTP/HTTPS probe. (gRPC probes do not exist in the 1.20 API; the unit tests cover them.)
async fn probe_pod_scenario(pods: &Api<Pod>, secrets: &Api<Secret>) -> anyhow::Result<()> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let sent: Pod = serde_json::from_value(json!({
        "metadata": {"name": "probes"},
        "spec": {"containers": [
            {
                "name": "web", "image": "web:1", "ports": [{"name": "http", "containerPort": 8080}],
                "livenessProbe": {"httpGet": {"port": "http", "path": "/live"}},
                "readinessProbe": {"httpGet": {"port": 8443, "path": "/ready", "scheme": "HTTPS"}},
                "startupProbe": {"tcpSocket": {"port": 5432}}
            },
            {
                "name": "admin", "image": "admin:1",
                "livenessProbe": {"httpGet": {"port": 9000, "path": "/live"}},
                "readinessProbe": {"exec": {"command": ["true"]}}
            }
        ]}
    }))?;
    pods.create(&PostParams::default(), &sent)
        .await
        .context("creating the probes pod")?;
    let stored = pods.get("probes").await?;
    let spec = stored.spec.as_ref().unwrap();
    assert_eq!(
        names(&Some(spec.containers.clone())),
        ["web", "admin", "osm-healthcheck", "envoy"]
    );
    let http_get = |p: Option<&k8s_openapi::api::core::v1::Probe>| {
        let p = p.expect("probe kept");
        assert!(p.tcp_socket.is_none(), "{p:?}");
        p.http_get.clone().expect("an httpGet probe")
    };
    let (web, admin) = (&spec.containers[0], &spec.containers[1]);
    let live = http_get(web.liveness_probe.as_ref());
    assert_eq!(
        (live.port, live.path.as_deref()),
        (IntOrString::Int(15901), Some("/osm-liveness-probe"))
    );
    let ready = http_get(web.readiness_probe.as_ref());
    assert_eq!(
        (ready.port, ready.path.as_deref(), ready.scheme.as_deref()),
        (IntOrString::Int(15902), Some("/ready"), Some("HTTPS"))
    );
    let startup = http_get(web.startup_probe.as_ref());
    assert_eq!(
        (startup.port, startup.path.as_deref()),
        (IntOrString::Int(15904), Some("/osm-healthcheck"))
    );
    let headers: Vec<(String, String)> = startup
        .http_headers
        .iter()
        .flatten()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    assert_eq!(headers, [("Original-Tcp-Port".to_owned(), "5432".to_owned())]);
    let admin_live = http_get(admin.liveness_probe.as_ref());
    assert_eq!(
        (admin_live.port, admin_live.path.as_deref()),
        (IntOrString::Int(15905), Some("/osm-liveness-probe/admin"))
    );
    assert_eq!(
        admin.readiness_probe.as_ref().and_then(|p| p.exec.clone()),
        sent.spec.as_ref().unwrap().containers[1]
            .readiness_probe
            .as_ref()
            .and_then(|p| p.exec.clone())
    );
    let healthcheck = &spec.containers[2];
    assert_eq!(healthcheck.image.as_deref(), Some("osm-init:test"));
    assert_eq!(healthcheck.command.as_deref(), Some(&["osm-init".to_owned()][..]));
    assert_eq!(
        healthcheck.args.clone().unwrap_or_default(),
        ["healthcheck", "--listen-port", "15904", "--allowed-ports=5432"]
    );
    let init = spec.init_containers.as_ref().unwrap();
    assert_eq!(
        init[0].args.clone().unwrap_or_default(),
        ["--inbound-port-exclusion-list=15905"]
    );

    let uuid = stored
        .labels()
        .get("osm-proxy-uuid")
        .cloned()
        .context("no uuid label")?;
    let secret = secrets.get(&format!("envoy-bootstrap-config-{uuid}")).await?;
    let bootstrap: Value = serde_json::from_slice(
        &secret
            .data
            .as_ref()
            .and_then(|d| d.get("bootstrap.yaml"))
            .context("no bootstrap.yaml")?
            .0,
    )?;
    let listeners: Vec<(&str, &Value)> = bootstrap["static_resources"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap(),
                &l["address"]["socket_address"]["port_value"],
            )
        })
        .collect();
    assert_eq!(
        listeners,
        [
            ("liveness_listener", &json!(15901)),
            ("readiness_listener", &json!(15902)),
            ("liveness_admin_listener", &json!(15905)),
        ]
    );
    Ok(())
}

fn traffic_target(name: &str, namespace: &str, destination_namespace: &str) -> anyhow::Result<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "access.smi-spec.io/v1alpha3",
        "kind": "TrafficTarget",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "destination": {"kind": "ServiceAccount", "name": "bookstore", "namespace": destination_namespace},
            "sources": [{"kind": "ServiceAccount", "name": "bookbuyer", "namespace": "bookbuyer"}],
            "rules": [{"kind": "HTTPRouteGroup", "name": "bookstore-service-routes", "matches": ["buy-a-book"]}]
        }
    }))?)
}

/// The validator behind a ValidatingWebhookConfiguration: a TrafficTarget outside its destination's
/// namespace is refused with a message naming `spec.destination.namespace`; a correct one is stored.
/// Likewise for bad IngressBackends (`ingress_backend_refusals`).
#[tokio::test]
async fn validator_is_called_by_the_apiserver() -> anyhow::Result<()> {
    let Some(assets) = require_or_skip("validator_is_called_by_the_apiserver") else {
        return Ok(());
    };
    let apiserver = ApiServer::start_with(&assets).await?;
    let result = validator_scenario(&apiserver).await;
    if result.is_err() {
        eprintln!("{}", apiserver.log_tails(40));
    }
    result
}

/// CRDs, the validator's Service and TLS server, and a ValidatingWebhookConfiguration for our groups.
async fn start_validator(apiserver: &ApiServer) -> anyhow::Result<(Client, Running)> {
    let client = apiserver.client();
    let ca = ca();
    osm_envtest::apply_crds(&client, &osm_api::crds::all()).await?;
    create_namespace(&client, OSM_NAMESPACE, &[], &[]).await?;
    let listener = service_listener(&client, VALIDATOR_SERVICE, VALIDATOR_PORT).await?;
    let tls = server::service_tls_config(&ca, VALIDATOR_SERVICE, OSM_NAMESPACE, Duration::from_secs(3600))?;
    let server = start_server(
        listener,
        tls,
        validator_router(Validator::with_client(client.clone())),
    );

    let groups = [
        "access.smi-spec.io",
        "specs.smi-spec.io",
        "split.smi-spec.io",
        "config.openservicemesh.io",
        "policy.openservicemesh.io",
    ];
    let vwc = ValidatingWebhookConfiguration {
        metadata: meta("osm-validator-mesh-osm"),
        webhooks: Some(vec![ValidatingWebhook {
            name: "osm-validator.k8s.io".into(),
            client_config: WebhookClientConfig {
                ca_bundle: Some(ByteString(ca.root_cert_pem().as_bytes().to_vec())),
                ..service_ref(VALIDATOR_SERVICE, VALIDATOR_PATH, VALIDATOR_PORT)
            },
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(groups.iter().map(|g| (*g).to_owned()).collect()),
                api_versions: Some(vec!["*".into()]),
                operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
                resources: Some(vec!["*".into()]),
                scope: None,
            }]),
            failure_policy: Some("Fail".into()),
            side_effects: "None".into(),
            admission_review_versions: vec!["v1".into(), "v1beta1".into()],
            timeout_seconds: Some(10),
            ..ValidatingWebhook::default()
        }]),
    };
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &vwc)
        .await
        .context("creating the ValidatingWebhookConfiguration")?;
    Ok((client, server))
}

async fn validator_scenario(apiserver: &ApiServer) -> anyhow::Result<()> {
    let (client, _server) = start_validator(apiserver).await?;

    let ns = format!("bookbuyer-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    create_namespace(&client, &ns, &[], &[]).await?;
    let gvk = GroupVersionKind::gvk("access.smi-spec.io", "v1alpha3", "TrafficTarget");
    let targets = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &ApiResource::from_gvk(&gvk));

    // Until the apiserver has picked the configuration up (and the CRD's handler is served), dry runs
    // of the bad object are accepted or 404; then they are refused by the webhook.
    let bad = traffic_target("bookstore", &ns, "bookstore")?;
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let deadline = Instant::now() + WAIT;
    let message = loop {
        match targets.create(&dry_run, &bad).await {
            Err(kube::Error::Api(s)) if s.message.contains("denied the request") => break s.message,
            Ok(_) | Err(kube::Error::Api(_)) if Instant::now() < deadline => tokio::time::sleep(POLL).await,
            other => bail!("the validator was not called within {WAIT:?}: {other:?}"),
        }
    };
    let expected = format!(
        "TrafficTarget {ns}/bookstore: spec.destination.namespace: must equal the TrafficTarget's namespace \
         \"{ns}\" (got \"bookstore\")"
    );
    ensure!(message.contains(&expected), "refusal message: {message}");
    match targets.create(&PostParams::default(), &bad).await {
        Err(kube::Error::Api(s)) => ensure!(s.message.contains(&expected), "{}", s.message),
        other => bail!("the bad TrafficTarget must be refused: {other:?}"),
    }
    ensure!(
        targets.get_opt("bookstore").await?.is_none(),
        "a refused object was stored"
    );

    let good = traffic_target("bookstore-ok", &ns, &ns)?;
    targets
        .create(&PostParams::default(), &good)
        .await
        .context("a correct TrafficTarget must be accepted")?;
    ingress_backend_refusals(&client, &ns).await?;
    retry_refusals(&client, &ns).await?;
    upstream_traffic_setting_refusals(&client, &ns).await
}

/// UpstreamTrafficSettings the webhook refuses, each naming `spec.host` or the status code: a host in
/// another namespace, a host another setting of the namespace already has (in another spelling), a
/// status code Envoy cannot send. Upstream's circuit-breaking demo setting is accepted.
async fn upstream_traffic_setting_refusals(client: &Client, ns: &str) -> anyhow::Result<()> {
    let gvk = GroupVersionKind::gvk("policy.openservicemesh.io", "v1alpha1", "UpstreamTrafficSetting");
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk));
    let object = |name: &str, spec: Value| -> anyhow::Result<DynamicObject> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "policy.openservicemesh.io/v1alpha1", "kind": "UpstreamTrafficSetting",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}))?)
    };
    let first = json!({"host": format!("httpbin.{ns}.svc.cluster.local"),
                       "connectionSettings": {"tcp": {"maxConnections": 100, "connectTimeout": "5s"},
                                              "http": {"maxPendingRequests": 1, "maxRequestsPerConnection": 5}}});
    api.create(&PostParams::default(), &object("http-circuit-breaking", first)?)
        .await
        .context("upstream's circuit-breaking setting must be accepted")?;
    let cases = [
        (
            "elsewhere",
            json!({"host": "httpbin.other.svc.cluster.local"}),
            "spec.host",
        ),
        ("duplicate", json!({"host": format!("httpbin.{ns}")}), "spec.host"),
        (
            "teapot",
            json!({"host": "fortio", "rateLimit": {"local": {"http": {"requests": 1, "unit": "second",
                                                                       "responseStatusCode": 418}}}}),
            "spec.rateLimit.local.http.responseStatusCode",
        ),
    ];
    for (name, spec, field) in cases {
        expect_refused(&api, &object(name, spec)?, field).await?;
    }
    Ok(())
}

/// Creating `object` is refused by the validating webhook with a message naming `<Kind> <ns>/<name>:
/// <field>`.
async fn expect_refused(api: &Api<DynamicObject>, object: &DynamicObject, field: &str) -> anyhow::Result<()> {
    let kind = object.types.as_ref().map(|t| t.kind.as_str()).unwrap_or_default();
    let (ns, name) = (object.namespace().unwrap_or_default(), object.name_any());
    ensure!(!kind.is_empty(), "{name}: the object names no kind");
    match api.create(&PostParams::default(), object).await {
        Err(kube::Error::Api(s)) => ensure!(
            s.message.contains("denied the request")
                && s.message.contains(&format!("{kind} {ns}/{name}: {field}")),
            "{kind} {name}: refusal must name {field}: {}",
            s.message
        ),
        other => bail!("{kind} {name} must be refused: {other:?}"),
    }
    Ok(())
}

/// Retries the webhook refuses, each naming its field: a destination that is not a Service, a
/// condition Envoy does not know. Upstream's docs Retry is accepted.
async fn retry_refusals(client: &Client, ns: &str) -> anyhow::Result<()> {
    let gvk = GroupVersionKind::gvk("policy.openservicemesh.io", "v1alpha1", "Retry");
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk));
    let object = |name: &str, destination_kind: &str, retry_on: &str| -> anyhow::Result<DynamicObject> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "policy.openservicemesh.io/v1alpha1", "kind": "Retry",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "source": {"kind": "ServiceAccount", "name": "client", "namespace": ns},
                "destinations": [{"kind": destination_kind, "name": "server", "namespace": ns}],
                "retryPolicy": {"retryOn": retry_on, "perTryTimeout": "1s", "numRetries": 5,
                                "retryBackoffBaseInterval": "1s"}}}))?)
    };
    let cases = [
        (
            "retry-to-account",
            "ServiceAccount",
            "5xx",
            "spec.destinations[0].kind",
        ),
        (
            "retry-on-typo",
            "Service",
            "5xx,gateway-eror",
            "spec.retryPolicy.retryOn",
        ),
    ];
    for (name, kind, retry_on, field) in cases {
        expect_refused(&api, &object(name, kind, retry_on)?, field).await?;
    }
    api.create(&PostParams::default(), &object("ok", "Service", "5xx")?)
        .await
        .context("a correct Retry must be accepted")?;
    Ok(())
}

/// IngressBackends the webhook refuses, each naming its field: https validating client certificates
/// without an AuthenticatedPrincipal, an IPRange that is not a CIDR, a backend listed twice.
async fn ingress_backend_refusals(client: &Client, ns: &str) -> anyhow::Result<()> {
    let gvk = GroupVersionKind::gvk("policy.openservicemesh.io", "v1alpha1", "IngressBackend");
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk));
    let object = |name: &str, spec: Value| -> anyhow::Result<DynamicObject> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "policy.openservicemesh.io/v1alpha1", "kind": "IngressBackend",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}))?)
    };
    let nginx = json!({"kind": "Service", "name": "ingress-nginx", "namespace": "ingress-ns"});
    let cases = [
        (
            "https-no-principal",
            json!({"backends": [{"name": "httpbin", "port": {"number": 14001, "protocol": "https"},
                                 "tls": {"skipClientCertValidation": false}}],
                   "sources": [nginx]}),
            "spec.backends[0].tls.skipClientCertValidation",
        ),
        (
            "not-a-cidr",
            json!({"backends": [{"name": "httpbin", "port": {"number": 14001, "protocol": "http"}}],
                   "sources": [{"kind": "IPRange", "name": "10.0.0.300/8"}]}),
            "spec.sources[0].name",
        ),
        (
            "duplicate",
            json!({"backends": [{"name": "httpbin", "port": {"number": 14001, "protocol": "http"}},
                                {"name": "httpbin", "port": {"number": 14001, "protocol": "http"}}],
                   "sources": [nginx]}),
            "spec.backends[1]",
        ),
    ];
    for (name, spec, field) in cases {
        expect_refused(&api, &object(name, spec)?, field).await?;
    }
    let ok = json!({"backends": [{"name": "httpbin", "port": {"number": 14001, "protocol": "https"},
                                  "tls": {"skipClientCertValidation": false}}],
                    "sources": [nginx, {"kind": "AuthenticatedPrincipal", "name": "ingress-nginx.ingress-ns.example.com"}]});
    api.create(&PostParams::default(), &object("ok", ok)?)
        .await
        .context("a correct IngressBackend must be accepted")?;
    Ok(())
}

/// Nothing accepted and ignored, on Kubernetes: each entry of `osm_api::unsupported::UNSUPPORTED`,
/// created through the real kube-apiserver, is stored and answered with the admission warning that
/// kubectl prints (`Warning: ...`, the HTTP `Warning: 299 - "..."` header), naming object and field.
#[tokio::test]
async fn unsupported_warns_as_admission_warnings() -> anyhow::Result<()> {
    let Some(assets) = require_or_skip("unsupported_warns_as_admission_warnings") else {
        return Ok(());
    };
    let apiserver = ApiServer::start_with(&assets).await?;
    let result = unsupported_scenario(&apiserver).await;
    if result.is_err() {
        eprintln!("{}", apiserver.log_tails(40));
    }
    result
}

/// The resource name of an OSM kind.
fn plural_of(kind: &str) -> anyhow::Result<&'static str> {
    Ok(match kind {
        "Egress" => "egresses",
        "Retry" => "retries",
        "IngressBackend" => "ingressbackends",
        "UpstreamTrafficSetting" => "upstreamtrafficsettings",
        "MeshConfig" => "meshconfigs",
        "MeshRootCertificate" => "meshrootcertificates",
        other => bail!("no resource name known for {other}"),
    })
}

/// Creates `object` with a raw request, as kubectl does, and returns the warnings the apiserver
/// relayed (the `Warning` headers' texts).
async fn create_collecting_warnings(client: &Client, object: &Value) -> anyhow::Result<(u16, Vec<String>)> {
    let api_version = object["apiVersion"].as_str().context("apiVersion")?;
    let kind = object["kind"].as_str().context("kind")?;
    let ns = object["metadata"]["namespace"].as_str().context("namespace")?;
    let (group, version) = api_version.split_once('/').context("group/version")?;
    let plural = plural_of(kind)?;
    let request = http::Request::post(format!("/apis/{group}/{version}/namespaces/{ns}/{plural}"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(object)?)?;
    let response = client.send(request.map(kube::client::Body::from)).await?;
    let status = response.status().as_u16();
    let warnings = response
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        // `299 - "text"`: the text, unquoted.
        .map(|v| {
            v.trim_start_matches("299 - ")
                .trim_matches('"')
                .replace("\\\"", "\"")
        })
        .collect();
    Ok((status, warnings))
}

async fn unsupported_scenario(apiserver: &ApiServer) -> anyhow::Result<()> {
    let (client, _server) = start_validator(apiserver).await?;
    let ns = format!("unsupported-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    create_namespace(&client, &ns, &[], &[]).await?;

    // The webhook configuration takes effect asynchronously: wait until a dry run of the first
    // sample comes back with its warning.
    let all = samples::all(&ns);
    let (_, _, first) = &all[0];
    let mut dry_run = first.clone();
    dry_run["metadata"]["name"] = json!("probe");
    let api_version = first["apiVersion"].as_str().context("apiVersion")?;
    let plural = plural_of(first["kind"].as_str().context("kind")?)?;
    let deadline = Instant::now() + WAIT;
    loop {
        let request = http::Request::post(format!("/apis/{api_version}/namespaces/{ns}/{plural}?dryRun=All"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&dry_run)?)?;
        let response = client.send(request.map(kube::client::Body::from)).await?;
        if response.headers().contains_key("warning") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the validator gave no warning within {WAIT:?}"
        );
        tokio::time::sleep(POLL).await;
    }

    let mut missing = Vec::new();
    for (entry, name, object) in &all {
        let (status, warnings) = create_collecting_warnings(&client, object).await?;
        ensure!(
            status == 201,
            "{entry:?}: creating {name} answered {status}: the object must be accepted"
        );
        let kind = object["kind"].as_str().unwrap_or_default();
        let want = match samples::field(entry) {
            Some(field) => format!(
                "{kind} {ns}/{name}: {field}: not supported yet, accepted and ignored: {}",
                entry.effect
            ),
            None => format!(
                "{kind} {ns}/{name}: this kind is not supported yet, accepted and ignored: {}",
                entry.effect
            ),
        };
        if !warnings.contains(&want) {
            missing.push(format!("{entry:?}: want {want:?}, got {warnings:?}"));
        }
    }
    ensure!(
        missing.is_empty(),
        "admission warnings missing:\n{}",
        missing.join("\n")
    );
    Ok(())
}
