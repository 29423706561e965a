//! `osm-loadtest envtest`: the load test through a real kube-apiserver (see `docs/scale.md`,
//! "Session 10"). The driver starts envtest (etcd + kube-apiserver), writes the mesh into it —
//! monitored namespaces, Pods (addresses through the status subresource, as a kubelet would),
//! Services, Endpoints, SMI policies, `osm-mesh-config` — then spawns the controller process in
//! Kubernetes mode (`osm_k8s::KubeSource` → `osm_controller::runner`) and connects one simulated
//! proxy per sidecar pod. It measures:
//!
//! - (a) an Endpoints change written to the apiserver → the last affected proxy's ACK;
//! - (b) the controller's CPU time per such event (`/proc/<pid>/stat`);
//! - (c) new ADS streams opened as a full recompute (a MeshConfig toggle) starts: their time to the
//!   first response, against as many opened while nothing changes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod,
    PodSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use osm_api::config::MeshConfig;
use osm_api::contract::{MESH_CONFIG_NAME, MONITORED_BY_LABEL, PROXY_UUID_LABEL, ads_server_name};
use osm_api::smi::access::TrafficTarget;
use osm_api::smi::specs::HTTPRouteGroup;
use osm_ca::{CertificateAuthority, TrustDomain};
use osm_xds::TypeKind;
use rustls::pki_types::ServerName;
use serde::Serialize;
use serde_json::json;

use crate::call::Dialer;
use crate::client::{self, Api as Ads, Proxy, ProxyStats, Shared};
use crate::controller::{CA_VALIDITY, OSM_NAMESPACE};
use crate::driver::{ControllerProcess, per_proxy, secs, simulated_proxy};
use crate::mesh::{self, MeshSpec, Mode, PORT, service_name};
use crate::protocol::{Command, Observed, Reply};
use crate::report::{self, percentile};
use crate::sys::{children_named, cpu_time, memory, now_ns, raise_nofile_limit};

/// The MeshConfig field flipped to force a full recompute in (c).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Toggle {
    /// `spec.traffic.enableEgress`: every proxy's model and config are recomputed, and every proxy
    /// gets a new outbound listener (a small push).
    Egress,
    /// `spec.traffic.enablePermissiveTrafficPolicyMode`: the same recompute, but SMI → permissive
    /// gives every proxy every service (at 1000 services a 1.7 MB config per proxy: the push dominates).
    Permissive,
}

