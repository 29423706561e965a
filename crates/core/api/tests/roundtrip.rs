//! Serde round trips of every kind from realistic manifests (the bookstore demo, a full MeshConfig,
//! root certificates for every provider, policies shaped like the upstream demos), and dispatch of
//! untyped documents through `MeshObject`.

use osm_api::MeshObject;
use osm_api::config::{MeshConfig, MeshRootCertificate, MeshRootCertificateRole};
use osm_api::duration::GoDuration;
use osm_api::policy::{Egress, IngressBackend, Retry, UpstreamTrafficSetting};
use osm_api::smi::access::TrafficTarget;
use osm_api::smi::specs::{HTTPRouteGroup, TCPRoute};
use osm_api::smi::split::TrafficSplit;
use osm_api::validate::Validate;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn documents(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml).expect("fixture is valid YAML")
}

fn bookstore() -> Vec<Value> {
    documents(include_str!("fixtures/bookstore.yaml"))
}

fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("fixture has {kind} {name}"))
}

/// Decodes `doc` as `T`, re-encodes it, and requires the exact same document back; then decodes
/// the re-encoded document again and requires the same value.
fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(doc: &Value) -> T {
    let typed: T = serde_json::from_value(doc.clone()).expect("fixture decodes");
    let back = serde_json::to_value(&typed).expect("encodes");
    assert_eq!(&back, doc, "re-encoded document differs");
    let again: T = serde_json::from_value(back).expect("re-encoded document decodes");
    assert_eq!(again, typed);
    // YAML text round trip too.
    let yaml = serde_saphyr::to_string(&typed).expect("YAML encodes");
    let from_yaml: T = serde_saphyr::from_str(&yaml).expect("YAML decodes");
    assert_eq!(from_yaml, typed);
    typed
}

/// The bookstore HTTPRouteGroup keeps its matches, regexes, methods and single-entry header maps.
#[test]
fn http_route_group_bookstore() {
    let docs = bookstore();
    let hrg: HTTPRouteGroup = round_trip(named(&docs, "HTTPRouteGroup", "bookstore-service-routes"));
    assert_eq!(hrg.metadata.namespace.as_deref(), Some("bookstore"));
    let m = &hrg.spec.matches;
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].name, "books-bought");
    assert_eq!(m[0].path_regex.as_deref(), Some("/books-bought"));
    assert_eq!(m[0].methods, ["GET"]);
    assert_eq!(
        m[0].header_pairs().collect::<Vec<_>>(),
        [("user-agent", ".*-http-client/*.*"), ("client-app", "bookbuyer")]
    );
    assert_eq!(m[1].path_regex.as_deref(), Some(".*a-book.*new"));
    assert!(!m[1].any_method());
    hrg.validate().expect("demo route group is valid");
}

