//! `osm-loadtest` (the driver): writes a mesh root, spawns the controller process, runs one simulated
//! proxy per sidecar pod on its own small tokio runtime, then drives the script — wait for the cold
//! start to converge, apply the changes one at a time — and turns what both sides recorded into a
//! [`Report`].

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use osm_api::contract::ads_server_name;
use osm_ca::{CertificateAuthority, TrustDomain, XdsClientIdentity};
use osm_xds::TypeKind;
use rustls::pki_types::ServerName;

use crate::call::{self, Dialer};
use crate::client::{self, Api, Proxy, ProxyStats, Shared, kind_index};
use crate::controller::{CA_VALIDITY, OSM_NAMESPACE};
use crate::mesh::{self, Churn, ChurnKind, MeshSpec, Mode};
use crate::protocol::{Changed, Command, Ready, Reply, Rotated, Soaked, Synced};
use crate::report::{self, Latency, Report, Summary};
use crate::sys::{cpu_time, memory, now_ns, raise_nofile_limit};

#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub mesh: MeshSpec,
    /// ADS flavour the simulated proxies speak.
    #[arg(long, value_enum, default_value_t = Api::Delta)]
    pub ads: Api,
    /// Number of scripted changes after the cold start.
    #[arg(long, default_value_t = 50)]
    pub changes: usize,
    /// Kinds of change, cycled: endpoint, pod, policy.
    #[arg(long, value_delimiter = ',', default_value = "endpoint")]
    pub churn: Vec<ChurnKind>,
    /// Pause before each change.
    #[arg(long, default_value_t = 100)]
    pub change_interval_ms: u64,
    #[arg(long, default_value_t = 300)]
    pub sync_timeout_s: u64,
    #[arg(long, default_value_t = 30)]
    pub change_timeout_s: u64,
    /// Tokio worker threads of the controller's ADS server.
    #[arg(long, default_value_t = 2)]
    pub controller_threads: usize,
    /// Tokio worker threads running all simulated proxies.
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
    /// Proxies starting at once (connected, not yet holding every type they subscribe to); 0: all
    /// proxies connect at once, as after a controller restart.
    #[arg(long, default_value_t = 0)]
    pub startup_concurrency: usize,
    /// After the changes, keep every proxy connected this long with nothing changing and report the
    /// controller's CPU in that window (the idle goal: no periodic recompute). 0: skip.
    #[arg(long, default_value_t = 0)]
    pub idle_s: u64,
    /// After the changes, rotate every service certificate at once and measure until every proxy
    /// ACKed its new secrets, with one more change (the next in the script) applied meanwhile.
    #[arg(long)]
    pub rotate: bool,
    /// After that, the `--churn` script at this many changes per second (0: skip), batched as a
    /// watcher delivers them, for `--soak-s` seconds: p50/p99 from arrival to ACK, and RSS drift.
    #[arg(long, default_value_t = 0.0)]
    pub soak_rate: f64,
    #[arg(long, default_value_t = 300.0)]
    pub soak_s: f64,
    /// Run the controller under this command, e.g. "valgrind --tool=callgrind".
    #[arg(long)]
    pub controller_wrapper: Option<String>,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

impl Default for RunArgs {
    fn default() -> Self {
        Self {
            mesh: MeshSpec::default(),
            ads: Api::Delta,
            changes: 50,
            churn: vec![ChurnKind::Endpoint],
            change_interval_ms: 100,
            sync_timeout_s: 300,
            change_timeout_s: 30,
            controller_threads: 2,
            client_threads: 2,
            startup_concurrency: 0,
            idle_s: 0,
            rotate: false,
            soak_rate: 0.0,
            soak_s: 300.0,
            controller_wrapper: None,
            json_out: None,
        }
    }
}

/// The controller process and its command pipe.
pub(crate) struct ControllerProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ControllerProcess {
    fn spawn(args: &RunArgs, exe: &Path, ca_dir: &Path) -> Result<Self> {
        let churn: Vec<&str> = args
            .churn
            .iter()
            .map(|k| match k {
                ChurnKind::Endpoint => "endpoint",
                ChurnKind::Pod => "pod",
                ChurnKind::Policy => "policy",
            })
            .collect();
        let mut controller_args: Vec<std::ffi::OsString> =
            args.mesh.to_args().into_iter().map(Into::into).collect();
        controller_args.push(format!("--churn={}", churn.join(",")).into());
        Self::spawn_with(
            exe,
            args.controller_wrapper.as_deref(),
            args.controller_threads,
            ca_dir,
            controller_args,
        )
    }

