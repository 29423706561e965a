//! MeshConfig `traffic.inboundExternalAuthorization` → the `ext_authz` of every inbound intent that
//! accepts HTTP, switched live by a MeshConfig change.
#![forbid(unsafe_code)]
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use osm_api::config::ExternalAuthzSpec;
use osm_fixtures::bookstore;
use osm_model::*;

fn mesh() -> MeshInput {
    bookstore(
        true,
        None,
        |p| IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10 + p.len() as u8)),
        |s| IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1 + s.len() as u8)),
    )
}

fn enabled() -> ExternalAuthzSpec {
    ExternalAuthzSpec {
        enable: true,
        address: Some("ext-authz.auth.svc.cluster.local".into()),
        port: Some(9002),
        stat_prefix: "authz".into(),
        timeout: "250ms".parse().expect("a Go duration"),
        failure_mode_allow: true,
    }
}

/// Enabled: every pod serving HTTP carries the one shared value, read from the spec; bookbuyer, which
/// serves nothing, carries none.
#[test]
fn ext_authz_reaches_every_http_inbound_intent() {
    let mut input = mesh();
    input.mesh_config.traffic.inbound_external_authorization = enabled();
    let model = compute(&input);
    let want = ExternalAuthz {
        address: "ext-authz.auth.svc.cluster.local".into(),
        port: 9002,
        stat_prefix: "authz".into(),
        timeout_ms: 250,
        failure_mode_allow: true,
    };
    let v1 = model.proxies["bookstore-v1"].inbound.ext_authz.clone();
    assert_eq!(v1.as_deref(), Some(&want));
    for proxy in ["bookstore-v2", "bookwarehouse"] {
        let other = model.proxies[proxy].inbound.ext_authz.as_ref().expect(proxy);
        assert!(
            Arc::ptr_eq(v1.as_ref().unwrap(), other),
            "{proxy} shares the value"
        );
    }
    assert_eq!(model.proxies["bookbuyer"].inbound.ext_authz, None);
}

/// Disabled (the default), or enabled without an address: nothing anywhere.
#[test]
fn ext_authz_off_unless_enabled_with_an_address() {
    let mut input = mesh();
    let off = compute(&input);
    assert!(off.proxies.values().all(|p| p.inbound.ext_authz.is_none()));
    input.mesh_config.traffic.inbound_external_authorization = ExternalAuthzSpec {
        address: None,
        ..enabled()
    };
    let no_address = compute(&input);
    assert!(no_address.proxies.values().all(|p| p.inbound.ext_authz.is_none()));
}

/// A MeshConfig edit switches it on and off through the incremental update, which reports every proxy
/// as possibly changed and ends where a fresh computation would.
#[test]
fn ext_authz_meshconfig_change_updates_live() {
    let old = mesh();
    let mut new = old.clone();
    new.mesh_config.traffic.inbound_external_authorization = enabled();
    let mut state = MeshState::new(&old);
    let change = state.update(&old, &new);
    assert!(change.all, "{change:?}");
    assert_eq!(state.model(), &compute(&new));
    assert!(state.model().proxies["bookstore-v1"].inbound.ext_authz.is_some());
    let change = state.update(&new, &old);
    assert!(change.all, "{change:?}");
    assert!(state.model().proxies["bookstore-v1"].inbound.ext_authz.is_none());
}
