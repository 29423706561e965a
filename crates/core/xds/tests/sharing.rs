//! The generator's memo: proxies with equal intents share sets, an unchanged model is not re-encoded, an
//! endpoint change re-encodes only what embeds it, `sweep` forgets what no proxy uses, and encoding is
//! deterministic across generator instances.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, LazyLock};

use osm_fixtures::{MeshBuilder, bookstore};
use osm_model::{AppProtocol, MeshInput, MeshModel, compute};
use osm_xds::{Generator, ProxyConfig, Resource, ResourceSet, TypeKind, identity_secrets};

const CA: &str = "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n";

/// One `service-cert` set for every proxy, as the controller shares one per identity.
static SECRETS: LazyLock<Arc<ResourceSet>> = LazyLock::new(|| identity_secrets("cert", "key"));

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// The bookstore mesh with bookstore-v2's pod at `10.0.0.<v2_last>`.
fn bookstore_input(permissive: bool, v2_last: u8) -> MeshInput {
    let pods = [
        "bookbuyer",
        "bookthief",
        "bookstore-v1",
        "bookstore-v2",
        "bookwarehouse",
    ];
    let svcs = ["bookstore", "bookstore-v1", "bookstore-v2", "bookwarehouse"];
    bookstore(
        permissive,
        Some((50, 50)),
        |p| match p {
            "bookstore-v2" => ip(10, 0, 0, v2_last),
            p => ip(10, 0, 0, 10 + pods.iter().position(|x| *x == p).unwrap() as u8),
        },
        |s| ip(10, 96, 0, 1 + svcs.iter().position(|x| *x == s).unwrap() as u8),
    )
}

/// Every proxy's config, then a sweep of what no config holds.
fn generate(g: &mut Generator, model: &MeshModel) -> BTreeMap<String, ProxyConfig> {
    let out = model
        .proxies
        .iter()
        .map(|(uuid, p)| (uuid.clone(), g.proxy_config(p, SECRETS.clone())))
        .collect();
    g.sweep_all();
    out
}

fn resource<'a>(c: &'a ProxyConfig, kind: TypeKind, name: &str) -> &'a Arc<Resource> {
    c.get(kind, name)
        .unwrap_or_else(|| panic!("{} {name} missing", kind.short()))
}

/// Two pods of one Deployment (same ServiceAccount, same services) get the very same sets.
#[test]
fn equal_intents_share_sets() {
    let mut b = MeshBuilder::new(true);
    b.service(
        "shop",
        "web",
        Some(ip(10, 96, 0, 1)),
        &[(80, 8080, AppProtocol::Http)],
        &[("app", "web")],
    );
    for (i, name) in ["web-a", "web-b"].iter().enumerate() {
        b.pod(
            "shop",
            name,
            "web",
            &[("app", "web")],
            Some(ip(10, 0, 0, 1 + i as u8)),
            Some(name),
        );
    }
    let model = compute(&b.build());
    let mut g = Generator::new("cluster.local", CA);
    let configs = generate(&mut g, &model);
    assert!(configs["web-a"].same_sets(&configs["web-b"]));
}

/// Permissive mode: every proxy shares the one outbound set, whatever its identity.
#[test]
fn permissive_proxies_share_the_outbound_set() {
    let model = compute(&bookstore_input(true, 13));
    let mut g = Generator::new("cluster.local", CA);
    let configs = generate(&mut g, &model);
    let outbound = |uuid: &str| {
        configs[uuid]
            .sets
            .iter()
            .find(|s| s.get(TypeKind::Listener, "outbound-listener").is_some())
            .expect("an outbound set")
            .clone()
    };
    assert!(Arc::ptr_eq(&outbound("bookbuyer"), &outbound("bookthief")));
    assert!(Arc::ptr_eq(&outbound("bookbuyer"), &outbound("bookwarehouse")));
}

