//! The validating webhook without a server: `validate_object` on SMI/OSM documents, and the
//! `Validator`/router answering AdmissionReviews (v1 and v1beta1) as the apiserver sends them.

#![forbid(unsafe_code)]

use axum::body::Body;
use http_body_util::BodyExt as _;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use osm_webhook::{Validator, validate_object, validator_router};
use serde_json::{Value, json};
use tower::ServiceExt as _;

fn traffic_target(namespace: &str, destination_namespace: &str) -> Value {
    json!({
        "apiVersion": "access.smi-spec.io/v1alpha3",
        "kind": "TrafficTarget",
        "metadata": {"name": "bookstore", "namespace": namespace},
        "spec": {
            "destination": {"kind": "ServiceAccount", "name": "bookstore", "namespace": destination_namespace},
            "sources": [{"kind": "ServiceAccount", "name": "bookbuyer", "namespace": "bookbuyer"}],
            "rules": [{"kind": "HTTPRouteGroup", "name": "bookstore-service-routes", "matches": ["buy-a-book"]}]
        }
    })
}

/// A TrafficTarget outside its destination's namespace is refused with the field's path.
#[test]
fn traffic_target_namespace_must_match_destination() {
    assert_eq!(validate_object(&traffic_target("bookstore", "bookstore")), Ok(()));
    let err = validate_object(&traffic_target("bookbuyer", "bookstore")).unwrap_err();
    assert_eq!(
        err,
        "TrafficTarget bookbuyer/bookstore: spec.destination.namespace: must equal the TrafficTarget's \
         namespace \"bookbuyer\" (got \"bookstore\")"
    );
}

/// Every broken rule is reported, each by its path; a malformed document names its kind; a version we
/// do not serve is named; kinds that are not ours pass.
#[test]
fn other_refusals_and_foreign_kinds() {
    let split = json!({
        "apiVersion": "split.smi-spec.io/v1alpha2",
        "kind": "TrafficSplit",
        "metadata": {"name": "s", "namespace": "bookstore"},
        "spec": {"service": "bookstore", "backends": [{"service": "v1", "weight": -1}]}
    });
    let err = validate_object(&split).unwrap_err();
    assert!(err.starts_with("TrafficSplit bookstore/s: "), "{err}");
    assert!(err.contains("spec.backends[0].weight"), "{err}");

    let mut malformed = traffic_target("bookstore", "bookstore");
    malformed["spec"]["sources"] = json!("everyone");
    let err = validate_object(&malformed).unwrap_err();
    assert!(
        err.starts_with("invalid TrafficTarget (access.smi-spec.io/v1alpha3): "),
        "{err}"
    );

    let mut old = traffic_target("bookstore", "bookstore");
    old["apiVersion"] = json!("access.smi-spec.io/v1alpha1");
    let err = validate_object(&old).unwrap_err();
    assert!(err.contains("not supported"), "{err}");

    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
    assert_eq!(validate_object(&cm), Ok(()));
}

fn review(api_version: &str, object: Value, namespace: &str) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": "5d9b2e1a-0000-4000-8000-000000000001",
            "kind": {"group": "access.smi-spec.io", "version": "v1alpha3", "kind": "TrafficTarget"},
            "resource": {"group": "access.smi-spec.io", "version": "v1alpha3", "resource": "traffictargets"},
            "name": "bookstore",
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "admin"},
            "object": object,
            "oldObject": null,
            "dryRun": false
        }
    })
}

/// The Validator fills a missing object namespace from the request before checking, as the
/// apiserver stores it.
#[test]
fn validator_uses_the_request_namespace() {
    let mut object = traffic_target("x", "bookstore");
    object["metadata"].as_object_mut().unwrap().remove("namespace");
    let request: AdmissionReview<DynamicObject> =
        serde_json::from_value(review("admission.k8s.io/v1", object, "bookbuyer")).unwrap();
    let request: AdmissionRequest<DynamicObject> = request.try_into().unwrap();
    let response = Validator::default().admit(&request);
    assert!(!response.allowed);
    assert!(
        response.result.message.contains("\"bookbuyer\""),
        "{}",
        response.result.message
    );
    assert_eq!(response.uid, "5d9b2e1a-0000-4000-8000-000000000001");
}

async fn post(body: Vec<u8>) -> Value {
    let response = validator_router(Validator::default())
        .oneshot(
            http::Request::post("/validate")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

/// Over HTTP: a v1 review is answered in v1, a v1beta1 review in v1beta1, with the request's uid;
/// a body that is not a review gets a refusal, not an error page.
#[tokio::test]
async fn router_answers_in_the_request_version() {
    for version in ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"] {
        let bad = review(version, traffic_target("bookbuyer", "bookstore"), "bookbuyer");
        let answer = post(serde_json::to_vec(&bad).unwrap()).await;
        assert_eq!(answer["apiVersion"], version);
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(answer["response"]["uid"], "5d9b2e1a-0000-4000-8000-000000000001");
        assert_eq!(answer["response"]["allowed"], false);
        let message = answer["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains("spec.destination.namespace"), "{message}");

        let good = review(version, traffic_target("bookstore", "bookstore"), "bookstore");
        let answer = post(serde_json::to_vec(&good).unwrap()).await;
        assert_eq!(answer["response"]["allowed"], true, "{answer:#}");
    }
    let answer = post(b"{not json".to_vec()).await;
    assert_eq!(answer["response"]["allowed"], false);
    assert!(
        answer["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("decoding the AdmissionReview")
    );
}
