//! Builds the 1000-service permissive scale mesh (2000 proxies), generates every proxy's config once,
//! and prints wall time, CPU time and peak RSS per phase, plus how much is encoded and shared.
//!
//! `cargo run --release -p osm-xds --example mesh_scale [services] [egress policies] [shared|distinct]
//! [ingress backends] [retries] [upstream traffic settings]`
//!
//! With egress policies, every identity is a source of each of them (cycling through http on port 80,
//! https on 443 and tcp on a port of its own with one address), to price what they add per proxy.
//! With a third argument `distinct`, policy `k` names identity `k` only instead: every identity with a
//! policy then has its own egress intent, so its own outbound listener.
//!
//! With ingress backends, IngressBackend `k` admits to service `k` (its two proxies) an ingress
//! controller: the pods of service `services - 1 - k` by address, over http for even `k`, over https
//! with a verified principal for odd `k`.
//!
//! With retries, Retry `k` (feature flag on) makes identity `k` retry to service `services - 1 - k`:
//! each such identity gets its own route configs. With upstream traffic settings, setting `k` limits
//! service `3k mod services`: connection settings on every client's cluster, an HTTP local rate limit
//! on its two proxies.
//!
//! CPU time and memory come from `/proc/self/stat` (utime + stime, in USER_HZ = 100 ticks) and
//! `/proc/self/status` (VmHWM, VmRSS). Before each phase the peak is reset through
//! `/proc/self/clear_refs` when the kernel allows it, so each phase's peak is its own.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use osm_model::compute;
use osm_xds::{Generator, Resource, TypeKind};

#[path = "../benches/support/mesh.rs"]
mod mesh;

/// Linux reports utime/stime in USER_HZ ticks, which is 100 on every architecture it supports.
const TICKS_PER_SECOND: f64 = 100.0;

fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start at field 3 (`state`).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) / TICKS_PER_SECOND))
}

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "?".to_string())
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0); false when not permitted.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Runs `f`, printing its wall time, CPU time and peak RSS.
fn phase<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let peak_reset = reset_peak();
    let (wall0, cpu0) = (Instant::now(), cpu_time());
    let out = f();
    let (wall, cpu1) = (wall0.elapsed(), cpu_time());
    let cpu = cpu0
        .zip(cpu1)
        .map(|(a, b)| format!("{:.2} s", (b - a).as_secs_f64()))
        .unwrap_or_else(|| "?".to_string());
    println!(
        "{name:<36} wall {:>7.3} s   cpu {cpu:>7}   peak RSS {}{}   RSS now {}",
        wall.as_secs_f64(),
        mib(status_kib("VmHWM:")),
        if peak_reset { "" } else { " (process)" },
        mib(status_kib("VmRSS:")),
    );
    out
}

/// `count` Egress policies naming every service's identity as a source.
fn add_egress_policies(input: &mut osm_model::MeshInput, services: usize, count: usize) {
    let distinct = std::env::args().nth(3).as_deref() == Some("distinct");
    let source = |i: usize| {
        serde_json::json!({"kind": "ServiceAccount", "name": mesh::service_name(i),
                           "namespace": mesh::NAMESPACE})
    };
    let everyone: Vec<serde_json::Value> = (0..services).map(source).collect();
    for k in 0..count {
        let sources = if distinct {
            vec![source(k % services)]
        } else {
            everyone.clone()
        };
        let spec = match k % 3 {
            0 => serde_json::json!({"sources": sources, "hosts": [format!("api-{k}.example.com")],
                                    "ports": [{"number": 80, "protocol": "http"}]}),
            1 => serde_json::json!({"sources": sources, "hosts": [format!("svc-{k}.example.com")],
                                    "ports": [{"number": 443, "protocol": "https"}]}),
            _ => serde_json::json!({"sources": sources,
                                    "ipAddresses": [format!("203.0.113.{}/32", k % 250)],
                                    "ports": [{"number": 5400 + k % 1000, "protocol": "tcp"}]}),
        };
        input.egresses.insert(
            osm_model::ObjectRef::new(mesh::NAMESPACE, format!("egress-{k}")),
            serde_json::from_value(spec).expect("an Egress spec"),
        );
    }
}

