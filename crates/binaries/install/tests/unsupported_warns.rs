//! Nothing accepted and ignored, at install time: a `--set` value that asks for something the
//! control plane does not do yet is named in a warning; values left at their defaults are not.
#![forbid(unsafe_code)]

use osm_install::{InstallOptions, Values};

fn options(set: &[&str]) -> InstallOptions {
    let mut values = Values::default();
    values.set_all(set.iter().copied()).expect("valid --set");
    InstallOptions {
        values,
        set: set.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn unsupported_warns_for_set_values() {
    let warnings = options(&[
        "osm.enableDebugServer=true",
        "osm.enablePermissiveTrafficPolicy=true",
    ])
    .unsupported_warnings();
    assert_eq!(
        warnings,
        [
            "--set osm.enableDebugServer=true: spec.observability.enableDebugServer: not supported yet, \
          accepted and ignored: no debug server is started"
        ]
    );
    let warnings = options(&[
        "osm.featureFlags.enableEnvoyActiveHealthChecks=true",
        "osm.localProxyMode=PodIP",
        "osm.featureFlags.enableRetryPolicy=true",
    ])
    .unsupported_warnings();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].starts_with("--set osm.localProxyMode=PodIP: spec.sidecar.localProxyMode: "));
    assert!(
        warnings[1].starts_with(
            "--set osm.featureFlags.enableEnvoyActiveHealthChecks=true: spec.featureFlags.enableEnvoyActiveHealthChecks: "
        ),
        "{warnings:?}"
    );
}

#[test]
fn unsupported_warns_not_for_defaults() {
    assert!(options(&[]).unsupported_warnings().is_empty());
}
