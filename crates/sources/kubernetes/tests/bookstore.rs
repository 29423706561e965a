//! `KubeSource` against a real kube-apiserver v1.20: the bookstore demo's namespaces, Services, Pods
//! (addresses set through the status subresource), Endpoints and SMI policies are created, and the
//! delivered `MeshInput`, run through `osm_model::compute`, shows SMI mode (bookbuyer reaches
//! bookstore, bookthief nothing), then permissive mode after a MeshConfig patch, and an invalid
//! TrafficTarget logged and skipped while the rest is still served. OSM Egress policies of monitored
//! namespaces are served too, and leave the input when deleted.
//!
//! Each test starts its own apiserver and uses namespaces with a unique suffix; without the
//! binaries it skips loudly (fails under `CI=true`).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Namespace,
    ObjectReference, Pod, PodSpec, Service, ServiceAccount, ServicePort, ServiceSpec,
};
use kube::Client;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use osm_api::config::MeshConfig;
use osm_api::contract::{MONITORED_BY_LABEL, PROXY_UUID_LABEL};
use osm_api::policy::{Egress, EgressSpec};
use osm_api::smi::access::TrafficTarget;
use osm_api::smi::specs::{HTTPRouteGroup, TCPRoute};
use osm_api::smi::split::TrafficSplit;
use osm_fixtures::{BOOKSTORE_PODS, BOOKSTORE_SERVICES};
use osm_k8s::{KubeOptions, KubeSource};
use osm_model::{MeshInput, ObjectRef, compute};
use serde_json::json;
use tokio::sync::{mpsc, watch};

const PORT: i32 = 14001;
const WAIT: Duration = Duration::from_secs(30);

/// Log lines written by the code under test, to check what was reported.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer lock").extend_from_slice(buf);
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer lock")).into_owned()
    }
}

fn meta(ns: Option<&str>, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(Into::into),
        labels: (!labels.is_empty()).then(|| {
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }),
        ..ObjectMeta::default()
    }
}

struct Mesh {
    client: Client,
    sfx: String,
}

impl Mesh {
    fn ns(&self, base: &str) -> String {
        format!("{base}-{}", self.sfx)
    }

    fn uuid(&self, pod: &str) -> String {
        format!("{pod}-{}", self.sfx)
    }

    async fn namespace(&self, base: &str, labels: &[(&str, &str)]) -> anyhow::Result<()> {
        let ns = Namespace {
            metadata: meta(None, &self.ns(base), labels),
            ..Namespace::default()
        };
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {base}"))?;
        Ok(())
    }

    /// A Pod with an `osm-proxy-uuid` label, then its address through the status subresource.
    async fn pod(
        &self,
        base: &str,
        name: &str,
        sa: &str,
        labels: &[(&str, &str)],
        ip: &str,
    ) -> anyhow::Result<()> {
        let ns = self.ns(base);
        let uuid = self.uuid(name);
        let mut all = labels.to_vec();
        all.push((PROXY_UUID_LABEL, &uuid));
        let sas = Api::<ServiceAccount>::namespaced(self.client.clone(), &ns);
        if sas.get_opt(sa).await?.is_none() {
            let account = ServiceAccount {
                metadata: meta(Some(&ns), sa, &[]),
                ..ServiceAccount::default()
            };
            sas.create(&PostParams::default(), &account).await?;
        }
        let pod = Pod {
            metadata: meta(Some(&ns), name, &all),
            spec: Some(PodSpec {
                service_account_name: Some(sa.into()),
                containers: vec![Container {
                    name: "app".into(),
                    image: Some("app".into()),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: PORT,
                        ..ContainerPort::default()
                    }]),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        let pods = Api::<Pod>::namespaced(self.client.clone(), &ns);
        pods.create(&PostParams::default(), &pod)
            .await
            .with_context(|| format!("creating pod {ns}/{name}"))?;
        let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .with_context(|| format!("setting the address of pod {ns}/{name}"))?;
        Ok(())
    }

    /// A Service and the Endpoints object a controller would write for it (`targetRef` to each pod).
    async fn service(
        &self,
        base: &str,
        name: &str,
        selector: &[(&str, &str)],
        pods: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let ns = self.ns(base);
        let svc = Service {
            metadata: meta(Some(&ns), name, &[]),
            spec: Some(ServiceSpec {
                selector: Some(
                    selector
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: PORT,
                    target_port: Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                        "http".into(),
                    )),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        Api::<Service>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), &svc)
            .await
            .with_context(|| format!("creating service {ns}/{name}"))?;
        let endpoints = Endpoints {
            metadata: meta(Some(&ns), name, &[]),
            subsets: Some(vec![EndpointSubset {
                addresses: Some(
                    pods.iter()
                        .map(|(pod, ip)| EndpointAddress {
                            ip: ip.to_string(),
                            target_ref: Some(ObjectReference {
                                kind: Some("Pod".into()),
                                namespace: Some(ns.clone()),
                                name: Some(pod.to_string()),
                                ..ObjectReference::default()
                            }),
                            ..EndpointAddress::default()
                        })
                        .collect(),
                ),
                ports: Some(vec![EndpointPort {
                    name: Some("http".into()),
                    port: PORT,
                    ..EndpointPort::default()
                }]),
                ..EndpointSubset::default()
            }]),
        };
        Api::<Endpoints>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), &endpoints)
            .await
            .with_context(|| format!("creating endpoints {ns}/{name}"))?;
        Ok(())
    }

