//! Upstream OSM's egress, retry, circuit-breaking and headless/StatefulSet setups applied unchanged to a
//! real kube-apiserver and watched: the Egress policies of the egress demos (`curl` → `httpbin.org:80`
//! by host, and an IP range on 443) reach the model as the `curl` identity's egress; the Retry and
//! UpstreamTrafficSetting of the retry and circuit-breaking demos reach the input; the StatefulSet of upstream's
//! `e2e_statefulsets_test.go` (bitnami ZooKeeper: a `zookeeper-headless` Service, three replicas)
//! gives each pod its per-pod name `zookeeper-<i>.zookeeper-headless.<ns>`. No controller runs here:
//! the test plays the StatefulSet and endpoints controllers (pods with `hostname`/`subdomain`, an
//! Endpoints object with the hostnames), as the e2e tests play the kubelet.
//!
//! Starts its own apiserver; without the binaries it skips loudly (fails under `CI=true`).

#![forbid(unsafe_code)]

use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Pod, Service};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt as _};
use osm_k8s::{KubeOptions, KubeSource};
use osm_model::{MeshInput, ObjectRef, compute};
use serde_json::json;
use tokio::sync::{mpsc, watch};

const WAIT: Duration = Duration::from_secs(30);

/// The Egress policies of upstream's egress demos (shared with the API round-trip tests).
const DEMO_POLICIES: &str = include_str!("../../../core/api/tests/fixtures/policies.yaml");

/// The headless Service and StatefulSet in the shape of the ZooKeeper chart upstream's StatefulSet test
/// installs (the parts the mesh reads), in namespace `zookeeper`.
const ZOOKEEPER: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: zookeeper-headless
  namespace: zookeeper
spec:
  type: ClusterIP
  clusterIP: None
  publishNotReadyAddresses: true
  ports:
  - {name: tcp-client, port: 2181, targetPort: client}
  - {name: tcp-follower, port: 2888, targetPort: follower}
  - {name: tcp-election, port: 3888, targetPort: election}
  selector: {app.kubernetes.io/name: zookeeper, app.kubernetes.io/component: zookeeper}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: zookeeper
  namespace: zookeeper
spec:
  serviceName: zookeeper-headless
  replicas: 3
  podManagementPolicy: Parallel
  selector:
    matchLabels: {app.kubernetes.io/name: zookeeper, app.kubernetes.io/component: zookeeper}
  template:
    metadata:
      labels: {app.kubernetes.io/name: zookeeper, app.kubernetes.io/component: zookeeper}
    spec:
      serviceAccountName: zookeeper
      containers:
      - name: zookeeper
        image: docker.io/bitnami/zookeeper:3.8.0
        ports:
        - {name: client, containerPort: 2181}
        - {name: follower, containerPort: 2888}
        - {name: election, containerPort: 3888}
"#;

fn documents(yaml: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    Ok(serde_saphyr::from_multiple(yaml)?)
}

async fn create<K>(api: &Api<K>, value: serde_json::Value) -> anyhow::Result<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    Ok(api
        .create(&PostParams::default(), &serde_json::from_value(value)?)
        .await?)
}