#[derive(Clone, Debug, clap::Args, Serialize)]
pub struct EnvtestArgs {
    /// Services (one HTTP port 8080 each; headless, see docs/scale.md).
    #[arg(long, default_value_t = 1000)]
    pub services: usize,
    /// Pods (endpoints) per service.
    #[arg(long, default_value_t = 2)]
    pub endpoints: usize,
    /// Simulated proxies connected from the start (pods 0..P carry a sidecar); 0: one per pod
    /// (services × endpoints).
    #[arg(long, default_value_t = 0)]
    pub proxies: usize,
    #[arg(long, value_enum, default_value_t = Mode::Smi)]
    pub mode: Mode,
    /// SMI mode: how many other services each service may call.
    #[arg(long, default_value_t = 10)]
    pub allow: usize,
    /// Monitored namespaces the services are spread over (at most one per service).
    #[arg(long, default_value_t = 10)]
    pub namespaces: usize,
    /// ADS flavour the simulated proxies speak.
    #[arg(long, value_enum, default_value_t = Ads::Delta)]
    pub ads: Ads,
    /// Endpoints changes written to the apiserver, one at a time (figures a and b).
    #[arg(long, default_value_t = 30)]
    pub changes: usize,
    /// Pause before each change.
    #[arg(long, default_value_t = 200)]
    pub change_interval_ms: u64,
    /// New ADS streams opened as the full recompute starts (figure c); as many again are opened
    /// first while nothing changes, for comparison. 0: skip (c).
    #[arg(long, default_value_t = 20)]
    pub new_streams: usize,
    /// The MeshConfig field toggled to force the full recompute of (c).
    #[arg(long, value_enum, default_value_t = Toggle::Egress)]
    pub recompute_toggle: Toggle,
    /// Open the new streams of (c) this long after the source delivered the toggled input (0: as
    /// the recompute starts; larger: into the push that follows it).
    #[arg(long, default_value_t = 0)]
    pub new_streams_delay_ms: u64,
    /// Writes to the apiserver in flight while the mesh is created.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 300)]
    pub sync_timeout_s: u64,
    #[arg(long, default_value_t = 60)]
    pub change_timeout_s: u64,
    /// Tokio worker threads of the controller process (the product's default: one per core).
    #[arg(long, default_value_t = 2)]
    pub controller_threads: usize,
    /// Tokio worker threads running all simulated proxies.
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
    /// Run the controller under this command, e.g. "perf record -g -o perf.data --".
    #[arg(long)]
    pub controller_wrapper: Option<String>,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

impl Default for EnvtestArgs {
    fn default() -> Self {
        Self {
            services: 1000,
            endpoints: 2,
            proxies: 0,
            mode: Mode::Smi,
            allow: 10,
            namespaces: 10,
            ads: Ads::Delta,
            changes: 30,
            change_interval_ms: 200,
            new_streams: 20,
            recompute_toggle: Toggle::Egress,
            new_streams_delay_ms: 0,
            concurrency: 16,
            sync_timeout_s: 300,
            change_timeout_s: 60,
            controller_threads: 2,
            client_threads: 2,
            controller_wrapper: None,
            json_out: None,
        }
    }
}

impl EnvtestArgs {
    /// The mesh: `proxies` sidecars connected from the start.
    fn spec(&self) -> MeshSpec {
        MeshSpec {
            services: self.services,
            endpoints: self.endpoints,
            proxies: if self.proxies == 0 {
                self.services * self.endpoints
            } else {
                self.proxies
            },
            mode: self.mode,
            allow: self.allow,
            splits: 0,
            namespaces: self.namespaces.clamp(1, self.services.max(1)),
            selectors: false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The report.

#[derive(Debug, Serialize)]
pub struct Population {
    /// Objects created (namespaces, pods, services, endpoints, policies, MeshConfig).
    pub objects: usize,
    /// API calls: creates plus the pods' status writes.
    pub writes: usize,
    pub seconds: f64,
    pub writes_per_s: f64,
    pub concurrency: usize,
    /// Starting etcd + kube-apiserver and applying the CRDs.
    pub apiserver_start_s: f64,
}

#[derive(Debug, Serialize)]
pub struct ColdStart {
    /// Controller process start → the source's first input (connect, every initial list, assembly).
    pub list_s: Option<f64>,
    /// Controller process start → that input applied (`ControlPlane::replace` for the whole mesh).
    pub first_input_applied_s: f64,
    pub first_input_cpu_s: f64,
    /// Proxies connecting → the last proxy's last ACK of its full config.
    pub convergence_s: f64,
    pub synced: usize,
    pub total: usize,
    pub missing: Vec<String>,
    pub nacks: u64,
    /// Controller CPU seconds from its start until converged; its peak RSS then.
    pub controller_cpu_s: f64,
    pub controller_peak_rss_mb: f64,
}

/// (a): one Endpoints write each, applied one at a time.
#[derive(Debug, Serialize)]
pub struct EndpointChanges {
    pub changes: usize,
    /// Changes whose affected proxies all ACKed within the timeout.
    pub measured: usize,
    pub timeouts: usize,
    /// Connected proxies whose config changed, on average.
    pub affected_avg: f64,
    /// The write → the last affected proxy's ACK (the figure).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// The API call itself (the driver's write until the apiserver answered).
    pub write_p50_ms: Option<f64>,
    pub write_p99_ms: Option<f64>,
    /// Its parts: the write → the source's delivery (API call, watch, 20 ms coalescing, assembly);
    /// `replace` (recompute + publish); applied → the last ACK (push).
    pub source_p50_ms: Option<f64>,
    pub source_p99_ms: Option<f64>,
    pub update_p50_ms: Option<f64>,
    pub update_p99_ms: Option<f64>,
    pub push_p50_ms: Option<f64>,
    pub push_p99_ms: Option<f64>,
    /// Source deliveries beyond one per change (should be 0).
    pub extra_deliveries: usize,
}

/// (b): the controller process's CPU time per Endpoints event, from `Arm` to `Observed`.
#[derive(Debug, Serialize)]
pub struct CpuPerEvent {
    pub events: usize,
    pub mean_ms: f64,
    pub p50_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// kube-apiserver + etcd over the same windows (they share the two cores).
    pub apiserver_mean_ms: f64,
}

/// Times of new streams, from spawning the proxy (TCP, TLS, HTTP/2, the call) on.
#[derive(Debug, Default, Serialize)]
pub struct StreamTimes {
    pub opened: usize,
    pub first_response_p50_ms: Option<f64>,
    pub first_response_max_ms: Option<f64>,
    /// Until every type the proxy subscribes to arrived once (its whole config).
    pub full_config_p50_ms: Option<f64>,
    pub full_config_max_ms: Option<f64>,
    /// Streams without a first response within the timeout.
    pub missing: usize,
}

#[derive(Debug, Serialize)]
pub struct Recompute {
    pub toggle: Toggle,
    /// MeshConfig write → the source's delivery.
    pub delivered_after_ms: Option<f64>,
    /// `replace` wall time (the full recompute and publish).
    pub update_ms: f64,
    pub changed: usize,
    pub affected: usize,
    /// MeshConfig write → the last affected (initially connected) proxy's ACK.
    pub converged_ms: Option<f64>,
    pub missing: usize,
    /// Controller CPU seconds from the write until then.
    pub cpu_s: f64,
    /// The source's delivery → the new streams spawned (the driver's reaction time).
    pub streams_opened_after_ms: Option<f64>,
}

/// (c).
#[derive(Debug, Serialize)]
pub struct NewStreams {
    pub idle: StreamTimes,
    pub during_recompute: StreamTimes,
    pub recompute: Recompute,
}

#[derive(Debug, Serialize)]
pub struct Controller {
    pub peak_rss_mb: f64,
    pub rss_mb: f64,
    pub cpu_s: f64,
    pub threads: usize,
}

#[derive(Debug, Serialize)]
pub struct Driver {
    pub cpu_s: f64,
    pub peak_rss_mb: f64,
    pub client_threads: usize,
}

#[derive(Debug, Serialize)]
pub struct EnvtestReport {
    pub unix_time: u64,
    pub source: &'static str,
    /// The flags of the run.
    pub args: EnvtestArgs,
    /// `proxies` = the proxies connected from the start.
    pub mesh: MeshSpec,
    pub ads: Ads,
    /// Sidecar pods beyond `mesh.proxies`, whose proxies connect only in (c).
    pub late_proxies: usize,
    pub population: Population,
    pub cold_start: ColdStart,
    pub endpoint_changes: EndpointChanges,
    pub cpu_per_event: CpuPerEvent,
    pub new_streams: Option<NewStreams>,
    pub controller: Controller,
    pub per_proxy: report::PerProxy,
    pub driver: Driver,
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.1} ms"))
}

impl EnvtestReport {
    pub fn human(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let m = &self.mesh;
        let _ = writeln!(
            s,
            "envtest (kube-apiserver + KubeSource): {} services × {} endpoints (headless) in {} namespaces, {:?} (allow {}), {} proxies (+{} late); ADS {:?}",
            m.services, m.endpoints, m.namespaces, m.mode, m.allow, m.proxies, self.late_proxies, self.ads
        );
        let p = &self.population;
        let _ = writeln!(
            s,
            "populate         {} objects, {} writes in {:.1} s ({:.0}/s, {} in flight); apiserver + CRDs {:.1} s",
            p.objects, p.writes, p.seconds, p.writes_per_s, p.concurrency, p.apiserver_start_s
        );
        let c = &self.cold_start;
        let _ = writeln!(
            s,
            "cold start       first input after {}, applied after {:.2} s ({:.2} CPU-s); {}/{} proxies in sync {:.2} s after connecting, {} NACKs; controller {:.2} CPU-s, peak RSS {:.1} MB",
            c.list_s.map_or_else(|| "-".into(), |v| format!("{v:.2} s")),
            c.first_input_applied_s,
            c.first_input_cpu_s,
            c.synced,
            c.total,
            c.convergence_s,
            c.nacks,
            c.controller_cpu_s,
            c.controller_peak_rss_mb
        );
        if !c.missing.is_empty() {
            let _ = writeln!(s, "  not in sync    {}", c.missing.join(", "));
        }
        let _ = writeln!(s, "figures");
        let e = &self.endpoint_changes;
        let _ = writeln!(
            s,
            "  (a) Endpoints write → last affected proxy ACKed: p50 {} p99 {} max {}  (n={}, {} measured, {} timeouts, {:.1} proxies affected avg)",
            ms(e.p50_ms),
            ms(e.p99_ms),
            ms(e.max_ms),
            e.changes,
            e.measured,
            e.timeouts,
            e.affected_avg
        );
        let _ = writeln!(
            s,
            "      parts p50/p99: write → source delivered {} / {} (the API call {} / {}), replace() {} / {}, applied → last ACK {} / {}{}",
            ms(e.source_p50_ms),
            ms(e.source_p99_ms),
            ms(e.write_p50_ms),
            ms(e.write_p99_ms),
            ms(e.update_p50_ms),
            ms(e.update_p99_ms),
            ms(e.push_p50_ms),
            ms(e.push_p99_ms),
            if e.extra_deliveries > 0 {
                format!("; {} extra deliveries", e.extra_deliveries)
            } else {
                String::new()
            }
        );
        let b = &self.cpu_per_event;
        let _ = writeln!(
            s,
            "  (b) controller CPU per Endpoints event: mean {:.1} CPU-ms, p50 {}, max {}  (n={}; 10 ms ticks); kube-apiserver + etcd mean {:.1} CPU-ms",
            b.mean_ms,
            b.p50_ms.map_or_else(|| "-".into(), |v| format!("{v:.0} CPU-ms")),
            b.max_ms.map_or_else(|| "-".into(), |v| format!("{v:.0} CPU-ms")),
            b.events,
            b.apiserver_mean_ms
        );
        match &self.new_streams {
            Some(n) => {
                let r = &n.recompute;
                let d = &n.during_recompute;
                let i = &n.idle;
                let _ = writeln!(
                    s,
                    "  (c) {} new ADS streams as a full recompute starts ({:?} toggle): first response p50 {} max {}; full config p50 {} max {}{}",
                    d.opened,
                    r.toggle,
                    ms(d.first_response_p50_ms),
                    ms(d.first_response_max_ms),
                    ms(d.full_config_p50_ms),
                    ms(d.full_config_max_ms),
                    if d.missing > 0 {
                        format!("; {} without a response", d.missing)
                    } else {
                        String::new()
                    }
                );
                let _ = writeln!(
                    s,
                    "      idle baseline ({} streams): first response p50 {} max {}; full config p50 {} max {}",
                    i.opened,
                    ms(i.first_response_p50_ms),
                    ms(i.first_response_max_ms),
                    ms(i.full_config_p50_ms),
                    ms(i.full_config_max_ms)
                );
                let _ = writeln!(
                    s,
                    "      the recompute: delivered {} after the write, replace() {:.1} ms, {} proxies changed, {} connected ones ACKed {} after the write ({} missing), {:.2} controller CPU-s; streams opened {} after the delivery",
                    ms(r.delivered_after_ms),
                    r.update_ms,
                    r.changed,
                    r.affected,
                    ms(r.converged_ms),
                    r.missing,
                    r.cpu_s,
                    ms(r.streams_opened_after_ms)
                );
            }
            None => {
                let _ = writeln!(s, "  (c) skipped (--new-streams 0)");
            }
        }
        let k = &self.controller;
        let pp = &self.per_proxy;
        let _ = writeln!(
            s,
            "controller       {:.2} CPU-s in all, peak RSS {:.1} MB, RSS {:.1} MB at the end ({} threads)",
            k.cpu_s, k.peak_rss_mb, k.rss_mb, k.threads
        );
        let _ = writeln!(
            s,
            "per proxy        {:.1} / {:.1} / {:.1} kB received at cold start (min / avg / max); clusters {:.0}–{:.0}; {} stream errors, {} client NACKs",
            pp.bytes_cold.min / 1e3,
            pp.bytes_cold.avg / 1e3,
            pp.bytes_cold.max / 1e3,
            pp.resources.get("clusters (CDS)").map_or(0.0, |v| v.min),
            pp.resources.get("clusters (CDS)").map_or(0.0, |v| v.max),
            pp.stream_errors,
            pp.client_nacks
        );
        let d = &self.driver;
        let _ = writeln!(
            s,
            "driver           {:.2} CPU-s, peak RSS {:.1} MB ({} client threads; includes the kube client)",
            d.cpu_s, d.peak_rss_mb, d.client_threads
        );
        s
    }
}

// ---------------------------------------------------------------------------------------------
// The mesh in the apiserver.

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

/// The mesh as Kubernetes objects: the pods of [`MeshSpec`] (`sidecars` of them with a proxy uuid),
/// and the current address of every endpoint pod (moved by the changes).
struct KubeMesh {
    client: Client,
    spec: MeshSpec,
    sidecars: usize,
    ips: BTreeMap<usize, IpAddr>,
}

impl KubeMesh {
    fn new(client: Client, spec: MeshSpec, sidecars: usize) -> Self {
        Self {
            client,
            spec,
            sidecars,
            ips: BTreeMap::new(),
        }
    }

    fn pods(&self) -> usize {
        self.spec.pods().max(self.sidecars)
    }

    fn pod_ip(&self, j: usize) -> IpAddr {
        self.ips.get(&j).copied().unwrap_or_else(|| mesh::addr(1, j))
    }

    /// Pod `j`: created, then Running with its address (the kubelet's part).
    async fn pod(&self, j: usize) -> Result<usize> {
        let service = j % self.spec.services;
        let replica = j / self.spec.services;
        let ns = self.spec.namespace_of(service);
        let name = service_name(service);
        let app = if replica < self.spec.endpoints {
            name.clone()
        } else {
            format!("{name}-client")
        };
        let uuid = mesh::proxy_uuid(j);
        let mut labels = vec![("app", app.as_str())];
        if j < self.sidecars {
            labels.push((PROXY_UUID_LABEL, &uuid));
        }
        let pod_name = mesh::pod_name(j);
        let pod = Pod {
            metadata: meta(Some(&ns), &pod_name, &labels),
            spec: Some(PodSpec {
                service_account_name: Some(name.clone()),
                containers: vec![Container {
                    name: "app".into(),
                    image: Some("app".into()),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: i32::from(PORT),
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
            .with_context(|| format!("creating pod {ns}/{pod_name}"))?;
        let ip = self.pod_ip(j).to_string();
        let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}});
        pods.patch_status(&pod_name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .with_context(|| format!("setting the address of pod {ns}/{pod_name}"))?;
        Ok(2)
    }

    /// The Endpoints subsets of service `i`, as an endpoints controller would write them.
    fn subsets(&self, i: usize) -> Vec<EndpointSubset> {
        let ns = self.spec.namespace_of(i);
        let addresses = (0..self.spec.endpoints)
            .map(|r| r * self.spec.services + i)
            .map(|j| EndpointAddress {
                ip: self.pod_ip(j).to_string(),
                target_ref: Some(ObjectReference {
                    kind: Some("Pod".into()),
                    namespace: Some(ns.clone()),
                    name: Some(mesh::pod_name(j)),
                    ..ObjectReference::default()
                }),
                ..EndpointAddress::default()
            })
            .collect();
        vec![EndpointSubset {
            addresses: Some(addresses),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: i32::from(PORT),
                ..EndpointPort::default()
            }]),
            ..EndpointSubset::default()
        }]
    }

    /// Service `i` (headless: envtest's ClusterIP range is a /26) and its Endpoints.
    async fn service(&self, i: usize) -> Result<usize> {
        let ns = self.spec.namespace_of(i);
        let name = service_name(i);
        let svc = Service {
            metadata: meta(Some(&ns), &name, &[]),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                selector: Some([("app".to_string(), name.clone())].into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: i32::from(PORT),
                    target_port: Some(IntOrString::Int(i32::from(PORT))),
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
            metadata: meta(Some(&ns), &name, &[]),
            subsets: Some(self.subsets(i)),
        };
        Api::<Endpoints>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), &endpoints)
            .await
            .with_context(|| format!("creating endpoints {ns}/{name}"))?;
        Ok(2)
    }

    /// The TrafficTarget that lets service `d`'s callers reach it.
    async fn traffic_target(&self, d: usize, sources: &std::collections::BTreeSet<usize>) -> Result<usize> {
        let id = mesh::traffic_target_ref(&self.spec, d);
        let mut tt = TrafficTarget::new(&id.name, mesh::traffic_target(&self.spec, d, sources));
        tt.metadata.namespace = Some(id.namespace.clone());
        Api::<TrafficTarget>::namespaced(self.client.clone(), &id.namespace)
            .create(&PostParams::default(), &tt)
            .await
            .with_context(|| format!("creating TrafficTarget {}/{}", id.namespace, id.name))?;
        Ok(1)
    }

    /// Everything, at most `concurrency` writes in flight; returns (objects, writes).
    async fn populate(&self, concurrency: usize) -> Result<(usize, usize)> {
        let c = &self.client;
        let n = concurrency.max(1);
        let mut objects = 0;
        let mut writes = 0;
        let monitored = [(MONITORED_BY_LABEL, osm_api::contract::DEFAULT_MESH_NAME)];
        for ns in 0..self.spec.namespaces {
            osm_envtest::create_namespace(c, &format!("ns-{ns}"), &monitored, &[])
                .await
                .with_context(|| format!("creating namespace ns-{ns}"))?;
        }
        osm_envtest::create_namespace(c, OSM_NAMESPACE, &[], &[])
            .await
            .context("creating the OSM namespace")?;
        let mc: MeshConfig = serde_json::from_value(json!({
            "apiVersion": "config.openservicemesh.io/v1alpha2",
            "kind": "MeshConfig",
            "metadata": {"name": MESH_CONFIG_NAME, "namespace": OSM_NAMESPACE},
            "spec": {"traffic": {
                "enablePermissiveTrafficPolicyMode": self.spec.mode == Mode::Permissive,
                "enableEgress": true,
            }},
        }))?;
        Api::<MeshConfig>::namespaced(c.clone(), OSM_NAMESPACE)
            .create(&PostParams::default(), &mc)
            .await
            .context("creating the MeshConfig")?;
        objects += self.spec.namespaces + 2;
        writes += self.spec.namespaces + 2;

        let pods = self.pods();
        writes += futures::stream::iter(0..pods)
            .map(|j| self.pod(j))
            .buffer_unordered(n)
            .try_fold(0, |a, b| async move { Ok(a + b) })
            .await?;
        objects += pods;
        writes += futures::stream::iter(0..self.spec.services)
            .map(|i| self.service(i))
            .buffer_unordered(n)
            .try_fold(0, |a, b| async move { Ok(a + b) })
            .await?;
        objects += 2 * self.spec.services;
        if self.spec.mode == Mode::Smi {
            for ns in 0..self.spec.namespaces {
                let ns = format!("ns-{ns}");
                let mut group = HTTPRouteGroup::new(mesh::ROUTE_GROUP, mesh::route_group());
                group.metadata.namespace = Some(ns.clone());
                Api::<HTTPRouteGroup>::namespaced(c.clone(), &ns)
                    .create(&PostParams::default(), &group)
                    .await
                    .with_context(|| format!("creating HTTPRouteGroup {ns}/{}", mesh::ROUTE_GROUP))?;
            }
            objects += self.spec.namespaces;
            writes += self.spec.namespaces;
            let callers = mesh::callers(&self.spec);
            let targets = futures::stream::iter(callers.iter())
                .map(|(d, sources)| self.traffic_target(*d, sources))
                .buffer_unordered(n)
                .try_fold(0, |a, b| async move { Ok(a + b) })
                .await?;
            objects += targets;
            writes += targets;
        }
        Ok((objects, writes))
    }

    /// Change `k`: one endpoint pod of a service gets a new address in its Endpoints (one write).
    async fn move_endpoint(&mut self, k: usize) -> Result<()> {
        let s = &self.spec;
        let service = (k * 7919 + 13) % s.services;
        let j = (k % s.endpoints) * s.services + service;
        self.ips.insert(j, mesh::addr(200, k));
        let ns = s.namespace_of(service);
        let name = service_name(service);
        let patch = json!({"subsets": self.subsets(service)});
        Api::<Endpoints>::namespaced(self.client.clone(), &ns)
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("patching endpoints {ns}/{name}"))?;
        Ok(())
    }