    /// The bookstore SMI policies, moved into this test's namespaces.
    async fn policies(&self, yaml: &str) -> anyhow::Result<()> {
        let mut yaml = yaml.to_string();
        for base in ["bookbuyer", "bookthief", "bookstore", "bookwarehouse"] {
            yaml = yaml.replace(
                &format!("namespace: {base}\n"),
                &format!("namespace: {}\n", self.ns(base)),
            );
        }
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml)?;
        for doc in docs {
            let ns = doc["metadata"]["namespace"]
                .as_str()
                .context("policy namespace")?
                .to_string();
            let c = self.client.clone();
            let pp = PostParams::default();
            match doc["kind"].as_str() {
                Some("TrafficTarget") => {
                    Api::<TrafficTarget>::namespaced(c, &ns)
                        .create(&pp, &serde_json::from_value(doc)?)
                        .await?;
                }
                Some("HTTPRouteGroup") => {
                    Api::<HTTPRouteGroup>::namespaced(c, &ns)
                        .create(&pp, &serde_json::from_value(doc)?)
                        .await?;
                }
                Some("TCPRoute") => {
                    Api::<TCPRoute>::namespaced(c, &ns)
                        .create(&pp, &serde_json::from_value(doc)?)
                        .await?;
                }
                Some("TrafficSplit") => {
                    Api::<TrafficSplit>::namespaced(c, &ns)
                        .create(&pp, &serde_json::from_value(doc)?)
                        .await?;
                }
                other => bail!("unexpected kind {other:?}"),
            }
        }
        Ok(())
    }
}

/// Waits for the next delivered input matching `pred`, failing with what was delivered meanwhile.
async fn next_input(
    rx: &mut mpsc::UnboundedReceiver<MeshInput>,
    what: &str,
    pred: impl Fn(&MeshInput) -> bool,
) -> anyhow::Result<MeshInput> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = 0;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(input)) if pred(&input) => return Ok(input),
            Ok(Some(_)) => seen += 1,
            Ok(None) => bail!("{what}: the source stopped"),
            Err(_) => bail!("{what}: not delivered within {WAIT:?} ({seen} other inputs delivered)"),
        }
    }
}

/// True when the proxy `uuid` has an outbound route to `service` with at least one endpoint.
fn reaches(input: &MeshInput, uuid: &str, service: &ObjectRef) -> bool {
    let model = compute(input);
    let proxy = model
        .proxies
        .get(uuid)
        .unwrap_or_else(|| panic!("no proxy {uuid} in the model: {:?}", model.proxies.keys()));
    proxy
        .outbound
        .services
        .iter()
        .any(|s| &s.service == service && s.backends.iter().any(|b| !b.cluster.endpoints.is_empty()))
}

fn permissive(input: &MeshInput) -> bool {
    input.mesh_config.traffic.enable_permissive_traffic_policy_mode
}

