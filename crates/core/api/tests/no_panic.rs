//! Property tests: no input, however malformed, panics the decoders, the validators or the schema
//! checker. Inputs are arbitrary JSON documents of our kinds, and valid fixtures with one node
//! replaced by arbitrary JSON (which reaches much deeper into the types).

use osm_api::MeshObject;
use osm_api::config::MeshConfigSpec;
use osm_api::duration::GoDuration;
use osm_api::schema::check_object;
use osm_api::validate::Validate;
use proptest::prelude::*;
use serde_json::{Map, Value};

const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "spec",
    "status",
    "matches",
    "pathRegex",
    "methods",
    "headers",
    "destination",
    "sources",
    "rules",
    "ports",
    "service",
    "backends",
    "weight",
    "sidecar",
    "traffic",
    "observability",
    "certificate",
    "featureFlags",
    "logLevel",
    "tlsMinProtocolVersion",
    "enableEgress",
    "outboundIPRangeExclusionList",
    "inboundPortExclusionList",
    "inboundExternalAuthorization",
    "timeout",
    "port",
    "tracing",
    "serviceCertValidityDuration",
    "certKeyBitSize",
    "ingressGateway",
    "provider",
    "tresor",
    "vault",
    "certManager",
    "role",
    "trustDomain",
    "hosts",
    "ipAddresses",
    "number",
    "protocol",
    "tls",
    "sniHosts",
    "retryPolicy",
    "retryOn",
    "perTryTimeout",
    "numRetries",
    "retryBackoffBaseInterval",
    "host",
    "connectionSettings",
    "rateLimit",
    "local",
    "http",
    "tcp",
    "unit",
    "httpRoutes",
    "path",
    "responseStatusCode",
];

const STRINGS: &[&str] = &[
    "",
    "24h",
    "-5s",
    "0s",
    "1.5m",
    "10",
    "5d",
    "TLSv1_2",
    "TLS_AUTO",
    "ServiceAccount",
    "Service",
    "HTTPRouteGroup",
    "TCPRoute",
    "IPRange",
    "10.0.0.0/8",
    "fd00::/8",
    "300.1.1.1/99",
    "*",
    "GET",
    "(",
    "[z-a]",
    ".*",
    "http",
    "https",
    "second",
    "active",
    "PodIP",
    "\u{b5}s",
    "1e400",
];

const KINDS: &[(&str, &str)] = &[
    ("access.smi-spec.io/v1alpha3", "TrafficTarget"),
    ("specs.smi-spec.io/v1alpha4", "HTTPRouteGroup"),
    ("specs.smi-spec.io/v1alpha4", "TCPRoute"),
    ("split.smi-spec.io/v1alpha2", "TrafficSplit"),
    ("config.openservicemesh.io/v1alpha2", "MeshConfig"),
    ("config.openservicemesh.io/v1alpha1", "MeshConfig"),
    ("config.openservicemesh.io/v1alpha2", "MeshRootCertificate"),
    ("policy.openservicemesh.io/v1alpha1", "Egress"),
    ("policy.openservicemesh.io/v1alpha1", "IngressBackend"),
    ("policy.openservicemesh.io/v1alpha1", "Retry"),
    ("policy.openservicemesh.io/v1alpha1", "UpstreamTrafficSetting"),
    ("access.smi-spec.io/v1alpha2", "TrafficTarget"),
    ("v1", "Service"),
];

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        prop::sample::select(STRINGS).prop_map(Value::from),
        "[a-zA-Z0-9 ./()*^$:_-]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kvs| {
                Value::Object(
                    kvs.into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

fn fixtures() -> Vec<Value> {
    [
        include_str!("fixtures/bookstore.yaml"),
        include_str!("fixtures/config.yaml"),
        include_str!("fixtures/policies.yaml"),
    ]
    .iter()
    .flat_map(|y| serde_saphyr::from_multiple::<Value>(y).unwrap())
    .collect()
}

/// JSON pointers of every node of `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                pointers(
                    c,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                pointers(c, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// Runs everything that takes untrusted input; only panics matter, results are ignored.
fn exercise(doc: Value) {
    let _ = check_object(&doc);
    if let Ok(Some(obj)) = MeshObject::from_value(doc.clone()) {
        let _ = obj.validate();
        let _ = serde_json::to_value(&obj).unwrap();
    }
    if let Some(spec) = doc.get("spec")
        && let Ok(mc) = serde_json::from_value::<MeshConfigSpec>(spec.clone())
    {
        let _ = mc.validate();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary documents of every kind (and a few that are not ours).
    #[test]
    fn arbitrary_documents_never_panic(
        (api_version, kind) in prop::sample::select(KINDS),
        metadata in arb_json(),
        spec in arb_json(),
        extra in arb_json(),
    ) {
        let doc = serde_json::json!({
            "apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec, "extra": extra
        });
        exercise(doc);
    }

    /// Valid fixtures with one node replaced by arbitrary JSON.
    #[test]
    fn mutated_fixtures_never_panic(
        which in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        replacement in arb_json(),
    ) {
        let docs = fixtures();
        let mut doc = which.get(&docs).clone();
        let mut ptrs = Vec::new();
        pointers(&doc, String::new(), &mut ptrs);
        let ptr = at.get(&ptrs).clone();
        if ptr.is_empty() {
            doc = replacement;
        } else {
            *doc.pointer_mut(&ptr).unwrap() = replacement;
        }
        exercise(doc);
    }

    /// Any string is either a duration or a parse error.
    #[test]
    fn durations_never_panic(s in any::<String>(), t in "[-+]?[0-9.]{0,25}(ns|us|ms|s|m|h|x)?([0-9.]{0,5}(h|m|s))?") {
        let _ = s.parse::<GoDuration>();
        if let Ok(d) = t.parse::<GoDuration>() {
            // What we print, we parse back to the same value.
            prop_assert_eq!(d.to_string().parse::<GoDuration>().unwrap(), d);
        }
    }
}
