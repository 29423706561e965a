//! Retry policies → the retry policy on the source's outbound services, in permissive and SMI mode
//! alike, and what is reported instead of applied.
#![forbid(unsafe_code)]
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use osm_api::policy::Retry;
use osm_fixtures::bookstore;
use osm_model::*;

fn mesh(permissive: bool) -> MeshInput {
    let mut input = bookstore(
        permissive,
        Some((50, 50)),
        |p| IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10 + p.len() as u8)),
        |s| IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1 + s.len() as u8)),
    );
    input.mesh_config.feature_flags.enable_retry_policy = true;
    input
}

fn add(input: &mut MeshInput, ns: &str, name: &str, source: &str, destinations: &[&str]) {
    let destinations: String = destinations
        .iter()
        .map(|d| {
            let (ns, svc) = d.split_once('/').expect("ns/svc");
            format!("    - {{kind: Service, name: {svc}, namespace: {ns}}}\n")
        })
        .collect();
    let (src_ns, src_sa) = source.split_once('/').expect("ns/sa");
    let yaml = format!(
        "apiVersion: policy.openservicemesh.io/v1alpha1\nkind: Retry\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  source: {{kind: ServiceAccount, name: {src_sa}, namespace: {src_ns}}}\n  destinations:\n{destinations}\
         \x20 retryPolicy: {{retryOn: '5xx, connect-failure', perTryTimeout: 1s, numRetries: 5, retryBackoffBaseInterval: 10ms}}\n"
    );
    let r: Retry = serde_saphyr::from_str(&yaml).expect("Retry YAML");
    input.retries.insert(ObjectRef::new(ns, name), r.spec);
}

/// The retry policy of each of a proxy's outbound services named `service`.
fn retries_to(model: &MeshModel, proxy: &str, service: &str) -> Vec<Option<Arc<RetryPolicy>>> {
    model.proxies[proxy]
        .outbound
        .services
        .iter()
        .filter(|s| s.service.name == service)
        .map(|s| s.retry.clone())
        .collect()
}

#[test]
fn retry_applies_to_the_sources_routes_in_both_modes() {
    for permissive in [false, true] {
        let mut input = mesh(permissive);
        add(
            &mut input,
            "bookbuyer",
            "retry",
            "bookbuyer/bookbuyer",
            &["bookstore/bookstore"],
        );
        let model = compute(&input);
        assert!(model.warnings.is_empty(), "{:?}", model.warnings);
        let want = Some(Arc::new(RetryPolicy {
            retry_on: "5xx,connect-failure".into(),
            num_retries: 5,
            per_try_timeout_ms: Some(1000),
            backoff_base_interval_ms: 10,
        }));
        let got = retries_to(&model, "bookbuyer", "bookstore");
        assert!(
            !got.is_empty() && got.iter().all(|r| *r == want),
            "permissive {permissive}: {got:?}"
        );
        // Another destination of the same source, and another source, are untouched.
        let others = retries_to(&model, "bookbuyer", "bookstore-v1");
        assert!(
            !others.is_empty() && others.iter().all(Option::is_none),
            "{others:?}"
        );
        if permissive {
            let thief = retries_to(&model, "bookthief", "bookstore");
            assert!(
                !thief.is_empty() && thief.iter().all(Option::is_none),
                "{thief:?}"
            );
            // Everyone else still shares one outbound intent.
            assert!(Arc::ptr_eq(
                &model.proxies["bookthief"].outbound,
                &model.proxies["bookstore-v1"].outbound
            ));
            assert!(!Arc::ptr_eq(
                &model.proxies["bookthief"].outbound,
                &model.proxies["bookbuyer"].outbound
            ));
        }
    }
}

#[test]
fn retry_flag_off_applies_nothing_and_says_so() {
    for permissive in [false, true] {
        let mut input = mesh(permissive);
        input.mesh_config.feature_flags.enable_retry_policy = false;
        add(
            &mut input,
            "bookbuyer",
            "retry",
            "bookbuyer/bookbuyer",
            &["bookstore/bookstore"],
        );
        let model = compute(&input);
        assert!(
            model.proxies["bookbuyer"]
                .outbound
                .services
                .iter()
                .all(|s| s.retry.is_none())
        );
        assert!(
            model
                .warnings
                .iter()
                .any(|w| w.contains("featureFlags.enableRetryPolicy is false")),
            "{:?}",
            model.warnings
        );
    }
}

#[test]
fn retry_problems_are_reported() {
    let mut input = mesh(true);
    add(
        &mut input,
        "bookbuyer",
        "a-first",
        "bookbuyer/bookbuyer",
        &["bookstore/bookstore"],
    );
    add(
        &mut input,
        "bookbuyer",
        "b-second",
        "bookbuyer/bookbuyer",
        &["bookstore/bookstore", "bookstore/nonexistent"],
    );
    let model = compute(&input);
    let w = model.warnings.join("\n");
    assert!(
        w.contains("Retry bookbuyer/b-second: spec.destinations[0]")
            && w.contains("already follow Retry bookbuyer/a-first"),
        "{w}"
    );
    assert!(
        w.contains("spec.destinations[1]: Service bookstore/nonexistent does not exist"),
        "{w}"
    );
}

/// A change to the shared (permissive) intent reaches the identity with retries too, with its retries.
#[test]
fn retry_follows_endpoint_changes_incrementally() {
    let mut input = mesh(true);
    add(
        &mut input,
        "bookbuyer",
        "retry",
        "bookbuyer/bookbuyer",
        &["bookstore/bookstore-v1"],
    );
    let mut state = MeshState::new(&input);
    let old = input.clone();
    let pod = input
        .pods
        .values_mut()
        .find(|p| p.id.name.starts_with("bookstore-v1"))
        .expect("a bookstore-v1 pod");
    pod.ip = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 9, 9)));
    let change = state.update(&old, &input);
    assert!(change.all);
    assert_eq!(state.model(), &compute(&input));
    let buyer = &state.model().proxies["bookbuyer"].outbound;
    let v1 = buyer
        .services
        .iter()
        .find(|s| s.service.name == "bookstore-v1")
        .expect("bookstore-v1 reachable");
    assert!(v1.retry.is_some());
    assert!(
        v1.backends[0]
            .cluster
            .endpoints
            .contains(&IpAddr::V4(Ipv4Addr::new(10, 0, 9, 9)))
    );
}
