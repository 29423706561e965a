//! `MeshState::update` against the definition: after any sequence of changes, the incrementally kept
//! model equals a model computed from scratch, and the change it reports names every proxy whose
//! intent differs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use osm_model::*;
use proptest::prelude::*;

const NAMESPACES: [&str; 2] = ["a", "b"];
const SERVICES: [&str; 4] = ["s0", "s1", "s2", "s3"];
const ACCOUNTS: [&str; 3] = ["sa0", "sa1", "sa2"];
const PODS: usize = 8;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

fn pod_ref(i: usize) -> PodRef {
    PodRef::new(NAMESPACES[i % 2], format!("p{i}"))
}

fn service_ref(i: usize) -> ServiceRef {
    ServiceRef::new(NAMESPACES[i % 2], SERVICES[i % SERVICES.len()])
}

#[derive(Clone, Debug)]
struct ServiceSpec {
    headless: bool,
    /// (port, tcp)
    ports: Vec<(u16, bool)>,
    /// Endpoints from the selector `app: <name>` (else none, unless explicit).
    selects: bool,
}

#[derive(Clone, Debug)]
enum Op {
    /// Pod i: (service account, app label, ip, sidecar uuid generation) or deleted.
    Pod(usize, Option<(usize, usize, Option<u8>, Option<u8>)>),
    /// Service i, or deleted.
    Service(usize, Option<ServiceSpec>),
    /// Explicit endpoints of service i: (ip, pod index) pairs, or back to its selector.
    Endpoints(usize, Option<Vec<(u8, usize)>>),
    Permissive(bool),
    /// TrafficTarget t: destination account, source accounts, HTTP or TCP rule; or deleted.
    Target(usize, Option<(usize, Vec<usize>, bool)>),
    /// The TrafficSplit s0 → s1/s2 in namespace a, with these weights; or deleted.
    Split(Option<(u32, u32)>),
}

fn op() -> impl Strategy<Value = Op> {
    let pod = (
        0..PODS,
        prop::option::weighted(
            0.85,
            (
                0..ACCOUNTS.len(),
                0..SERVICES.len(),
                prop::option::weighted(0.9, 1u8..12),
                prop::option::weighted(0.8, 0u8..2),
            ),
        ),
    )
        .prop_map(|(i, p)| Op::Pod(i, p));
    let service = (
        0..SERVICES.len() * 2,
        prop::option::weighted(
            0.85,
            (
                any::<bool>(),
                prop::collection::vec(
                    (prop::sample::select(vec![80u16, 8080, 9000]), any::<bool>()),
                    1..3,
                ),
                prop::bool::weighted(0.8),
            ),
        ),
    )
        .prop_map(|(i, s)| {
            Op::Service(
                i,
                s.map(|(headless, ports, selects)| ServiceSpec {
                    headless,
                    ports,
                    selects,
                }),
            )
        });
    let endpoints = (
        0..SERVICES.len() * 2,
        prop::option::of(prop::collection::vec((1u8..12, 0..PODS + 2), 0..3)),
    )
        .prop_map(|(i, e)| Op::Endpoints(i, e));
    let target = (
        0..3usize,
        prop::option::of((
            0..ACCOUNTS.len(),
            prop::collection::vec(0..ACCOUNTS.len(), 1..3),
            any::<bool>(),
        )),
    )
        .prop_map(|(t, spec)| Op::Target(t, spec));
    prop_oneof![
        6 => pod,
        3 => service,
        3 => endpoints,
        1 => any::<bool>().prop_map(Op::Permissive),
        2 => target,
        1 => prop::option::of((0u32..3, 0u32..3)).prop_map(Op::Split),
    ]
}

