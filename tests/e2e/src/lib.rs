//! A bookstore mesh of real pods for end-to-end tests: each pod is a network namespace with the OSM
//! interception rules, a demo app and a real Envoy as UID 1500, programmed only by our control plane
//! over ADS (mTLS, bound inside the test's hub namespace).
#![forbid(unsafe_code)]

pub mod internet;
pub mod kubelet;
pub mod mesh_tls;
pub mod nginx;
pub mod prober;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use osm_ads::AdsEvent;
use osm_api::contract::ads_server_name;
use osm_ca::{CertificateAuthority, TrustDomain};
use osm_controller::{ControlPlane, proxy_key};
use osm_fixtures::{BOOKSTORE_PODS, BOOKSTORE_PORT, BOOKSTORE_SERVICES};
use osm_harness::{EnvoyProcess, Hub, Pod, PodProcess, PodSpec};
use osm_model::{MeshInput, ServiceIdentity};
use osm_xds::bootstrap::AdsApi;
use serde::Deserialize;

pub use osm_harness::require_or_skip;

/// The namespace upstream installs the control plane in; part of the ADS server name.
pub const OSM_NAMESPACE: &str = "osm-system";
pub const USER_AGENT: &str = "user-agent: Go-http-client/1.1";
pub const BOOKBUYER_HEADER: &str = "client-app: bookbuyer";

/// The value of counter `name` in an Envoy admin `/stats` text (0 when absent).
pub fn stat_value(stats: &str, name: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(": ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// One pod of the mesh: its namespace (network), app and sidecar.
pub struct MeshPod {
    pub pod: Pod,
    pub namespace: String,
    pub service_account: String,
    pub envoy: Option<EnvoyProcess>,
    pub app: Option<PodProcess>,
}

/// A running mesh. Dropping it stops the control plane, every process and every namespace.
pub struct Mesh {
    // Drop order: pods (Envoys, apps, namespaces) before the control plane and the hub.
    pub pods: BTreeMap<String, MeshPod>,
    pub cp: Arc<ControlPlane>,
    pub hub: Hub,
    pub api: AdsApi,
    pub service_ips: BTreeMap<String, IpAddr>,
    shutdown: tokio::sync::watch::Sender<bool>,
    rt: tokio::runtime::Runtime,
}

/// How one pod's sidecar is set up ([`Mesh::start_with_sidecars`]).
#[derive(Clone, Debug, Default)]
pub struct SidecarSetup {
    /// The probe listeners in its bootstrap.
    pub probes: Vec<osm_xds::bootstrap::Probe>,
    /// Its interception rules.
    pub init: osm_init::InitConfig,
}

/// The TCP echo service the bookstore demo gains in several tests: Service `tcpecho/tcp-echo` at
/// [`TCP_ECHO_IP`]:[`TCP_ECHO_PORT`] (TCP), backed by pod `tcp-echo` (an extra pod of
/// [`Mesh::bookstore`] running [`tcp_echo_args`]).
pub const TCP_ECHO_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 1, 1);
pub const TCP_ECHO_PORT: u16 = 7070;

/// `osm-demo-app tcp-echo` arguments on [`TCP_ECHO_PORT`].
pub fn tcp_echo_args() -> Vec<String> {
    vec!["tcp-echo".into(), "--port".into(), TCP_ECHO_PORT.to_string()]
}

/// Adds the TCP echo Service and its pod (at `ips["tcp-echo"]`) to `input`.
pub fn add_tcp_echo(input: &mut MeshInput, ips: &BTreeMap<String, IpAddr>) {
    let mut b = osm_fixtures::MeshBuilder {
        input: std::mem::take(input),
    };
    b.service(
        "tcpecho",
        "tcp-echo",
        Some(IpAddr::V4(TCP_ECHO_IP)),
        &[(TCP_ECHO_PORT, TCP_ECHO_PORT, osm_model::AppProtocol::Tcp)],
        &[("app", "tcp-echo")],
    );
    b.pod(
        "tcpecho",
        "tcp-echo",
        "tcp-echo",
        &[("app", "tcp-echo")],
        Some(ips["tcp-echo"]),
        Some("tcp-echo"),
    );
    *input = b.input;
}

/// `osm-demo-app http-server` arguments for a server named `name`.
pub fn http_server_args(name: &str, port: u16) -> Vec<String> {
    vec![
        "http-server".into(),
        "--port".into(),
        port.to_string(),
        "--name".into(),
        name.into(),
    ]
}

/// What `osm-demo-app http-client` prints when done.
#[derive(Debug, Default, Deserialize)]
pub struct ClientSummary {
    pub sent: u64,
    pub ok: u64,
    #[serde(default)]
    pub status: BTreeMap<String, u64>,
    pub errors: u64,
    #[serde(default)]
    pub served_by: BTreeMap<String, u64>,
}

fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,osm_ads=info".into()),
        )
        .with_test_writer()
        .try_init();
}

