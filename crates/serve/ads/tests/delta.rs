//! Scripted incremental (delta) sessions against `DeltaStream`: the test plays Envoy and the
//! controller and checks which resources and removals every response carries. No sockets.

#![forbid(unsafe_code)]

mod support;

use std::collections::HashMap;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use envoy_types::pb::google::rpc::Status;
use osm_ads::AdsEvent;
use osm_ads::delta::DeltaStream;
use osm_xds::{ProxyConfig, TypeKind};
use support::{CDS, EDS, cla, cluster, config, name_of, nothing, of_sets, only, set, sorted};

const PROXY: &str = "u1.sidecar.bookbuyer.bookbuyer.cluster.local";

fn subscribe(type_url: &str, names: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.to_string(),
        resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
}

fn unsubscribe(type_url: &str, names: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.to_string(),
        resource_names_unsubscribe: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
}

fn ack(resp: &DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: resp.type_url.clone(),
        response_nonce: resp.nonce.clone(),
        ..Default::default()
    }
}

fn nack(resp: &DeltaDiscoveryResponse, message: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        error_detail: Some(Status {
            code: 3,
            message: message.to_string(),
            details: Vec::new(),
        }),
        ..ack(resp)
    }
}

/// The first request of a reconnected stream: what Envoy subscribes to and the versions it holds.
fn reconnect(type_url: &str, names: &[&str], held: &[(&str, &str)]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        initial_resource_versions: held
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
        ..subscribe(type_url, names)
    }
}

/// Names of the resources a response carries (checked against the encoded body).
fn names(resp: &DeltaDiscoveryResponse) -> Vec<String> {
    let mut v: Vec<String> = resp
        .resources
        .iter()
        .map(|r| {
            let body = r.resource.as_ref().expect("a resource body");
            assert_eq!(name_of(body), r.name);
            r.name.clone()
        })
        .collect();
    v.sort();
    v
}

fn removed(resp: &DeltaDiscoveryResponse) -> Vec<String> {
    let mut v = resp.removed_resources.clone();
    v.sort();
    v
}

/// The version the config holds for `name` (what Envoy would put in `initial_resource_versions`).
fn version(cfg: &ProxyConfig, kind: TypeKind, name: &str) -> String {
    cfg.get(kind, name).expect("in the config").version.clone()
}

/// Opens a CDS wildcard subscription on `cfg` and ACKs the first response.
fn cds_acked(stream: &mut DeltaStream, cfg: &ProxyConfig) -> DeltaDiscoveryResponse {
    let first = only(stream.on_request(&subscribe(CDS, &[]), Some(cfg)));
    nothing(&stream.on_request(&ack(&first), Some(cfg)));
    first
}

/// The initial wildcard subscription sends every cluster with its name and version.
#[test]
fn wildcard_subscribe_sends_everything() {
    let cfg = config([cluster("a", "1"), cluster("b", "1")]);
    let mut stream = DeltaStream::new(PROXY);
    let out = stream.on_request(&subscribe(CDS, &[]), Some(&cfg));
    assert!(matches!(
        &out.events[..],
        [AdsEvent::Sent {
            kind: TypeKind::Cluster,
            resources: 2,
            ..
        }]
    ));
    let resp = only(out);
    assert_eq!(resp.type_url, CDS);
    assert_eq!(names(&resp), sorted(["a", "b"]));
    assert!(resp.removed_resources.is_empty());
    assert!(!resp.nonce.is_empty());
    for r in &resp.resources {
        assert_eq!(r.version, version(&cfg, TypeKind::Cluster, &r.name));
    }
}

/// An ACK produces no response and an Acked event naming the response's nonce.
#[test]
fn ack_is_recorded_and_answered_with_nothing() {
    let cfg = config([cluster("a", "1")]);
    let mut stream = DeltaStream::new(PROXY);
    let resp = only(stream.on_request(&subscribe(CDS, &["*"]), Some(&cfg)));
    let out = stream.on_request(&ack(&resp), Some(&cfg));
    nothing(&out);
    assert_eq!(
        out.events,
        vec![AdsEvent::Acked {
            proxy: PROXY.into(),
            kind: TypeKind::Cluster,
            version: resp.nonce.clone(),
        }]
    );
}

