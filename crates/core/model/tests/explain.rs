//! The bookstore demo's policies, and variations of them, explained.
#![forbid(unsafe_code)]
use std::net::{IpAddr, Ipv4Addr};

use osm_fixtures::bookstore;
use osm_model::explain::*;
use osm_model::*;

fn mesh(permissive: bool) -> MeshInput {
    bookstore(
        permissive,
        None,
        |_| IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        |_| IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)),
    )
}

fn pod(ns: &str, name: &str) -> PodRef {
    PodRef::new(ns, name)
}

fn buyer_to_v1(input: &MeshInput) -> Explanation {
    explain(
        input,
        &pod("bookbuyer", "bookbuyer"),
        &pod("bookstore", "bookstore-v1"),
    )
    .expect("both pods exist")
}

/// SMI mode: bookbuyer → bookstore-v1 is allowed by `bookbuyer-access-bookstore-v1`, over the two
/// routes that TrafficTarget names (with their paths, methods and headers).
#[test]
fn bookbuyer_may_call_bookstore_v1_over_two_routes() {
    let e = buyer_to_v1(&mesh(false));
    assert!(e.allowed());
    let Verdict::AllowedByTrafficTargets { targets } = &e.verdict else {
        panic!("expected allowed by TrafficTargets, got {:?}", e.verdict);
    };
    assert_eq!(targets.len(), 1);
    assert_eq!(
        targets[0].traffic_target,
        ObjectRef::new("bookstore", "bookbuyer-access-bookstore-v1")
    );
    let RuleExplanation::Http {
        route_group,
        matches,
        unknown_matches,
    } = &targets[0].rules[0]
    else {
        panic!("expected an HTTP rule, got {:?}", targets[0].rules[0]);
    };
    assert_eq!(
        *route_group,
        ObjectRef::new("bookstore", "bookstore-service-routes")
    );
    let names: Vec<&str> = matches.iter().map(|m| m.name.as_str()).collect();
    // In the HTTPRouteGroup's order; update-books-bought is not named by the rule.
    assert_eq!(names, ["books-bought", "buy-a-book"]);
    assert!(unknown_matches.is_empty());

    let text = e.to_string();
    assert!(text.contains("bookbuyer-access-bookstore-v1"), "{text}");
    assert!(
        text.contains("pathRegex \"/books-bought\", methods GET"),
        "{text}"
    );
    assert!(text.contains("client-app: \"bookbuyer\""), "{text}");
    assert!(
        text.contains("match \"buy-a-book\": pathRegex \".*a-book.*new\""),
        "{text}"
    );
}

/// SMI mode: bookthief is listed by no TrafficTarget for bookstore-v1, and the answer names the
/// TrafficTarget that exists for that destination.
#[test]
fn bookthief_is_not_listed() {
    let input = mesh(false);
    let e = explain(
        &input,
        &pod("bookthief", "bookthief"),
        &pod("bookstore", "bookstore-v1"),
    )
    .unwrap();
    assert!(!e.allowed());
    assert_eq!(
        e.verdict,
        Verdict::Denied {
            reason: DenyReason::SourceNotListed {
                targets: vec![ObjectRef::new("bookstore", "bookbuyer-access-bookstore-v1")]
            }
        }
    );
    let text = e.to_string();
    assert!(text.contains("is not allowed"), "{text}");
    assert!(
        text.contains("lists source ServiceAccount bookthief.bookthief"),
        "{text}"
    );
}

/// SMI mode: nothing names bookbuyer as a destination.
#[test]
fn no_traffic_target_for_destination() {
    let e = explain(
        &mesh(false),
        &pod("bookstore", "bookstore-v1"),
        &pod("bookbuyer", "bookbuyer"),
    )
    .unwrap();
    assert_eq!(
        e.verdict,
        Verdict::Denied {
            reason: DenyReason::NoTrafficTargetForDestination
        }
    );
    assert!(
        e.to_string()
            .contains("no SMI TrafficTarget has destination ServiceAccount bookbuyer.bookbuyer")
    );
}

/// Permissive mode allows bookthief too.
#[test]
fn permissive_mode_allows_everyone() {
    let e = explain(
        &mesh(true),
        &pod("bookthief", "bookthief"),
        &pod("bookstore", "bookstore-v1"),
    )
    .unwrap();
    assert_eq!(e.verdict, Verdict::AllowedByPermissiveMode);
    assert!(e.to_string().contains("Permissive traffic policy mode"));
}

