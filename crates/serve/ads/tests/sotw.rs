//! Scripted state-of-the-world sessions against `SotwStream`: the test plays Envoy (requests, ACKs,
//! NACKs) and the controller (config changes), and checks every response and event. No sockets.

#![forbid(unsafe_code)]

mod support;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status;
use osm_ads::AdsEvent;
use osm_ads::sotw::SotwStream;
use osm_xds::TypeKind;
use support::{CDS, EDS, cla, cluster, cluster_tag, config, name_of, nothing, of_sets, only, set, sorted};

const PROXY: &str = "u1.sidecar.bookbuyer.bookbuyer.cluster.local";

/// A request as Envoy sends it: `version` is the last version it accepted, `nonce` the response it
/// answers ("" for none).
fn request(type_url: &str, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.to_string(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        version_info: version.to_string(),
        response_nonce: nonce.to_string(),
        ..Default::default()
    }
}

/// Envoy accepting `resp` and keeping (or changing) its subscription to `names`.
fn ack(resp: &DiscoveryResponse, names: &[&str]) -> DiscoveryRequest {
    request(&resp.type_url, names, &resp.version_info, &resp.nonce)
}

/// Envoy refusing `resp`: it reports the version it still runs and why it refused.
fn nack(resp: &DiscoveryResponse, still_running: &str, names: &[&str], message: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        error_detail: Some(Status {
            code: 3,
            message: message.to_string(),
            details: Vec::new(),
        }),
        ..request(&resp.type_url, names, still_running, &resp.nonce)
    }
}

fn names(resp: &DiscoveryResponse) -> Vec<String> {
    let mut v: Vec<String> = resp.resources.iter().map(name_of).collect();
    v.sort();
    v
}

/// Opens a CDS wildcard subscription on `config` and ACKs the first response.
fn cds_acked(stream: &mut SotwStream, cfg: &osm_xds::ProxyConfig) -> DiscoveryResponse {
    let first = only(stream.on_request(&request(CDS, &[], "", ""), Some(cfg)));
    nothing(&stream.on_request(&ack(&first, &[]), Some(cfg)));
    first
}

/// The initial CDS wildcard request is answered with every cluster, a version and a nonce.
#[test]
fn cds_wildcard_initial_request_gets_every_cluster() {
    let cfg = config([cluster("a", "1"), cluster("b", "1")]);
    let mut stream = SotwStream::new(PROXY);
    let out = stream.on_request(&request(CDS, &[], "", ""), Some(&cfg));
    assert_eq!(
        out.events,
        vec![AdsEvent::Sent {
            proxy: PROXY.into(),
            kind: TypeKind::Cluster,
            version: out.responses[0].decode().version_info,
            resources: 2,
        }]
    );
    let resp = only(out);
    assert_eq!(resp.type_url, CDS);
    assert_eq!(names(&resp), sorted(["a", "b"]));
    assert!(!resp.version_info.is_empty());
    assert!(!resp.nonce.is_empty());
}

/// An explicit `*` is a wildcard too.
#[test]
fn cds_explicit_star_is_a_wildcard() {
    let cfg = config([cluster("a", "1"), cluster("b", "1")]);
    let mut stream = SotwStream::new(PROXY);
    let resp = only(stream.on_request(&request(CDS, &["*"], "", ""), Some(&cfg)));
    assert_eq!(names(&resp), sorted(["a", "b"]));
}

/// An ACK produces no response, only an Acked event carrying the accepted version.
#[test]
fn ack_is_recorded_and_answered_with_nothing() {
    let cfg = config([cluster("a", "1")]);
    let mut stream = SotwStream::new(PROXY);
    let resp = only(stream.on_request(&request(CDS, &[], "", ""), Some(&cfg)));
    let out = stream.on_request(&ack(&resp, &[]), Some(&cfg));
    nothing(&out);
    assert_eq!(
        out.events,
        vec![AdsEvent::Acked {
            proxy: PROXY.into(),
            kind: TypeKind::Cluster,
            version: resp.version_info.clone(),
        }]
    );
}