/// A change of one resource sends only that resource; the unchanged one is not repeated.
#[test]
fn change_of_one_resource_sends_only_it() {
    let mut stream = DeltaStream::new(PROXY);
    cds_acked(&mut stream, &config([cluster("a", "1"), cluster("b", "1")]));
    let resp = only(stream.on_config(&config([cluster("a", "2"), cluster("b", "1")])));
    assert_eq!(names(&resp), vec!["a".to_string()]);
    assert!(resp.removed_resources.is_empty());
    nothing(&stream.on_config(&config([cluster("a", "2"), cluster("b", "1")])));
}

/// A resource that leaves the config is announced in `removed_resources`, once.
#[test]
fn removal_is_announced() {
    let mut stream = DeltaStream::new(PROXY);
    cds_acked(&mut stream, &config([cluster("a", "1"), cluster("b", "1")]));
    let resp = only(stream.on_config(&config([cluster("a", "1")])));
    assert!(resp.resources.is_empty());
    assert_eq!(removed(&resp), vec!["b".to_string()]);
    nothing(&stream.on_request(&ack(&resp), Some(&config([cluster("a", "1")]))));
    nothing(&stream.on_config(&config([cluster("a", "1")])));
}

/// A NACKed resource version is recorded with Envoy's message and not sent again, while other
/// resources keep flowing; a new version of it goes out.
#[test]
fn nacked_resource_version_is_not_resent() {
    let mut stream = DeltaStream::new(PROXY);
    cds_acked(&mut stream, &config([cluster("a", "1"), cluster("b", "1")]));
    let bad = config([cluster("a", "bad"), cluster("b", "1")]);
    let refused = only(stream.on_config(&bad));
    let out = stream.on_request(&nack(&refused, "cluster a: invalid"), Some(&bad));
    nothing(&out);
    assert_eq!(
        out.events,
        vec![AdsEvent::Nacked {
            proxy: PROXY.into(),
            kind: TypeKind::Cluster,
            version: refused.nonce.clone(),
            error: "cluster a: invalid".into(),
        }]
    );
    nothing(&stream.on_config(&config([cluster("a", "bad"), cluster("b", "1")])));

    let resp = only(stream.on_config(&config([cluster("a", "bad"), cluster("b", "2")])));
    assert_eq!(
        names(&resp),
        vec!["b".to_string()],
        "the refused version of a stays out"
    );

    let resp = only(stream.on_config(&config([cluster("a", "3"), cluster("b", "2")])));
    assert_eq!(names(&resp), vec!["a".to_string()]);
}

/// The proxy may still hold the older version of a refused resource: when the resource leaves the
/// config, its removal is still announced.
#[test]
fn refused_resource_removal_is_announced() {
    let mut stream = DeltaStream::new(PROXY);
    cds_acked(&mut stream, &config([cluster("a", "1"), cluster("b", "1")]));
    let bad = config([cluster("a", "bad"), cluster("b", "1")]);
    let refused = only(stream.on_config(&bad));
    stream.on_request(&nack(&refused, "no"), Some(&bad));

    let resp = only(stream.on_config(&config([cluster("b", "1")])));
    assert_eq!(removed(&resp), vec!["a".to_string()]);
    // Back with the refused content, after the removal: it is a new state, so it is sent.
    let resp = only(stream.on_config(&config([cluster("a", "bad"), cluster("b", "1")])));
    assert_eq!(names(&resp), vec!["a".to_string()]);
}

/// A NACK of a response whose resource a later response already replaced does not hold back the
/// later version.
#[test]
fn nack_of_a_superseded_response_does_not_block_the_newer_version() {
    let mut stream = DeltaStream::new(PROXY);
    cds_acked(&mut stream, &config([cluster("a", "1")]));
    let first = only(stream.on_config(&config([cluster("a", "2")])));
    let v3 = config([cluster("a", "3")]);
    let second = only(stream.on_config(&v3));
    nothing(&stream.on_request(&nack(&first, "no"), Some(&v3)));
    nothing(&stream.on_request(&ack(&second), Some(&v3)));
    nothing(&stream.on_config(&config([cluster("a", "3")])));
}

