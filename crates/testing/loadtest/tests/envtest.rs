//! `osm-loadtest envtest` end to end at a tiny size (5 services, 10 proxies, 3 Endpoints changes, 2+2
//! new streams): a real kube-apiserver, the controller process on the Kubernetes source, real mTLS
//! ADS clients. No timing assertions: only that the mesh written to the apiserver reaches every
//! proxy, every change is seen and ACKed, and the new streams get their config. Skips loudly
//! without the envtest binaries (fails under `CI=true`).

#![forbid(unsafe_code)]

use std::path::Path;

use osm_loadtest::envtest::{EnvtestArgs, Toggle, run};
use osm_loadtest::mesh::Mode;

#[test]
fn envtest_mode_measures_changes_and_new_streams() {
    // `run` finds the binaries the same way (`osm_envtest::find_assets`).
    if osm_envtest::require_or_skip("envtest_mode_measures_changes_and_new_streams").is_none() {
        return;
    }
    let args = EnvtestArgs {
        services: 5,
        endpoints: 2,
        proxies: 10,
        mode: Mode::Smi,
        allow: 2,
        namespaces: 2,
        changes: 3,
        change_interval_ms: 20,
        new_streams: 2,
        recompute_toggle: Toggle::Egress,
        sync_timeout_s: 30,
        change_timeout_s: 20,
        ..EnvtestArgs::default()
    };
    let report =
        run(&args, Path::new(env!("CARGO_BIN_EXE_osm-loadtest"))).expect("the envtest load test runs");
    let summary = report.human();

    let cold = &report.cold_start;
    assert_eq!((cold.synced, cold.total, cold.nacks), (10, 10, 0), "{summary}");
    assert_eq!(report.per_proxy.client_nacks, 0, "{summary}");
    // SMI allow 2: every proxy holds exactly its two upstreams' endpoints.
    let eds = &report.per_proxy.resources["endpoints (EDS)"];
    assert_eq!((eds.min, eds.max), (2.0, 2.0), "{summary}");

    // (a) and (b): every Endpoints write was delivered once, recomputed and ACKed by its proxies.
    let e = &report.endpoint_changes;
    assert_eq!((e.changes, e.measured, e.timeouts), (3, 3, 0), "{summary}");
    assert_eq!(e.extra_deliveries, 0, "{summary}");
    assert!(e.affected_avg >= 1.0, "{summary}");
    assert!(e.p99_ms.is_some() && e.source_p50_ms.is_some(), "{summary}");
    assert_eq!(report.cpu_per_event.events, 3, "{summary}");

    // (c): the MeshConfig toggle reaches every connected proxy; the new streams all get a config.
    let c = report.new_streams.as_ref().expect("(c) ran");
    // Only the proxies connected from the start are waited for.
    assert_eq!(c.recompute.affected, 10, "{summary}");
    assert_eq!(c.recompute.missing, 0, "{summary}");
    assert!(c.recompute.converged_ms.is_some(), "{summary}");
    for times in [&c.idle, &c.during_recompute] {
        assert_eq!((times.opened, times.missing), (2, 0), "{summary}");
        assert!(times.full_config_max_ms.is_some(), "{summary}");
    }
}