/// The bookstore demo end to end through the apiserver: SMI mode, permissive after a MeshConfig
/// patch, an invalid TrafficTarget skipped with a log naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookstore_smi_then_permissive_and_invalid_policy_skipped() -> anyhow::Result<()> {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("osm_k8s=debug")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let Some(assets) =
        osm_envtest::require_or_skip("bookstore_smi_then_permissive_and_invalid_policy_skipped")
    else {
        return Ok(());
    };
    let api = osm_envtest::ApiServer::start_with(&assets).await?;
    let client = api.client();
    osm_envtest::apply_crds(&client, &osm_api::crds::all()).await?;

    let mesh = Mesh {
        client: client.clone(),
        sfx: suffix()?,
    };
    let monitored = [(MONITORED_BY_LABEL, "osm")];
    for base in ["bookbuyer", "bookthief", "bookstore", "bookwarehouse"] {
        mesh.namespace(base, &monitored).await?;
    }
    mesh.namespace("osm-system", &[]).await?;
    mesh.namespace("outside", &[]).await?;

    let mut ips = BTreeMap::new();
    for (i, (base, name, sa, labels)) in BOOKSTORE_PODS.iter().enumerate() {
        let ip = format!("10.1.0.{}", i + 10);
        mesh.pod(base, name, sa, labels, &ip).await?;
        ips.insert(*name, ip);
    }
    for (base, name, selector) in BOOKSTORE_SERVICES {
        let selected: Vec<(&str, &str)> = BOOKSTORE_PODS
            .iter()
            .filter(|(b, _, _, labels)| b == base && selector.iter().all(|kv| labels.contains(kv)))
            .map(|(_, pod, _, _)| (*pod, ips[pod].as_str()))
            .collect();
        mesh.service(base, name, selector, &selected).await?;
    }
    // An unlabelled namespace: nothing in it belongs to the mesh.
    mesh.pod(
        "outside",
        "intruder",
        "intruder",
        &[("app", "intruder")],
        "10.1.0.99",
    )
    .await?;
    mesh.service(
        "outside",
        "intruder",
        &[("app", "intruder")],
        &[("intruder", "10.1.0.99")],
    )
    .await?;
    mesh.policies(osm_fixtures::BOOKSTORE_POLICIES).await?;

    let osm_ns = mesh.ns("osm-system");
    let mesh_configs = Api::<MeshConfig>::namespaced(client.clone(), &osm_ns);
    let mc: MeshConfig = serde_json::from_value(json!({
        "apiVersion": "config.openservicemesh.io/v1alpha2",
        "kind": "MeshConfig",
        "metadata": {"name": "osm-mesh-config", "namespace": osm_ns},
        "spec": {"traffic": {"enablePermissiveTrafficPolicyMode": false}},
    }))?;
    mesh_configs.create(&PostParams::default(), &mc).await?;

    // Run the source.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop, shutdown) = watch::channel(false);
    let source = KubeSource::new(client.clone(), KubeOptions::new("osm", osm_ns.clone()));
    let task = tokio::spawn(source.run(shutdown, move |input| {
        let _ = tx.send(input);
    }));

    // The first delivery is already complete: it comes only after every initial list.
    let first = tokio::time::timeout(WAIT, rx.recv())
        .await
        .context("no input delivered")?
        .context("source stopped")?;
    let bookstore = ObjectRef::new(mesh.ns("bookstore"), "bookstore");
    assert_eq!(first.pods.len(), 5, "pods: {:?}", first.pods.keys());
    assert_eq!(first.services.len(), 4, "services: {:?}", first.services.keys());
    assert_eq!(first.traffic_targets.len(), 3);
    assert_eq!(first.http_route_groups.len(), 2);
    assert!(!permissive(&first), "MeshConfig says SMI mode");
    assert!(
        first
            .pods
            .keys()
            .chain(first.services.keys())
            .all(|id| id.namespace != mesh.ns("outside")),
        "objects of an unmonitored namespace leaked in"
    );
    let svc = &first.services[&bookstore];
    assert_eq!(svc.ports.len(), 1);
    assert_eq!(
        svc.ports[0].target_port, PORT as u16,
        "named target port resolved"
    );
    assert_eq!(first.endpoints[&bookstore].len(), 2);
    assert_eq!(
        first.pods[&ObjectRef::new(mesh.ns("bookbuyer"), "bookbuyer")]
            .proxy_uuid
            .as_deref(),
        Some(mesh.uuid("bookbuyer").as_str())
    );
    assert!(
        reaches(&first, &mesh.uuid("bookbuyer"), &bookstore),
        "SMI: bookbuyer reaches bookstore"
    );
    assert!(
        !reaches(&first, &mesh.uuid("bookthief"), &bookstore),
        "SMI: bookthief is refused"
    );
    let thief = compute(&first);
    assert!(
        thief.proxies[&mesh.uuid("bookthief")]
            .outbound
            .services
            .is_empty(),
        "SMI: bookthief reaches nothing"
    );

    // Permissive mode through a MeshConfig patch.
    let patch = json!({"spec": {"traffic": {"enablePermissiveTrafficPolicyMode": true}}});
    mesh_configs
        .patch("osm-mesh-config", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let open = next_input(&mut rx, "permissive input", permissive).await?;
    assert!(
        reaches(&open, &mesh.uuid("bookthief"), &bookstore),
        "permissive: bookthief reaches bookstore"
    );

    // An invalid TrafficTarget (not in its destination's namespace) is skipped with a log; a valid
    // marker created after it shows the source went past it and still serves the rest.
    let bad = TrafficTarget::new(
        "bad-target",
        serde_json::from_value(json!({
            "destination": {"kind": "ServiceAccount", "name": "bookstore-v1", "namespace": mesh.ns("bookstore")},
            "sources": [{"kind": "ServiceAccount", "name": "bookthief", "namespace": mesh.ns("bookthief")}],
            "rules": [{"kind": "HTTPRouteGroup", "name": "bookstore-service-routes", "matches": ["buy-a-book"]}],
        }))?,
    );
    Api::<TrafficTarget>::namespaced(client.clone(), &mesh.ns("bookthief"))
        .create(&PostParams::default(), &bad)
        .await?;
    let marker: TCPRoute = serde_json::from_value(json!({
        "apiVersion": "specs.smi-spec.io/v1alpha4",
        "kind": "TCPRoute",
        "metadata": {"name": "marker", "namespace": mesh.ns("bookstore")},
        "spec": {"matches": {"ports": [PORT]}},
    }))?;
    Api::<TCPRoute>::namespaced(client.clone(), &mesh.ns("bookstore"))
        .create(&PostParams::default(), &marker)
        .await?;
    let after = next_input(&mut rx, "input with the marker TCPRoute", |i| {
        !i.tcp_routes.is_empty()
    })
    .await?;
    assert!(
        !after
            .traffic_targets
            .contains_key(&ObjectRef::new(mesh.ns("bookthief"), "bad-target")),
        "the invalid TrafficTarget was served"
    );
    assert_eq!(after.traffic_targets.len(), 3);
    assert_eq!(after.services.len(), 4);
    assert!(reaches(&after, &mesh.uuid("bookthief"), &bookstore));
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("invalid object skipped") && l.contains("bad-target"))
        .with_context(|| format!("no log line about bad-target in:\n{text}"))?;
    assert!(
        line.contains(&mesh.ns("bookthief")) && line.contains("field="),
        "{line}"
    );

    // Unlabelling a namespace takes its objects out of the mesh.
    let unlabel = json!({"metadata": {"labels": {MONITORED_BY_LABEL: null}}});
    Api::<Namespace>::all(client.clone())
        .patch(
            &mesh.ns("bookthief"),
            &PatchParams::default(),
            &Patch::Merge(&unlabel),
        )
        .await?;
    let thief_pod = ObjectRef::new(mesh.ns("bookthief"), "bookthief");
    let gone = next_input(&mut rx, "input without bookthief", |i| {
        !i.pods.contains_key(&thief_pod)
    })
    .await?;
    assert_eq!(gone.pods.len(), 4);
    assert!(reaches(&gone, &mesh.uuid("bookbuyer"), &bookstore));
    // The invalid TrafficTarget (now outside the mesh anyway) was reported once, not per assembly.
    let reports = logs
        .text()
        .lines()
        .filter(|l| l.contains("invalid object skipped") && l.contains("bad-target"))
        .count();
    assert_eq!(reports, 1, "bad-target reported {reports} times");

    stop.send(true)?;
    tokio::time::timeout(WAIT, task)
        .await
        .context("source did not stop")??;
    Ok(())
}

