//! `osm-loadtest controller --kubeconfig FILE`: the control plane fed by the Kubernetes source from a
//! real apiserver, wired as `osm-control-plane controller` wires it (`osm_controller::runner` with
//! `osm_k8s::KubeSource`: first input applied before ADS serves, recompute in `block_in_place`,
//! certificate rotation), minus the validating webhook and the HTTP server.
//!
//! The driver writes changes to the apiserver itself; this process only times them: `Arm` before
//! the write, `Observe` after it (see [`crate::protocol`]).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use osm_api::contract::DEFAULT_MESH_NAME;
use osm_ca::{CertificateAuthority, TrustDomain};
use osm_controller::ControlPlane;
use osm_controller::runner::{self, Listeners, Update};
use osm_k8s::{KubeOptions, KubeSource};
use osm_model::{MeshInput, Source, SourceEvent, Stop};
use tokio::sync::broadcast;

use super::{CA_VALIDITY, ControllerArgs, OSM_NAMESPACE, send, wait, wait_sync};
use crate::mesh;
use crate::protocol::{Command, Observed, Ready, Reply};
use crate::sys::{cpu_time, now_ns, raise_nofile_limit};

/// What the source and the runner report to the command loop.
enum News {
    /// The source handed an input over (before the recompute).
    Delivered(u64),
    /// `ControlPlane::replace` returned: when, its wall time, proxies whose config changed.
    Applied { at_ns: u64, micros: u64, changed: usize },
}

/// The Kubernetes source, timed: it reports each delivery before the runner recomputes, so a
/// change's latency splits into the source's part and the control plane's.
struct Timed {
    inner: KubeSource,
    news: mpsc::Sender<News>,
}

impl Source for Timed {
    fn run_until(
        self,
        stop: Stop,
        mut sink: Box<dyn FnMut(SourceEvent) + Send>,
    ) -> impl Future<Output = ()> + Send {
        let Self { inner, news } = self;
        inner.run_until(
            stop,
            Box::new(move |event| {
                // Anything but a rejection is applied (a whole input, or a source's incremental change).
                if !matches!(event, SourceEvent::Rejected(_)) {
                    let _ = news.send(News::Delivered(now_ns()));
                }
                sink(event);
            }),
        )
    }
}

/// Between `Arm` and `Observe`: the generations before the change and the sync events since.
struct Armed {
    before: Vec<Option<u64>>,
    events: broadcast::Receiver<osm_ads::Synced>,
    /// The CPU `Arm` took on this thread.
    cpu_us: u64,
}

/// CPU time of the calling thread (the command loop: the harness's bookkeeping, not the control plane).
fn thread_cpu_us() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0)
}

/// How long the first input may take (every initial list at 3000 services on a busy machine).
const FIRST_INPUT_TIMEOUT: Duration = Duration::from_secs(300);

