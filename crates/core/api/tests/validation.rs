//! Every SMI, policy and root-certificate validation rule fires with the right field path, and
//! valid objects pass.

use osm_api::MeshObject;
use osm_api::validate::Validate;
use serde_json::{Value, json};

/// Decodes `doc` through `MeshObject` and returns the paths of the broken rules.
fn fields(doc: Value) -> Vec<String> {
    let obj = MeshObject::from_value(doc).expect("decodes").expect("ours");
    match obj.validate() {
        Ok(()) => Vec::new(),
        Err(e) => e.fields().map(str::to_string).collect(),
    }
}

fn traffic_target(namespace: &str, spec: Value) -> Value {
    json!({"apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget",
           "metadata": {"name": "tt", "namespace": namespace}, "spec": spec})
}

fn sa(name: &str, ns: &str) -> Value {
    json!({"kind": "ServiceAccount", "name": name, "namespace": ns})
}

fn http_rule() -> Value {
    json!({"kind": "HTTPRouteGroup", "name": "routes", "matches": ["m"]})
}

/// A TrafficTarget lives in its destination's namespace.
#[test]
fn traffic_target_namespace_must_match_destination() {
    let spec = json!({"destination": sa("bookstore", "bookstore"), "sources": [sa("bookbuyer", "bookbuyer")],
                      "rules": [http_rule()]});
    assert_eq!(
        fields(traffic_target("bookstore", spec.clone())),
        Vec::<String>::new()
    );
    assert_eq!(
        fields(traffic_target("default", spec.clone())),
        ["spec.destination.namespace"]
    );

    let obj = MeshObject::from_value(traffic_target("default", spec))
        .unwrap()
        .unwrap();
    assert_eq!(
        obj.validate().unwrap_err().to_string(),
        "spec.destination.namespace: must equal the TrafficTarget's namespace \"default\" (got \"bookstore\")"
    );

    // Without a destination namespace, the destination is in the object's namespace.
    let implicit = json!({"destination": {"kind": "ServiceAccount", "name": "bookstore"},
                          "sources": [sa("bookbuyer", "bookbuyer")], "rules": [http_rule()]});
    assert_eq!(
        fields(traffic_target("bookstore", implicit)),
        Vec::<String>::new()
    );
}

/// Subjects must be ServiceAccounts, rules HTTPRouteGroup or TCPRoute.
#[test]
fn traffic_target_kinds() {
    let spec = json!({
        "destination": {"kind": "Service", "name": "bookstore", "namespace": "bookstore"},
        "sources": [sa("bookbuyer", "bookbuyer"), {"kind": "User", "name": "", "namespace": "x"}],
        "rules": [http_rule(), {"kind": "UDPRoute", "name": ""}]
    });
    assert_eq!(
        fields(traffic_target("bookstore", spec)),
        [
            "spec.destination.kind",
            "spec.sources[1].kind",
            "spec.sources[1].name",
            "spec.rules[1].kind",
            "spec.rules[1].name",
        ]
    );
    let no_sources = json!({"destination": sa("b", "bookstore"), "sources": [], "rules": []});
    assert_eq!(fields(traffic_target("bookstore", no_sources)), ["spec.sources"]);
}

fn split(spec: Value) -> Value {
    json!({"apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
           "metadata": {"name": "s", "namespace": "bookstore"}, "spec": spec})
}

/// Weights are >= 0, the apex service is named, there is a backend.
#[test]
fn traffic_split_rules() {
    let ok = json!({"service": "bookstore", "backends": [{"service": "v1", "weight": 0}, {"service": "v2", "weight": 100}]});
    assert_eq!(fields(split(ok)), Vec::<String>::new());
    let bad =
        json!({"service": "", "backends": [{"service": "v1", "weight": 50}, {"service": "", "weight": -1}]});
    assert_eq!(
        fields(split(bad.clone())),
        [
            "spec.service",
            "spec.backends[1].service",
            "spec.backends[1].weight"
        ]
    );
    let obj = MeshObject::from_value(split(bad)).unwrap().unwrap();
    assert!(
        obj.validate()
            .unwrap_err()
            .to_string()
            .contains("spec.backends[1].weight: must be >= 0")
    );
    assert_eq!(
        fields(split(json!({"service": "a", "backends": []}))),
        ["spec.backends"]
    );
}

