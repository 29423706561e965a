//! `osm-loadtest controller`: the control plane under test, alone in its process so that its CPU time
//! and peak RSS are its own. It builds the mesh, serves ADS over mTLS on 127.0.0.1 and then follows the
//! driver's commands (see [`crate::protocol`]): wait until every proxy is in sync, apply a change and
//! wait until every affected proxy ACKed it. With `--kubeconfig` it takes the mesh from an apiserver
//! instead (`kube_mode`, for `osm-loadtest envtest`).
//!
//! "In sync" is the ADS server's own view (`SnapshotCache::in_sync`): the proxy's stream handled its
//! latest config and the proxy ACKed every type it was sent. Each stream announces it with a `Synced`
//! event (`SnapshotCache::synced`) as it records the ACK that completes it; the waiter (a task on the
//! ADS runtime) counts those, so the time of the last ACK is known to well under a millisecond. A slow
//! rescan of `in_sync` covers events the waiter lost.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use osm_ads::{AdsService, SnapshotCache};
use osm_api::contract::ads_server_name;
use osm_ca::{CertificateAuthority, TrustDomain};
use osm_controller::ControlPlane;
use tokio::sync::broadcast;

use crate::mesh::{self, Churn, ChurnKind, MeshSpec};
use crate::protocol::{Changed, Command, Ready, Reply, Rotated, Soaked, Synced};
use crate::sys::{cpu_time, memory, now_ns, raise_nofile_limit};

mod kube_mode;

/// The namespace the ADS server name is built from.
pub const OSM_NAMESPACE: &str = "osm-system";
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    #[command(flatten)]
    pub mesh: MeshSpec,
    /// Directory with the mesh root (`root-cert.pem`, `root-key.pem`), written by the driver.
    #[arg(long)]
    pub ca_dir: PathBuf,
    /// Tokio worker threads serving ADS.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    #[arg(long, value_delimiter = ',', default_value = "endpoint")]
    pub churn: Vec<ChurnKind>,
    /// Kubernetes mode: take the mesh from this apiserver through `osm_k8s::KubeSource` instead of
    /// building it; `--services`, `--namespaces` and `--proxies` then only name the proxies to wait for.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