/// EDS: subscribe and unsubscribe individual names; only subscribed names are sent, and an
/// unsubscribed name is neither sent nor announced as removed.
#[test]
fn eds_subscribe_and_unsubscribe() {
    let v1 = config([cla("a", 1), cla("b", 1), cla("c", 1)]);
    let mut stream = DeltaStream::new(PROXY);
    let first = only(stream.on_request(&subscribe(EDS, &["a"]), Some(&v1)));
    assert_eq!(names(&first), vec!["a".to_string()]);
    nothing(&stream.on_request(&ack(&first), Some(&v1)));

    let more = only(stream.on_request(&subscribe(EDS, &["b"]), Some(&v1)));
    assert_eq!(names(&more), vec!["b".to_string()], "a is known already");
    nothing(&stream.on_request(&ack(&more), Some(&v1)));

    nothing(&stream.on_request(&unsubscribe(EDS, &["a"]), Some(&v1)));
    nothing(&stream.on_config(&config([cla("a", 2), cla("b", 1), cla("c", 2)])));
    let resp = only(stream.on_config(&config([cla("a", 3), cla("b", 2), cla("c", 3)])));
    assert_eq!(names(&resp), vec!["b".to_string()]);
    assert!(resp.removed_resources.is_empty());
}

/// Subscribing to a name the config does not have yet sends nothing until it appears.
#[test]
fn eds_subscribe_to_unknown_name_waits() {
    let mut stream = DeltaStream::new(PROXY);
    nothing(&stream.on_request(&subscribe(EDS, &["x"]), Some(&config([cla("a", 1)]))));
    let resp = only(stream.on_config(&config([cla("a", 1), cla("x", 1)])));
    assert_eq!(names(&resp), vec!["x".to_string()]);
}

/// Per the protocol, a name in `resource_names_subscribe` is sent even if the server believes the
/// proxy has its latest version (the proxy may have dropped it).
#[test]
fn resubscribing_a_known_name_resends_it() {
    let cfg = config([cla("a", 1)]);
    let mut stream = DeltaStream::new(PROXY);
    let first = only(stream.on_request(&subscribe(EDS, &["a"]), Some(&cfg)));
    nothing(&stream.on_request(&ack(&first), Some(&cfg)));
    let again = only(stream.on_request(&subscribe(EDS, &["a"]), Some(&cfg)));
    assert_eq!(names(&again), vec!["a".to_string()]);
}

/// Reconnect, wildcard CDS: the versions Envoy declares are not sent again; changed resources are,
/// and names it holds that the config no longer has are removed.
#[test]
fn initial_resource_versions_suppress_unchanged_clusters_on_reconnect() {
    let cfg = config([cluster("a", "1"), cluster("b", "2"), cluster("new", "1")]);
    let old_b = cluster("b", "1").version.clone();
    let a = version(&cfg, TypeKind::Cluster, "a");
    let mut stream = DeltaStream::new(PROXY);
    let resp = only(stream.on_request(
        &reconnect(CDS, &[], &[("a", &a), ("b", &old_b), ("gone", "0123")]),
        Some(&cfg),
    ));
    assert_eq!(names(&resp), sorted(["b", "new"]));
    assert_eq!(removed(&resp), vec!["gone".to_string()]);
}

/// Reconnect, EDS: Envoy lists every name in `resource_names_subscribe` *and* its version in
/// `initial_resource_versions`; unchanged ones are not sent again, later changes are.
#[test]
fn initial_resource_versions_suppress_unchanged_named_resources_on_reconnect() {
    let cfg = config([cla("a", 1), cla("b", 1)]);
    let a = version(&cfg, TypeKind::Endpoint, "a");
    let b = version(&cfg, TypeKind::Endpoint, "b");
    let mut stream = DeltaStream::new(PROXY);
    nothing(&stream.on_request(&reconnect(EDS, &["a", "b"], &[("a", &a), ("b", &b)]), Some(&cfg)));
    let changed = config([cla("a", 1), cla("b", 2)]);
    let resp = only(stream.on_config(&changed));
    assert_eq!(names(&resp), vec!["b".to_string()]);
    // A later subscribe on the same stream still means "send it".
    let again = only(stream.on_request(&subscribe(EDS, &["a"]), Some(&changed)));
    assert_eq!(names(&again), vec!["a".to_string()]);
}

/// A fresh stream without `initial_resource_versions` gets everything again.
#[test]
fn new_stream_without_initial_versions_gets_everything() {
    let cfg = config([cluster("a", "1"), cluster("b", "1")]);
    let mut old = DeltaStream::new(PROXY);
    cds_acked(&mut old, &cfg);
    let mut fresh = DeltaStream::new(PROXY);
    let resp = only(fresh.on_request(&subscribe(CDS, &[]), Some(&cfg)));
    assert_eq!(names(&resp), sorted(["a", "b"]));
}

