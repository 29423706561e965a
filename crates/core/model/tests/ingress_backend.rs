//! IngressBackend policies → each backend pod's ingress intent and each policy's status: which pod and
//! port, which addresses and principals are admitted, and what is reported instead of applied.
#![forbid(unsafe_code)]
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use osm_api::policy::IngressBackend;
use osm_fixtures::{MeshBuilder, bookstore};
use osm_model::ingress::{STATUS_COMMITTED, STATUS_ERROR};
use osm_model::*;

const NGINX_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 9);

/// The bookstore demo (SMI) plus a non-meshed ingress controller (`MeshBuilder::ingress_controller`).
fn mesh() -> MeshInput {
    let input = bookstore(
        false,
        None,
        |p| IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10 + p.len() as u8)),
        |_| IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)),
    );
    let mut b = MeshBuilder { input };
    b.ingress_controller(IpAddr::V4(NGINX_IP));
    b.input
}

fn add(input: &mut MeshInput, name: &str, spec_yaml: &str) {
    let yaml = format!(
        "apiVersion: policy.openservicemesh.io/v1alpha1\nkind: IngressBackend\nmetadata: {{name: {name}, namespace: bookstore}}\nspec:\n{spec_yaml}"
    );
    let ib: IngressBackend = serde_saphyr::from_str(&yaml).expect("IngressBackend YAML");
    input
        .ingress_backends
        .insert(ObjectRef::new("bookstore", name), ib.spec);
}

const FROM_NGINX: &str = "  sources: [{kind: Service, name: ingress-nginx, namespace: ingress-ns}]\n";

fn status(model: &MeshModel, name: &str) -> (String, String) {
    let s = &model.ingress_backend_status[&ObjectRef::new("bookstore", name)];
    (
        s.current_status.clone().unwrap_or_default(),
        s.reason.clone().unwrap_or_default(),
    )
}

#[test]
fn ingress_backend_http_admits_the_source_service_endpoints_on_the_backend_pod_only() {
    let mut input = mesh();
    add(
        &mut input,
        "v1-http",
        &format!(
            "  backends: [{{name: bookstore-v1, port: {{number: 14001, protocol: http}}}}]\n{FROM_NGINX}"
        ),
    );
    let model = compute(&input);
    assert!(model.warnings.is_empty(), "{:?}", model.warnings);
    let ingress = &model.proxies["bookstore-v1"].inbound.ingress;
    assert_eq!(
        ingress,
        &vec![IngressBackendIntent {
            service: ObjectRef::new("bookstore", "bookstore-v1"),
            policy: ObjectRef::new("bookstore", "v1-http"),
            target_port: 14001,
            source_ranges: vec![IpRange::parse("10.0.9.9/32").unwrap()],
            transport: IngressTransport::Http,
        }]
    );
    for other in ["bookstore-v2", "bookbuyer", "bookwarehouse"] {
        assert!(
            model.proxies[other].inbound.ingress.is_empty(),
            "{other} got bookstore-v1's ingress"
        );
    }
    assert_eq!(status(&model, "v1-http").0, STATUS_COMMITTED);
}

#[test]
fn ingress_backend_https_verifies_principals_unless_validation_is_skipped() {
    let mut input = mesh();
    add(
        &mut input,
        "v1-https",
        &format!(
            "  backends: [{{name: bookstore-v1, port: {{number: 14001, protocol: https}}, tls: {{skipClientCertValidation: false, sniHosts: [bookstore.example.com]}}}}]\n{}",
            "  sources:\n  - {kind: Service, name: ingress-nginx, namespace: ingress-ns}\n  - {kind: AuthenticatedPrincipal, name: ingress-nginx.ingress-ns.example.com}\n"
        ),
    );
    add(
        &mut input,
        "v2-https",
        "  backends: [{name: bookstore-v2, port: {number: 14001, protocol: https}, tls: {skipClientCertValidation: true}}]\n  sources: [{kind: AuthenticatedPrincipal, name: anyone}]\n",
    );
    let model = compute(&input);
    let v1 = &model.proxies["bookstore-v1"].inbound.ingress[0];
    assert_eq!(v1.protocol(), "https");
    assert_eq!(
        v1.transport,
        IngressTransport::Https {
            sni_hosts: vec!["bookstore.example.com".into()],
            clients: IngressClients::Principals(BTreeSet::from([
                "ingress-nginx.ingress-ns.example.com".to_string()
            ])),
        }
    );
    assert_eq!(
        v1.source_ranges.len(),
        1,
        "the Service source still narrows addresses"
    );
    let v2 = &model.proxies["bookstore-v2"].inbound.ingress[0];
    assert_eq!(
        v2.transport,
        IngressTransport::Https {
            sni_hosts: vec![],
            clients: IngressClients::Unverified,
        }
    );
    assert!(v2.source_ranges.is_empty(), "no address source: any address");
    assert_eq!(status(&model, "v1-https").0, STATUS_COMMITTED);
    assert_eq!(status(&model, "v2-https").0, STATUS_COMMITTED);
}

/// A Service source with no endpoints admits nobody (not everybody) and says why in the status.
#[test]
fn ingress_backend_source_without_endpoints_admits_nothing_and_reports_it() {
    let mut input = mesh();
    input.pods.remove(&ObjectRef::new("ingress-ns", "ingress-nginx"));
    add(
        &mut input,
        "v1-http",
        &format!(
            "  backends: [{{name: bookstore-v1, port: {{number: 14001, protocol: http}}}}]\n{FROM_NGINX}"
        ),
    );
    let model = compute(&input);
    assert!(model.proxies["bookstore-v1"].inbound.ingress.is_empty());
    let (current, reason) = status(&model, "v1-http");
    assert_eq!(current, STATUS_ERROR);
    assert!(
        reason.contains("endpoints not found for service ingress-ns/ingress-nginx"),
        "{reason}"
    );
    assert!(
        model
            .warnings
            .iter()
            .any(|w| w.contains("IngressBackend bookstore/v1-http")),
        "{:?}",
        model.warnings
    );
}