/// A config change produces exactly one response with the new set, new version and new nonce; a
/// republished config with equal content (new `Arc`s, same bytes) produces nothing.
#[test]
fn config_change_sends_exactly_one_response_with_the_changed_set() {
    let v1 = config([cluster("a", "1"), cluster("b", "1")]);
    let mut stream = SotwStream::new(PROXY);
    let first = cds_acked(&mut stream, &v1);

    let v2 = config([cluster("a", "2"), cluster("c", "1")]);
    let out = stream.on_config(&v2);
    assert_eq!(out.events.len(), 1);
    let resp = only(out);
    assert_eq!(names(&resp), sorted(["a", "c"]));
    let a = resp
        .resources
        .iter()
        .find(|r| name_of(r) == "a")
        .expect("a is sent");
    assert_eq!(cluster_tag(a), "2");
    assert_ne!(resp.version_info, first.version_info);
    assert_ne!(resp.nonce, first.nonce);

    let same_content = config([cluster("a", "2"), cluster("c", "1")]);
    let out = stream.on_config(&same_content);
    nothing(&out);
    assert!(out.events.is_empty());
}

/// A NACK is recorded with Envoy's message, and the refused version is never sent again — neither on
/// an unchanged config nor on further requests — until the config changes to another version.
#[test]
fn nacked_version_is_not_resent_until_the_config_changes() {
    let v1 = config([cluster("a", "1")]);
    let mut stream = SotwStream::new(PROXY);
    let accepted = cds_acked(&mut stream, &v1);

    let v2 = config([cluster("a", "bad")]);
    let refused = only(stream.on_config(&v2));
    let out = stream.on_request(
        &nack(&refused, &accepted.version_info, &[], "cluster a: invalid"),
        Some(&v2),
    );
    nothing(&out);
    assert_eq!(
        out.events,
        vec![AdsEvent::Nacked {
            proxy: PROXY.into(),
            kind: TypeKind::Cluster,
            version: refused.version_info.clone(),
            error: "cluster a: invalid".into(),
        }]
    );

    // The same config republished, and Envoy asking again on the stream: nothing.
    nothing(&stream.on_config(&config([cluster("a", "bad")])));
    nothing(&stream.on_request(&request(CDS, &[], &accepted.version_info, ""), Some(&v2)));
    nothing(&stream.on_request(
        &request(CDS, &[], &accepted.version_info, &refused.nonce),
        Some(&v2),
    ));

    // A different version goes out.
    let v3 = config([cluster("a", "3")]);
    let fixed = only(stream.on_config(&v3));
    assert_ne!(fixed.version_info, refused.version_info);
    assert_eq!(cluster_tag(&fixed.resources[0]), "3");
}

/// Once another version went out, a config returning to a previously refused version is sent again:
/// the proxy must not silently stay on a config the cache no longer holds.
#[test]
fn refused_version_is_sent_again_after_another_version() {
    let mut stream = SotwStream::new(PROXY);
    let accepted = cds_acked(&mut stream, &config([cluster("a", "1")]));
    let bad = config([cluster("a", "bad")]);
    let refused = only(stream.on_config(&bad));
    stream.on_request(&nack(&refused, &accepted.version_info, &[], "no"), Some(&bad));
    let good = config([cluster("a", "2")]);
    let fixed = only(stream.on_config(&good));
    stream.on_request(&ack(&fixed, &[]), Some(&good));

    let again = only(stream.on_config(&config([cluster("a", "bad")])));
    assert_eq!(again.version_info, refused.version_info);
}

/// A reply to a superseded response (stale nonce) is ignored: no event, no response, even a NACK.
#[test]
fn stale_nonce_is_ignored() {
    let v1 = config([cluster("a", "1")]);
    let mut stream = SotwStream::new(PROXY);
    let first = only(stream.on_request(&request(CDS, &[], "", ""), Some(&v1)));
    let v2 = config([cluster("a", "2")]);
    let second = only(stream.on_config(&v2));

    let out = stream.on_request(&ack(&first, &[]), Some(&v2));
    nothing(&out);
    assert!(out.events.is_empty(), "{:?}", out.events);
    let out = stream.on_request(&nack(&first, "", &[], "late"), Some(&v2));
    nothing(&out);
    assert!(out.events.is_empty(), "{:?}", out.events);

    let out = stream.on_request(&ack(&second, &[]), Some(&v2));
    nothing(&out);
    assert!(matches!(&out.events[..], [AdsEvent::Acked { version, .. }] if *version == second.version_info));
}

/// EDS with resource names: only the requested names are sent.
#[test]
fn eds_sends_only_requested_names() {
    let cfg = config([cla("a", 1), cla("b", 1), cla("c", 1)]);
    let mut stream = SotwStream::new(PROXY);
    let resp = only(stream.on_request(&request(EDS, &["a", "b"], "", ""), Some(&cfg)));
    assert_eq!(resp.type_url, EDS);
    assert_eq!(names(&resp), sorted(["a", "b"]));
    // A change to an unrequested name does not concern this proxy.
    nothing(&stream.on_config(&config([cla("a", 1), cla("b", 1), cla("c", 2)])));
}