/// A subscription opened before the proxy has a config is served by the first config.
#[test]
fn subscribe_before_config_is_answered_by_the_first_config() {
    let mut stream = DeltaStream::new(PROXY);
    nothing(&stream.on_request(&subscribe(CDS, &[]), None));
    let resp = only(stream.on_config(&config([cluster("a", "1")])));
    assert_eq!(names(&resp), vec!["a".to_string()]);
}

/// Plain ACKs (and repeated requests without subscription changes) on the same sets send nothing for
/// any type; the same sets republished in a new config send nothing either.
#[test]
fn acks_on_unchanged_sets_send_nothing() {
    let (clusters, endpoints) = (set([cluster("a", "1")]), set([cla("a", 1)]));
    let cfg = of_sets(&[&clusters, &endpoints]);
    let mut stream = DeltaStream::new(PROXY);
    let cds = cds_acked(&mut stream, &cfg);
    let eds = only(stream.on_request(&subscribe(EDS, &["a"]), Some(&cfg)));
    let out = stream.on_request(&ack(&eds), Some(&cfg));
    nothing(&out);
    assert_eq!(out.events.len(), 1, "only the Acked event");
    nothing(&stream.on_request(&ack(&cds), Some(&cfg)));
    nothing(&stream.on_config(&of_sets(&[&clusters, &endpoints])));
}

/// Only sets that changed are looked at: with one set shared and one replaced, only the replaced
/// set's changed resource and its removed name go out, even though both configs are new values.
#[test]
fn only_changed_sets_are_sent() {
    let shared = set([cluster("s1", "1"), cluster("s2", "1")]);
    let mut stream = DeltaStream::new(PROXY);
    let first = cds_acked(
        &mut stream,
        &of_sets(&[
            &shared,
            &set([cluster("a", "1"), cluster("b", "1"), cluster("gone", "1")]),
        ]),
    );
    assert_eq!(names(&first), sorted(["a", "b", "gone", "s1", "s2"]));
    let v2 = of_sets(&[&shared, &set([cluster("a", "1"), cluster("b", "2")])]);
    let resp = only(stream.on_config(&v2));
    assert_eq!(names(&resp), vec!["b".to_string()]);
    assert_eq!(removed(&resp), vec!["gone".to_string()]);
    nothing(&stream.on_request(&ack(&resp), Some(&v2)));
    // The same transition seen by another proxy gives the same answer (from the shared memo).
    let mut other = DeltaStream::new("u2.sidecar.bookbuyer.bookbuyer.cluster.local");
    cds_acked(
        &mut other,
        &of_sets(&[
            &shared,
            &set([cluster("a", "1"), cluster("b", "1"), cluster("gone", "1")]),
        ]),
    );
    let resp = only(other.on_config(&v2));
    assert_eq!(names(&resp), vec!["b".to_string()]);
    assert_eq!(removed(&resp), vec!["gone".to_string()]);
}

/// A set that leaves the config takes its names with it, except those another set now holds with the
/// same version (not re-sent) or another version (sent).
#[test]
fn names_of_a_dropped_set_are_removed_unless_held_elsewhere() {
    let keep = set([cluster("k", "1")]);
    let mut stream = DeltaStream::new(PROXY);
    cds_acked(
        &mut stream,
        &of_sets(&[
            &keep,
            &set([cluster("moved", "1"), cluster("bumped", "1"), cluster("x", "1")]),
        ]),
    );
    let v2 = of_sets(&[&set([cluster("moved", "1"), cluster("bumped", "2")]), &keep]);
    let resp = only(stream.on_config(&v2));
    assert_eq!(names(&resp), vec!["bumped".to_string()]);
    assert_eq!(removed(&resp), vec!["x".to_string()]);
}