impl Mesh {
    /// Creates the hub and one pod namespace per name (no processes yet), so their addresses are known
    /// before the mesh input is written.
    pub fn pods_for(prefix: &str, names: &[&str]) -> Result<(Hub, BTreeMap<String, Pod>)> {
        init_logging();
        let hub = Hub::create(prefix).context("creating the hub namespace")?;
        let mut pods = BTreeMap::new();
        for name in names {
            let pod = hub
                .add_pod(PodSpec::named(*name))
                .with_context(|| format!("creating pod {name}"))?;
            pods.insert(name.to_string(), pod);
        }
        Ok((hub, pods))
    }

    /// Starts the control plane with `input`, then every pod: init rules, `/etc/hosts` for every service,
    /// the app (an HTTP server named after the pod on `app_port`, when given), and Envoy with a
    /// bootstrap from the control plane. Waits until every Envoy is ready.
    pub fn start(
        hub: Hub,
        pods: BTreeMap<String, Pod>,
        input: MeshInput,
        api: AdsApi,
        apps: &BTreeMap<String, Vec<String>>,
    ) -> Result<Mesh> {
        Self::start_with_probes(hub, pods, input, api, apps, &[])
    }

    /// [`Mesh::start`] with probe listeners in every sidecar's bootstrap.
    pub fn start_with_probes(
        hub: Hub,
        pods: BTreeMap<String, Pod>,
        input: MeshInput,
        api: AdsApi,
        apps: &BTreeMap<String, Vec<String>>,
        probes: &[osm_xds::bootstrap::Probe],
    ) -> Result<Mesh> {
        Self::start_with(hub, pods, input, api, apps, probes, &[])
    }

    /// [`Mesh::start_with_probes`] with `extra_hosts` in every pod's `/etc/hosts` besides the services'
    /// names (say, a host outside the mesh).
    pub fn start_with(
        hub: Hub,
        pods: BTreeMap<String, Pod>,
        input: MeshInput,
        api: AdsApi,
        apps: &BTreeMap<String, Vec<String>>,
        probes: &[osm_xds::bootstrap::Probe],
        extra_hosts: &[(IpAddr, Vec<String>)],
    ) -> Result<Mesh> {
        let setup = SidecarSetup {
            probes: probes.to_vec(),
            init: osm_init::InitConfig::default(),
        };
        Self::start_inner(hub, pods, input, api, apps, &|_| setup.clone(), extra_hosts)
    }

    /// [`Mesh::start`] with each named pod's sidecar set up as `setups` says (as the injector wrote
    /// it: its probe listeners and its init rules); other sidecars get the defaults.
    pub fn start_with_sidecars(
        hub: Hub,
        pods: BTreeMap<String, Pod>,
        input: MeshInput,
        api: AdsApi,
        apps: &BTreeMap<String, Vec<String>>,
        setups: &BTreeMap<String, SidecarSetup>,
    ) -> Result<Mesh> {
        let setup_for = |name: &str| setups.get(name).cloned().unwrap_or_default();
        Self::start_inner(hub, pods, input, api, apps, &setup_for, &[])
    }

    fn start_inner(
        hub: Hub,
        pods: BTreeMap<String, Pod>,
        input: MeshInput,
        api: AdsApi,
        apps: &BTreeMap<String, Vec<String>>,
        setup_for: &dyn Fn(&str) -> SidecarSetup,
        extra_hosts: &[(IpAddr, Vec<String>)],
    ) -> Result<Mesh> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let ca = Arc::new(CertificateAuthority::generate(
            TrustDomain::default(),
            Duration::from_secs(10 * 365 * 24 * 3600),
        )?);
        let service_ips = input
            .services
            .values()
            .filter_map(|s| s.cluster_ip.map(|ip| (s.id.name.clone(), ip)))
            .collect();
        let mut hosts = input.hosts_entries();
        hosts.extend(extra_hosts.iter().cloned());
        let pod_meta: BTreeMap<String, osm_model::Pod> = input
            .pods
            .values()
            .map(|p| (p.id.name.clone(), p.clone()))
            .collect();