/// Runs the controller process: replies on stdout, commands on stdin.
pub fn run(args: ControllerArgs) -> Result<()> {
    if let Some(kubeconfig) = args.kubeconfig.clone() {
        return kube_mode::run(args, &kubeconfig);
    }
    let _ = raise_nofile_limit();
    args.mesh.validate().map_err(anyhow::Error::msg)?;
    let mut churn = Churn::new(&args.mesh, &args.churn).map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .thread_name("osm-ads")
        .enable_all()
        .build()?;
    let td = TrustDomain::default();
    let ca = CertificateAuthority::load_or_create(&args.ca_dir, td.clone(), CA_VALIDITY)
        .context("loading the mesh root")?;

    let cpu0 = cpu_time(None).unwrap_or_default();
    let input = mesh::build(&args.mesh);
    let keys: Vec<String> = mesh::proxies(&args.mesh).iter().map(|p| p.key(&td)).collect();
    let cpu1 = cpu_time(None).unwrap_or_default();
    let started = Instant::now();
    let cp = Arc::new(ControlPlane::new(Arc::new(ca), input));
    let init_wall = started.elapsed();
    let cpu2 = cpu_time(None).unwrap_or_default();

    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let listener = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind("127.0.0.1:0".parse().expect("a valid address"))?;
        // Thousands of proxies connect at once: a short accept queue would drop SYNs and add seconds.
        socket.listen(4096)
    })?;
    let addr = listener.local_addr()?;
    let tls = cp.ads_tls(&[ads_server_name(OSM_NAMESPACE)])?;
    let service = AdsService::new(cp.cache().clone(), cp.registry(), td, shutdown_rx.clone());
    let mut stop = shutdown_rx;
    let server = rt.spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|down| *down).await;
        };
        osm_ads::serve(listener, tls, service, shutdown).await
    });

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    send(
        &mut out,
        &Reply::Ready(Ready {
            pid: std::process::id(),
            addr: addr.to_string(),
            input_cpu_s: (cpu1 - cpu0).as_secs_f64(),
            init_wall_s: init_wall.as_secs_f64(),
            init_cpu_s: (cpu2 - cpu1).as_secs_f64(),
            proxies: keys.len(),
            at_ns: now_ns(),
            list_s: None,
        }),
    )?;

    let cache = cp.cache().clone();
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading a command")?;
        if line.trim().is_empty() {
            continue;
        }
        let command: Command = match serde_json::from_str(&line) {
            Ok(c) => c,
            Err(e) => {
                send(
                    &mut out,
                    &Reply::Error {
                        message: format!("bad command {line:?}: {e}"),
                    },
                )?;
                continue;
            }
        };
        match command {
            Command::WaitSync { timeout_ms } => {
                let reply = wait_sync(&rt, &cache, &keys, timeout_ms);
                send(&mut out, &Reply::Synced(reply))?;
            }
            Command::Change { index, timeout_ms } => {
                let reply = apply_change(&rt, &cp, &keys, &mut churn, index, timeout_ms);
                send(&mut out, &Reply::Changed(reply))?;
            }
            Command::Rotate {
                change_index,
                timeout_ms,
            } => {
                let reply = rotate(&rt, &cp, &keys, &mut churn, change_index, timeout_ms);
                send(&mut out, &Reply::Rotated(reply))?;
            }
            Command::Soak {
                rate_per_s,
                duration_s,
                timeout_ms,
            } => {
                let reply = soak(&rt, &cp, &keys, &mut churn, rate_per_s, duration_s, timeout_ms);
                send(&mut out, &Reply::Soaked(reply))?;
            }
            Command::Arm | Command::Observe { .. } => send(
                &mut out,
                &Reply::Error {
                    message: "Arm and Observe need Kubernetes mode (--kubeconfig)".into(),
                },
            )?,
            Command::Quit => break,
        }
    }
    let _ = shutdown.send(true);
    match rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), server).await }) {
        Ok(Ok(Ok(()))) | Err(_) => {}
        Ok(Ok(Err(e))) => bail!("ADS server failed: {e:?}"),
        Ok(Err(e)) => bail!("ADS server task failed: {e}"),
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Waits until every proxy of `keys` is connected and in sync with its current config.
fn wait_sync(
    rt: &tokio::runtime::Runtime,
    cache: &SnapshotCache,
    keys: &[String],
    timeout_ms: u64,
) -> Synced {
    let events = cache.synced();
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    let pending: HashMap<String, u64> = keys
        .iter()
        .zip(cache.generation_each(&names))
        .map(|(k, generation)| (k.clone(), generation.unwrap_or(1)))
        .collect();
    let result = wait(rt, cache, events, pending, Duration::from_millis(timeout_ms));
    let nacks = keys.iter().filter_map(|k| cache.status(k)).map(|s| s.nacks).sum();
    Synced {
        at_ns: result.done_ns.unwrap_or_else(now_ns),
        synced: keys.len() - result.missing.len(),
        total: keys.len(),
        missing: result.missing.into_iter().take(5).collect(),
        nacks,
    }
}

fn send(out: &mut impl Write, reply: &Reply) -> Result<()> {
    serde_json::to_writer(&mut *out, reply)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Applies one change and waits for the connected proxies it affected.
fn apply_change(
    rt: &tokio::runtime::Runtime,
    cp: &ControlPlane,
    keys: &[String],
    churn: &mut Churn,
    index: usize,
    timeout_ms: u64,
) -> Changed {
    let cache = cp.cache();
    let mut kind = None;
    let ((started_ns, stats, update_ns), affected, result) =
        change_and_wait(rt, cache, keys, timeout_ms, || {
            // A source hands the control plane a fresh snapshot (as the Kubernetes and manifest sources
            // do); building it is the source's work and is not timed.
            let mut next = cp.input();
            kind = Some(churn.apply(index, &mut next));
            let started_ns = now_ns();
            let stats = cp.replace(next);
            (started_ns, stats, now_ns() - started_ns)
        });
    Changed {
        index,
        kind: kind.expect("update runs the change"),
        started_ns,
        update_us: update_ns / 1000,
        changed: stats.changed,
        affected,
        latency_us: match (affected, result.missing.is_empty(), result.done_ns) {
            (0, ..) | (_, false, _) => None,
            (_, true, Some(done)) => Some(done.saturating_sub(started_ns) / 1000),
            (_, true, None) => None,
        },
        missing: result.missing.len(),
    }
}

/// Rotates every service certificate (as if all were due) and waits until every proxy ACKed its new
/// secrets; applies one churn change concurrently when asked.
fn rotate(
    rt: &tokio::runtime::Runtime,
    cp: &Arc<ControlPlane>,
    keys: &[String],
    churn: &mut Churn,
    change_index: Option<usize>,
    timeout_ms: u64,
) -> Rotated {
    let cache = cp.cache();
    let ((started_ns, rotated_ns, change), affected, result) =
        change_and_wait(rt, cache, keys, timeout_ms, || {
            let started_ns = now_ns();
            let rotation = {
                let cp = cp.clone();
                std::thread::spawn(move || {
                    // Far enough ahead that every certificate is due.
                    cp.rotate_due(SystemTime::now() + Duration::from_secs(10 * 365 * 24 * 3600));
                    now_ns()
                })
            };
            let change = change_index.map(|index| apply_change(rt, cp, keys, churn, index, timeout_ms));
            (started_ns, rotation.join().unwrap_or_else(|_| now_ns()), change)
        });
    Rotated {
        rotate_us: rotated_ns.saturating_sub(started_ns) / 1000,
        affected,
        latency_us: match (result.missing.is_empty(), result.done_ns) {
            (true, Some(done)) => Some(done.saturating_sub(started_ns) / 1000),
            _ => None,
        },
        missing: result.missing.len(),
        change,
    }
}

/// Runs `change`, then waits until every proxy of `keys` whose config it changed is in sync (pods
/// added by churn have a config but no client, so only `keys` count). Returns what `change` returned,
/// how many proxies were affected, and the wait's result.
fn change_and_wait<T>(
    rt: &tokio::runtime::Runtime,
    cache: &SnapshotCache,
    keys: &[String],
    timeout_ms: u64,
    change: impl FnOnce() -> T,
) -> (T, usize, WaitResult) {
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    let before = cache.generation_each(&names);
    // Subscribed before the change so no event it causes is missed.
    let events = cache.synced();
    let out = change();
    // A proxy is affected when its config generation moved; it is done once synced with the new one.
    let pending: HashMap<String, u64> = keys
        .iter()
        .zip(before.into_iter().zip(cache.generation_each(&names)))
        .filter_map(|(k, (old, new))| match new {
            Some(new) if old != Some(new) => Some((k.clone(), new)),
            _ => None,
        })
        .collect();
    let affected = pending.len();
    let result = wait(rt, cache, events, pending, Duration::from_millis(timeout_ms));
    (out, affected, result)
}

/// See [`Command::Soak`]. Changes arrive on a fixed clock; batches are applied back to back.
fn soak(
    rt: &tokio::runtime::Runtime,
    cp: &ControlPlane,
    keys: &[String],
    churn: &mut Churn,
    rate_per_s: f64,
    duration_s: f64,
    timeout_ms: u64,
) -> Soaked {
    let rate = rate_per_s.max(0.001);
    let total = (rate * duration_s).round() as usize;
    let period_ns = 1e9 / rate;
    let rss_start = memory(None).unwrap_or_default().rss;
    let start_ns = now_ns();
    let arrival_ns = |i: usize| start_ns + (i as f64 * period_ns) as u64;
    let cache = cp.cache();
    let mut latencies_ms = Vec::with_capacity(total);
    let (mut next, mut batches, mut timeouts) = (0usize, 0usize, 0usize);
    while next < total {
        let now = now_ns();
        // Changes 0..due have arrived by now.
        let due = ((((now - start_ns) as f64 / period_ns).floor() as usize) + 1).min(total);
        if due <= next {
            std::thread::sleep(Duration::from_nanos(arrival_ns(next).saturating_sub(now)));
            continue;
        }
        let (updated_ns, _, result) = change_and_wait(rt, cache, keys, timeout_ms, || {
            // Arrival times are the changes' own, so the snapshot copy below is part of the latency.
            let mut input = cp.input();
            for i in next..due {
                churn.apply(i, &mut input);
            }
            cp.replace(input);
            now_ns()
        });
        for i in next..due {
            if result.missing.is_empty() {
                let done = result.done_ns.unwrap_or(updated_ns);
                latencies_ms.push(done.saturating_sub(arrival_ns(i)) as f64 / 1e6);
            } else {
                timeouts += 1;
            }
        }
        batches += 1;
        next = due;
    }
    let end = memory(None).unwrap_or_default();
    latencies_ms.sort_by(f64::total_cmp);
    Soaked {
        changes: total,
        batches,
        duration_s: (now_ns() - start_ns) as f64 / 1e9,
        p50_ms: crate::report::percentile(&latencies_ms, 50.0),
        p99_ms: crate::report::percentile(&latencies_ms, 99.0),
        max_ms: latencies_ms.last().copied(),
        timeouts,
        rss_start_mb: rss_start as f64 / 1e6,
        rss_end_mb: end.rss as f64 / 1e6,
        peak_rss_mb: end.peak_rss as f64 / 1e6,
    }
}

fn finish(done: &mut Option<u64>, at: u64) {
    *done = Some(done.map_or(at, |d| d.max(at)));
}

struct WaitResult {
    /// When the last pending proxy got in sync (by its last ACK).
    done_ns: Option<u64>,
    missing: Vec<String>,
}

/// Runs `wait_in_sync` as a task of the ADS runtime. Blocked on from this thread, it parked and was
/// woken through a futex by every event the streams broadcast (a tenth of the controller process's
/// CPU during churn); as a task its wake-ups are queue pushes on a worker that is busy anyway.
fn wait(
    rt: &tokio::runtime::Runtime,
    cache: &SnapshotCache,
    events: broadcast::Receiver<osm_ads::Synced>,
    pending: HashMap<String, u64>,
    timeout: Duration,
) -> WaitResult {
    let cache = cache.clone();
    rt.block_on(async move {
        tokio::spawn(async move { wait_in_sync(&cache, events, pending, timeout).await })
            .await
            .unwrap_or_else(|e| {
                // The waiter has no panics of its own to propagate; report everything as missing.
                tracing::error!(error = %e, "the sync waiter failed");
                WaitResult {
                    done_ns: None,
                    missing: vec![format!("(waiter failed: {e})")],
                }
            })
    })
}

/// Waits until every pending proxy is in sync with (at least) its generation, by the streams'
/// `Synced` events; returns when the last one got there.
async fn wait_in_sync(
    cache: &SnapshotCache,
    mut events: broadcast::Receiver<osm_ads::Synced>,
    mut pending: HashMap<String, u64>,
    timeout: Duration,
) -> WaitResult {
    // The streams announce `Synced`; rescanning is only a backstop for events this receiver lost (it
    // lagged), so it runs soon after a lag and otherwise rarely. Polling `in_sync` of every pending
    // proxy every 25 ms was a fifth of the controller process's CPU during churn.
    const RESCAN: Duration = Duration::from_millis(250);
    const RESCAN_AFTER_LAG: Duration = Duration::from_millis(5);
    let mut done_ns: Option<u64> = None;
    // Both timers live across the loop: a `sleep_until` built per turn registers a new timer each
    // time, and every registration woke the runtime's driver with an eventfd write — two syscalls
    // per event, ~12 000 per change, charged to the controller process.
    let deadline = tokio::time::sleep(timeout);
    let rescan = tokio::time::sleep(RESCAN);
    tokio::pin!(deadline, rescan);
    fn on_event(
        event: Result<osm_ads::Synced, broadcast::error::RecvError>,
        pending: &mut HashMap<String, u64>,
        done_ns: &mut Option<u64>,
        rescan: std::pin::Pin<&mut tokio::time::Sleep>,
    ) {
        match event {
            Ok(osm_ads::Synced { proxy, generation }) => {
                if pending.get(&proxy).is_some_and(|target| generation >= *target) {
                    pending.remove(&proxy);
                    finish(done_ns, now_ns());
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let soon = tokio::time::Instant::now() + RESCAN_AFTER_LAG;
                if rescan.deadline() > soon {
                    rescan.reset(soon);
                }
            }
            Err(broadcast::error::RecvError::Closed) => {}
        }
    }
    while !pending.is_empty() {
        tokio::select! {
            event = events.recv() => {
                let closed = matches!(event, Err(broadcast::error::RecvError::Closed));
                on_event(event, &mut pending, &mut done_ns, rescan.as_mut());
                // Whatever else is queued is handled in this turn, without another trip through
                // the scheduler per event.
                loop {
                    match events.try_recv() {
                        Ok(e) => on_event(Ok(e), &mut pending, &mut done_ns, rescan.as_mut()),
                        Err(broadcast::error::TryRecvError::Lagged(n)) => on_event(
                            Err(broadcast::error::RecvError::Lagged(n)),
                            &mut pending,
                            &mut done_ns,
                            rescan.as_mut(),
                        ),
                        Err(_) => break,
                    }
                }
                if closed {
                    (&mut rescan).await;
                }
            },
            _ = &mut rescan => {
                // One lock for the whole rescan. A proxy found here is timed now: later than it was.
                let now = now_ns();
                let names: Vec<String> = pending.keys().cloned().collect();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                for (proxy, synced) in names.iter().zip(cache.in_sync_each(&refs)) {
                    if synced {
                        pending.remove(proxy);
                        finish(&mut done_ns, now);
                    }
                }
                rescan.as_mut().reset(tokio::time::Instant::now() + RESCAN);
            }
            _ = &mut deadline => break,
        }
    }
    let mut missing: Vec<String> = pending.into_keys().collect();
    missing.sort();
    WaitResult { done_ns, missing }
}
