//! The injector's answers that need no apiserver, and the serving-certificate helpers.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use osm_ca::{CertificateAuthority, TrustDomain};
use osm_webhook::server::{self, WebhookError};
use osm_webhook::{InjectConfig, Injector};
use serde_json::{Value, json};
use tokio::sync::watch;

fn ca() -> Arc<CertificateAuthority> {
    Arc::new(CertificateAuthority::generate(TrustDomain::default(), Duration::from_secs(3600)).unwrap())
}

/// An injector whose client points at a closed port: any apiserver call fails.
fn unreachable_injector() -> Injector {
    let config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let (_tx, rx) = watch::channel(InjectConfig::new("osm", "osm-system", "envoy:1", "init:1"));
    Injector::new(client, ca(), rx)
}

fn request(operation: &str, object: Value) -> AdmissionRequest<DynamicObject> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "uid-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "web-1",
            "namespace": "shop",
            "operation": operation,
            "userInfo": {"username": "admin"},
            "object": object,
            "dryRun": false
        }
    }))
    .unwrap();
    review.try_into().unwrap()
}

fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "shop"},
        "spec": {"containers": [{"name": "web", "image": "web:1"}]}
    })
}

/// Anything but a Pod CREATE passes unchanged without calling the apiserver.
#[tokio::test]
async fn non_creations_pass_untouched() {
    let response = unreachable_injector().admit(&request("UPDATE", pod())).await;
    assert!(response.allowed);
    assert!(response.patch.is_none());
    assert_eq!(response.uid, "uid-1");
}

/// When the Namespace cannot be read, the Pod is refused with a message saying so (no panic, no
/// patch).
#[tokio::test]
async fn unreadable_namespace_refuses_the_pod() {
    let response = unreachable_injector().admit(&request("CREATE", pod())).await;
    assert!(!response.allowed);
    assert!(response.patch.is_none());
    assert!(
        response.result.message.starts_with("reading namespace shop: "),
        "{}",
        response.result.message
    );
}

/// The serving certificate covers the names the apiserver uses, and rustls accepts it.
#[test]
fn serving_certificate_for_a_service() {
    assert_eq!(
        server::service_dns_names("osm-injector", "osm-system"),
        [
            "osm-injector.osm-system.svc",
            "osm-injector.osm-system.svc.cluster.local",
            "osm-injector.osm-system"
        ]
    );
    let config =
        server::service_tls_config(&ca(), "osm-injector", "osm-system", Duration::from_secs(600)).unwrap();
    assert_eq!(config.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
}

/// A certificate PEM without a certificate is refused with a PEM error.
#[test]
fn unusable_certificate_is_refused() {
    let mut cert = ca()
        .issue_server_cert(&["x.y.svc".to_owned()], Duration::from_secs(600))
        .unwrap();
    cert.cert_pem = "not a certificate".into();
    let err = server::tls_config(&cert).unwrap_err();
    assert!(matches!(err, WebhookError::Pem(_)), "{err}");
}