/// Names the config does not have yet get no (empty) response; the response comes with the config.
#[test]
fn eds_names_not_yet_known_wait_for_the_config() {
    let mut stream = SotwStream::new(PROXY);
    let out = stream.on_request(&request(EDS, &["x"], "", ""), Some(&config([cla("a", 1)])));
    nothing(&out);
    assert!(out.events.is_empty());
    let resp = only(stream.on_config(&config([cla("a", 1), cla("x", 1)])));
    assert_eq!(names(&resp), vec!["x".to_string()]);
}

/// Changing the subscribed names re-sends, even when the resources themselves did not change; the
/// same names again do not.
#[test]
fn eds_changing_names_resends() {
    let cfg = config([cla("a", 1), cla("b", 1)]);
    let mut stream = SotwStream::new(PROXY);
    let first = only(stream.on_request(&request(EDS, &["a"], "", ""), Some(&cfg)));
    nothing(&stream.on_request(&ack(&first, &["a"]), Some(&cfg)));

    let both = only(stream.on_request(&ack(&first, &["a", "b"]), Some(&cfg)));
    assert_eq!(names(&both), sorted(["a", "b"]));
    nothing(&stream.on_request(&ack(&both, &["a", "b"]), Some(&cfg)));

    let back = only(stream.on_request(&ack(&both, &["a"]), Some(&cfg)));
    assert_eq!(names(&back), vec!["a".to_string()]);
    assert_ne!(back.version_info, both.version_info);
}

/// For EDS an empty name list unsubscribes from everything; it is not a wildcard.
#[test]
fn eds_without_names_is_not_a_wildcard() {
    let cfg = config([cla("a", 1), cla("b", 1)]);
    let mut stream = SotwStream::new(PROXY);
    let first = only(stream.on_request(&request(EDS, &["a"], "", ""), Some(&cfg)));
    nothing(&stream.on_request(&ack(&first, &[]), Some(&cfg)));
    nothing(&stream.on_config(&config([cla("a", 2), cla("b", 2)])));
    nothing(&stream.on_request(&request(EDS, &[], "", ""), Some(&cfg)));
}

/// A wildcard response may be empty: it tells Envoy every cluster is gone.
#[test]
fn cds_wildcard_sends_an_empty_set_when_everything_is_removed() {
    let mut stream = SotwStream::new(PROXY);
    cds_acked(&mut stream, &config([cluster("a", "1")]));
    let resp = only(stream.on_config(&config([])));
    assert!(resp.resources.is_empty());
}

/// A request before the proxy has any config is answered when the config arrives.
#[test]
fn request_before_config_is_answered_by_the_first_config() {
    let mut stream = SotwStream::new(PROXY);
    nothing(&stream.on_request(&request(CDS, &[], "", ""), None));
    let resp = only(stream.on_config(&config([cluster("a", "1")])));
    assert_eq!(names(&resp), vec!["a".to_string()]);
}

/// Types are independent: one config change answers each subscribed type once, CDS before EDS, with
/// distinct nonces; an ACK of one type says nothing about the other.
#[test]
fn types_are_tracked_independently() {
    let v1 = config([cluster("a", "1"), cla("a", 1)]);
    let mut stream = SotwStream::new(PROXY);
    let cds = only(stream.on_request(&request(CDS, &[], "", ""), Some(&v1)));
    let eds = only(stream.on_request(&request(EDS, &["a"], "", ""), Some(&v1)));
    assert_ne!(cds.nonce, eds.nonce);
    nothing(&stream.on_request(&ack(&cds, &[]), Some(&v1)));

    let v2 = config([cluster("a", "2"), cla("a", 2)]);
    let out = stream.on_config(&v2);
    let decoded: Vec<DiscoveryResponse> = out.responses.iter().map(|r| r.decode()).collect();
    let urls: Vec<&str> = decoded.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(urls, vec![CDS, EDS]);
    // The EDS ACK for the superseded response is stale now.
    let out = stream.on_request(&ack(&eds, &["a"]), Some(&v2));
    assert!(out.events.is_empty());
}

/// Unknown type URLs are ignored.
#[test]
fn unknown_type_is_ignored() {
    let mut stream = SotwStream::new(PROXY);
    let out = stream.on_request(
        &request(
            "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            &[],
            "",
            "",
        ),
        Some(&config([cluster("a", "1")])),
    );
    nothing(&out);
    assert!(out.events.is_empty());
}