fn route_group(matches: Value) -> Value {
    json!({"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup",
           "metadata": {"name": "r", "namespace": "bookstore"}, "spec": {"matches": matches}})
}

/// Path and header regexes compile, methods are HTTP methods or `*`, header names are tokens.
#[test]
fn http_route_group_rules() {
    let ok = json!([
        {"name": "all", "pathRegex": ".*", "methods": ["*"]},
        {"name": "get", "pathRegex": "/books/[0-9]+", "methods": ["GET", "HEAD"], "headers": [{"x-user": "^a(b|c)$"}]},
        {"name": "bare"}
    ]);
    assert_eq!(fields(route_group(ok)), Vec::<String>::new());
    let bad = json!([
        {"name": "a", "pathRegex": "/books/(", "methods": ["GET", "get", "FETCH"]},
        {"name": "b", "headers": [{"client-app": "[z-a]"}, {}, {"bad header": "x"}]},
        {"name": "a"}
    ]);
    assert_eq!(
        fields(route_group(bad.clone())),
        [
            "spec.matches[0].pathRegex",
            "spec.matches[0].methods[1]",
            "spec.matches[0].methods[2]",
            "spec.matches[1].headers[0][client-app]",
            "spec.matches[1].headers[1]",
            "spec.matches[1].headers[2][bad header]",
            "spec.matches[2].name",
        ]
    );
    let obj = MeshObject::from_value(route_group(bad)).unwrap().unwrap();
    let errs = obj.validate().unwrap_err();
    let regex_msg = &errs.get("spec.matches[0].pathRegex").unwrap().message;
    assert!(
        regex_msg.starts_with("invalid regular expression:"),
        "{regex_msg}"
    );
    assert!(!regex_msg.contains('\n'));
}

/// TCPRoute ports are 1..=65535 (0 is the only u16 outside; larger numbers do not decode).
#[test]
fn tcp_route_ports() {
    let route = |ports: Value| {
        json!({"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "TCPRoute",
               "metadata": {"name": "t"}, "spec": {"matches": {"ports": ports}}})
    };
    assert_eq!(fields(route(json!([1, 65535]))), Vec::<String>::new());
    assert_eq!(fields(route(json!([]))), Vec::<String>::new());
    assert_eq!(fields(route(json!([80, 0]))), ["spec.matches.ports[1]"]);
    assert!(MeshObject::from_value(route(json!([70000]))).is_err());
}

fn policy(kind: &str, spec: Value) -> Value {
    json!({"apiVersion": "policy.openservicemesh.io/v1alpha1", "kind": kind,
           "metadata": {"name": "p", "namespace": "curl"}, "spec": spec})
}

/// Egress: ServiceAccount sources, CIDRs parse, ports and protocols are valid, matches are known kinds.
#[test]
fn egress_rules() {
    let ok = json!({"sources": [sa("curl", "curl")], "hosts": ["httpbin.org"], "ipAddresses": ["1.2.3.0/24"],
                    "ports": [{"number": 443, "protocol": "https"},
                              {"number": 3306, "protocol": "tcp-server-first"}]});
    assert_eq!(fields(policy("Egress", ok)), Vec::<String>::new());
    let bad = json!({
        "sources": [{"kind": "Service", "name": "", "namespace": ""}],
        "hosts": [""],
        "ipAddresses": ["1.2.3.4"],
        "ports": [{"number": 0, "protocol": "udp"}],
        "matches": [{"kind": "Deployment", "name": "x"}]
    });
    assert_eq!(
        fields(policy("Egress", bad)),
        [
            "spec.sources[0].kind",
            "spec.sources[0].name",
            "spec.sources[0].namespace",
            "spec.hosts[0]",
            "spec.ipAddresses[0]",
            "spec.ports[0].number",
            "spec.ports[0].protocol",
            "spec.matches[0].kind",
        ]
    );
    assert_eq!(
        fields(policy("Egress", json!({"sources": [], "ports": []}))),
        ["spec.sources", "spec.ports"]
    );
}