fn apply(input: &mut MeshInput, op: &Op) {
    match op.clone() {
        Op::Pod(i, None) => {
            input.pods.remove(&pod_ref(i));
        }
        Op::Pod(i, Some((sa, app, ip_last, uuid))) => {
            let id = pod_ref(i);
            input.pods.insert(
                id.clone(),
                Pod {
                    id,
                    service_account: ACCOUNTS[sa].to_string(),
                    proxy_uuid: uuid.map(|g| format!("uuid-{i}-{g}")),
                    ip: ip_last.map(ip),
                    labels: [("app".to_string(), SERVICES[app].to_string())].into(),
                    hostname: None,
                    subdomain: None,
                },
            );
        }
        Op::Service(i, None) => {
            input.services.remove(&service_ref(i));
        }
        Op::Service(
            i,
            Some(ServiceSpec {
                headless,
                ports,
                selects,
            }),
        ) => {
            let id = service_ref(i);
            let mut seen = BTreeSet::new();
            let ports = ports
                .into_iter()
                .filter(|(p, _)| seen.insert(*p))
                .map(|(port, tcp)| ServicePort {
                    name: None,
                    port,
                    target_port: port + 1,
                    protocol: if tcp { AppProtocol::Tcp } else { AppProtocol::Http },
                })
                .collect();
            let selector: BTreeMap<String, String> = if selects {
                [("app".to_string(), id.name.clone())].into()
            } else {
                BTreeMap::new()
            };
            input.services.insert(
                id.clone(),
                Service {
                    cluster_ip: (!headless).then(|| IpAddr::V4(Ipv4Addr::new(10, 96, 0, i as u8 + 1))),
                    id,
                    ports,
                    selector,
                },
            );
        }
        Op::Endpoints(i, None) => {
            input.endpoints.remove(&service_ref(i));
        }
        Op::Endpoints(i, Some(eps)) => {
            let eps = eps
                .into_iter()
                .map(|(last, pod)| Endpoint {
                    ip: ip(last),
                    pod: Some(pod_ref(pod)),
                    // Some addresses carry a hostname, as a StatefulSet's do: per-pod names of
                    // headless services are covered too.
                    hostname: (pod % 2 == 0).then(|| format!("h{pod}")),
                })
                .collect();
            input.endpoints.insert(service_ref(i), eps);
        }
        Op::Permissive(p) => input.mesh_config.traffic.enable_permissive_traffic_policy_mode = p,
        Op::Target(t, None) => {
            input
                .traffic_targets
                .remove(&ObjectRef::new("a", format!("tt{t}")));
        }
        Op::Target(t, Some((dest, sources, http))) => {
            let account = |sa: usize| serde_json::json!({"kind": "ServiceAccount", "name": ACCOUNTS[sa], "namespace": "a"});
            let rule = if http {
                serde_json::json!({"kind": "HTTPRouteGroup", "name": "routes", "matches": ["all"]})
            } else {
                serde_json::json!({"kind": "TCPRoute", "name": "tcp"})
            };
            let spec = serde_json::json!({
                "destination": account(dest),
                "sources": sources.into_iter().map(account).collect::<Vec<_>>(),
                "rules": [rule],
            });
            input.traffic_targets.insert(
                ObjectRef::new("a", format!("tt{t}")),
                serde_json::from_value(spec).expect("a valid TrafficTarget"),
            );
        }
        Op::Split(None) => {
            input.traffic_splits.clear();
        }
        Op::Split(Some((w1, w2))) => {
            let spec = serde_json::json!({
                "service": "s0",
                "backends": [{"service": "s1", "weight": w1}, {"service": "s2", "weight": w2}],
            });
            input.traffic_splits.insert(
                ObjectRef::new("a", "split"),
                serde_json::from_value(spec).expect("a valid TrafficSplit"),
            );
        }
    }
}

fn base() -> MeshInput {
    let mut input = MeshInput::new("cluster.local");
    let routes = serde_json::json!({"matches": [{"name": "all", "pathRegex": "/.*", "methods": ["*"]}]});
    input.http_route_groups.insert(
        ObjectRef::new("a", "routes"),
        serde_json::from_value(routes).expect("a valid HTTPRouteGroup"),
    );
    let tcp = serde_json::json!({"matches": {"ports": [9001]}});
    input.tcp_routes.insert(
        ObjectRef::new("a", "tcp"),
        serde_json::from_value(tcp).expect("a valid TCPRoute"),
    );
    // One identity retries to two services (in both namespaces): its outbound intent is its own in
    // either mode, and must follow every change as the shared one does.
    input.mesh_config.feature_flags.enable_retry_policy = true;
    let retry = serde_json::json!({
        "source": {"kind": "ServiceAccount", "name": "sa1", "namespace": "a"},
        "destinations": [
            {"kind": "Service", "name": "s0", "namespace": "a"},
            {"kind": "Service", "name": "s1", "namespace": "b"},
        ],
        "retryPolicy": {"retryOn": "5xx", "perTryTimeout": "1s", "numRetries": 3,
                        "retryBackoffBaseInterval": "10ms"},
    });
    input.retries.insert(
        ObjectRef::new("a", "retry"),
        serde_json::from_value(retry).expect("a valid Retry"),
    );
    input
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn incremental_update_equals_a_full_compute(
        setup in prop::collection::vec(op(), 0..25),
        changes in prop::collection::vec(op(), 1..12),
    ) {
        let mut input = base();
        for o in &setup {
            apply(&mut input, o);
        }
        let mut state = MeshState::new(&input);
        for o in &changes {
            let old = input.clone();
            apply(&mut input, o);
            let before = state.model().clone();
            let change = state.update(&old, &input);
            let expected = compute(&input);
            prop_assert_eq!(state.model(), &expected, "after {:?}", o);
            // Every proxy that differs is reported.
            for (uuid, intent) in &expected.proxies {
                if before.proxies.get(uuid) != Some(intent) {
                    prop_assert!(change.all || change.changed.contains(uuid), "{} changed unreported after {:?}", uuid, o);
                }
            }
            for uuid in before.proxies.keys() {
                if !expected.proxies.contains_key(uuid) {
                    prop_assert!(change.removed.contains(uuid), "{} removal unreported after {:?}", uuid, o);
                }
            }
        }
    }
}