        let cp = Arc::new(ControlPlane::new(ca, input));
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let server_name = ads_server_name(OSM_NAMESPACE);
        let listener = hub
            .bind_tcp(osm_xds::names::ADS_PORT)
            .context("binding ADS in the hub")?;
        cp.spawn_servers(rt.handle(), listener, OSM_NAMESPACE, shutdown_rx)?;

        let mut mesh_pods = BTreeMap::new();
        for (name, pod) in pods {
            pod.set_hosts(&hosts)?;
            let mut mp = MeshPod {
                namespace: pod_meta
                    .get(&name)
                    .map(|p| p.id.namespace.clone())
                    .unwrap_or_default(),
                service_account: pod_meta
                    .get(&name)
                    .map(|p| p.service_account.clone())
                    .unwrap_or_default(),
                pod,
                envoy: None,
                app: None,
            };
            if let Some(argv) = apps.get(&name) {
                let bin = osm_harness::demo_app_bin()?;
                let mut full = vec![bin.to_string_lossy().to_string()];
                full.extend(argv.iter().cloned());
                mp.app = Some(mp.pod.spawn(&full, &[])?);
            }
            if let Some(meta) = pod_meta.get(&name).filter(|p| p.proxy_uuid.is_some()) {
                let setup = setup_for(&name);
                mp.pod.apply_init(&setup.init)?;
                let bootstrap =
                    cp.bootstrap_for(meta, &hub.ip().to_string(), &server_name, api, &setup.probes)?;
                mp.envoy = Some(mp.pod.spawn_envoy(&bootstrap)?);
            }
            mesh_pods.insert(name, mp);
        }
        let mut mesh = Mesh {
            pods: mesh_pods,
            cp,
            hub,
            api,
            service_ips,
            shutdown,
            rt,
        };
        for (name, mp) in mesh.pods.iter_mut() {
            if let Some(envoy) = mp.envoy.as_mut() {
                envoy
                    .wait_ready(Duration::from_secs(60))
                    .with_context(|| format!("Envoy of {name} not ready"))?;
            }
        }
        for name in mesh.pods.keys().cloned().collect::<Vec<_>>() {
            mesh.wait_in_sync(&name, Duration::from_secs(30))?;
        }
        Ok(mesh)
    }

    /// The bookstore demo: five pods, HTTP servers on 14001 named after their pods, sidecars on all.
    /// `extra` adds pods (by name, with an optional app command line) and may edit the input once pod
    /// addresses are known.
    pub fn bookstore(
        prefix: &str,
        api: AdsApi,
        permissive: bool,
        split: Option<(u32, u32)>,
        extra: &[(&str, Option<Vec<String>>)],
        customize: impl FnOnce(&mut MeshInput, &BTreeMap<String, IpAddr>),
    ) -> Result<(Mesh, BTreeMap<String, IpAddr>)> {
        Self::bookstore_with_hosts(prefix, api, permissive, split, extra, customize, |_| Vec::new())
    }

    /// [`Mesh::bookstore`] with `extra_hosts(pod addresses)` in every pod's `/etc/hosts`.
    pub fn bookstore_with_hosts(
        prefix: &str,
        api: AdsApi,
        permissive: bool,
        split: Option<(u32, u32)>,
        extra: &[(&str, Option<Vec<String>>)],
        customize: impl FnOnce(&mut MeshInput, &BTreeMap<String, IpAddr>),
        extra_hosts: impl FnOnce(&BTreeMap<String, IpAddr>) -> Vec<(IpAddr, Vec<String>)>,
    ) -> Result<(Mesh, BTreeMap<String, IpAddr>)> {
        let mut names: Vec<&str> = BOOKSTORE_PODS.iter().map(|p| p.1).collect();
        names.extend(extra.iter().map(|e| e.0));
        let (hub, pods) = Mesh::pods_for(prefix, &names)?;
        let ips: BTreeMap<String, IpAddr> = pods
            .iter()
            .map(|(n, p)| (n.clone(), IpAddr::V4(p.ip())))
            .collect();
        let svc_ips: BTreeMap<&str, IpAddr> = BOOKSTORE_SERVICES
            .iter()
            .enumerate()
            .map(|(i, s)| (s.1, IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10 + i as u8))))
            .collect();
        let mut input = osm_fixtures::bookstore(permissive, split, |n| ips[n], |s| svc_ips[s]);
        customize(&mut input, &ips);
        let mut apps: BTreeMap<String, Vec<String>> = BOOKSTORE_PODS
            .iter()
            .filter(|p| p.0 == "bookstore" || p.0 == "bookwarehouse")
            .map(|p| (p.1.to_string(), http_server_args(p.1, BOOKSTORE_PORT)))
            .collect();
        for (name, app) in extra {
            if let Some(app) = app {
                apps.insert(name.to_string(), app.clone());
            }
        }
        let hosts = extra_hosts(&ips);
        let mesh = Mesh::start_with(hub, pods, input, api, &apps, &[], &hosts)?;
        Ok((mesh, ips))
    }

    pub fn pod(&self, name: &str) -> &MeshPod {
        self.pods.get(name).unwrap_or_else(|| panic!("no pod {name}"))
    }

    pub fn envoy(&self, name: &str) -> &EnvoyProcess {
        self.pod(name)
            .envoy
            .as_ref()
            .unwrap_or_else(|| panic!("pod {name} has no sidecar"))
    }

    /// The ADS key (xDS certificate CN) of a pod's proxy; the fixtures use the pod name as uuid.
    pub fn proxy_key(&self, name: &str) -> String {
        let mp = self.pod(name);
        proxy_key(
            name,
            &ServiceIdentity::new(&mp.namespace, &mp.service_account),
            &TrustDomain::default(),
        )
    }

    /// Waits until the pod's proxy has ACKed every type it was sent the current config of: each
    /// subscribed type's last ACKed version equals the last version sent. Fails on any NACK.
    pub fn wait_in_sync(&self, name: &str, timeout: Duration) -> Result<()> {
        if self.pod(name).envoy.is_none() {
            return Ok(());
        }
        let key = self.proxy_key(name);
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.cp.cache().status(&key);
            if let Some(s) = status.as_ref().filter(|s| s.nacks > 0) {
                bail!("proxy {name} NACKed config: {:?}", s.last_nack);
            }
            if status
                .as_ref()
                .is_some_and(|s| s.connected && s.acked.iter().any(|(_, v)| v.is_some()))
                && self.cp.cache().in_sync(&key)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "proxy {name} not in sync after {timeout:?}: {status:?}\n{}",
                    self.envoy(name).log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Applies a change to the mesh input and waits until every proxy ACKed the result.
    pub fn update(&self, change: impl FnOnce(&mut MeshInput)) -> Result<()> {
        self.cp.update(change);
        for name in self.pods.keys() {
            self.wait_in_sync(name, Duration::from_secs(30))?;
        }
        Ok(())
    }

    /// Runs `osm-demo-app <args>` in a pod to completion and parses its JSON summary.
    pub fn run_client(&self, pod: &str, args: &[&str]) -> Result<ClientSummary> {
        let bin = osm_harness::demo_app_bin()?;
        let mut argv = vec![bin.to_string_lossy().to_string()];
        argv.extend(args.iter().map(|s| s.to_string()));
        let mut p = self.pod(pod).pod.spawn(&argv, &[])?;
        let status = p.wait_timeout(Duration::from_secs(300))?;
        let out = p.stdout();
        let line = out
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .ok_or_else(|| {
                anyhow!(
                    "client in {pod} printed no summary ({status}):\n{}",
                    p.log_tail(20)
                )
            })?;
        serde_json::from_str(line).with_context(|| format!("parsing client summary {line:?}"))
    }

    /// `count` HTTP GETs from `pod` to `url` with the bookbuyer's headers.
    pub fn http_get(&self, pod: &str, url: &str, count: u32, headers: &[&str]) -> Result<ClientSummary> {
        let count = count.to_string();
        let mut args = vec![
            "http-client",
            "--url",
            url,
            "--count",
            &count,
            "--timeout-ms",
            "3000",
        ];
        for h in headers {
            args.push("--header");
            args.push(h);
        }
        self.run_client(pod, &args)
    }

    /// Process ids of every Envoy, to prove a change did not restart any.
    pub fn envoy_pids(&self) -> BTreeMap<String, u32> {
        self.pods
            .iter()
            .filter_map(|(n, p)| p.envoy.as_ref().map(|e| (n.clone(), e.pid())))
            .collect()
    }

    /// The NACKs every proxy sent so far (none expected).
    pub fn nacks(&self) -> Vec<String> {
        self.pods
            .keys()
            .filter(|n| self.pod(n).envoy.is_some())
            .filter_map(|n| self.cp.cache().status(&self.proxy_key(n)))
            .filter_map(|s| s.last_nack)
            .collect()
    }

    /// ADS events since `rx` was created.
    pub fn drain_events(rx: &mut tokio::sync::broadcast::Receiver<AdsEvent>) -> Vec<AdsEvent> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            out.push(e);
        }
        out
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        // Stop Envoys first so they do not log reconnect noise while the server goes away.
        self.pods.clear();
    }
}