/// Plain ACKs on the same sets send nothing for any type; neither do the same sets republished, nor
/// the same resources split into other sets (the version depends on the resources only).
#[test]
fn acks_on_unchanged_sets_send_nothing() {
    let (a, b) = (set([cluster("a", "1")]), set([cluster("b", "1"), cla("a", 1)]));
    let cfg = of_sets(&[&a, &b]);
    let mut stream = SotwStream::new(PROXY);
    let cds = cds_acked(&mut stream, &cfg);
    let eds = only(stream.on_request(&request(EDS, &["a"], "", ""), Some(&cfg)));
    nothing(&stream.on_request(&ack(&eds, &["a"]), Some(&cfg)));
    nothing(&stream.on_request(&ack(&cds, &[]), Some(&cfg)));
    nothing(&stream.on_config(&of_sets(&[&a, &b])));
    nothing(&stream.on_config(&of_sets(&[&b, &a])));
    let regrouped = config([cluster("a", "1"), cluster("b", "1"), cla("a", 1)]);
    nothing(&stream.on_config(&regrouped));
}

/// A change in one set re-sends the type (state of the world) with a new version; a change in a set
/// holding nothing the proxy subscribed to does not.
#[test]
fn changed_set_changes_the_version_of_its_types_only() {
    let shared = set([cluster("s", "1"), cla("s", 1)]);
    let v1 = of_sets(&[&shared, &set([cluster("a", "1"), cla("a", 1)])]);
    let mut stream = SotwStream::new(PROXY);
    let cds = cds_acked(&mut stream, &v1);
    let eds = only(stream.on_request(&request(EDS, &["s"], "", ""), Some(&v1)));
    nothing(&stream.on_request(&ack(&eds, &["s"]), Some(&v1)));

    let v2 = of_sets(&[&shared, &set([cluster("a", "2"), cla("a", 2)])]);
    let resp = only(stream.on_config(&v2));
    assert_eq!(resp.type_url, CDS, "EDS \"a\" is not subscribed");
    assert_eq!(names(&resp), sorted(["a", "s"]));
    assert_ne!(resp.version_info, cds.version_info);
}

/// The stream task marks the config seen when it hands it to a request; a change that arrived
/// meanwhile must go out with that request's answer, for every subscribed type.
#[test]
fn config_change_seen_by_a_request_is_sent() {
    let v1 = config([cluster("a", "1"), cla("a", 1)]);
    let mut stream = SotwStream::new(PROXY);
    let cds = only(stream.on_request(&request(CDS, &[], "", ""), Some(&v1)));
    let eds = only(stream.on_request(&request(EDS, &["a"], "", ""), Some(&v1)));
    nothing(&stream.on_request(&ack(&eds, &["a"]), Some(&v1)));

    let v2 = config([cluster("a", "1"), cla("a", 2)]);
    let out = stream.on_request(&ack(&cds, &[]), Some(&v2));
    assert!(matches!(
        &out.events[0],
        AdsEvent::Acked {
            kind: TypeKind::Cluster,
            ..
        }
    ));
    let resp = only(out);
    assert_eq!(resp.type_url, EDS);
    assert_ne!(resp.version_info, eds.version_info);
    nothing(&stream.on_config(&v2));
    nothing(&stream.on_request(&ack(&resp, &["a"]), Some(&v2)));
}

/// A changed cluster is a new one to Envoy, which warms it until endpoints arrive: its (unchanged)
/// endpoints go out again right after it, rather than Envoy waiting out its initial fetch timeout.
#[test]
fn changed_cluster_is_followed_by_its_endpoints() {
    let v1 = config([cluster("a", "1"), cla("a", 1)]);
    let mut stream = SotwStream::new(PROXY);
    let cds = cds_acked(&mut stream, &v1);
    let eds = only(stream.on_request(&request(EDS, &["a"], "", ""), Some(&v1)));
    nothing(&stream.on_request(&ack(&eds, &["a"]), Some(&v1)));

    let v2 = config([cluster("a", "2"), cla("a", 1)]);
    let out = stream.on_config(&v2);
    let responses: Vec<DiscoveryResponse> = out.responses.iter().map(|r| r.decode()).collect();
    let types: Vec<&str> = responses.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(types, [CDS, EDS], "the cluster, then its endpoints");
    assert_ne!(responses[0].version_info, cds.version_info);
    assert_eq!(responses[1].version_info, eds.version_info, "the same endpoints");
}