/// IngressBackend: backends with http/https ports; sources of the three kinds, each well formed.
#[test]
fn ingress_backend_rules() {
    let ok = json!({
        "backends": [{"name": "httpbin", "port": {"number": 14001, "protocol": "http"}}],
        "sources": [{"kind": "Service", "name": "nginx", "namespace": "ingress"},
                    {"kind": "AuthenticatedPrincipal", "name": "nginx.ingress.cluster.local"},
                    {"kind": "IPRange", "name": "10.0.0.0/8"}]
    });
    assert_eq!(fields(policy("IngressBackend", ok)), Vec::<String>::new());
    let bad = json!({
        "backends": [{"name": "", "port": {"number": 80, "protocol": "tcp"}, "tls": {"skipClientCertValidation": true, "sniHosts": [""]}}],
        "sources": [{"kind": "Service", "name": "nginx"},
                    {"kind": "IPRange", "name": "10.0.0.0"},
                    {"kind": "Pod", "name": "x"}]
    });
    assert_eq!(
        fields(policy("IngressBackend", bad)),
        [
            "spec.backends[0].name",
            "spec.backends[0].port.protocol",
            "spec.backends[0].tls.sniHosts[0]",
            "spec.sources[0].namespace",
            "spec.sources[1].name",
            "spec.sources[2].kind",
        ]
    );
    // https validating client certificates needs a principal to admit; a backend listed twice is a
    // mistake (upstream refused both; it also refused the opposite of the first by a typo).
    let https = json!({
        "backends": [{"name": "httpbin", "port": {"number": 14001, "protocol": "https"},
                      "tls": {"skipClientCertValidation": false}},
                     {"name": "httpbin", "port": {"number": 14001, "protocol": "http"}},
                     {"name": "other", "port": {"number": 443, "protocol": "https"},
                      "tls": {"skipClientCertValidation": true}}],
        "sources": [{"kind": "IPRange", "name": "10.0.0.0/8"}]
    });
    assert_eq!(
        fields(policy("IngressBackend", https)),
        [
            "spec.backends[0].tls.skipClientCertValidation",
            "spec.backends[1]"
        ]
    );
}

/// Retry: ServiceAccount source, Service destinations, known retry conditions, positive backoff.
#[test]
fn retry_rules() {
    let spec = |retry_on: &str, backoff: &str, dest_kind: &str| {
        json!({"source": sa("curl", "curl"),
               "destinations": [{"kind": dest_kind, "name": "httpbin", "namespace": "httpbin"}],
               "retryPolicy": {"retryOn": retry_on, "perTryTimeout": "0s", "numRetries": 3,
                               "retryBackoffBaseInterval": backoff}})
    };
    assert_eq!(
        fields(policy("Retry", spec("5xx,connect-failure", "25ms", "Service"))),
        Vec::<String>::new()
    );
    assert_eq!(
        fields(policy("Retry", spec("5xx,teapot", "0s", "ServiceAccount"))),
        [
            "spec.destinations[0].kind",
            "spec.retryPolicy.retryOn",
            "spec.retryPolicy.retryBackoffBaseInterval"
        ]
    );
    assert_eq!(
        fields(policy("Retry", spec(" ", "1s", "Service"))),
        ["spec.retryPolicy.retryOn"]
    );
}

