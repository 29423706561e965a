//! `osm demo`: the bookstore demo as real pods on this machine, meshed by a local-mode control plane
//! that reads the demo's YAML from a directory — edit the directory (or use `osm demo mode|split`) and
//! watch the mesh change.

mod manifests;
mod view;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use osm_ca::{CertificateAuthority, TrustDomain};
use osm_controller::ControlPlane;
use osm_fixtures::BOOKSTORE_PODS;
use osm_harness::{EnvoyProcess, Hub, Pod, PodProcess, PodSpec};
use osm_xds::bootstrap::AdsApi;

pub use manifests::Mode;
use view::{Config, Frame, History, Snapshot};

/// Where a running demo keeps its config directory, so `osm demo mode|split` can find it.
const DEMO_DIR: &str = "/run/osm-demo";

#[derive(clap::Subcommand)]
pub enum DemoCommand {
    /// Run the demo (the default).
    Run(RunArgs),
    /// Switch the running demo between permissive and SMI mode (rewrites its MeshConfig).
    Mode { mode: Mode },
    /// Change the running demo's TrafficSplit weights for bookstore-v1 and bookstore-v2.
    Split { v1: u32, v2: u32 },
}

#[derive(clap::Args, Clone)]
pub struct RunArgs {
    /// Stop after this many seconds, print a summary, and exit non-zero if the mesh did not behave as
    /// expected (bookbuyer served, bookthief refused in SMI mode, split within ±10 %).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Start in this mode.
    #[arg(long, value_enum, default_value = "smi")]
    pub mode: Mode,
    /// Initial TrafficSplit weights, `V1:V2`.
    #[arg(long, default_value = "50:50", value_parser = parse_split)]
    pub split: (u32, u32),
    /// Use incremental (delta) ADS.
    #[arg(long)]
    pub delta: bool,
}

fn parse_split(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s.split_once(':').ok_or("expected V1:V2, e.g. 80:20")?;
    let p = |x: &str| x.trim().parse::<u32>().map_err(|e| format!("{x:?}: {e}"));
    Ok((p(a)?, p(b)?))
}

pub fn run(cmd: Option<DemoCommand>) -> Result<std::process::ExitCode> {
    match cmd.unwrap_or(DemoCommand::Run(RunArgs {
        duration: None,
        mode: Mode::Smi,
        split: (50, 50),
        delta: false,
    })) {
        DemoCommand::Run(args) => run_demo(args),
        DemoCommand::Mode { mode } => {
            write_config(
                &running_config_dir()?,
                "meshconfig.yaml",
                &manifests::meshconfig(mode),
            )?;
            println!("demo mode → {}", mode.as_str());
            Ok(std::process::ExitCode::SUCCESS)
        }
        DemoCommand::Split { v1, v2 } => {
            write_config(&running_config_dir()?, "split.yaml", &manifests::split(v1, v2))?;
            println!("demo split → bookstore-v1 {v1} / bookstore-v2 {v2}");
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

fn running_config_dir() -> Result<PathBuf> {
    let dir = Path::new(DEMO_DIR).join("config");
    if !dir.join("meshconfig.yaml").exists() {
        bail!(
            "no demo is running (no {}); start one with `osm demo`",
            dir.display()
        );
    }
    Ok(dir)
}

/// Writes via a temporary file and a rename, so the watcher never reads half a file.
fn write_config(dir: &Path, name: &str, content: &str) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, content).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name)).with_context(|| format!("writing {}/{name}", dir.display()))?;
    Ok(())
}

/// Reads mode and split back from the config directory (the user may edit it by hand).
fn read_config(dir: &Path, since: Instant) -> Option<Config> {
    let mc = std::fs::read_to_string(dir.join("meshconfig.yaml")).ok()?;
    let mode = if mc.contains("enablePermissiveTrafficPolicyMode: true") {
        Mode::Permissive
    } else {
        Mode::Smi
    };
    let split = std::fs::read_to_string(dir.join("split.yaml")).ok()?;
    let weights: Vec<u32> = split
        .lines()
        .filter_map(|l| l.trim().strip_prefix("weight:"))
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    let split = match weights.as_slice() {
        [a, b] => (*a, *b),
        _ => (50, 50),
    };
    Some(Config { mode, split, since })
}

struct DemoPod {
    pod: Pod,
    envoy: Option<EnvoyProcess>,
    app: Option<PodProcess>,
    stats: PathBuf,
}