/// A unique suffix for this test's namespaces.
fn suffix() -> anyhow::Result<String> {
    Ok(format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_micros()
            % 0xffffff
    ))
}

/// Egress policies through the apiserver: one created in a monitored namespace is delivered in
/// `MeshInput.egresses` with its spec, one in an unlabelled namespace never is, and deleting the
/// first takes it out of the input again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_policies_are_served_and_removed() -> anyhow::Result<()> {
    let Some(assets) = osm_envtest::require_or_skip("egress_policies_are_served_and_removed") else {
        return Ok(());
    };
    let api = osm_envtest::ApiServer::start_with(&assets).await?;
    let client = api.client();
    osm_envtest::apply_crds(&client, &osm_api::crds::all()).await?;
    let mesh = Mesh {
        client: client.clone(),
        sfx: suffix()?,
    };
    mesh.namespace("shop", &[(MONITORED_BY_LABEL, "osm")]).await?;
    mesh.namespace("outside", &[]).await?;
    mesh.namespace("osm-system", &[]).await?;
    let egress = |ns: &str| -> anyhow::Result<Egress> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "policy.openservicemesh.io/v1alpha1",
            "kind": "Egress",
            "metadata": {"name": "allow-example", "namespace": ns},
            "spec": {
                "sources": [{"kind": "ServiceAccount", "name": "web", "namespace": ns}],
                "hosts": ["example.com"],
                "ipAddresses": ["192.0.2.0/24"],
                "ports": [{"number": 443, "protocol": "https"}],
            },
        }))?)
    };
    // Listed before the source starts: in an unlabelled namespace, never part of the mesh.
    let outside = mesh.ns("outside");
    Api::<Egress>::namespaced(client.clone(), &outside)
        .create(&PostParams::default(), &egress(&outside)?)
        .await
        .context("creating the Egress outside the mesh")?;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop, shutdown) = watch::channel(false);
    let source = KubeSource::new(client.clone(), KubeOptions::new("osm", mesh.ns("osm-system")));
    let task = tokio::spawn(source.run(shutdown, move |input| {
        let _ = tx.send(input);
    }));
    let first = tokio::time::timeout(WAIT, rx.recv())
        .await
        .context("no input delivered")?
        .context("source stopped")?;
    assert!(
        first.egresses.is_empty(),
        "an Egress of an unmonitored namespace was served: {:?}",
        first.egresses
    );

    // Created in the monitored namespace: served, with its spec.
    let shop = mesh.ns("shop");
    let id = ObjectRef::new(shop.clone(), "allow-example");
    let egresses = Api::<Egress>::namespaced(client.clone(), &shop);
    let created = egress(&shop)?;
    egresses
        .create(&PostParams::default(), &created)
        .await
        .context("creating the Egress in the mesh")?;
    let served = next_input(&mut rx, "input with the Egress", |i| i.egresses.contains_key(&id)).await?;
    let keys: Vec<&ObjectRef> = served.egresses.keys().collect();
    assert_eq!(keys, [&id], "only the monitored namespace's Egress");
    let spec: &EgressSpec = &served.egresses[&id];
    assert_eq!(spec, &created.spec);

    // Deleted: out of the input.
    egresses
        .delete("allow-example", &DeleteParams::default())
        .await
        .context("deleting the Egress")?;
    let gone = next_input(&mut rx, "input without the Egress", |i| {
        !i.egresses.contains_key(&id)
    })
    .await?;
    assert!(gone.egresses.is_empty(), "{:?}", gone.egresses);

    stop.send(true)?;
    tokio::time::timeout(WAIT, task)
        .await
        .context("source did not stop")??;
    Ok(())
}
