//! Playing the parts of a cluster that envtest does not run, for the Kubernetes end-to-end tests:
//!
//! - the **ReplicaSet controller**: a Deployment's pod template becomes a Pod created through the API
//!   (so the real apiserver calls the admission webhooks on it);
//! - the **kubelet**: an admitted Pod runs in the network-namespace harness exactly as its (mutated)
//!   spec says — init containers' command and args, the sidecar's args, its bootstrap Secret mounted
//!   where the volume mount says, every other container's command (the apps, and `osm-healthcheck`
//!   when the injector added it for TCP probes) — and its status reports the pod IP; its prober is
//!   [`crate::prober`];
//! - the **endpoints controller**: Endpoints list the ready pods a Service selects;
//! - **kube-proxy**: a Service's ClusterIP becomes a local address of the hub namespace (for the
//!   control plane's Services, which the apiserver, itself in the hub, and the sidecars dial).
//!
//! Container images are not pulled: a command's first word names a workspace binary
//! ([`binary_for`]). Volumes are directories in the pod's harness directory.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Secret, Service,
};
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt as _};
use osm_harness::{EnvoyProcess, Hub, PodProcess, PodSpec};

/// The workspace binary a container command names (images are not pulled here).
pub fn binary_for(command: &str) -> Result<PathBuf> {
    let found = match command {
        "osm-control-plane" => osm_harness::workspace_bin(
            "osm-control-plane",
            "osm-control-plane",
            "crates/binaries/control-plane",
            "OSM_CONTROL_PLANE_BIN",
        ),
        "osm-init" => {
            osm_harness::workspace_bin("osm-init", "osm-init", "crates/binaries/init", "OSM_INIT_BIN")
        }
        "osm-demo-app" => osm_harness::demo_app_bin(),
        "osm" => osm_harness::workspace_bin("osm", "osm-cli", "crates/binaries/cli", "OSM_CLI_BIN"),
        other => bail!("no binary for container command {other:?}"),
    };
    Ok(found?)
}

/// A container's argv: command (mapped to a binary) then args.
pub fn argv(c: &k8s_openapi::api::core::v1::Container) -> Result<Vec<String>> {
    let mut words: Vec<String> = c.command.clone().unwrap_or_default();
    words.extend(c.args.clone().unwrap_or_default());
    let Some(first) = words.first() else {
        bail!(
            "container {} has no command (images' entrypoints are not known here)",
            c.name
        );
    };
    words[0] = binary_for(first)?.to_string_lossy().into_owned();
    Ok(words)
}

/// Creates `count` Pods from a Deployment's template, named `<deployment>-<i>`, as the ReplicaSet
/// controller would; returns the Pods as admitted (mutated) by the apiserver.
pub async fn create_pods_for(client: &Client, deployment: &Deployment, count: usize) -> Result<Vec<Pod>> {
    let ns = deployment.namespace().unwrap_or_default();
    let name = deployment.name_any();
    let template = deployment.spec.template.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let mut created = Vec::new();
    for i in 0..count {
        let mut meta = template.metadata.clone().unwrap_or_default();
        meta.name = Some(format!("{name}-{i}"));
        meta.namespace = Some(ns.clone());
        let pod = Pod {
            metadata: meta,
            spec: template.spec.clone(),
            ..Pod::default()
        };
        created.push(
            pods.create(&PostParams::default(), &pod)
                .await
                .with_context(|| format!("creating pod {ns}/{name}-{i}"))?,
        );
    }
    Ok(created)
}

/// A Pod running in the harness.
pub struct RunningPod {
    pub namespace: String,
    pub name: String,
    pub pod: osm_harness::Pod,
    pub envoy: Option<EnvoyProcess>,
    pub apps: Vec<PodProcess>,
    /// Volume name → directory standing in for it.
    pub volumes: BTreeMap<String, PathBuf>,
}

impl RunningPod {
    pub fn ip(&self) -> IpAddr {
        IpAddr::V4(self.pod.ip())
    }