/// `/run/osm-demo/status.json`: what the view shows, for scripts and tests (`osm demo` runs elsewhere).
fn write_status(config: &Config, frame: &Frame<'_>, snap: &Snapshot, pods: &BTreeMap<String, DemoPod>) {
    let pids: Vec<u32> = pods
        .values()
        .flat_map(|p| [p.envoy.as_ref().map(|e| e.pid()), p.app.as_ref().map(|a| a.pid())])
        .flatten()
        .collect();
    let status = serde_json::json!({
        // Which demo wrote this: a file left by an earlier run is not mistaken for this one's.
        "pid": std::process::id(),
        "mode": config.mode.as_str(),
        "split": [config.split.0, config.split.1],
        "elapsed_ms": frame.elapsed.as_millis() as u64,
        "proxies": frame.proxies,
        "in_sync": frame.in_sync,
        "last_event": frame.last_event,
        "apps": snap.apps,
        "pids": pids,
        "netns": pods.values().map(|p| p.pod.netns().to_string()).collect::<Vec<_>>(),
    });
    let dir = Path::new(DEMO_DIR);
    let tmp = dir.join(".status.json.tmp");
    if std::fs::write(&tmp, status.to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, dir.join("status.json"));
    }
}

fn run_demo(args: RunArgs) -> Result<std::process::ExitCode> {
    if let Err(missing) = osm_harness::Prereqs::check() {
        bail!(
            "osm demo runs the bookstore as real pods (network namespaces, iptables, Envoy as UID 1500), which \
             needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and the tools from scripts/setup.sh: {missing}"
        );
    }
    let _ = osm_harness::cleanup_stale("osmdemo");
    let demo_dir = Path::new(DEMO_DIR);
    if demo_dir.join("pid").exists() {
        let pid = std::fs::read_to_string(demo_dir.join("pid")).unwrap_or_default();
        if Path::new(&format!("/proc/{}", pid.trim())).exists() {
            bail!("a demo is already running (pid {}); stop it first", pid.trim());
        }
    }
    let config_dir = demo_dir.join("config");
    let _ = std::fs::remove_dir_all(demo_dir);
    std::fs::create_dir_all(&config_dir)?;
    std::fs::write(demo_dir.join("pid"), std::process::id().to_string())?;
    let result = run_pods(&args, &config_dir);
    let _ = std::fs::remove_dir_all(demo_dir);
    result
}