    /// Flips the MeshConfig field `toggle` names.
    async fn toggle(&self, toggle: Toggle) -> Result<()> {
        let traffic = match toggle {
            Toggle::Egress => json!({"enableEgress": false}),
            Toggle::Permissive => {
                json!({"enablePermissiveTrafficPolicyMode": self.spec.mode != Mode::Permissive})
            }
        };
        Api::<MeshConfig>::namespaced(self.client.clone(), OSM_NAMESPACE)
            .patch(
                MESH_CONFIG_NAME,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"traffic": traffic}})),
            )
            .await
            .context("patching the MeshConfig")?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The run.

/// Sends `Observe` and reads until `Observed`, calling `on_delivered` as soon as `Delivered` comes.
fn observe(
    ctl: &mut ControllerProcess,
    timeout: Duration,
    mut on_delivered: impl FnMut(u64),
) -> Result<Observed> {
    ctl.send(&Command::Observe {
        timeout_ms: timeout.as_millis() as u64,
    })?;
    loop {
        match ctl.reply()? {
            Reply::Delivered { at_ns } => on_delivered(at_ns),
            Reply::Observed(o) => return Ok(o),
            other => bail!("expected Delivered or Observed, got {other:?}"),
        }
    }
}

fn arm(ctl: &mut ControllerProcess) -> Result<()> {
    ctl.send(&Command::Arm)?;
    match ctl.reply()? {
        Reply::Armed => Ok(()),
        other => bail!("expected Armed, got {other:?}"),
    }
}