    /// The directory standing in for volume `name`.
    pub fn volume(&self, name: &str) -> &Path {
        &self.volumes[name]
    }
}

/// Runs an admitted Pod: network namespace, status with its IP, volumes, init containers to
/// completion, then the sidecar (`envoy`) and app containers. `hosts` is the pod's DNS.
pub async fn run_pod(
    client: &Client,
    hub: &Hub,
    pod: &Pod,
    hosts: &[(IpAddr, Vec<String>)],
) -> Result<RunningPod> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let spec = pod.spec.clone().context("pod without spec")?;
    let hp = hub.add_pod(PodSpec::named(&name))?;
    hp.set_hosts(hosts)?;

    // Volumes: Secrets are read now (the kubelet mounts them before starting containers).
    let mut volumes = BTreeMap::new();
    for v in spec.volumes.iter().flatten() {
        let dir = hp.dir().join(format!("volume-{}", v.name));
        std::fs::create_dir_all(&dir)?;
        if let Some(secret) = &v.secret {
            let secret_name = secret.secret_name.clone().context("secret volume without name")?;
            let s = Api::<Secret>::namespaced(client.clone(), &ns)
                .get(&secret_name)
                .await
                .with_context(|| format!("pod {ns}/{name}: volume {} Secret {secret_name}", v.name))?;
            for (key, value) in s.data.iter().flatten() {
                std::fs::write(dir.join(key), &value.0)?;
            }
        }
        volumes.insert(v.name.clone(), dir);
    }

    for c in spec.init_containers.iter().flatten() {
        let argv = argv(c)?;
        let mut p = hp.spawn(&argv, &[])?;
        let status = p.wait_timeout(Duration::from_secs(60))?;
        if !status.success() {
            bail!(
                "pod {ns}/{name}: init container {} ({argv:?}) failed: {status}; {}",
                c.name,
                p.log_tail(20)
            );
        }
    }

    let mut running = RunningPod {
        namespace: ns.clone(),
        name: name.clone(),
        pod: hp,
        envoy: None,
        apps: Vec::new(),
        volumes,
    };
    for c in &spec.containers {
        // Volume mounts: arguments under a mount path point into the volume's directory.
        let mounts: Vec<(String, PathBuf)> = c
            .volume_mounts
            .iter()
            .flatten()
            .filter_map(|m| {
                running
                    .volumes
                    .get(&m.name)
                    .map(|d| (m.mount_path.clone(), d.clone()))
            })
            .collect();
        if c.name == "envoy" {
            let (mount, dir) = mounts
                .iter()
                .find(|(_, d)| d.join("bootstrap.yaml").is_file())
                .context("the envoy container mounts no volume with bootstrap.yaml")?;
            let bootstrap = std::fs::read_to_string(dir.join("bootstrap.yaml"))?;
            running.envoy = Some(running.pod.spawn_envoy_container(
                &bootstrap,
                mount,
                c.args.as_deref().unwrap_or(&[]),
            )?);
            continue;
        }
        let argv: Vec<String> = argv(c)?.into_iter().map(|a| map_path(&a, &mounts)).collect();
        running.apps.push(running.pod.spawn(&argv, &[])?);
    }

    let ip = running.ip().to_string();
    Api::<Pod>::namespaced(client.clone(), &ns)
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "status": {
                    "phase": "Running",
                    "podIP": ip,
                    "podIPs": [{ "ip": ip }],
                    "conditions": [{ "type": "Ready", "status": "True" }],
                }
            })),
        )
        .await
        .with_context(|| format!("reporting the status of pod {ns}/{name}"))?;
    Ok(running)
}

fn map_path(arg: &str, mounts: &[(String, PathBuf)]) -> String {
    for (mount, dir) in mounts {
        let mount = mount.trim_end_matches('/');
        if let Some(rest) = arg.strip_prefix(mount).filter(|r| r.starts_with('/')) {
            return dir
                .join(rest.trim_start_matches('/'))
                .to_string_lossy()
                .into_owned();
        }
    }
    arg.to_string()
}