fn run_pods(args: &RunArgs, config_dir: &Path) -> Result<std::process::ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    {
        let stop = stop.clone();
        rt.spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.store(true, Ordering::SeqCst);
        });
    }

    eprintln!("creating pods …");
    let hub = Hub::create("osmdemo")?;
    let mut pods: BTreeMap<String, DemoPod> = BTreeMap::new();
    for (_, name, _, _) in BOOKSTORE_PODS {
        let pod = hub.add_pod(PodSpec::named(*name))?;
        let stats = pod.dir().join("stats.json");
        pods.insert(
            name.to_string(),
            DemoPod {
                pod,
                envoy: None,
                app: None,
                stats,
            },
        );
    }
    let pod_ips: BTreeMap<String, IpAddr> = pods
        .iter()
        .map(|(n, p)| (n.clone(), IpAddr::V4(p.pod.ip())))
        .collect();
    write_config(config_dir, "workloads.yaml", &manifests::workloads(&pod_ips))?;
    write_config(config_dir, "policies.yaml", &manifests::policies())?;
    write_config(
        config_dir,
        "split.yaml",
        &manifests::split(args.split.0, args.split.1),
    )?;
    write_config(config_dir, "meshconfig.yaml", &manifests::meshconfig(args.mode))?;

    eprintln!(
        "starting the control plane (config dir {}) …",
        config_dir.display()
    );
    let ca = Arc::new(CertificateAuthority::generate(
        TrustDomain::default(),
        Duration::from_secs(365 * 24 * 3600),
    )?);
    let local = crate::local::LocalControlPlane::start(&rt, ca, config_dir, &hub)?;
    let cp: Arc<ControlPlane> = local.control_plane();

    eprintln!("starting sidecars and apps …");
    let bin = osm_harness::demo_app_bin()?;
    let bin = bin.to_string_lossy().to_string();
    let hosts = cp.input().hosts_entries();
    let api = if args.delta {
        AdsApi::Delta
    } else {
        AdsApi::StateOfTheWorld
    };
    let server_name = osm_api::contract::ads_server_name("osm-system");
    let input = cp.input();
    for (name, p) in pods.iter_mut() {
        p.pod.set_hosts(&hosts)?;
        p.pod.apply_init(&osm_init::InitConfig::default())?;
        let meta = input
            .pods
            .values()
            .find(|m| m.id.name == *name)
            .with_context(|| format!("pod {name} missing from the control plane's input"))?;
        let bootstrap = cp.bootstrap_for(meta, &hub.ip().to_string(), &server_name, api, &[])?;
        p.envoy = Some(p.pod.spawn_envoy(&bootstrap)?);
    }
    for (name, p) in pods.iter_mut() {
        p.envoy
            .as_mut()
            .expect("started above")
            .wait_ready(Duration::from_secs(60))
            .with_context(|| format!("Envoy of {name}"))?;
    }
    if !crate::local::wait_all_in_sync(&cp, Duration::from_secs(30)) {
        bail!(
            "the sidecars did not acknowledge their configuration within 30 s: {}",
            local.last_event()
        );
    }
    // Servers first, then the clients, so the first requests find someone to answer.
    let stats = |p: &DemoPod| p.stats.to_string_lossy().to_string();
    for name in [
        "bookwarehouse",
        "bookstore-v1",
        "bookstore-v2",
        "bookbuyer",
        "bookthief",
    ] {
        let p = pods.get_mut(name).expect("demo pod");
        let st = stats(p);
        let db = p
            .pod
            .dir()
            .join("bookwarehouse.sqlite")
            .to_string_lossy()
            .to_string();
        let argv: Vec<&str> = match name {
            "bookwarehouse" => vec![
                &bin,
                "bookwarehouse",
                "--port",
                "14001",
                "--db",
                &db,
                "--stats-file",
                &st,
            ],
            "bookstore-v1" | "bookstore-v2" => vec![
                &bin,
                "bookstore",
                "--name",
                name,
                "--port",
                "14001",
                "--warehouse-url",
                "http://bookwarehouse.bookwarehouse:14001",
                "--stats-file",
                &st,
            ],
            other => vec![
                &bin,
                other,
                "--bookstore-url",
                "http://bookstore.bookstore:14001",
                "--stats-file",
                &st,
            ],
        };
        p.app = Some(p.pod.spawn(&argv, &[])?);
    }

    let started = Instant::now();
    let mut config = read_config(config_dir, started).expect("written above");
    let mut history = History::default();
    let mut window_start = Snapshot::default();
    let settle = Duration::from_secs(3);
    let mut window_set = false;
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut last_print: Option<Instant> = None;
    loop {
        if stop.load(Ordering::SeqCst)
            || args
                .duration
                .is_some_and(|d| started.elapsed() >= Duration::from_secs(d))
        {
            break;
        }
        let snap = Snapshot {
            at: Some(Instant::now()),
            apps: pods
                .iter()
                .filter_map(|(n, p)| osm_demo_apps::stats::read_stats(&p.stats).map(|s| (n.clone(), s)))
                .collect(),
        };
        if let Some(c) = read_config(config_dir, Instant::now())
            .filter(|c| c.mode != config.mode || c.split != config.split)
        {
            config = c;
            window_set = false;
        }
        // Expectations are judged from a few seconds after the last change, once every proxy has it.
        if !window_set && config.since.elapsed() >= settle {
            window_start = snap.clone();
            window_set = true;
        }
        history.push(snap);
        let keys = local.proxy_keys();
        let frame = Frame {
            config: &config,
            elapsed: started.elapsed(),
            config_dir: &config_dir.to_string_lossy(),
            proxies: keys.len(),
            in_sync: keys.iter().filter(|k| cp.cache().in_sync(k)).count(),
            last_event: &local.last_event(),
        };
        write_status(&config, &frame, &history.latest(), &pods);
        let text = view::render(&frame, &history);
        if interactive {
            print!("\x1b[2J\x1b[H{text}");
            let _ = std::io::Write::flush(&mut std::io::stdout());
        } else if last_print.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            // Not a terminal (CI, a pipe): a frame every 5 s instead of redrawing.
            println!("{text}");
            last_print = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    // Stop the clients first so their final stats are complete.
    for name in ["bookbuyer", "bookthief"] {
        if let Some(app) = pods.get_mut(name).and_then(|p| p.app.as_mut()) {
            let _ = app.terminate(Duration::from_secs(3));
        }
    }
    let end = Snapshot {
        at: Some(Instant::now()),
        apps: pods
            .iter()
            .filter_map(|(n, p)| osm_demo_apps::stats::read_stats(&p.stats).map(|s| (n.clone(), s)))
            .collect(),
    };
    let buyer = view::delta("bookbuyer", &window_start, &end);
    let thief = view::delta("bookthief", &window_start, &end);
    let checks = view::checks(&config, &buyer, &thief);
    println!(
        "\nsummary (mode {}, split {}/{}, over the last {} s):",
        config.mode.as_str(),
        config.split.0,
        config.split.1,
        window_start.at.map(|t| t.elapsed().as_secs()).unwrap_or(0)
    );
    for c in &checks {
        println!(
            "  [{}] {}: {}",
            if c.ok { "ok" } else { "FAILED" },
            c.what,
            c.observed
        );
    }
    drop(pods);
    drop(local);
    drop(hub);
    let passed = window_set && checks.iter().all(|c| c.ok);
    if !window_set {
        println!("  [FAILED] the run was too short to observe the mesh after its last change");
    }
    // A bounded run is a verdict; an interactive run ends with Ctrl-C and the summary is informative.
    Ok(if passed || args.duration.is_none() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