/// An endpoint move in a permissive mesh touches only the shared outbound intent and the pods behind
/// the service; a change that alters nothing reports nothing.
#[test]
fn an_endpoint_move_recomputes_only_what_it_touches() {
    let mut input = base();
    input.mesh_config.traffic.enable_permissive_traffic_policy_mode = true;
    for i in 0..4 {
        let spec = ServiceSpec {
            headless: false,
            ports: vec![(80, false)],
            selects: true,
        };
        apply(&mut input, &Op::Service(i, Some(spec)));
        apply(
            &mut input,
            &Op::Pod(i, Some((i % 3, i % 4, Some(i as u8 + 1), Some(0)))),
        );
    }
    let mut state = MeshState::new(&input);
    let unchanged = input.clone();
    assert!(state.update(&unchanged, &input).is_empty());

    let old = input.clone();
    input.pods.get_mut(&pod_ref(1)).unwrap().ip = Some(ip(40));
    let change = state.update(&old, &input);
    assert!(change.all, "the shared outbound intent holds the endpoint");
    assert_eq!(change.changed, BTreeSet::from(["uuid-1-0".to_string()]));
    assert!(change.removed.is_empty());
    assert_eq!(state.model(), &compute(&input));
}

/// The delta that sets every entry `ops` touch (services, endpoints, pods) to its value in `input`.
fn delta_of(ops: &[Op], input: &MeshInput) -> InputDelta {
    let mut delta = InputDelta::default();
    for o in ops {
        match o {
            Op::Pod(i, _) => {
                let id = pod_ref(*i);
                delta.pods.insert(id.clone(), input.pods.get(&id).cloned());
            }
            Op::Service(i, _) => {
                let id = service_ref(*i);
                delta
                    .services
                    .insert(id.clone(), input.services.get(&id).cloned());
            }
            Op::Endpoints(i, _) => {
                let id = service_ref(*i);
                delta
                    .endpoints
                    .insert(id.clone(), input.endpoints.get(&id).cloned());
            }
            _ => unreachable!("only entry edits make deltas"),
        }
    }
    delta
}

fn entry_op() -> impl Strategy<Value = Op> {
    op().prop_filter("an entry edit", |o| {
        matches!(o, Op::Pod(..) | Op::Service(..) | Op::Endpoints(..))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// `update_changed` after `InputDelta::apply` is `update` over the whole input: same input, same
    /// reported change, same model, for batches of services, endpoints and pods added, edited,
    /// removed or rewritten unchanged.
    #[test]
    fn a_delta_update_equals_a_whole_input_update(
        setup in prop::collection::vec(op(), 0..25),
        batches in prop::collection::vec(prop::collection::vec(entry_op(), 1..5), 1..6),
    ) {
        let mut whole = base();
        for o in &setup {
            apply(&mut whole, o);
        }
        let mut by_delta = whole.clone();
        let mut state = MeshState::new(&whole);
        let mut delta_state = MeshState::new(&whole);
        for ops in &batches {
            let old = whole.clone();
            for o in ops {
                apply(&mut whole, o);
            }
            let expected = state.update(&old, &whole);
            let prior = delta_of(ops, &whole).apply(&mut by_delta);
            prop_assert_eq!(&by_delta, &whole);
            let got = delta_state.update_changed(&prior, &by_delta);
            prop_assert_eq!(&got, &expected, "after {:?}", ops);
            prop_assert_eq!(delta_state.model(), state.model(), "after {:?}", ops);
        }
    }
}

/// Rewriting an entry to its current value changes nothing; the inverse delta restores the input.
#[test]
fn a_no_op_delta_reports_nothing_and_the_prior_undoes_a_delta() {
    let mut input = base();
    apply(&mut input, &Op::Pod(0, Some((0, 0, Some(1), Some(0)))));
    let mut state = MeshState::new(&input);
    let same = delta_of(&[Op::Pod(0, None)], &input);
    let prior = same.clone().apply(&mut input);
    assert_eq!(prior, same);
    assert!(state.update_changed(&prior, &input).is_empty());

    let original = input.clone();
    let mut delta = InputDelta::default();
    delta.pods.insert(pod_ref(0), None);
    delta.pods.insert(pod_ref(1), None);
    let prior = delta.apply(&mut input);
    let change = state.update_changed(&prior, &input);
    assert_eq!(change.removed, BTreeSet::from(["uuid-0-0".to_string()]));
    prior.apply(&mut input);
    assert_eq!(input, original);
}