/// Writes Endpoints for every Service in `namespaces` from the pods that run (endpoints controller).
pub async fn sync_endpoints(client: &Client, namespaces: &[&str], pods: &[RunningPod]) -> Result<()> {
    for ns in namespaces {
        let services = Api::<Service>::namespaced(client.clone(), ns)
            .list(&Default::default())
            .await?;
        for svc in services {
            let selector = svc
                .spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default();
            if selector.is_empty() {
                continue;
            }
            let stored: Api<Pod> = Api::namespaced(client.clone(), ns);
            let mut addresses = Vec::new();
            for rp in pods.iter().filter(|p| p.namespace == *ns) {
                let pod = stored.get(&rp.name).await?;
                let labels = pod.labels();
                if selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                    addresses.push(EndpointAddress {
                        ip: rp.ip().to_string(),
                        target_ref: Some(k8s_openapi::api::core::v1::ObjectReference {
                            kind: Some("Pod".into()),
                            name: Some(rp.name.clone()),
                            namespace: Some(ns.to_string()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                }
            }
            let ports = svc
                .spec
                .as_ref()
                .and_then(|s| s.ports.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|p| EndpointPort {
                    name: p.name,
                    port: match p.target_port {
                        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => n,
                        _ => p.port,
                    },
                    protocol: p.protocol,
                    app_protocol: p.app_protocol,
                })
                .collect();
            let endpoints = Endpoints {
                metadata: ObjectMeta {
                    name: Some(svc.name_any()),
                    namespace: Some(ns.to_string()),
                    ..ObjectMeta::default()
                },
                subsets: Some(vec![EndpointSubset {
                    addresses: Some(addresses),
                    ports: Some(ports),
                    ..Default::default()
                }]),
            };
            Api::<Endpoints>::namespaced(client.clone(), ns)
                .patch(
                    &svc.name_any(),
                    &PatchParams::apply("e2e-endpoints-controller").force(),
                    &Patch::Apply(serde_json::json!({
                        "apiVersion": "v1",
                        "kind": "Endpoints",
                        "metadata": endpoints.metadata,
                        "subsets": endpoints.subsets,
                    })),
                )
                .await
                .with_context(|| format!("endpoints of {ns}/{}", svc.name_any()))?;
        }
    }
    Ok(())
}

/// kube-proxy's part for the control plane: the Service's ClusterIP becomes a local address of the
/// hub (where the apiserver and the control-plane processes run); returns it.
pub async fn expose_service(client: &Client, hub: &Hub, ns: &str, name: &str) -> Result<IpAddr> {
    let svc = Api::<Service>::namespaced(client.clone(), ns).get(name).await?;
    let ip: IpAddr = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .context("service without ClusterIP")?
        .parse()?;
    let out = std::process::Command::new("ip")
        .args(["-n", hub.netns(), "addr", "add", &format!("{ip}/32"), "dev", "lo"])
        .output()?;
    if !out.status.success() {
        return Err(anyhow!(
            "ip addr add {ip} in {}: {}",
            hub.netns(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(ip)
}

/// `/etc/hosts` entries for every Service in `namespaces` (its ClusterIP and DNS names).
pub async fn service_hosts(client: &Client, namespaces: &[&str]) -> Result<Vec<(IpAddr, Vec<String>)>> {
    let mut entries = Vec::new();
    for ns in namespaces {
        for svc in Api::<Service>::namespaced(client.clone(), ns)
            .list(&Default::default())
            .await?
        {
            let Some(ip) = svc.spec.as_ref().and_then(|s| s.cluster_ip.clone()) else {
                continue;
            };
            let Ok(ip) = ip.parse::<IpAddr>() else { continue };
            let name = svc.name_any();
            entries.push((
                ip,
                vec![
                    format!("{name}.{ns}"),
                    format!("{name}.{ns}.svc"),
                    format!("{name}.{ns}.svc.cluster.local"),
                ],
            ));
        }
    }
    Ok(entries)
}