/// Two policies for one backend port: the first (by name) applies, the other is in error — one
/// listener Envoy accepts instead of two identical chains it refuses.
#[test]
fn ingress_backend_second_policy_for_a_port_is_refused_in_its_status() {
    let mut input = mesh();
    let spec = format!(
        "  backends: [{{name: bookstore-v1, port: {{number: 14001, protocol: http}}}}]\n{FROM_NGINX}"
    );
    add(&mut input, "a-first", &spec);
    add(&mut input, "b-second", &spec);
    add(
        &mut input,
        "c-missing",
        &format!(
            "  backends: [{{name: nosuch, port: {{number: 80, protocol: http}}}}, {{name: bookstore-v2, port: {{number: 9999, protocol: http}}}}]\n{FROM_NGINX}"
        ),
    );
    let model = compute(&input);
    let ingress = &model.proxies["bookstore-v1"].inbound.ingress;
    assert_eq!(ingress.len(), 1);
    assert_eq!(ingress[0].policy.name, "a-first");
    assert_eq!(status(&model, "a-first").0, STATUS_COMMITTED);
    let (current, reason) = status(&model, "b-second");
    assert_eq!(current, STATUS_ERROR);
    assert!(
        reason.contains("already admitted by IngressBackend bookstore/a-first"),
        "{reason}"
    );
    let (current, reason) = status(&model, "c-missing");
    assert_eq!(current, STATUS_ERROR);
    assert!(
        reason.contains("backend service bookstore/nosuch does not exist"),
        "{reason}"
    );
    assert!(reason.contains("has no port or target port 9999"), "{reason}");
}

#[test]
fn ingress_backend_policies_wait_for_their_feature_flag() {
    let mut input = mesh();
    input.mesh_config.feature_flags.enable_ingress_backend_policy = false;
    add(
        &mut input,
        "v1-http",
        &format!(
            "  backends: [{{name: bookstore-v1, port: {{number: 14001, protocol: http}}}}]\n{FROM_NGINX}"
        ),
    );
    let model = compute(&input);
    assert!(model.proxies["bookstore-v1"].inbound.ingress.is_empty());
    assert!(
        model
            .warnings
            .iter()
            .any(|w| w.contains("featureFlags.enableIngressBackendPolicy is false")),
        "{:?}",
        model.warnings
    );
}

/// The ingress controller's pod moving (a new address) and the policy changing are updated
/// incrementally to what a full compute gives.
#[test]
fn ingress_backend_changes_update_incrementally_like_a_full_compute() {
    let before = mesh();
    let mut with_policy = before.clone();
    add(
        &mut with_policy,
        "v1-http",
        &format!(
            "  backends: [{{name: bookstore-v1, port: {{number: 14001, protocol: http}}}}]\n{FROM_NGINX}"
        ),
    );
    let mut state = MeshState::new(&before);
    state.update(&before, &with_policy);
    assert_eq!(state.model(), &compute(&with_policy));

    let mut moved = with_policy.clone();
    let nginx = ObjectRef::new("ingress-ns", "ingress-nginx");
    moved.pods.get_mut(&nginx).unwrap().ip = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 9, 10)));
    state.update(&with_policy, &moved);
    assert_eq!(state.model(), &compute(&moved));
    assert_eq!(
        state.model().proxies["bookstore-v1"].inbound.ingress[0].source_ranges,
        vec![IpRange::parse("10.0.9.10/32").unwrap()]
    );

    // Through the delta path too (what the Kubernetes source delivers).
    let mut delta_input = moved.clone();
    let delta = InputDelta {
        pods: [(
            nginx.clone(),
            Some(Pod {
                ip: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 9, 11))),
                ..moved.pods[&nginx].clone()
            }),
        )]
        .into(),
        ..Default::default()
    };
    let prior = delta.apply(&mut delta_input);
    state.update_changed(&prior, &delta_input);
    assert_eq!(state.model(), &compute(&delta_input));

    state.update(&delta_input, &before);
    assert_eq!(state.model(), &compute(&before));
}

/// The backend scaling (a new pod behind bookstore-v1) is an ordinary endpoint change: the new pod gets
/// the ingress chain, incrementally, as a full compute gives it.
#[test]
fn ingress_backend_new_backend_pod_gets_the_chain_incrementally() {
    let mut before = mesh();
    add(
        &mut before,
        "v1-http",
        &format!(
            "  backends: [{{name: bookstore-v1, port: {{number: 14001, protocol: http}}}}]\n{FROM_NGINX}"
        ),
    );
    let mut after = before.clone();
    let v1 = after.pods[&ObjectRef::new("bookstore", "bookstore-v1")].clone();
    let id = ObjectRef::new("bookstore", "bookstore-v1-b");
    after.pods.insert(
        id.clone(),
        Pod {
            id,
            proxy_uuid: Some("bookstore-v1-b".into()),
            ip: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 99))),
            ..v1
        },
    );
    let mut state = MeshState::new(&before);
    let change = state.update(&before, &after);
    assert!(!change.all, "a backend's new pod is not a policy change");
    assert_eq!(state.model(), &compute(&after));
    assert_eq!(state.model().proxies["bookstore-v1-b"].inbound.ingress.len(), 1);
}
