//! What a change publishes: only the proxies whose intent it changed get a new config, and a proxy
//! whose pod changed ServiceAccount or went away leaves the cache under its old name.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use osm_ca::{CertificateAuthority, TrustDomain, XdsClientIdentity};
use osm_controller::ControlPlane;
use osm_fixtures::bookstore_numbered;
use osm_model::{MeshInput, PodRef};

fn mesh() -> (ControlPlane, MeshInput) {
    let ca = CertificateAuthority::generate(TrustDomain::default(), Duration::from_secs(3600)).expect("a CA");
    let input = bookstore_numbered(false, None);
    (ControlPlane::new(Arc::new(ca), input.clone()), input)
}

fn key(uuid: &str, sa: &str, ns: &str) -> String {
    format!("{uuid}.sidecar.{sa}.{ns}.cluster.local")
}

fn client(uuid: &str, sa: &str, ns: &str) -> XdsClientIdentity {
    XdsClientIdentity {
        proxy_uuid: uuid.into(),
        identity: osm_ca::ServiceIdentity::new(sa, ns),
        trust_domain: TrustDomain::default(),
    }
}

/// SMI: moving bookwarehouse's pod reaches the two identities allowed to call it, and nobody else.
#[test]
fn an_endpoint_move_republishes_only_the_clients_that_may_reach_it() {
    let (cp, mut input) = mesh();
    let buyer = key("bookbuyer", "bookbuyer", "bookbuyer");
    let store_v1 = key("bookstore-v1", "bookstore-v1", "bookstore");
    let before_buyer = cp.cache().get(&buyer).expect("bookbuyer is published");
    let before_store = cp.cache().get(&store_v1).expect("bookstore-v1 is published");

    let warehouse = PodRef::new("bookwarehouse", "bookwarehouse");
    input.pods.get_mut(&warehouse).expect("the pod").ip = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 99)));
    let stats = cp.replace(input);

    assert_eq!(stats.changed, 2, "bookstore-v1 and -v2: {stats:?}");
    assert_eq!(stats.removed, 0);
    let after_buyer = cp.cache().get(&buyer).expect("still published");
    assert!(
        Arc::ptr_eq(&before_buyer, &after_buyer),
        "bookbuyer cannot reach bookwarehouse"
    );
    assert!(!Arc::ptr_eq(
        &before_store,
        &cp.cache().get(&store_v1).expect("still published")
    ));
}

/// The cache key and the ADS authenticator follow a pod's ServiceAccount; a deleted pod is forgotten.
#[test]
fn a_new_service_account_moves_the_proxy_and_a_deleted_pod_leaves() {
    let (cp, mut input) = mesh();
    let registry = cp.registry();
    let thief = PodRef::new("bookthief", "bookthief");
    let old_key = key("bookthief", "bookthief", "bookthief");
    assert!(cp.cache().proxies().contains(&old_key));
    assert!(
        registry
            .check(&client("bookthief", "bookthief", "bookthief"))
            .is_ok()
    );

    input.pods.get_mut(&thief).expect("the pod").service_account = "impostor".into();
    let stats = cp.replace(input.clone());
    let new_key = key("bookthief", "impostor", "bookthief");
    let proxies = cp.cache().proxies();
    assert!(!proxies.contains(&old_key), "{proxies:?}");
    assert!(proxies.contains(&new_key), "{proxies:?}");
    assert_eq!(stats.removed, 1);
    assert!(
        registry
            .check(&client("bookthief", "impostor", "bookthief"))
            .is_ok()
    );
    assert!(
        registry
            .check(&client("bookthief", "bookthief", "bookthief"))
            .is_err()
    );

    input.pods.remove(&thief);
    let stats = cp.replace(input);
    assert_eq!(stats.removed, 1);
    assert!(!cp.cache().proxies().contains(&new_key));
    assert!(
        registry
            .check(&client("bookthief", "impostor", "bookthief"))
            .is_err()
    );
}

/// A delta publishes what replacing the whole input with the same edit publishes, and the control
/// plane ends with that input.
#[test]
fn a_delta_publishes_what_a_whole_input_publishes() {
    let (by_input, mut input) = mesh();
    let (by_delta, _) = mesh();
    let warehouse = PodRef::new("bookwarehouse", "bookwarehouse");
    let thief = PodRef::new("bookthief", "bookthief");
    let mut pod = input.pods[&warehouse].clone();
    pod.ip = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 99)));
    let mut delta = osm_model::InputDelta::default();
    delta.pods.insert(warehouse.clone(), Some(pod.clone()));
    delta.pods.insert(thief.clone(), None);
    input.pods.insert(warehouse, pod);
    input.pods.remove(&thief);

    let mut expected = by_input.replace(input.clone());
    let mut got = by_delta.apply_delta(delta);
    (expected.micros, got.micros) = (0, 0);
    assert_eq!(got, expected);
    assert_eq!(got.removed, 1, "{got:?}");
    assert_eq!(by_delta.input(), by_input.input());
    let proxies = |cp: &ControlPlane| -> std::collections::BTreeSet<String> {
        cp.cache().proxies().into_iter().collect()
    };
    assert_eq!(proxies(&by_delta), proxies(&by_input));
}
