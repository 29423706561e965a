//! Real Envoys alongside the load harness's simulated proxies (issue "Scale and speed"): 20 Envoy
//! sidecars in pods of the network-namespace harness and 500 simulated ADS clients share one control
//! plane and a permissive mesh of 250 services × 2 endpoints, so every endpoint change reaches all 520.
//! Then each Envoy is replaced by a fresh process, one at a time, and must get in sync again. The test
//! asserts what a user relies on — every change is ACKed by every proxy of both kinds, every fresh
//! Envoy syncs, no proxy NACKs — and prints the times (the last ACK of each kind per change; spawn or
//! connect to first sync). Those are figures for the scale notes, not assertions: the machine is
//! shared by everything.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use osm_ads::SnapshotCache;
use osm_api::contract::ads_server_name;
use osm_ca::{ServiceIdentity, TrustDomain, XdsClientIdentity};
use osm_e2e::{Mesh, OSM_NAMESPACE, require_or_skip};
use osm_loadtest::call::{self, Dialer};
use osm_loadtest::client::{self, Api, Proxy, ProxyStats, Shared};
use osm_loadtest::mesh::{self, Churn, ChurnKind, MeshSpec, Mode};
use osm_loadtest::report::percentile;
use osm_xds::bootstrap::AdsApi;
use tokio::sync::broadcast;

const SERVICES: usize = 250;
const ENDPOINTS: usize = 2;
const ENVOYS: usize = 20;
const CHANGES: usize = 10;
const TIMEOUT: Duration = Duration::from_secs(60);
const LOADGEN: &str = "loadgen";

/// Waits for a `Synced` event of every pending proxy (at or past its generation) and returns when each
/// arrived, as the receiving task saw it.
fn wait_synced(
    rt: &tokio::runtime::Runtime,
    events: &mut broadcast::Receiver<osm_ads::Synced>,
    mut pending: HashMap<String, u64>,
) -> Result<HashMap<String, Instant>, String> {
    let deadline = Instant::now() + TIMEOUT;
    let mut done = HashMap::new();
    rt.block_on(async {
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, events.recv()).await {
                Ok(Ok(s)) => {
                    if pending.get(&s.proxy).is_some_and(|g| s.generation >= *g) {
                        pending.remove(&s.proxy);
                        done.insert(s.proxy, Instant::now());
                    }
                }
                Ok(Err(e)) => return Err(format!("synced events: {e}")),
                Err(_) => {
                    let mut missing: Vec<_> = pending.keys().take(5).cloned().collect();
                    missing.sort();
                    return Err(format!("{} proxies not in sync, e.g. {missing:?}", pending.len()));
                }
            }
        }
        Ok(done)
    })
}

