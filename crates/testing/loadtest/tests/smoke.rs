//! A small load test end to end (5 services, 10 proxies): the controller process, real mTLS ADS
//! clients, cold start and a few changes of every kind, over both ADS flavours and both policy modes.
//! No timing assertions: only that everything converges, every change reaches the proxies it affects,
//! and SMI proxies receive only the clusters they may use.

#![forbid(unsafe_code)]

use std::path::Path;

use osm_loadtest::client::Api;
use osm_loadtest::mesh::{ChurnKind, MeshSpec, Mode};
use osm_loadtest::{RunArgs, run};

fn args(mode: Mode, ads: Api) -> RunArgs {
    RunArgs {
        mesh: MeshSpec {
            services: 5,
            endpoints: 2,
            proxies: 10,
            mode,
            allow: 2,
            splits: 1,
            namespaces: 1,
            selectors: false,
        },
        ads,
        changes: 6,
        churn: vec![ChurnKind::Endpoint, ChurnKind::Pod, ChurnKind::Policy],
        change_interval_ms: 10,
        sync_timeout_s: 60,
        change_timeout_s: 20,
        rotate: true,
        soak_rate: 20.0,
        soak_s: 1.0,
        ..RunArgs::default()
    }
}

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_osm-loadtest"))
}

fn check(mode: Mode, ads: Api) {
    let report = run(&args(mode, ads), exe()).expect("the load test runs");
    let summary = report.human();
    let cold = &report.cold_start;
    assert_eq!((cold.synced, cold.total), (10, 10), "{summary}");
    assert_eq!(cold.nacks, 0, "{summary}");
    assert_eq!(report.per_proxy.client_nacks, 0, "{summary}");
    assert!(report.per_proxy.bytes_cold.min > 0.0, "{summary}");
    // Every proxy holds a config of every type: clusters, endpoints, listeners, routes and secrets.
    for (kind, held) in &report.per_proxy.resources {
        assert!(held.min >= 1.0, "{kind}: {summary}");
    }
    let churn = &report.churn.all;
    assert_eq!(churn.changes, 6, "{summary}");
    assert_eq!(churn.timeouts, 0, "{summary}");
    // Endpoint and pod changes always reach someone; in SMI mode a policy toggle may too.
    let endpoint = &report.churn.by_kind["endpoint"];
    assert_eq!(endpoint.measured, endpoint.changes, "{summary}");
    assert!(endpoint.affected_avg >= 1.0, "{summary}");
    assert!(report.controller.peak_rss_mb > 0.0, "{summary}");
    // Rotating every certificate reaches every proxy, and the change made meanwhile still lands.
    let rotation = report.rotation.as_ref().expect("--rotate ran");
    assert_eq!((rotation.affected, rotation.missing), (10, 0), "{summary}");
    assert!(rotation.converged_ms.is_some(), "{summary}");
    assert!(
        rotation.change_affected == 0 || rotation.change_ms.is_some(),
        "{summary}"
    );
    // The soak applies every change it scheduled, and each reaches its proxies.
    let soak = report.soak.as_ref().expect("--soak-rate ran");
    assert_eq!((soak.changes, soak.timeouts), (20, 0), "{summary}");
    assert!(soak.batches >= 1 && soak.p99_ms.is_some(), "{summary}");
    match mode {
        Mode::Smi => {
            let smi = report.smi.as_ref().expect("an SMI check in SMI mode");
            assert_eq!(smi.checked, 10, "{summary}");
            assert_eq!(smi.violations, 0, "{summary}");
            assert_eq!(smi.max_upstream_clusters, 2, "{summary}");
        }
        Mode::Permissive => {
            assert!(report.smi.is_none());
            // Permissive: every proxy reaches all 5 services.
            let eds = &report.per_proxy.resources["endpoints (EDS)"];
            assert_eq!((eds.min, eds.max), (5.0, 5.0), "{summary}");
        }
    }
}

#[test]
fn permissive_sotw() {
    check(Mode::Permissive, Api::Sotw);
}

#[test]
fn permissive_delta() {
    check(Mode::Permissive, Api::Delta);
}

#[test]
fn smi_sotw() {
    check(Mode::Smi, Api::Sotw);
}

#[test]
fn smi_delta() {
    check(Mode::Smi, Api::Delta);
}