/// A TrafficTarget whose HTTPRouteGroup is gone allows nothing, and the answer names the missing
/// route group.
#[test]
fn missing_route_group_denies_and_says_so() {
    let mut input = mesh(false);
    input
        .http_route_groups
        .remove(&ObjectRef::new("bookstore", "bookstore-service-routes"));
    let e = buyer_to_v1(&input);
    assert!(!e.allowed());
    let Verdict::Denied {
        reason: DenyReason::NoUsableRules { targets },
    } = &e.verdict
    else {
        panic!("expected no usable rules, got {:?}", e.verdict);
    };
    assert_eq!(
        targets[0].rules,
        [RuleExplanation::MissingRoute {
            route_kind: "HTTPRouteGroup".into(),
            route: ObjectRef::new("bookstore", "bookstore-service-routes"),
        }]
    );
    assert!(
        e.to_string()
            .contains("HTTPRouteGroup bookstore/bookstore-service-routes does not exist")
    );
}

/// TCPRoute rules are explained with their ports; match names the group lacks are reported.
#[test]
fn tcp_route_and_unknown_match_names() {
    let mut b = osm_fixtures::MeshBuilder::new(false);
    b.input = mesh(false);
    b.policies_yaml(
        r#"
apiVersion: specs.smi-spec.io/v1alpha4
kind: TCPRoute
metadata:
  name: tcp-14001
  namespace: bookstore
spec:
  matches:
    ports: [14001]
---
apiVersion: access.smi-spec.io/v1alpha3
kind: TrafficTarget
metadata:
  name: bookbuyer-access-bookstore-v1
  namespace: bookstore
spec:
  destination: {kind: ServiceAccount, name: bookstore-v1, namespace: bookstore}
  sources: [{kind: ServiceAccount, name: bookbuyer, namespace: bookbuyer}]
  rules:
  - {kind: TCPRoute, name: tcp-14001}
  - {kind: HTTPRouteGroup, name: bookstore-service-routes, matches: [no-such-route]}
"#,
    )
    .unwrap();
    let e = buyer_to_v1(&b.build());
    assert!(e.allowed());
    let text = e.to_string();
    assert!(
        text.contains("TCPRoute bookstore/tcp-14001: ports 14001"),
        "{text}"
    );
    assert!(text.contains("no matching routes"), "{text}");
    assert!(
        text.contains("matches no-such-route are not in HTTPRouteGroup"),
        "{text}"
    );
}

/// One request at a time: bookbuyer's two routes get through to bookstore-v1, through either
/// service that selects it; another method, another path or another client does not.
#[test]
fn admits_one_request() {
    let input = mesh(false);
    let get = |service: &str, path: &str| Request {
        service: ServiceRef::new("bookstore", service),
        port: osm_fixtures::BOOKSTORE_PORT,
        method: "GET".into(),
        path: path.into(),
        headers: Vec::new(),
    };
    let buyer = buyer_to_v1(&input);
    assert!(buyer.admits(&input, &get("bookstore-v1", "/buy-a-book/new")));
    assert!(buyer.admits(&input, &get("bookstore", "/buy-a-book/new?id=1")));
    assert!(
        !buyer.admits(&input, &get("bookstore-v1", "/books-bought")),
        "headers missing"
    );
    assert!(
        !buyer.admits(&input, &get("bookstore-v2", "/buy-a-book/new")),
        "v1 does not back v2"
    );
    let post = Request {
        method: "POST".into(),
        ..get("bookstore-v1", "/buy-a-book/new")
    };
    assert!(!buyer.admits(&input, &post));
    let thief = explain(
        &input,
        &pod("bookthief", "bookthief"),
        &pod("bookstore", "bookstore-v1"),
    )
    .unwrap();
    assert!(!thief.admits(&input, &get("bookstore-v1", "/buy-a-book/new")));
}

/// A pod not in the input is an error naming it.
#[test]
fn unknown_pod() {
    let err = explain(&mesh(false), &pod("x", "y"), &pod("bookstore", "bookstore-v1")).unwrap_err();
    assert_eq!(err.to_string(), "pod x/y not found");
}

/// The JSON form carries the verdict as a tag and names objects as `ns/name`.
#[test]
fn serializes_with_tags() {
    let v = serde_json::to_value(buyer_to_v1(&mesh(false))).unwrap();
    assert_eq!(v["verdict"]["result"], "allowedByTrafficTargets");
    assert_eq!(
        v["verdict"]["targets"][0]["trafficTarget"],
        "bookstore/bookbuyer-access-bookstore-v1"
    );
    assert_eq!(v["verdict"]["targets"][0]["rules"][0]["kind"], "HTTPRouteGroup");
    assert_eq!(v["sourceIdentity"], "bookbuyer.bookbuyer");
}