pub(super) fn run(args: ControllerArgs, kubeconfig: &Path) -> Result<()> {
    let _ = raise_nofile_limit();
    args.mesh.validate().map_err(anyhow::Error::msg)?;
    let cpu0 = cpu_time(None).unwrap_or_default();
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .thread_name("osm-controller")
        .enable_all()
        .build()?;
    let td = TrustDomain::default();
    let ca = CertificateAuthority::load_or_create(&args.ca_dir, td.clone(), CA_VALIDITY)
        .context("loading the mesh root")?;
    let keys: Vec<String> = mesh::proxies(&args.mesh).iter().map(|p| p.key(&td)).collect();
    let client = rt
        .block_on(osm_k8s::connect(Some(kubeconfig)))
        .context("connecting to the apiserver")?;
    let cp = Arc::new(ControlPlane::new(Arc::new(ca), MeshInput::default()));
    let ads = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind("127.0.0.1:0".parse().expect("a valid address"))?;
        // Thousands of proxies connect at once: a short accept queue would drop SYNs and add seconds.
        socket.listen(4096)?.into_std()
    })?;
    let addr = ads.local_addr()?;

    let (news_tx, news) = mpsc::channel();
    let mut opts = KubeOptions::new(DEFAULT_MESH_NAME, OSM_NAMESPACE);
    opts.trust_domain = td.to_string();
    let source = Timed {
        inner: KubeSource::new(client, opts),
        news: news_tx.clone(),
    };
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let listeners = Listeners {
        ads,
        http: None,
        osm_namespace: OSM_NAMESPACE.to_string(),
    };
    let runner = rt.spawn(runner::run(
        cp.clone(),
        source,
        listeners,
        shutdown_rx,
        move |update| {
            if let Update::Applied(stats) = update {
                let _ = news_tx.send(News::Applied {
                    at_ns: now_ns(),
                    micros: u64::try_from(stats.micros).unwrap_or(u64::MAX),
                    changed: stats.changed,
                });
            }
        },
    ));

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // Ready once the first input is applied: ADS serves from then on.
    let mut list_s = None;
    let deadline = Instant::now() + FIRST_INPUT_TIMEOUT;
    loop {
        match news.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(News::Delivered(_)) => list_s = Some(started.elapsed().as_secs_f64()),
            Ok(News::Applied { .. }) => break,
            Err(_) => {
                let message = format!("no input from the Kubernetes source within {FIRST_INPUT_TIMEOUT:?}");
                send(
                    &mut out,
                    &Reply::Error {
                        message: message.clone(),
                    },
                )?;
                bail!(message);
            }
        }
    }
    let init_wall = started.elapsed();
    let cpu1 = cpu_time(None).unwrap_or_default();
    send(
        &mut out,
        &Reply::Ready(Ready {
            pid: std::process::id(),
            addr: addr.to_string(),
            input_cpu_s: 0.0,
            init_wall_s: init_wall.as_secs_f64(),
            init_cpu_s: (cpu1 - cpu0).as_secs_f64(),
            proxies: keys.len(),
            at_ns: now_ns(),
            list_s,
        }),
    )?;

    let cache = cp.cache().clone();
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut armed: Option<Armed> = None;
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
            Command::Arm => {
                // Whatever the source delivered before is not the change about to be written.
                while news.try_recv().is_ok() {}
                let cpu0 = thread_cpu_us();
                let before = cache.generation_each(&names);
                armed = Some(Armed {
                    before,
                    events: cache.synced(),
                    cpu_us: thread_cpu_us().saturating_sub(cpu0),
                });
                send(&mut out, &Reply::Armed)?;
            }
            Command::Observe { timeout_ms } => {
                let Some(a) = armed.take() else {
                    send(
                        &mut out,
                        &Reply::Error {
                            message: "Observe without Arm".into(),
                        },
                    )?;
                    continue;
                };
                let cpu0 = thread_cpu_us();
                let arm_cpu_us = a.cpu_us;
                let mut reply = observe(&rt, &cache, &keys, &news, a, timeout_ms, &mut out)?;
                reply.harness_cpu_us = arm_cpu_us + thread_cpu_us().saturating_sub(cpu0);
                send(&mut out, &Reply::Observed(reply))?;
            }
            Command::Change { .. } | Command::Rotate { .. } | Command::Soak { .. } => send(
                &mut out,
                &Reply::Error {
                    message: "scripted changes need the synthetic mesh (no --kubeconfig)".into(),
                },
            )?,
            Command::Quit => break,
        }
    }
    let _ = shutdown.send(true);
    match rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), runner).await }) {
        Ok(Ok(Ok(()))) | Err(_) => {}
        Ok(Ok(Err(e))) => bail!("the control plane failed: {e}"),
        Ok(Err(e)) => bail!("the control plane task failed: {e}"),
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Waits for the source's next delivery (replying `Delivered` at once, so the driver can act while
/// the recompute runs), its recompute, and the ACKs of every connected proxy it affected.
fn observe(
    rt: &tokio::runtime::Runtime,
    cache: &osm_ads::SnapshotCache,
    keys: &[String],
    news: &mpsc::Receiver<News>,
    armed: Armed,
    timeout_ms: u64,
    out: &mut impl Write,
) -> Result<Observed> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let mut reply = Observed {
        delivered_ns: None,
        applied_ns: None,
        update_us: 0,
        changed: 0,
        affected: 0,
        done_ns: None,
        missing: 0,
        deliveries: 0,
        harness_cpu_us: 0,
    };
    while reply.applied_ns.is_none() {
        match news.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(News::Delivered(at_ns)) => {
                reply.deliveries += 1;
                if reply.delivered_ns.is_none() {
                    reply.delivered_ns = Some(at_ns);
                    send(out, &Reply::Delivered { at_ns })?;
                }
            }
            Ok(News::Applied {
                at_ns,
                micros,
                changed,
            }) => {
                reply.applied_ns = Some(at_ns);
                reply.update_us = micros;
                reply.changed = changed;
            }
            Err(_) => return Ok(reply),
        }
    }
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    // A proxy is affected when its config generation moved; it is done once synced with the new one.
    let pending: HashMap<String, u64> = keys
        .iter()
        .zip(armed.before.into_iter().zip(cache.generation_each(&names)))
        .filter_map(|(k, (old, new))| match new {
            Some(new) if old != Some(new) => Some((k.clone(), new)),
            _ => None,
        })
        .collect();
    reply.affected = pending.len();
    let left = deadline.saturating_duration_since(Instant::now());
    let result = wait(rt, cache, armed.events, pending, left);
    reply.done_ns = if reply.affected > 0 && result.missing.is_empty() {
        result.done_ns
    } else {
        None
    };
    reply.missing = result.missing.len();
    reply.deliveries += news
        .try_iter()
        .filter(|n| matches!(n, News::Delivered(_)))
        .count();
    Ok(reply)
}