/// Every bookstore TrafficTarget round-trips and is valid.
#[test]
fn traffic_targets_bookstore() {
    let docs = bookstore();
    for name in ["bookstore-v1", "bookstore-v2", "bookwarehouse", "tcp-access"] {
        let tt: TrafficTarget = round_trip(named(&docs, "TrafficTarget", name));
        tt.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let tt: TrafficTarget = round_trip(named(&docs, "TrafficTarget", "bookwarehouse"));
    assert_eq!(tt.spec.destination.name, "bookwarehouse");
    assert_eq!(tt.destination_namespace(), Some("bookwarehouse"));
    assert_eq!(tt.spec.sources.len(), 2);
    assert_eq!(tt.spec.rules[0].matches, ["restock-books"]);
}

/// The 50/50 bookstore split.
#[test]
fn traffic_split_bookstore() {
    let docs = bookstore();
    let ts: TrafficSplit = round_trip(named(&docs, "TrafficSplit", "bookstore-split"));
    assert_eq!(ts.spec.service, "bookstore.bookstore");
    let weights: Vec<_> = ts
        .spec
        .backends
        .iter()
        .map(|b| (b.service.as_str(), b.weight))
        .collect();
    assert_eq!(weights, [("bookstore-v1", 50), ("bookstore-v2", 50)]);
    ts.validate().unwrap();
}

/// A TCPRoute with a port list.
#[test]
fn tcp_route() {
    let docs = bookstore();
    let r: TCPRoute = round_trip(named(&docs, "TCPRoute", "tcp-echo-routes"));
    assert_eq!(r.spec.matches.ports, [9000]);
    r.validate().unwrap();
}

/// A MeshConfig with every field set survives a round trip unchanged.
#[test]
fn mesh_config_full() {
    let docs = documents(include_str!("fixtures/config.yaml"));
    let mc: MeshConfig = round_trip(named(&docs, "MeshConfig", "osm-mesh-config"));
    assert!(!mc.spec.traffic.enable_egress);
    assert_eq!(mc.spec.traffic.inbound_port_exclusion_list, [8080, 9090]);
    assert_eq!(
        mc.spec.traffic.inbound_external_authorization.timeout,
        GoDuration::from_secs(1)
    );
    assert_eq!(
        mc.spec.certificate.service_cert_validity_duration,
        GoDuration::from_secs(86400)
    );
    mc.validate().unwrap();
}

/// Root certificates for Tresor, Vault and cert-manager, in each role.
#[test]
fn mesh_root_certificates() {
    let docs = documents(include_str!("fixtures/config.yaml"));
    let roles = [
        ("osm-mesh-root-certificate", MeshRootCertificateRole::Active),
        ("osm-mesh-root-certificate-2", MeshRootCertificateRole::Passive),
        ("osm-mesh-root-certificate-3", MeshRootCertificateRole::Inactive),
    ];
    for (name, role) in roles {
        let mrc: MeshRootCertificate = round_trip(named(&docs, "MeshRootCertificate", name));
        assert_eq!(mrc.spec.role, role, "{name}");
        mrc.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let tresor: MeshRootCertificate =
        round_trip(named(&docs, "MeshRootCertificate", "osm-mesh-root-certificate"));
    let ca = &tresor.spec.provider.tresor.as_ref().unwrap().ca.secret_ref;
    assert_eq!(
        (ca.name.as_str(), ca.namespace.as_str()),
        ("osm-ca-bundle", "osm-system")
    );
}

/// A root written with the later upstream field name `intent`, or with no role at all, is read.
#[test]
fn mesh_root_certificate_intent_alias_and_default_role() {
    let doc = serde_json::json!({
        "apiVersion": "config.openservicemesh.io/v1alpha2",
        "kind": "MeshRootCertificate",
        "metadata": {"name": "mrc"},
        "spec": {"intent": "passive", "trustDomain": "cluster.local",
                 "provider": {"tresor": {"ca": {"secretRef": {"name": "a", "namespace": "b"}}}}}
    });
    let mrc: MeshRootCertificate = serde_json::from_value(doc.clone()).unwrap();
    assert_eq!(mrc.spec.role, MeshRootCertificateRole::Passive);
    let mut no_role = doc;
    no_role["spec"].as_object_mut().unwrap().remove("intent");
    let mrc: MeshRootCertificate = serde_json::from_value(no_role).unwrap();
    assert_eq!(mrc.spec.role, MeshRootCertificateRole::Active);
}

/// Egress, IngressBackend, Retry and UpstreamTrafficSetting from the upstream demos.
#[test]
fn policies() {
    let docs = documents(include_str!("fixtures/policies.yaml"));
    for name in ["httpbin-80", "egress-ip-range"] {
        let e: Egress = round_trip(named(&docs, "Egress", name));
        e.validate().unwrap_or_else(|err| panic!("{name}: {err}"));
    }
    let ib: IngressBackend = round_trip(named(&docs, "IngressBackend", "httpbin"));
    assert!(
        !ib.spec.backends[0]
            .tls
            .as_ref()
            .unwrap()
            .skip_client_cert_validation
    );
    ib.validate().unwrap();
    let r: Retry = round_trip(named(&docs, "Retry", "retry"));
    assert_eq!(r.spec.retry_policy.num_retries, 5);
    r.validate().unwrap();
    let uts: UpstreamTrafficSetting =
        round_trip(named(&docs, "UpstreamTrafficSetting", "http-circuit-breaking"));
    let tcp = uts
        .spec
        .connection_settings
        .as_ref()
        .unwrap()
        .tcp
        .as_ref()
        .unwrap();
    assert_eq!(tcp.connect_timeout, Some(GoDuration::from_secs(5)));
    uts.validate().unwrap();
}

/// Upstream's Go type reads the retry backoff as `retryBackoffInterval`; that spelling is accepted.
#[test]
fn retry_backoff_alias() {
    let doc = serde_json::json!({
        "apiVersion": "policy.openservicemesh.io/v1alpha1", "kind": "Retry", "metadata": {"name": "r"},
        "spec": {"source": {"kind": "ServiceAccount", "name": "a", "namespace": "a"},
                 "destinations": [{"kind": "Service", "name": "b", "namespace": "b"}],
                 "retryPolicy": {"retryOn": "5xx", "perTryTimeout": "1s", "numRetries": 3,
                                 "retryBackoffInterval": "250ms"}}
    });
    let r: Retry = serde_json::from_value(doc).unwrap();
    assert_eq!(
        r.spec.retry_policy.retry_backoff_base_interval,
        GoDuration::from_millis(250)
    );
}

/// Every fixture document decodes through `MeshObject` to its own kind, and serializes back to the
/// same document.
#[test]
fn mesh_object_dispatch() {
    let mut all = bookstore();
    all.extend(documents(include_str!("fixtures/config.yaml")));
    all.extend(documents(include_str!("fixtures/policies.yaml")));
    for doc in all {
        let obj = MeshObject::from_value(doc.clone())
            .expect("decodes")
            .expect("is one of ours");
        assert_eq!(obj.kind(), doc["kind"]);
        assert_eq!(obj.name(), doc["metadata"]["name"]);
        assert_eq!(obj.namespace(), doc["metadata"]["namespace"].as_str());
        assert_eq!(serde_json::to_value(&obj).unwrap(), doc);
        obj.validate().unwrap_or_else(|e| panic!("{}: {e}", obj.name()));
    }
}

/// Kinds that are not ours are skipped; ours in an unserved version or malformed are errors.
#[test]
fn mesh_object_foreign_and_bad_documents() {
    use serde_json::json;
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}});
    assert!(MeshObject::from_value(svc).unwrap().is_none());
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment"});
    assert!(MeshObject::from_value(deploy).unwrap().is_none());
    let other_group = json!({"apiVersion": "example.com/v1", "kind": "TrafficTarget"});
    assert!(MeshObject::from_value(other_group).unwrap().is_none());

    let old = json!({"apiVersion": "access.smi-spec.io/v1alpha2", "kind": "TrafficTarget"});
    let err = MeshObject::from_value(old).unwrap_err().to_string();
    assert_eq!(
        err,
        "TrafficTarget access.smi-spec.io/v1alpha2 is not supported (served: access.smi-spec.io/v1alpha3)"
    );

    let no_kind = json!({"apiVersion": "v1"});
    assert!(matches!(
        MeshObject::from_value(no_kind),
        Err(osm_api::MeshObjectError::MissingTypeMeta)
    ));

    let bad = json!({"apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
                     "metadata": {"name": "s"}, "spec": {"service": "a", "backends": [{"service": "b"}]}});
    let err = MeshObject::from_value(bad).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid TrafficSplit (split.smi-spec.io/v1alpha2)"
    );
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(cause.contains("missing field `weight`"), "{cause}");
}

/// A v1alpha1 MeshConfig document becomes a v1alpha2 MeshConfig with the same settings.
#[test]
fn mesh_object_converts_v1alpha1_mesh_config() {
    let doc = serde_json::json!({
        "apiVersion": "config.openservicemesh.io/v1alpha1", "kind": "MeshConfig",
        "metadata": {"name": "osm-mesh-config", "namespace": "osm-system"},
        "spec": {"traffic": {"enableEgress": false, "outboundPortExclusionList": [6379]},
                 "sidecar": {"logLevel": "debug"}}
    });
    let Some(MeshObject::MeshConfig(mc)) = MeshObject::from_value(doc).unwrap() else {
        panic!("expected a MeshConfig");
    };
    assert_eq!(mc.metadata.namespace.as_deref(), Some("osm-system"));
    assert!(!mc.spec.traffic.enable_egress);
    assert_eq!(mc.spec.traffic.outbound_port_exclusion_list, [6379]);
    assert_eq!(mc.spec.sidecar.log_level, "debug");
    assert_eq!(mc.spec.sidecar.tls_min_protocol_version, "TLSv1_2");
    let v = serde_json::to_value(&mc).unwrap();
    assert_eq!(v["apiVersion"], "config.openservicemesh.io/v1alpha2");
}