/// `count` IngressBackends, one per backend service (see the module docs).
fn add_ingress_backends(input: &mut osm_model::MeshInput, services: usize, count: usize) {
    for k in 0..count.min(services) {
        let source = serde_json::json!({"kind": "Service", "name": mesh::service_name(services - 1 - k),
                                        "namespace": mesh::NAMESPACE});
        let spec = if k % 2 == 0 {
            serde_json::json!({"backends": [{"name": mesh::service_name(k),
                                             "port": {"number": 8080, "protocol": "http"}}],
                               "sources": [source]})
        } else {
            serde_json::json!({"backends": [{"name": mesh::service_name(k),
                                             "port": {"number": 8080, "protocol": "https"},
                                             "tls": {"skipClientCertValidation": false}}],
                               "sources": [source, {"kind": "AuthenticatedPrincipal",
                                                    "name": "ingress.example.com"}]})
        };
        input.ingress_backends.insert(
            osm_model::ObjectRef::new(mesh::NAMESPACE, format!("ingress-{k}")),
            serde_json::from_value(spec).expect("an IngressBackend spec"),
        );
    }
}

/// `count` Retry policies, from identity `k` to service `services - 1 - k`.
fn add_retries(input: &mut osm_model::MeshInput, services: usize, count: usize) {
    input.mesh_config.feature_flags.enable_retry_policy |= count > 0;
    for k in 0..count.min(services) {
        let spec = serde_json::json!({
            "source": {"kind": "ServiceAccount", "name": mesh::service_name(k), "namespace": mesh::NAMESPACE},
            "destinations": [{"kind": "Service", "name": mesh::service_name(services - 1 - k),
                              "namespace": mesh::NAMESPACE}],
            "retryPolicy": {"retryOn": "5xx,connect-failure", "perTryTimeout": "1s", "numRetries": 3,
                            "retryBackoffBaseInterval": "25ms"}});
        input.retries.insert(
            osm_model::ObjectRef::new(mesh::NAMESPACE, format!("retry-{k}")),
            serde_json::from_value(spec).expect("a Retry spec"),
        );
    }
}

/// `count` UpstreamTrafficSettings, setting `k` for service `3k mod services`.
fn add_upstream_traffic_settings(input: &mut osm_model::MeshInput, services: usize, count: usize) {
    for k in 0..count.min(services) {
        let host = format!(
            "{}.{}.svc.cluster.local",
            mesh::service_name(3 * k % services),
            mesh::NAMESPACE
        );
        let spec = serde_json::json!({
            "host": host,
            "connectionSettings": {"tcp": {"maxConnections": 100, "connectTimeout": "5s"},
                                   "http": {"maxPendingRequests": 64, "maxRequestsPerConnection": 1000}},
            "rateLimit": {"local": {"http": {"requests": 100, "unit": "second"}}}});
        input.upstream_traffic_settings.insert(
            osm_model::ObjectRef::new(mesh::NAMESPACE, format!("uts-{k}")),
            serde_json::from_value(spec).expect("an UpstreamTrafficSetting spec"),
        );
    }
}