/// Recomputing an unchanged mesh (new intent `Arc`s, equal values) re-encodes nothing.
#[test]
fn unchanged_model_reuses_every_resource() {
    let input = bookstore_input(false, 13);
    let mut g = Generator::new("cluster.local", CA);
    let first = generate(&mut g, &compute(&input));
    let second = generate(&mut g, &compute(&input));
    for (uuid, config) in &first {
        assert!(config.same_sets(&second[uuid]), "{uuid}: sets were rebuilt");
        for kind in TypeKind::ALL {
            for r in config.iter(kind) {
                let again = resource(&second[uuid], kind, &r.name);
                assert!(
                    Arc::ptr_eq(r, again),
                    "{uuid}: {} {} re-encoded",
                    kind.short(),
                    r.name
                );
            }
        }
    }
}

/// Moving bookstore-v2's pod re-encodes its load assignments and the outbound sets that embed them;
/// every cluster, every other load assignment and every inbound set stay the same `Arc`.
#[test]
fn endpoint_change_reencodes_only_what_embeds_it() {
    let mut g = Generator::new("cluster.local", CA);
    let before = generate(&mut g, &compute(&bookstore_input(true, 13)));
    let after = generate(&mut g, &compute(&bookstore_input(true, 99)));
    let (b, a) = (&before["bookbuyer"], &after["bookbuyer"]);

    // Only the load assignment with v2's endpoint changed.
    let mut changed = Vec::new();
    for r in b.iter(TypeKind::Endpoint) {
        let now = resource(a, TypeKind::Endpoint, &r.name);
        if !Arc::ptr_eq(r, now) {
            assert_ne!(r.version, now.version, "{} re-encoded with equal bytes", r.name);
            changed.push(r.name.as_str());
        }
    }
    assert_eq!(changed, ["bookstore/bookstore-v2|14001"]);
    // Clusters do not embed endpoints: all of them are reused.
    for r in b.iter(TypeKind::Cluster) {
        assert!(
            Arc::ptr_eq(r, resource(a, TypeKind::Cluster, &r.name)),
            "{}",
            r.name
        );
    }
    // Validation contexts name identities, not addresses.
    for r in b.iter(TypeKind::Secret) {
        assert!(
            Arc::ptr_eq(r, resource(a, TypeKind::Secret, &r.name)),
            "{}",
            r.name
        );
    }
    // The outbound set was rebuilt; its listener and routes carry no endpoint, so their bytes (and
    // versions) are equal and the ADS server sends them to no one.
    assert!(!b.same_sets(a));
    for kind in [TypeKind::Listener, TypeKind::Route] {
        for r in b.iter(kind) {
            assert_eq!(r.version, resource(a, kind, &r.name).version, "{}", r.name);
        }
    }
    // Inbound sets (and the statics) do not depend on where other pods are.
    assert!(Arc::ptr_eq(&b.sets[0], &a.sets[0]));
    assert!(Arc::ptr_eq(&b.sets[1], &a.sets[1]));
}

/// `sweep` forgets resources that no config holds any more: a cluster that comes back after the
/// configs using it were dropped is built anew, while one kept in use is the same `Arc`.
#[test]
fn sweep_drops_unused_entries() {
    let with_warehouse = bookstore_input(true, 13);
    let mut without_warehouse = with_warehouse.clone();
    without_warehouse
        .services
        .retain(|id, _| id.name != "bookwarehouse");

    let warehouse = "bookwarehouse/bookwarehouse|14001";
    let kept = "bookstore/bookstore-v1|14001";
    let mut g = Generator::new("cluster.local", CA);
    let first = generate(&mut g, &compute(&with_warehouse));
    let stats_full = g.stats();
    let warehouse_before = resource(&first["bookbuyer"], TypeKind::Cluster, warehouse).clone();
    let kept_before = resource(&first["bookbuyer"], TypeKind::Cluster, kept).clone();
    let warehouse_version = warehouse_before.version.clone();
    // The first configs are replaced (as the snapshot cache replaces published configs).
    drop((first, warehouse_before));

    let second = generate(&mut g, &compute(&without_warehouse));
    let stats_swept = g.stats();
    assert!(
        stats_swept.clusters < stats_full.clusters,
        "{stats_swept:?} vs {stats_full:?}"
    );
    assert!(stats_swept.load_assignments < stats_full.load_assignments);
    let third = generate(&mut g, &compute(&with_warehouse));
    drop(second);
    g.sweep_all();
    assert_eq!(g.stats(), stats_full);

    let a = &third["bookbuyer"];
    assert_eq!(
        resource(a, TypeKind::Cluster, warehouse).version,
        warehouse_version
    );
    assert!(Arc::ptr_eq(&kept_before, resource(a, TypeKind::Cluster, kept)));
}