/// UpstreamTrafficSetting: host named, timeouts positive, units and status codes valid (400–599 and one
/// Envoy defines), route paths compile.
#[test]
fn upstream_traffic_setting_rules() {
    let ok = json!({"host": "httpbin.curl.svc.cluster.local",
                    "rateLimit": {"local": {"http": {"requests": 10, "unit": "second"}}},
                    "httpRoutes": [{"path": "/status/.*", "rateLimit": {"local": {"requests": 1, "unit": "hour"}}}]});
    assert_eq!(fields(policy("UpstreamTrafficSetting", ok)), Vec::<String>::new());
    // An external host (an Egress policy's setting) is fine; another namespace's Service is not.
    let external = json!({"host": "httpbin.org"});
    assert_eq!(
        fields(policy("UpstreamTrafficSetting", external)),
        Vec::<String>::new()
    );
    let elsewhere = json!({"host": "httpbin.httpbin.svc.cluster.local"});
    assert_eq!(fields(policy("UpstreamTrafficSetting", elsewhere)), ["spec.host"]);
    let bad = json!({
        "host": "",
        "connectionSettings": {"tcp": {"connectTimeout": "0s"}},
        "rateLimit": {"local": {"tcp": {"connections": 1, "unit": "day"},
                                "http": {"requests": 1, "unit": "second", "responseStatusCode": 200,
                                         "responseHeadersToAdd": [{"name": "", "value": "v"}]}}},
        "httpRoutes": [{"path": "(", "rateLimit": {"local": {"requests": 1, "unit": "week",
                                                             "responseStatusCode": 418}}}]
    });
    assert_eq!(
        fields(policy("UpstreamTrafficSetting", bad)),
        [
            "spec.host",
            "spec.connectionSettings.tcp.connectTimeout",
            "spec.rateLimit.local.tcp.unit",
            "spec.rateLimit.local.http.responseStatusCode",
            "spec.rateLimit.local.http.responseHeadersToAdd[0].name",
            "spec.httpRoutes[0].path",
            "spec.httpRoutes[0].rateLimit.local.unit",
            "spec.httpRoutes[0].rateLimit.local.responseStatusCode",
        ]
    );
}

fn mrc(spec: Value) -> Value {
    json!({"apiVersion": "config.openservicemesh.io/v1alpha2", "kind": "MeshRootCertificate",
           "metadata": {"name": "mrc", "namespace": "osm-system"}, "spec": spec})
}

/// MeshRootCertificate: exactly one provider, each provider's fields well formed, a trust domain.
#[test]
fn mesh_root_certificate_rules() {
    let tresor = json!({"ca": {"secretRef": {"name": "osm-ca-bundle", "namespace": "osm-system"}}});
    let vault = json!({"host": "", "port": 0, "role": "", "protocol": "ftp",
                       "token": {"secretKeyRef": {"name": "t", "namespace": "osm-system", "key": ""}}});
    let cert_manager =
        json!({"issuerName": "osm-ca", "issuerKind": "Certificate", "issuerGroup": "cert-manager.io"});
    assert_eq!(
        fields(mrc(
            json!({"trustDomain": "cluster.local", "provider": {"tresor": tresor}})
        )),
        Vec::<String>::new()
    );
    assert_eq!(
        fields(mrc(json!({"trustDomain": "", "provider": {}}))),
        ["spec.trustDomain", "spec.provider"]
    );
    assert_eq!(
        fields(mrc(
            json!({"trustDomain": "cluster local", "provider": {"tresor": tresor, "certManager": cert_manager}})
        )),
        [
            "spec.trustDomain",
            "spec.provider",
            "spec.provider.certManager.issuerKind"
        ]
    );
    assert_eq!(
        fields(mrc(
            json!({"trustDomain": "cluster.local", "provider": {"vault": vault}})
        )),
        [
            "spec.provider.vault.host",
            "spec.provider.vault.port",
            "spec.provider.vault.role",
            "spec.provider.vault.protocol",
            "spec.provider.vault.token.secretKeyRef.key",
        ]
    );
}