fn main() {
    let services: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("services: a number"))
        .unwrap_or(1000);
    println!(
        "permissive full mesh: {services} services × 2 pods = {} proxies, {services} identities",
        2 * services
    );
    let ca = mesh::ca_bundle();
    let egresses: usize = std::env::args()
        .nth(2)
        .map(|s| s.parse().expect("egress policies: a number"))
        .unwrap_or(0);
    let ingress: usize = std::env::args()
        .nth(4)
        .map(|s| s.parse().expect("ingress backends: a number"))
        .unwrap_or(0);
    let number = |i: usize, what: &str| -> usize {
        std::env::args()
            .nth(i)
            .map(|s| s.parse().unwrap_or_else(|_| panic!("{what}: a number")))
            .unwrap_or(0)
    };
    let (retries, settings) = (number(5, "retries"), number(6, "upstream traffic settings"));
    let input = phase("build input", || {
        let mut input = mesh::full_mesh(services);
        add_egress_policies(&mut input, services, egresses);
        add_ingress_backends(&mut input, services, ingress);
        add_retries(&mut input, services, retries);
        add_upstream_traffic_settings(&mut input, services, settings);
        input
    });
    if retries + settings > 0 {
        println!("{retries} Retry policies (one source identity each), {settings} UpstreamTrafficSettings");
    }
    if egresses > 0 {
        println!("{egresses} Egress policies, each naming every identity as a source");
    }
    if ingress > 0 {
        println!("{ingress} IngressBackends, each for one service's two proxies");
    }
    let model = phase("compute model", || compute(&input));
    let secrets = phase("identity secrets (outside timing)", || {
        mesh::secrets_by_identity(&model)
    });
    let mut g = Generator::new(mesh::TRUST_DOMAIN, &ca);
    let configs = phase("generate cold (all proxies)", || {
        mesh::generate_all(&mut g, &model, &secrets)
    });

    // Size and sharing.
    let per_proxy: Vec<usize> = configs
        .iter()
        .map(|c| {
            TypeKind::ALL
                .into_iter()
                .flat_map(|k| c.iter(k))
                .map(|r| r.any_len())
                .sum()
        })
        .collect();
    if let Some(first) = configs.first() {
        let kinds: Vec<String> = TypeKind::ALL
            .into_iter()
            .map(|k| {
                let (n, bytes) = first.iter(k).fold((0, 0), |(n, b), r| (n + 1, b + r.any_len()));
                format!("{} {n} = {:.0} kB", k.short(), bytes as f64 / 1000.0)
            })
            .collect();
        println!("one proxy's config: {}", kinds.join(", "));
    }
    let mut distinct: HashSet<*const Resource> = HashSet::new();
    let mut distinct_bytes = 0usize;
    let mut by_kind = [0usize; 5];
    let mut references = 0usize;
    for c in &configs {
        for (i, k) in TypeKind::ALL.into_iter().enumerate() {
            for r in c.iter(k) {
                references += 1;
                if distinct.insert(Arc::as_ptr(r)) {
                    distinct_bytes += r.any_len();
                    by_kind[i] += 1;
                }
            }
        }
    }
    let total: usize = per_proxy.iter().sum();
    println!(
        "encoded bytes per proxy: min {} / mean {} / max {} (all proxies: {:.1} MiB if sent once each)",
        per_proxy.iter().min().unwrap_or(&0),
        total / per_proxy.len().max(1),
        per_proxy.iter().max().unwrap_or(&0),
        total as f64 / 1048576.0
    );
    println!(
        "resources referenced by proxies: {references}; distinct Arc<Resource>: {} ({:.2} MiB encoded) — {}",
        distinct.len(),
        distinct_bytes as f64 / 1048576.0,
        TypeKind::ALL
            .iter()
            .zip(by_kind)
            .map(|(k, n)| format!("{} {n}", k.short()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("generator memo: {:?}", g.stats());

    // Warm: one endpoint moves; recompute and regenerate everything with the memo warm.
    let moved = mesh::with_moved_pod(&input, services / 2);
    let configs2 = phase("warm: compute + generate (1 moved)", || {
        let model = compute(&moved);
        mesh::generate_all(&mut g, &model, &secrets)
    });
    let changed: usize = configs
        .iter()
        .zip(&configs2)
        .filter(|(a, b)| !a.same_sets(b))
        .count();
    println!("proxies whose sets changed: {changed}");
    drop(configs2);
    println!(
        "process peak RSS (VmHWM, since last reset): {}",
        mib(status_kib("VmHWM:"))
    );
}