/// Two generators (say, before and after a controller restart) encode the same bytes and versions.
#[test]
fn versions_are_deterministic_across_generators() {
    for permissive in [true, false] {
        let model = compute(&bookstore_input(permissive, 13));
        let one = generate(&mut Generator::new("cluster.local", CA), &model);
        let two = generate(&mut Generator::new("cluster.local", CA), &model);
        for (uuid, config) in &one {
            for kind in TypeKind::ALL {
                let a: Vec<(&str, &str)> = config
                    .iter(kind)
                    .map(|r| (r.name.as_str(), r.version.as_str()))
                    .collect();
                let b: Vec<(&str, &str)> = two[uuid]
                    .iter(kind)
                    .map(|r| (r.name.as_str(), r.version.as_str()))
                    .collect();
                assert_eq!(a, b, "{uuid} {}", kind.short());
                for r in config.iter(kind) {
                    assert_eq!(r.body(), resource(&two[uuid], kind, &r.name).body());
                }
            }
        }
    }
}

/// A Retry's source (permissive mode) gets route configs of its own, and shares everything else —
/// listener, clusters, endpoints — with the proxies without retries.
#[test]
fn a_retry_source_shares_all_but_its_routes() {
    let mut input = bookstore_input(true, 13);
    input.mesh_config.feature_flags.enable_retry_policy = true;
    let retry = serde_json::json!({
        "source": {"kind": "ServiceAccount", "name": "bookbuyer", "namespace": "bookbuyer"},
        "destinations": [{"kind": "Service", "name": "bookstore", "namespace": "bookstore"}],
        "retryPolicy": {"retryOn": "5xx", "perTryTimeout": "1s", "numRetries": 3,
                        "retryBackoffBaseInterval": "10ms"},
    });
    input.retries.insert(
        osm_model::ObjectRef::new("bookbuyer", "retry"),
        serde_json::from_value(retry).expect("a valid Retry"),
    );
    let model = compute(&input);
    let mut g = Generator::new("cluster.local", CA);
    let configs = generate(&mut g, &model);
    let (buyer, thief) = (&configs["bookbuyer"], &configs["bookthief"]);
    assert!(!Arc::ptr_eq(
        resource(buyer, TypeKind::Route, "rds-outbound.14001"),
        resource(thief, TypeKind::Route, "rds-outbound.14001")
    ));
    assert!(Arc::ptr_eq(
        resource(buyer, TypeKind::Listener, "outbound-listener"),
        resource(thief, TypeKind::Listener, "outbound-listener")
    ));
    for cluster in [
        "bookstore/bookstore-v1|14001",
        "bookwarehouse/bookwarehouse|14001",
    ] {
        assert!(Arc::ptr_eq(
            resource(buyer, TypeKind::Cluster, cluster),
            resource(thief, TypeKind::Cluster, cluster)
        ));
        assert!(Arc::ptr_eq(
            resource(buyer, TypeKind::Endpoint, cluster),
            resource(thief, TypeKind::Endpoint, cluster)
        ));
    }
}