/// The first input delivered for which `pred` holds (or `current`, if it does).
async fn input_until(
    rx: &mut mpsc::UnboundedReceiver<MeshInput>,
    current: &mut MeshInput,
    what: &str,
    pred: impl Fn(&MeshInput) -> bool,
) -> anyhow::Result<MeshInput> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if pred(current) {
            return Ok(current.clone());
        }
        *current = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .with_context(|| format!("{what}: not within {WAIT:?}"))?
            .context("the source stopped")?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_and_headless_upstream_yaml_is_watched() -> anyhow::Result<()> {
    let Some(assets) = osm_envtest::require_or_skip("egress_and_headless_upstream_yaml_is_watched") else {
        return Ok(());
    };
    let server = osm_envtest::ApiServer::start_with(&assets).await?;
    let client: Client = server.client();
    osm_envtest::apply_crds(&client, &osm_api::crds::all()).await?;
    let namespaces = Api::<Namespace>::all(client.clone());
    create(&namespaces, json!({"metadata": {"name": "osm-system"}})).await?;
    for ns in ["curl", "zookeeper", "fortio"] {
        create(
            &namespaces,
            json!({"metadata": {"name": ns, "labels": {"openservicemesh.io/monitored-by": "osm"}}}),
        )
        .await?;
    }

    let (tx, mut rx) = mpsc::unbounded_channel();
    let (_stop, shutdown) = watch::channel(false);
    let source = KubeSource::new(client.clone(), KubeOptions::new("osm", "osm-system"));
    tokio::spawn(source.run(shutdown, move |event| {
        let _ = tx.send(event);
    }));
    let mut input = MeshInput::default();

    // The egress demos' policies, unchanged, as `kubectl apply` sends them.
    let egress_gvk = GroupVersionKind::gvk("policy.openservicemesh.io", "v1alpha1", "Egress");
    let egresses =
        Api::<DynamicObject>::namespaced_with(client.clone(), "curl", &ApiResource::from_gvk(&egress_gvk));
    for doc in documents(DEMO_POLICIES)?
        .into_iter()
        .filter(|d| d["kind"] == "Egress")
    {
        let object: DynamicObject = serde_json::from_value(doc)?;
        egresses
            .create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("applying Egress {}", object.name_any()))?;
    }
    let input_now = input_until(&mut rx, &mut input, "both Egress policies", |i| {
        i.egresses.len() == 2
    })
    .await?;
    assert!(
        input_now
            .egresses
            .contains_key(&ObjectRef::new("curl", "httpbin-80"))
    );
    assert!(
        input_now
            .egresses
            .contains_key(&ObjectRef::new("curl", "egress-ip-range"))
    );

    // The retry and circuit-breaking demos' Retry and UpstreamTrafficSetting, unchanged.
    for kind in ["Retry", "UpstreamTrafficSetting"] {
        let gvk = GroupVersionKind::gvk("policy.openservicemesh.io", "v1alpha1", kind);
        for doc in documents(DEMO_POLICIES)?
            .into_iter()
            .filter(|d| d["kind"] == kind)
        {
            let ns = doc["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let api =
                Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &ApiResource::from_gvk(&gvk));
            let object: DynamicObject = serde_json::from_value(doc)?;
            api.create(&PostParams::default(), &object)
                .await
                .with_context(|| format!("applying {kind} {}", object.name_any()))?;
        }
    }
    let input_now = input_until(
        &mut rx,
        &mut input,
        "the Retry and the two UpstreamTrafficSettings",
        |i| !i.retries.is_empty() && i.upstream_traffic_settings.len() == 2,
    )
    .await?;
    let retry = &input_now.retries[&ObjectRef::new("curl", "retry")];
    assert_eq!(retry.retry_policy.num_retries, 5);
    let uts = &input_now.upstream_traffic_settings[&ObjectRef::new("fortio", "http-circuit-breaking")];
    assert_eq!(uts.host, "fortio.fortio.svc.cluster.local");

    // The StatefulSet setup: applied as written; then the test plays its controllers.
    for doc in documents(ZOOKEEPER)? {
        match doc["kind"].as_str() {
            Some("Service") => {
                create(&Api::<Service>::namespaced(client.clone(), "zookeeper"), doc).await?;
            }
            Some("StatefulSet") => {
                create(&Api::<StatefulSet>::namespaced(client.clone(), "zookeeper"), doc).await?;
            }
            other => bail!("unexpected kind {other:?}"),
        }
    }
    let pods = Api::<Pod>::namespaced(client.clone(), "zookeeper");
    let labels = json!({"app.kubernetes.io/name": "zookeeper", "app.kubernetes.io/component": "zookeeper"});
    let mut addresses = Vec::new();
    for i in 0..3 {
        let name = format!("zookeeper-{i}");
        let ip = format!("10.244.0.{}", 20 + i);
        let pod = create(
            &pods,
            json!({"metadata": {"name": name, "labels": labels},
                   "spec": {"hostname": name, "subdomain": "zookeeper-headless",
                            "serviceAccountName": "zookeeper",
                            "containers": [{"name": "zookeeper", "image": "docker.io/bitnami/zookeeper:3.8.0",
                                            "ports": [{"name": "client", "containerPort": 2181},
                                                      {"name": "follower", "containerPort": 2888},
                                                      {"name": "election", "containerPort": 3888}]}]}}),
        )
        .await?;
        let mut status = pod.clone();
        status.status = Some(serde_json::from_value(json!({"phase": "Running", "podIP": ip}))?);
        pods.replace_status(&name, &PostParams::default(), &status)
            .await?;
        addresses.push(json!({"ip": ip, "hostname": name,
                              "targetRef": {"kind": "Pod", "name": name, "namespace": "zookeeper"}}));
    }
    create(
        &Api::<Endpoints>::namespaced(client.clone(), "zookeeper"),
        json!({"metadata": {"name": "zookeeper-headless"},
               "subsets": [{"addresses": addresses,
                            "ports": [{"name": "tcp-client", "port": 2181},
                                      {"name": "tcp-follower", "port": 2888},
                                      {"name": "tcp-election", "port": 3888}]}]}),
    )
    .await?;
    // The demos' client, meshed (its sidecar's uuid label), in `curl`.
    let curl = create(
        &Api::<Pod>::namespaced(client.clone(), "curl"),
        json!({"metadata": {"name": "curl", "labels": {"app": "curl",
                            "osm-proxy-uuid": "9b1c6f3e-0d0a-4c55-8e0e-3f6f2b1a7c10"}},
               "spec": {"serviceAccountName": "curl",
                        "containers": [{"name": "curl", "image": "curlimages/curl"}]}}),
    )
    .await?;
    let mut status = curl.clone();
    status.status = Some(serde_json::from_value(
        json!({"phase": "Running", "podIP": "10.244.0.9"}),
    )?);
    Api::<Pod>::namespaced(client.clone(), "curl")
        .replace_status("curl", &PostParams::default(), &status)
        .await?;
    let headless = ObjectRef::new("zookeeper", "zookeeper-headless");
    let input_now = input_until(
        &mut rx,
        &mut input,
        "the headless endpoints with hostnames",
        |i| {
            i.endpoints
                .get(&headless)
                .is_some_and(|eps| eps.len() == 3 && eps.iter().all(|e| e.hostname.is_some()))
                && i.pods.len() == 4
        },
    )
    .await?;
    assert_eq!(input_now.services[&headless].cluster_ip, None, "headless");
    let pod0 = &input_now.pods[&ObjectRef::new("zookeeper", "zookeeper-0")];
    assert_eq!(
        (pod0.hostname.as_deref(), pod0.subdomain.as_deref()),
        (Some("zookeeper-0"), Some("zookeeper-headless"))
    );

    // The model (permissive) gives curl's sidecar each pod by name, and the demos' egress.
    let mut permissive = input_now.clone();
    permissive
        .mesh_config
        .traffic
        .enable_permissive_traffic_policy_mode = true;
    let model = compute(&permissive);
    let curl = model
        .proxies
        .values()
        .find(|p| p.pod == ObjectRef::new("curl", "curl"))
        .context("curl's proxy")?;
    let zookeeper = curl
        .outbound
        .services
        .iter()
        .find(|s| s.service == headless && s.port == 2181)
        .context("curl reaches zookeeper-headless:2181")?;
    let hosts: Vec<&str> = zookeeper.pod_hosts.iter().map(|p| p.hostname.as_str()).collect();
    assert_eq!(hosts, ["zookeeper-0", "zookeeper-1", "zookeeper-2"]);
    let egress_ports: Vec<u16> = curl.egress.ports.iter().map(|p| p.port).collect();
    assert_eq!(
        egress_ports,
        [80, 443],
        "the demos' Egress policies apply to curl"
    );
    let endpoints = input_now.endpoints_of(&input_now.services[&headless]);
    let names: Vec<String> = endpoints.iter().filter_map(|e| e.hostname.clone()).collect();
    assert_eq!(names, ["zookeeper-0", "zookeeper-1", "zookeeper-2"]);
    Ok(())
}