/// The stream task marks the config seen when it hands it to a request; a change that arrived
/// meanwhile must go out with that request's answer, for every subscribed type.
#[test]
fn config_change_seen_by_a_request_is_sent() {
    let v1 = config([cluster("a", "1"), cla("a", 1)]);
    let mut stream = DeltaStream::new(PROXY);
    let cds = only(stream.on_request(&subscribe(CDS, &[]), Some(&v1)));
    let eds = only(stream.on_request(&subscribe(EDS, &["a"]), Some(&v1)));
    nothing(&stream.on_request(&ack(&eds), Some(&v1)));

    let v2 = config([cluster("a", "1"), cla("a", 2)]);
    let out = stream.on_request(&ack(&cds), Some(&v2));
    assert!(matches!(
        &out.events[0],
        AdsEvent::Acked {
            kind: TypeKind::Cluster,
            ..
        }
    ));
    let resp = only(out);
    assert_eq!(resp.type_url, EDS);
    assert_eq!(names(&resp), vec!["a".to_string()]);
    // Handled: the next config event for the same sets sends nothing.
    nothing(&stream.on_config(&v2));
    nothing(&stream.on_request(&ack(&resp), Some(&v2)));
}

/// A large shared set (sent as one block) behaves like small ones: all of it at first, then only what
/// changed; a name unsubscribed and subscribed again is sent again; dropping the wildcard announces
/// the removal of everything the proxy held.
#[test]
fn large_shared_sets_track_what_the_proxy_holds() {
    let all_names: Vec<String> = (0..100).map(|i| format!("c{i:03}")).collect();
    let big = set(all_names.iter().map(|n| cluster(n, "1")));
    let cfg = of_sets(&[&big]);
    let mut stream = DeltaStream::new(PROXY);
    let first = cds_acked(&mut stream, &cfg);
    assert_eq!(names(&first), all_names.clone());

    // One cluster changes in a new version of the set: only it is sent.
    let mut changed = (*big).clone();
    changed.insert(cluster("c042", "2"));
    let cfg2 = of_sets(&[&std::sync::Arc::new(changed)]);
    let resp = only(stream.on_config(&cfg2));
    assert_eq!(names(&resp), vec!["c042".to_string()]);
    nothing(&stream.on_request(&ack(&resp), Some(&cfg2)));

    // EDS-style named subscriptions on a large set: unsubscribe then subscribe again resends.
    let eds = set(all_names.iter().enumerate().map(|(i, n)| cla(n, i as u32)));
    let cfg3 = of_sets(&[&cfg2.sets[0], &eds]);
    let all: Vec<&str> = all_names.iter().map(String::as_str).collect();
    let resp = only(stream.on_request(&subscribe(EDS, &all), Some(&cfg3)));
    assert_eq!(names(&resp), all_names.clone());
    nothing(&stream.on_request(&ack(&resp), Some(&cfg3)));
    nothing(&stream.on_request(&unsubscribe(EDS, &["c007"]), Some(&cfg3)));
    let resp = only(stream.on_request(&subscribe(EDS, &["c007"]), Some(&cfg3)));
    assert_eq!(names(&resp), vec!["c007".to_string()]);
    nothing(&stream.on_request(&ack(&resp), Some(&cfg3)));

    // Leaving the CDS wildcard: every cluster the proxy held is announced removed.
    let resp = only(stream.on_request(&unsubscribe(CDS, &["*"]), Some(&cfg3)));
    assert!(names(&resp).is_empty());
    assert_eq!(removed(&resp), all_names);
}

/// A changed cluster is a new one to Envoy, which warms it until endpoints arrive: its (unchanged)
/// endpoints go out again right after it, and nobody else's.
#[test]
fn changed_cluster_is_followed_by_its_endpoints() {
    let v1 = config([cluster("a", "1"), cluster("b", "1"), cla("a", 1), cla("b", 1)]);
    let mut stream = DeltaStream::new(PROXY);
    cds_acked(&mut stream, &v1);
    let eds = only(stream.on_request(&subscribe(EDS, &["a", "b"]), Some(&v1)));
    nothing(&stream.on_request(&ack(&eds), Some(&v1)));

    let v2 = config([cluster("a", "2"), cluster("b", "1"), cla("a", 1), cla("b", 1)]);
    let out = stream.on_config(&v2);
    let responses: Vec<DeltaDiscoveryResponse> = out.responses.iter().map(|r| r.decode()).collect();
    let sent: Vec<(&str, Vec<String>)> = responses
        .iter()
        .map(|r| (r.type_url.as_str(), names(r)))
        .collect();
    assert_eq!(
        sent,
        [(CDS, vec!["a".to_string()]), (EDS, vec!["a".to_string()])],
        "the cluster, then its endpoints"
    );
}