fn cpu_s(pids: &[u32]) -> f64 {
    pids.iter()
        .map(|p| cpu_time(Some(*p)).unwrap_or_default().as_secs_f64())
        .sum()
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Starts `proxies` now on `rt`; returns when.
fn start_proxies(
    rt: &tokio::runtime::Runtime,
    proxies: &[Arc<Proxy>],
    shared: &Arc<Shared>,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> u64 {
    let at = now_ns();
    for p in proxies {
        rt.spawn(client::run(p.clone(), shared.clone(), stop.clone()));
    }
    at
}

/// Waits (at most `timeout`) until every proxy of `proxies` received a response of every type, and
/// times their first response and their full config from `spawned_ns`.
fn stream_times(proxies: &[Arc<Proxy>], spawned_ns: u64, timeout: Duration) -> StreamTimes {
    // Every proxy of this mesh subscribes to all five types (SMI proxies have ≥ 1 upstream); one
    // that misses a type counts under `missing` only if it got nothing at all.
    let deadline = Instant::now() + timeout;
    let complete = |s: &ProxyStats| {
        TypeKind::ALL
            .iter()
            .all(|k| s.arrivals.iter().any(|a| a.kind == *k))
    };
    while Instant::now() < deadline && !proxies.iter().all(|p| complete(&p.stats())) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats: Vec<ProxyStats> = proxies.iter().map(|p| p.stats()).collect();
    let first = sorted(
        stats
            .iter()
            .filter_map(|s| s.arrivals.first())
            .map(|a| a.at_ns.saturating_sub(spawned_ns) as f64 / 1e6)
            .collect(),
    );
    let full = sorted(
        stats
            .iter()
            .filter_map(|s| {
                TypeKind::ALL
                    .iter()
                    .map(|k| s.arrivals.iter().find(|a| a.kind == *k).map(|a| a.at_ns))
                    .collect::<Option<Vec<u64>>>()
                    .and_then(|v| v.into_iter().max())
            })
            .map(|at| at.saturating_sub(spawned_ns) as f64 / 1e6)
            .collect(),
    );
    StreamTimes {
        opened: proxies.len(),
        first_response_p50_ms: percentile(&first, 50.0),
        first_response_max_ms: first.last().copied(),
        full_config_p50_ms: percentile(&full, 50.0),
        full_config_max_ms: full.last().copied(),
        missing: proxies.len() - first.len(),
    }
}

/// Runs the envtest load test; `exe` is the `osm-loadtest` binary (for the controller process).
pub fn run(args: &EnvtestArgs, exe: &Path) -> Result<EnvtestReport> {
    let spec = args.spec();
    spec.validate().map_err(anyhow::Error::msg)?;
    let late = 2 * args.new_streams;
    let sidecars = spec.proxies + late;
    let nofile = raise_nofile_limit().context("raising the open-files limit")?;
    if (nofile as usize) < sidecars + 256 {
        bail!("the open-files limit is {nofile}; {sidecars} proxies need more (raise the hard limit)");
    }
    let assets = osm_envtest::find_assets().context("envtest: kube-apiserver and etcd")?;
    // The kube client and the apiserver helpers run here; the simulated proxies get their own runtime.
    let kube_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("osm-kube")
        .enable_all()
        .build()?;

    let started = Instant::now();
    let api = kube_rt.block_on(osm_envtest::ApiServer::start_with(&assets))?;
    let client = api.client();
    kube_rt.block_on(osm_envtest::apply_crds(&client, &osm_api::crds::all()))?;
    let apiserver_start_s = started.elapsed().as_secs_f64();
    let apiserver_pids = children_named(&["kube-apiserver", "etcd"]);

    let mut cluster = KubeMesh::new(client, spec.clone(), sidecars);
    let populating = Instant::now();
    let (objects, writes) = kube_rt.block_on(cluster.populate(args.concurrency))?;
    let populate_s = populating.elapsed().as_secs_f64();
    eprintln!(
        "osm-loadtest envtest: {objects} objects ({writes} writes) in {populate_s:.1} s; starting the controller"
    );

    let td = TrustDomain::default();
    let ca_dir = tempfile::tempdir().context("a directory for the mesh root")?;
    let ca = CertificateAuthority::load_or_create(ca_dir.path(), td.clone(), CA_VALIDITY)
        .context("creating the mesh root")?;
    let mut extra: Vec<OsString> = spec.to_args().into_iter().map(Into::into).collect();
    extra.push("--kubeconfig".into());
    extra.push(api.kubeconfig_path().into());
    let mut ctl = ControllerProcess::spawn_with(
        exe,
        args.controller_wrapper.as_deref(),
        args.controller_threads,
        ca_dir.path(),
        extra,
    )?;
    let sidecar_spec = MeshSpec {
        proxies: sidecars,
        ..spec.clone()
    };
    let infos = mesh::proxies(&sidecar_spec);
    let all: Vec<Arc<Proxy>> = infos
        .iter()
        .map(|info| simulated_proxy(&ca, &td, info))
        .collect::<Result<_>>()?;
    let (proxies, late_proxies) = all.split_at(spec.proxies);
    let ready = ctl.ready()?;
    let pid = ready.pid;
    if ready.proxies != proxies.len() {
        bail!(
            "the controller waits for {} proxies, the driver runs {}",
            ready.proxies,
            proxies.len()
        );
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name("osm-proxy")
        .enable_all()
        .build()?;
    let dialer = Dialer {
        addr: ready.addr.parse().context("the controller's ADS address")?,
        server_name: ServerName::try_from(ads_server_name(OSM_NAMESPACE)).context("the ADS server name")?,
    };
    let shared = Arc::new(Shared::new(dialer, args.ads, 0));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let clients_started_ns = start_proxies(&rt, proxies, &shared, &stop_rx);
    let synced = ctl.wait_sync(Duration::from_secs(args.sync_timeout_s))?;
    let ctl_cpu_synced = cpu_time(Some(pid)).unwrap_or_default().as_secs_f64();
    let ctl_mem_synced = memory(Some(pid)).unwrap_or_default();
    let cold: Vec<ProxyStats> = proxies.iter().map(|p| p.stats()).collect();
    eprintln!(
        "osm-loadtest envtest: {}/{} proxies in sync after {:.2} s; {} Endpoints changes",
        synced.synced,
        synced.total,
        secs(synced.at_ns.saturating_sub(clients_started_ns)),
        args.changes
    );

    // (a) and (b): one Endpoints write at a time.
    let timeout = Duration::from_secs(args.change_timeout_s);
    let mut observed = Vec::with_capacity(args.changes);
    for k in 0..args.changes {
        std::thread::sleep(Duration::from_millis(args.change_interval_ms));
        let cpu0 = cpu_time(Some(pid)).unwrap_or_default().as_secs_f64();
        let api0 = cpu_s(&apiserver_pids);
        arm(&mut ctl)?;
        let write_ns = now_ns();
        kube_rt.block_on(cluster.move_endpoint(k))?;
        let written_ns = now_ns();
        let o = observe(&mut ctl, timeout, |_| {})?;
        observed.push(Sample {
            write_ns,
            written_ns,
            // The harness's bookkeeping in the controller (every proxy's generation, twice) is not
            // the control plane's work.
            cpu_s: (cpu_time(Some(pid)).unwrap_or_default().as_secs_f64()
                - cpu0
                - o.harness_cpu_us as f64 / 1e6)
                .max(0.0),
            apiserver_cpu_s: cpu_s(&apiserver_pids) - api0,
            o,
        });
    }
    let endpoint_changes = endpoint_figures(&observed);
    let cpu_ms: Vec<f64> = observed.iter().map(|s| s.cpu_s * 1000.0).collect();
    let n = cpu_ms.len().max(1) as f64;
    let cpu_per_event = CpuPerEvent {
        events: observed.len(),
        mean_ms: cpu_ms.iter().sum::<f64>() / n,
        p50_ms: percentile(&sorted(cpu_ms.clone()), 50.0),
        max_ms: cpu_ms.iter().copied().reduce(f64::max),
        apiserver_mean_ms: observed.iter().map(|s| s.apiserver_cpu_s * 1000.0).sum::<f64>() / n,
    };

    // (c): new streams while idle, then as a full recompute starts.
    let new_streams = if args.new_streams > 0 {
        let (idle_set, busy_set) = late_proxies.split_at(args.new_streams);
        let spawned = start_proxies(&rt, idle_set, &shared, &stop_rx);
        let idle = stream_times(idle_set, spawned, timeout);
        // Let the idle set's ACKs settle before the recompute.
        std::thread::sleep(Duration::from_millis(args.change_interval_ms.max(500)));
        let cpu0 = cpu_time(Some(pid)).unwrap_or_default().as_secs_f64();
        arm(&mut ctl)?;
        let write_ns = now_ns();
        kube_rt.block_on(cluster.toggle(args.recompute_toggle))?;
        let mut busy_spawned = None;
        let mut delivered = None;
        let o = observe(&mut ctl, timeout, |at| {
            delivered = Some(at);
            // The controller's next reply waits in its pipe meanwhile.
            std::thread::sleep(Duration::from_millis(args.new_streams_delay_ms));
            busy_spawned = Some(start_proxies(&rt, busy_set, &shared, &stop_rx));
        })?;
        let cpu_s = cpu_time(Some(pid)).unwrap_or_default().as_secs_f64() - cpu0;
        // Without a delivery the streams still open (and the report says so).
        let busy_spawned = busy_spawned.unwrap_or_else(|| start_proxies(&rt, busy_set, &shared, &stop_rx));
        let during_recompute = stream_times(busy_set, busy_spawned, timeout);
        Some(NewStreams {
            idle,
            during_recompute,
            recompute: Recompute {
                toggle: args.recompute_toggle,
                delivered_after_ms: o.delivered_ns.map(|d| d.saturating_sub(write_ns) as f64 / 1e6),
                update_ms: o.update_us as f64 / 1000.0,
                changed: o.changed,
                affected: o.affected,
                converged_ms: o.done_ns.map(|d| d.saturating_sub(write_ns) as f64 / 1e6),
                missing: o.missing,
                cpu_s,
                streams_opened_after_ms: delivered.map(|d| busy_spawned.saturating_sub(d) as f64 / 1e6),
            },
        })
    } else {
        None
    };

    let ctl_cpu = cpu_time(Some(pid)).unwrap_or_default().as_secs_f64();
    let ctl_mem = memory(Some(pid)).unwrap_or_default();
    let driver_cpu = cpu_time(None).unwrap_or_default().as_secs_f64();
    let driver_mem = memory(None).unwrap_or_default();
    let end: Vec<ProxyStats> = proxies.iter().map(|p| p.stats()).collect();

    let _ = stop.send(true);
    let quit = ctl.quit();
    rt.shutdown_timeout(Duration::from_secs(2));
    drop(api);
    kube_rt.shutdown_timeout(Duration::from_secs(2));
    quit?;

    Ok(EnvtestReport {
        unix_time: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        source: "envtest",
        args: args.clone(),
        mesh: spec,
        ads: args.ads,
        late_proxies: late,
        population: Population {
            objects,
            writes,
            seconds: populate_s,
            writes_per_s: writes as f64 / populate_s.max(1e-9),
            concurrency: args.concurrency,
            apiserver_start_s,
        },
        cold_start: ColdStart {
            list_s: ready.list_s,
            first_input_applied_s: ready.init_wall_s,
            first_input_cpu_s: ready.init_cpu_s,
            convergence_s: secs(synced.at_ns.saturating_sub(clients_started_ns)),
            synced: synced.synced,
            total: synced.total,
            missing: synced.missing,
            nacks: synced.nacks,
            controller_cpu_s: ctl_cpu_synced,
            controller_peak_rss_mb: ctl_mem_synced.peak_rss as f64 / 1e6,
        },
        endpoint_changes,
        cpu_per_event,
        new_streams,
        controller: Controller {
            peak_rss_mb: ctl_mem.peak_rss as f64 / 1e6,
            rss_mb: ctl_mem.rss as f64 / 1e6,
            cpu_s: ctl_cpu,
            threads: args.controller_threads,
        },
        per_proxy: per_proxy(&cold, &end),
        driver: Driver {
            cpu_s: driver_cpu,
            peak_rss_mb: driver_mem.peak_rss as f64 / 1e6,
            client_threads: args.client_threads,
        },
    })
}

/// One Endpoints change: the write's start and end, what the controller saw, and the CPU time the
/// controller and the apiserver + etcd used from `Arm` to `Observed`.
struct Sample {
    write_ns: u64,
    written_ns: u64,
    o: Observed,
    cpu_s: f64,
    apiserver_cpu_s: f64,
}

fn endpoint_figures(observed: &[Sample]) -> EndpointChanges {
    let ms_from = |from: u64, to: Option<u64>| to.map(|t| t.saturating_sub(from) as f64 / 1e6);
    let p = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (percentile(&v, 50.0), percentile(&v, 99.0), v.last().copied())
    };
    let measured: Vec<&Sample> = observed.iter().filter(|s| s.o.done_ns.is_some()).collect();
    let total = p(measured
        .iter()
        .filter_map(|s| ms_from(s.write_ns, s.o.done_ns))
        .collect());
    let write = p(observed
        .iter()
        .filter_map(|s| ms_from(s.write_ns, Some(s.written_ns)))
        .collect());
    let source = p(observed
        .iter()
        .filter_map(|s| ms_from(s.write_ns, s.o.delivered_ns))
        .collect());
    let update = p(observed
        .iter()
        .filter(|s| s.o.applied_ns.is_some())
        .map(|s| s.o.update_us as f64 / 1000.0)
        .collect());
    let push = p(measured
        .iter()
        .filter_map(|s| s.o.applied_ns.and_then(|a| ms_from(a, s.o.done_ns)))
        .collect());
    let n = observed.len().max(1) as f64;
    EndpointChanges {
        changes: observed.len(),
        measured: measured.len(),
        timeouts: observed
            .iter()
            .filter(|s| s.o.missing > 0 || s.o.applied_ns.is_none())
            .count(),
        affected_avg: observed.iter().map(|s| s.o.affected as f64).sum::<f64>() / n,
        p50_ms: total.0,
        p99_ms: total.1,
        max_ms: total.2,
        write_p50_ms: write.0,
        write_p99_ms: write.1,
        source_p50_ms: source.0,
        source_p99_ms: source.1,
        update_p50_ms: update.0,
        update_p99_ms: update.1,
        push_p50_ms: push.0,
        push_p99_ms: push.1,
        extra_deliveries: observed.iter().map(|s| s.o.deliveries.saturating_sub(1)).sum(),
    }
}
