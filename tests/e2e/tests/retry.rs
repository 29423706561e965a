//! Retry policies with real Envoy sidecars, as upstream OSM's retry e2e test checks them: a request
//! from the Retry's source ServiceAccount to `/status/503` of a destination Service is retried
//! `numRetries` times by the client's sidecar — its cluster counts `upstream_rq_retry` 5 and
//! `upstream_rq_retry_limit_exceeded` 1 — while another ServiceAccount's requests, and every request
//! once `enableRetryPolicy` is off, are not retried at all. Permissive mode (over SotW) and SMI mode
//! (over delta) alike: upstream's retries only worked with SMI (#4038).

use std::time::{Duration, Instant};

use osm_api::policy::Retry;
use osm_api::smi::specs::HttpMatch;
use osm_e2e::{Mesh, require_or_skip, stat_value};
use osm_model::ObjectRef;
use osm_xds::bootstrap::AdsApi;

const RETRY: &str = "apiVersion: policy.openservicemesh.io/v1alpha1
kind: Retry
metadata: {name: retrypolicy, namespace: bookbuyer}
spec:
  source: {kind: ServiceAccount, name: bookbuyer, namespace: bookbuyer}
  destinations:
  - {kind: Service, name: bookstore-v1, namespace: bookstore}
  retryPolicy:
    retryOn: 5xx
    perTryTimeout: 1s
    numRetries: 5
    retryBackoffBaseInterval: 10ms
";

const URL: &str = "http://bookstore-v1.bookstore:14001/status/503";
const CLUSTER: &str = "cluster.bookstore/bookstore-v1|14001";

/// The retry counters of bookstore-v1's cluster in a pod's sidecar.
fn retry_stats(mesh: &Mesh, pod: &str) -> (u64, u64) {
    let stats = mesh.envoy(pod).admin_get("/stats").unwrap();
    (
        stat_value(&stats, &format!("{CLUSTER}.upstream_rq_retry")),
        stat_value(&stats, &format!("{CLUSTER}.upstream_rq_retry_limit_exceeded")),
    )
}

/// One request from `pod` to `/status/503`, then the change in its sidecar's retry counters once
/// the request is counted (`upstream_rq_completed` moved: Envoy counts a request's retries before
/// it completes it).
fn request_and_count(mesh: &Mesh, pod: &str) -> (u64, u64) {
    let completed = || {
        let stats = mesh.envoy(pod).admin_get("/stats").unwrap();
        stat_value(&stats, &format!("{CLUSTER}.upstream_rq_completed"))
    };
    let (retries, exceeded) = retry_stats(mesh, pod);
    let before = completed();
    let s = mesh
        .http_get(pod, URL, 1, &[osm_e2e::USER_AGENT])
        .expect("the client runs");
    assert_eq!(
        s.status.get("503"),
        Some(&1),
        "{pod}: the failure reaches the client: {s:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while completed() == before {
        assert!(Instant::now() < deadline, "{pod}: the request was never counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (r, e) = retry_stats(mesh, pod);
    (r - retries, e - exceeded)
}

fn retry(prefix: &str, api: AdsApi, permissive: bool) {
    if require_or_skip(prefix).is_none() {
        return;
    }
    let (mesh, _ips) = Mesh::bookstore(prefix, api, permissive, None, &[], |input, _| {
        input.mesh_config.feature_flags.enable_retry_policy = true;
        let retry: Retry = serde_saphyr::from_str(RETRY).expect("Retry YAML");
        input
            .retries
            .insert(ObjectRef::new("bookbuyer", "retrypolicy"), retry.spec);
        if !permissive {
            // SMI: bookbuyer may GET /status/* on bookstore-v1 (as it may the demo's routes).
            let routes = ObjectRef::new("bookstore", "bookstore-service-routes");
            let group = input
                .http_route_groups
                .get_mut(&routes)
                .expect("the demo's routes");
            let status: HttpMatch = serde_json::from_value(serde_json::json!(
                {"name": "status", "pathRegex": "/status/.*", "methods": ["GET"]}
            ))
            .expect("an HTTPRouteGroup match");
            group.matches.push(status);
            let target = ObjectRef::new("bookstore", "bookbuyer-access-bookstore-v1");
            input
                .traffic_targets
                .get_mut(&target)
                .expect("the demo's target")
                .rules[0]
                .matches
                .push("status".into());
        }
    })
    .expect("mesh starts");

    assert_eq!(
        request_and_count(&mesh, "bookbuyer"),
        (5, 1),
        "bookbuyer's sidecar retries 5 times, then gives up"
    );
    if permissive {
        assert_eq!(
            request_and_count(&mesh, "bookthief"),
            (0, 0),
            "another ServiceAccount is not retried"
        );
    }
    mesh.update(|i| i.mesh_config.feature_flags.enable_retry_policy = false)
        .expect("the flag change is ACKed");
    assert_eq!(
        request_and_count(&mesh, "bookbuyer"),
        (0, 0),
        "with enableRetryPolicy off, nothing is retried"
    );
}

#[test]
fn retry_permissive_sotw() {
    retry("e2retp", AdsApi::StateOfTheWorld, true);
}

#[test]
fn retry_smi_delta() {
    retry("e2rets", AdsApi::Delta, false);
}