    /// Spawns `exe controller --threads=N --ca-dir DIR EXTRA…`, under `wrapper` when given.
    pub(crate) fn spawn_with(
        exe: &Path,
        wrapper: Option<&str>,
        threads: usize,
        ca_dir: &Path,
        extra: Vec<std::ffi::OsString>,
    ) -> Result<Self> {
        let mut cmd = match wrapper.map(str::split_whitespace) {
            Some(mut words) => {
                let program = words.next().context("--controller-wrapper is empty")?;
                let mut cmd = std::process::Command::new(program);
                cmd.args(words).arg(exe);
                cmd
            }
            None => std::process::Command::new(exe),
        };
        cmd.arg("controller")
            .arg(format!("--threads={threads}"))
            .arg("--ca-dir")
            .arg(ca_dir)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning the controller {}", exe.display()))?;
        let stdin = child.stdin.take().context("the controller's stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("the controller's stdout")?);
        Ok(Self { child, stdin, stdout })
    }

    pub(crate) fn send(&mut self, command: &Command) -> Result<()> {
        serde_json::to_writer(&mut self.stdin, command)?;
        self.stdin.write_all(b"\n")?;
        self.stdin.flush()?;
        Ok(())
    }

    pub(crate) fn reply(&mut self) -> Result<Reply> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line)? == 0 {
                bail!("the controller exited (see its output above)");
            }
            // A wrapper such as valgrind may print on stdout too: skip what is not a reply.
            if let Ok(reply) = serde_json::from_str::<Reply>(line.trim()) {
                return match reply {
                    Reply::Error { message } => bail!("controller: {message}"),
                    other => Ok(other),
                };
            }
        }
    }

    pub(crate) fn ready(&mut self) -> Result<Ready> {
        match self.reply()? {
            Reply::Ready(r) => Ok(r),
            other => bail!("expected Ready, got {other:?}"),
        }
    }

    pub(crate) fn wait_sync(&mut self, timeout: Duration) -> Result<Synced> {
        self.send(&Command::WaitSync {
            timeout_ms: timeout.as_millis() as u64,
        })?;
        match self.reply()? {
            Reply::Synced(s) => Ok(s),
            other => bail!("expected Synced, got {other:?}"),
        }
    }

    fn change(&mut self, index: usize, timeout: Duration) -> Result<Changed> {
        self.send(&Command::Change {
            index,
            timeout_ms: timeout.as_millis() as u64,
        })?;
        match self.reply()? {
            Reply::Changed(c) => Ok(c),
            other => bail!("expected Changed, got {other:?}"),
        }
    }

    fn rotate(&mut self, change_index: Option<usize>, timeout: Duration) -> Result<Rotated> {
        self.send(&Command::Rotate {
            change_index,
            timeout_ms: timeout.as_millis() as u64,
        })?;
        match self.reply()? {
            Reply::Rotated(r) => Ok(r),
            other => bail!("expected Rotated, got {other:?}"),
        }
    }

    fn soak(&mut self, rate_per_s: f64, duration_s: f64, timeout: Duration) -> Result<Soaked> {
        self.send(&Command::Soak {
            rate_per_s,
            duration_s,
            timeout_ms: timeout.as_millis() as u64,
        })?;
        match self.reply()? {
            Reply::Soaked(r) => Ok(r),
            other => bail!("expected Soaked, got {other:?}"),
        }
    }

    pub(crate) fn quit(mut self) -> Result<()> {
        let _ = self.send(&Command::Quit);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("the controller exited with {status}");
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("the controller did not exit within 10 s of Quit; killed it");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        // Only when a run fails midway: never leave the controller behind.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub(crate) fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Runs one load test; `exe` is the `osm-loadtest` binary (for the controller process).
pub fn run(args: &RunArgs, exe: &Path) -> Result<Report> {
    args.mesh.validate().map_err(anyhow::Error::msg)?;
    Churn::new(&args.mesh, &args.churn).map_err(anyhow::Error::msg)?;
    let nofile = raise_nofile_limit().context("raising the open-files limit")?;
    if (nofile as usize) < args.mesh.proxies + 256 {
        bail!(
            "the open-files limit is {nofile}; {} proxies need more (raise the hard limit)",
            args.mesh.proxies
        );
    }
    let td = TrustDomain::default();
    let ca_dir = tempfile::tempdir().context("a directory for the mesh root")?;
    let ca = CertificateAuthority::load_or_create(ca_dir.path(), td.clone(), CA_VALIDITY)
        .context("creating the mesh root")?;

    let spawned_ns = now_ns();
    let mut ctl = ControllerProcess::spawn(args, exe, ca_dir.path())?;

    // Certificates are issued while the controller computes its initial config.
    let issued = Instant::now();
    let infos = mesh::proxies(&args.mesh);
    let mut proxies = Vec::with_capacity(infos.len());
    for info in &infos {
        proxies.push(simulated_proxy(&ca, &td, info)?);
    }
    let client_certs_s = issued.elapsed().as_secs_f64();
    let ready = ctl.ready()?;
    let pid = ready.pid;
    if ready.proxies != proxies.len() {
        bail!(
            "the controller knows {} proxies, the driver {}",
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
    let shared = Arc::new(Shared::new(dialer, args.ads, args.startup_concurrency));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let clients_started_ns = now_ns();
    for p in &proxies {
        rt.spawn(client::run(p.clone(), shared.clone(), stop_rx.clone()));
    }

    let synced = ctl.wait_sync(Duration::from_secs(args.sync_timeout_s))?;
    let ctl_cpu_synced = cpu_time(Some(pid)).unwrap_or_default().as_secs_f64();
    let ctl_mem_synced = memory(Some(pid)).unwrap_or_default();
    let cold: Vec<ProxyStats> = proxies.iter().map(|p| p.stats()).collect();
    let smi = (args.mesh.mode == Mode::Smi).then(|| smi_check(&args.mesh, &infos, &cold));

    let churn_start_ns = now_ns();
    let driver_cpu_churn0 = cpu_time(None).unwrap_or_default().as_secs_f64();
    let mut changes = Vec::with_capacity(args.changes);
    for index in 0..args.changes {
        std::thread::sleep(Duration::from_millis(args.change_interval_ms));
        changes.push(ctl.change(index, Duration::from_secs(args.change_timeout_s))?);
    }
    let churn_end_ns = now_ns();
    let driver_churn_cpu = cpu_time(None).unwrap_or_default().as_secs_f64() - driver_cpu_churn0;
    let churn_s = secs(churn_end_ns.saturating_sub(churn_start_ns));
    let ctl_mem_churned = memory(Some(pid)).unwrap_or_default();
    let rotation = if args.rotate {
        let cpu0 = cpu_time(Some(pid)).unwrap_or_default().as_secs_f64();
        let r = ctl.rotate(Some(args.changes), Duration::from_secs(args.change_timeout_s))?;
        let cpu_s = cpu_time(Some(pid)).unwrap_or_default().as_secs_f64() - cpu0;
        Some(report::Rotation {
            rotate_ms: r.rotate_us as f64 / 1000.0,
            affected: r.affected,
            converged_ms: r.latency_us.map(|v| v as f64 / 1000.0),
            missing: r.missing,
            cpu_s,
            change_ms: r
                .change
                .as_ref()
                .and_then(|c| c.latency_us)
                .map(|v| v as f64 / 1000.0),
            change_affected: r.change.as_ref().map_or(0, |c| c.affected),
        })
    } else {
        None
    };
    let soak = if args.soak_rate > 0.0 {
        Some(ctl.soak(
            args.soak_rate,
            args.soak_s,
            Duration::from_secs(args.change_timeout_s),
        )?)
    } else {
        None
    };
    let ctl_cpu_end = cpu_time(Some(pid)).unwrap_or_default().as_secs_f64();
    let idle_millicores = (args.idle_s > 0).then(|| {
        // A bounded wait by design: this window is what is measured.
        std::thread::sleep(Duration::from_secs(args.idle_s));
        let used = cpu_time(Some(pid)).unwrap_or_default().as_secs_f64() - ctl_cpu_end;
        used / args.idle_s as f64 * 1000.0
    });
    let ctl_mem_end = memory(Some(pid)).unwrap_or_default();
    let driver_cpu = cpu_time(None).unwrap_or_default().as_secs_f64();
    let driver_mem = memory(None).unwrap_or_default();
    let end: Vec<ProxyStats> = proxies.iter().map(|p| p.stats()).collect();

    let _ = stop.send(true);
    let quit = ctl.quit();
    rt.shutdown_timeout(Duration::from_secs(2));
    quit?;

    let mut report = Report {
        unix_time: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        mesh: args.mesh.clone(),
        ads: args.ads,
        churn_kinds: args.churn.clone(),
        controller_threads: args.controller_threads,
        controller: report::Controller {
            init_wall_s: ready.init_wall_s,
            init_cpu_s: ready.init_cpu_s,
            cold_cpu_s: ctl_cpu_synced - ready.input_cpu_s,
            cold_peak_rss_mb: ctl_mem_synced.peak_rss as f64 / 1e6,
            synced_rss_mb: ctl_mem_synced.rss as f64 / 1e6,
            churn_end_rss_mb: ctl_mem_churned.rss as f64 / 1e6,
            churn_cpu_s: ctl_cpu_end - ctl_cpu_synced,
            peak_rss_mb: ctl_mem_end.peak_rss as f64 / 1e6,
            rss_mb: ctl_mem_end.rss as f64 / 1e6,
            input_cpu_s: ready.input_cpu_s,
            idle_millicores,
            idle_s: args.idle_s as f64,
        },
        cold_start: report::ColdStart {
            convergence_s: secs(synced.at_ns.saturating_sub(clients_started_ns)),
            from_spawn_s: secs(synced.at_ns.saturating_sub(spawned_ns)),
            synced: synced.synced,
            total: synced.total,
            missing: synced.missing,
            nacks: synced.nacks,
            client_certs_s,
        },
        per_proxy: per_proxy(&cold, &end),
        smi,
        churn: churn_figures(&changes, &end, churn_end_ns, churn_s),
        rotation,
        soak,
        driver: report::Driver {
            cpu_s: driver_cpu,
            churn_cpu_s: driver_churn_cpu,
            peak_rss_mb: driver_mem.peak_rss as f64 / 1e6,
            client_threads: args.client_threads,
        },
        goals: Vec::new(),
    };
    report.check_goals();
    Ok(report)
}

/// A simulated proxy for `info`, with its own xDS client certificate from the mesh root.
pub(crate) fn simulated_proxy(
    ca: &CertificateAuthority,
    td: &TrustDomain,
    info: &mesh::ProxyInfo,
) -> Result<Arc<Proxy>> {
    let id = XdsClientIdentity {
        proxy_uuid: info.uuid.clone(),
        identity: osm_ca::ServiceIdentity::new(&info.service_account, &info.namespace),
        trust_domain: td.clone(),
    };
    let cert = ca
        .issue_xds_client_cert(&id, Duration::from_secs(24 * 3600))
        .with_context(|| format!("issuing the xDS certificate of proxy {}", info.index))?;
    Ok(Arc::new(Proxy {
        key: info.key(td),
        node_cluster: format!("{}.{}", info.service_account, info.namespace),
        tls: call::client_tls(ca.root_cert_pem(), &cert.cert_pem, cert.private_key.expose_pem())?,
        stats: Mutex::new(ProxyStats::default()),
    }))
}

fn kind_label(kind: TypeKind) -> &'static str {
    match kind {
        TypeKind::Cluster => "clusters (CDS)",
        TypeKind::Endpoint => "endpoints (EDS)",
        TypeKind::Listener => "listeners (LDS)",
        TypeKind::Route => "routes (RDS)",
        TypeKind::Secret => "secrets (SDS)",
    }
}

pub(crate) fn per_proxy(cold: &[ProxyStats], end: &[ProxyStats]) -> report::PerProxy {
    let resources = TypeKind::ALL
        .into_iter()
        .map(|k| {
            (
                kind_label(k).to_string(),
                Summary::of(cold.iter().map(|s| s.held[kind_index(k)] as f64)),
            )
        })
        .collect();
    let largest_response = TypeKind::ALL
        .into_iter()
        .map(|k| {
            let largest = end
                .iter()
                .flat_map(|s| s.arrivals.iter().filter(|a| a.kind == k))
                .map(|a| u64::from(a.bytes))
                .max()
                .unwrap_or_default();
            (kind_label(k).to_string(), largest)
        })
        .collect();
    report::PerProxy {
        largest_response,
        bytes_cold: Summary::of(cold.iter().map(|s| s.bytes as f64)),
        responses_cold: Summary::of(cold.iter().map(|s| s.responses as f64)),
        resources,
        stream_errors: end.iter().map(|s| u64::from(s.errors)).sum(),
        last_error: end.iter().rev().find_map(|s| s.last_error.clone()),
        client_nacks: end.iter().map(|s| s.nacks).sum(),
    }
}

/// Every SMI proxy's upstream (EDS) clusters must be exactly those of the services it may call.
fn smi_check(spec: &MeshSpec, infos: &[mesh::ProxyInfo], cold: &[ProxyStats]) -> report::SmiCheck {
    let mut violations = 0;
    let mut example = None;
    let mut max_upstream = 0;
    for (info, stats) in infos.iter().zip(cold) {
        let want: Vec<String> = {
            let mut v: Vec<String> = spec
                .allowed_upstreams(info.service)
                .into_iter()
                .map(|s| spec.cluster_name(s))
                .collect();
            v.sort();
            v
        };
        let got: Vec<String> = stats
            .eds_names
            .as_deref()
            .map(<[String]>::to_vec)
            .unwrap_or_default();
        max_upstream = max_upstream.max(got.len());
        if got != want {
            violations += 1;
            example.get_or_insert_with(|| {
                format!(
                    "proxy {} (service {}) has {:?}, allowed {:?}",
                    info.index, info.service, got, want
                )
            });
        }
    }
    report::SmiCheck {
        checked: infos.len(),
        violations,
        example,
        max_upstream_clusters: max_upstream,
    }
}

fn latency(changes: &[&Changed], client_ms: &BTreeMap<usize, f64>) -> Latency {
    let measured: Vec<&&Changed> = changes.iter().filter(|c| c.latency_us.is_some()).collect();
    let mut server: Vec<f64> = measured
        .iter()
        .filter_map(|c| c.latency_us.map(|us| us as f64 / 1000.0))
        .collect();
    server.sort_by(f64::total_cmp);
    let mut client: Vec<f64> = measured
        .iter()
        .filter_map(|c| client_ms.get(&c.index).copied())
        .collect();
    client.sort_by(f64::total_cmp);
    let n = changes.len().max(1) as f64;
    Latency {
        changes: changes.len(),
        measured: measured.len(),
        timeouts: changes.iter().filter(|c| c.missing > 0).count(),
        affected_avg: changes.iter().map(|c| c.affected as f64).sum::<f64>() / n,
        update_ms_avg: changes.iter().map(|c| c.update_us as f64 / 1000.0).sum::<f64>() / n,
        p50_ms: report::percentile(&server, 50.0),
        p99_ms: report::percentile(&server, 99.0),
        max_ms: server.last().copied(),
        client_p50_ms: report::percentile(&client, 50.0),
        client_p99_ms: report::percentile(&client, 99.0),
    }
}

fn churn_figures(changes: &[Changed], end: &[ProxyStats], churn_end_ns: u64, churn_s: f64) -> report::Churn {
    // Client view of change i: the last response any proxy received between its update() call and the
    // next change's (every change is complete before the next starts). Arrivals sorted once, so a long
    // soak costs O(changes × log arrivals).
    let mut arrivals: Vec<(u64, u64)> = end
        .iter()
        .flat_map(|s| s.arrivals.iter().map(|a| (a.at_ns, u64::from(a.bytes))))
        .collect();
    arrivals.sort_unstable();
    let mut client_ms = BTreeMap::new();
    let mut bytes = 0u64;
    for (i, c) in changes.iter().enumerate() {
        let until = changes.get(i + 1).map_or(churn_end_ns, |n| n.started_ns);
        let from = arrivals.partition_point(|a| a.0 < c.started_ns);
        let to = arrivals.partition_point(|a| a.0 < until);
        let window = &arrivals[from..to.max(from)];
        bytes += window.iter().map(|a| a.1).sum::<u64>();
        if let Some(last) = window.last() {
            client_ms.insert(c.index, (last.0 - c.started_ns) as f64 / 1e6);
        }
    }
    let all: Vec<&Changed> = changes.iter().collect();
    let mut by_kind: BTreeMap<String, Vec<&Changed>> = BTreeMap::new();
    for c in changes {
        by_kind.entry(c.kind.to_string()).or_default().push(c);
    }
    report::Churn {
        all: latency(&all, &client_ms),
        by_kind: by_kind
            .into_iter()
            .map(|(k, v)| (k, latency(&v, &client_ms)))
            .collect(),
        bytes_per_change: bytes as f64 / changes.len().max(1) as f64,
        duration_s: churn_s,
        changes_per_s: changes.len() as f64 / churn_s.max(1e-9),
    }
}