/// The current generation of each key's config.
fn generations(cache: &SnapshotCache, keys: &[String]) -> Vec<Option<u64>> {
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    cache.generation_each(&refs)
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and maximum (nearest rank, as the load harness reports them).
fn p50_max(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |p| percentile(&v, p).expect("at least one figure");
    (at(50.0), at(100.0))
}

#[test]
fn real_envoys_converge_with_simulated_proxies() {
    if require_or_skip("scale_envoys").is_none() {
        return;
    }
    let spec = MeshSpec {
        services: SERVICES,
        endpoints: ENDPOINTS,
        proxies: SERVICES * ENDPOINTS + ENVOYS,
        mode: Mode::Permissive,
        ..Default::default()
    };
    // Pods past services × endpoints are client-only sidecars: those become the real Envoys' pods.
    let (simulated, real): (Vec<_>, Vec<_>) = mesh::proxies(&spec)
        .into_iter()
        .partition(|p| p.index < SERVICES * ENDPOINTS);
    let names: Vec<String> = real.iter().map(|p| format!("pod-{}", p.index)).collect();
    // One more pod, outside the mesh (no interception rules, no sidecar), for the simulated proxies.
    let refs: Vec<&str> = names.iter().map(String::as_str).chain([LOADGEN]).collect();
    let (hub, pods) = Mesh::pods_for("e2x", &refs).expect("hub and pods");
    let mut input = mesh::build(&spec);
    for pod in input.pods.values_mut() {
        if let Some(p) = pods.get(&pod.id.name) {
            pod.ip = Some(IpAddr::V4(p.ip()));
            // The e2e mesh names a real pod's proxy by its pod name.
            pod.proxy_uuid = Some(pod.id.name.clone());
        }
    }
    let metas: BTreeMap<String, osm_model::Pod> = input
        .pods
        .values()
        .filter(|p| pods.contains_key(&p.id.name))
        .map(|p| (p.id.name.clone(), p.clone()))
        .collect();
    let mut mesh =
        Mesh::start(hub, pods, input, AdsApi::Delta, &BTreeMap::new()).expect("Envoys start and sync");
    let cache = mesh.cp.cache().clone();
    let td = TrustDomain::default();
    let real_keys: Vec<String> = names.iter().map(|n| mesh.proxy_key(n)).collect();

    // Each simulated proxy presents an xDS client certificate from the mesh CA, as a bootstrap gives.
    let ca = mesh.cp.ca().clone();
    let proxies: Vec<Arc<Proxy>> = simulated
        .iter()
        .map(|info| {
            let id = XdsClientIdentity {
                proxy_uuid: info.uuid.clone(),
                identity: ServiceIdentity::new(&info.service_account, &info.namespace),
                trust_domain: td.clone(),
            };
            let cert = ca
                .issue_xds_client_cert(&id, Duration::from_secs(3600))
                .expect("an xDS client certificate");
            Arc::new(Proxy {
                key: info.key(&td),
                node_cluster: format!("{}.{}", info.service_account, info.namespace),
                tls: call::client_tls(ca.root_cert_pem(), &cert.cert_pem, cert.private_key.expose_pem())
                    .expect("client TLS"),
                stats: Mutex::new(ProxyStats::default()),
            })
        })
        .collect();
    let sim_keys: Vec<String> = proxies.iter().map(|p| p.key.clone()).collect();
    // The simulated proxies run on a runtime of one thread inside the loadgen pod's network namespace,
    // so they dial the ADS server as the Envoys do, over the bridge; the changes are applied from that
    // thread too.
    let (simulated_cold, last_real, last_sim) = mesh
        .pod(LOADGEN)
        .pod
        .in_netns(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a client runtime");
            let dialer = Dialer {
                addr: SocketAddr::from((mesh.hub.ip(), osm_xds::names::ADS_PORT)),
                server_name: rustls::pki_types::ServerName::try_from(ads_server_name(OSM_NAMESPACE))
                    .expect("a DNS name"),
            };
            let shared = Arc::new(Shared::new(dialer, Api::Delta, 0));
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let mut events = cache.synced();
            let pending: HashMap<String, u64> = sim_keys
                .iter()
                .zip(generations(&cache, &sim_keys))
                .map(|(k, g)| (k.clone(), g.expect("every simulated proxy has a config")))
                .collect();
            let started = Instant::now();
            for p in &proxies {
                rt.spawn(client::run(p.clone(), shared.clone(), stopped.clone()));
            }
            let done = wait_synced(&rt, &mut events, pending).unwrap_or_else(|e| {
                let s = proxies[0].stats();
                panic!(
                    "simulated proxies not in sync: {e}; the first one: {} connects, {} errors, last {:?}",
                    s.connects, s.errors, s.last_error
                )
            });
            let simulated_cold: Vec<f64> = done.values().map(|t| millis(t.duration_since(started))).collect();

            // Endpoint changes: each reaches every proxy, real and simulated.
            let all_keys: Vec<String> = real_keys.iter().chain(&sim_keys).cloned().collect();
            let mut churn = Churn::new(&spec, &[ChurnKind::Endpoint]).expect("endpoint churn");
            let (mut last_real, mut last_sim) = (Vec::new(), Vec::new());
            for i in 0..CHANGES {
                let before = generations(&cache, &all_keys);
                let mut events = cache.synced();
                let t0 = Instant::now();
                mesh.cp.update(|input| {
                    churn.apply(i, input);
                });
                let pending: HashMap<String, u64> = all_keys
                    .iter()
                    .zip(before.into_iter().zip(generations(&cache, &all_keys)))
                    .filter_map(|(k, (old, new))| new.filter(|n| old != Some(*n)).map(|n| (k.clone(), n)))
                    .collect();
                assert_eq!(
                    pending.len(),
                    all_keys.len(),
                    "change {i}: every proxy holds every service's endpoints in a permissive mesh"
                );
                let done = wait_synced(&rt, &mut events, pending)
                    .unwrap_or_else(|e| panic!("change {i} did not reach every proxy: {e}"));
                let last = |keys: &[String]| {
                    keys.iter()
                        .map(|k| millis(done[k].duration_since(t0)))
                        .fold(0.0, f64::max)
                };
                last_real.push(last(&real_keys));
                last_sim.push(last(&sim_keys));
            }
            let _ = stop.send(true);
            rt.shutdown_timeout(Duration::from_secs(5));
            (simulated_cold, last_real, last_sim)
        })
        .expect("the loadgen pod's namespace");
    // A cold start of each real Envoy: one at a time (twenty starting at once mostly measure two cores
    // shared by twenty Envoy start-ups), each is replaced by a fresh process — new certificate, new
    // stream, nothing held — and timed from its spawn to its first full sync.
    let (hub_ip, server_name) = (mesh.hub.ip().to_string(), ads_server_name(OSM_NAMESPACE));
    let mut envoys_cold = Vec::new();
    for (name, key) in names.iter().zip(&real_keys) {
        let bootstrap = mesh
            .cp
            .bootstrap_for(&metas[name], &hub_ip, &server_name, AdsApi::Delta, &[])
            .expect("a bootstrap");
        let generation = cache.generation_each(&[key])[0].expect("every Envoy has a config");
        let mut events = cache.synced();
        let mp = mesh.pods.get_mut(name).expect("a real pod");
        mp.envoy = None;
        let spawned = Instant::now();
        mp.envoy = Some(mp.pod.spawn_envoy(&bootstrap).expect("a fresh Envoy"));
        let done = wait_synced(
            mesh.runtime(),
            &mut events,
            HashMap::from([(key.clone(), generation)]),
        )
        .unwrap_or_else(|e| panic!("the fresh Envoy of {name} did not get in sync: {e}"));
        envoys_cold.push(millis(done[key].duration_since(spawned)));
    }

    assert!(mesh.nacks().is_empty(), "Envoy NACKs: {:?}", mesh.nacks());
    let sim_nacks: u64 = proxies.iter().map(|p| p.stats().nacks).sum();
    assert_eq!(sim_nacks, 0, "simulated proxies NACKed");

    println!(
        "{ENVOYS} real Envoys + {} simulated proxies, {SERVICES} services × {ENDPOINTS} endpoints, permissive, delta",
        sim_keys.len()
    );
    let (envoys_cold, simulated_cold) = (p50_max(envoys_cold), p50_max(simulated_cold));
    println!(
        "cold start, spawn or connect to in sync: real Envoys one at a time median {:.0} ms (max {:.0}); simulated, all 500 at once, median {:.0} ms (max {:.0})",
        envoys_cold.0, envoys_cold.1, simulated_cold.0, simulated_cold.1,
    );
    let (last_real, last_sim) = (p50_max(last_real), p50_max(last_sim));
    println!(
        "{CHANGES} endpoint changes, last ACK: real Envoys median {:.1} ms (max {:.1}); simulated median {:.1} ms (max {:.1})",
        last_real.0, last_real.1, last_sim.0, last_sim.1,
    );
}
