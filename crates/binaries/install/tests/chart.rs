//! The Helm chart `charts/osm` is what the generator writes today, and it renders the same objects
//! as `osm install`: its templates are evaluated here by a small evaluator for exactly the template
//! constructs the generator emits (`.Values` lookups with `quote`/`toJson`, the four helpers of
//! `_helpers.tpl` implemented natively, `if`/`end` with `{{-` trimming), since helm itself is not
//! available, and the result is compared object by object with `osm_install::render`.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use osm_install::{InstallOptions, Values, render};
use serde_json::Value;

fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../charts/osm")
}

/// The committed chart equals the generator's output (no missing, changed or stale file).
#[test]
fn committed_chart_is_up_to_date() {
    let files = osm_install::chart::files();
    let hint = "charts/osm is stale: run `cargo run -p osm-install --example write-chart`";
    for (path, contents) in &files {
        let on_disk =
            std::fs::read_to_string(chart_dir().join(path)).unwrap_or_else(|e| panic!("{hint}: {path}: {e}"));
        assert!(on_disk == *contents, "{hint}: {path} differs");
    }
    let expected: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    for entry in std::fs::read_dir(chart_dir().join("templates")).expect("charts/osm/templates") {
        let name = format!("templates/{}", entry.unwrap().file_name().to_string_lossy());
        assert!(
            expected.contains(&name.as_str()),
            "{hint}: {name} is not generated any more"
        );
    }
}

fn lookup<'a>(values: &'a Value, path: &str) -> &'a Value {
    let path = path
        .strip_prefix(".Values.")
        .unwrap_or_else(|| panic!("unsupported: {path}"));
    path.split('.').fold(values, |v, k| &v[k])
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn helper(name: &str, values: &Value, release_ns: &str) -> String {
    let o = &values["osm"];
    let ns = match o["osmNamespace"].as_str().unwrap() {
        "" => release_ns.to_string(),
        ns => ns.to_string(),
    };
    match name {
        "osm.namespace" => ns,
        "osm.validatorWebhookName" => match o["validatorWebhook"]["webhookConfigurationName"]
            .as_str()
            .unwrap()
        {
            "" => format!("osm-validator-mesh-{}", text(&o["meshName"])),
            n => n.to_string(),
        },
        "osm.initImage" => format!(
            "{}/osm-init:{}",
            text(&o["image"]["registry"]),
            text(&o["image"]["tag"])
        ),
        "osm.tracingAddress" => match o["tracing"]["address"].as_str().unwrap() {
            "" => format!("jaeger.{ns}.svc.cluster.local"),
            a => a.to_string(),
        },
        other => panic!("unknown helper {other}"),
    }
}

fn truthy(v: &Value) -> bool {
    !matches!(v, Value::Null | Value::Bool(false)) && v != "" && v != 0 && v != &Value::Array(vec![])
}

/// Evaluates the template constructs the generator emits.
fn eval(template: &str, values: &Value, release_ns: &str) -> String {
    let mut out = String::new();
    let mut active: Vec<bool> = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let emitting = active.iter().all(|a| *a);
        if emitting {
            out.push_str(&rest[..open]);
        }
        let close = rest[open..].find("}}").expect("closed tag") + open;
        let mut tag = &rest[open + 2..close];
        if let Some(t) = tag.strip_prefix('-') {
            tag = t;
            if emitting {
                out.truncate(out.trim_end().len());
            }
        }
        let tag = tag.trim();
        rest = &rest[close + 2..];
        if let Some(cond) = tag.strip_prefix("if ") {
            active.push(truthy(lookup(values, cond.trim())));
            continue;
        }
        if tag == "end" {
            active.pop().expect("balanced if/end");
            continue;
        }
        if !active.iter().all(|a| *a) {
            continue;
        }
        let (base, filter) = match tag.split_once(" | ") {
            Some((b, f)) => (b.trim(), Some(f.trim())),
            None => (tag, None),
        };
        let value = match base.strip_prefix("include \"") {
            Some(inc) => Value::String(helper(inc.split('"').next().unwrap(), values, release_ns)),
            None => lookup(values, base).clone(),
        };
        out.push_str(&match filter {
            None => text(&value),
            Some("quote") => serde_json::to_string(&Value::String(text(&value))).unwrap(),
            Some("toJson") => value.to_string(),
            Some(other) => panic!("unsupported filter {other}"),
        });
    }
    out.push_str(rest);
    out
}

/// The preset JSON compared as JSON (whitespace may differ).
fn normalize(mut objects: Vec<Value>) -> Vec<Value> {
    for o in &mut objects {
        if let Some(s) = o["data"]["preset-mesh-config.json"].as_str() {
            o["data"]["preset-mesh-config.json"] = serde_json::from_str(s).expect("preset JSON");
        }
    }
    objects
}

fn chart_objects(values: &Values, release_ns: &str) -> Vec<Value> {
    let values = serde_json::to_value(values).unwrap();
    let mut files = osm_install::chart::files();
    files.sort();
    files
        .iter()
        .filter(|(p, _)| p.starts_with("templates/") && p.ends_with(".yaml"))
        .map(|(p, t)| {
            let yaml = eval(t, &values, release_ns);
            serde_saphyr::from_str::<Value>(&yaml).unwrap_or_else(|e| panic!("{p}: {e}\n{yaml}"))
        })
        .collect()
}

fn assert_same(values: Values, release_ns: &str) {
    let chart = normalize(chart_objects(&values, release_ns));
    let mut values = values;
    if values.osm.osm_namespace.is_empty() {
        values.osm.osm_namespace = release_ns.into();
    }
    let rendered = normalize(render(&InstallOptions { values, set: vec![] }));
    assert_eq!(chart.len(), rendered.len());
    for (c, r) in chart.iter().zip(&rendered) {
        assert_eq!(c, r, "{} differs", osm_install::describe(r));
    }
}

/// With the default values the chart renders what `osm install` renders.
#[test]
fn chart_renders_the_same_objects_with_defaults() {
    assert_same(Values::default(), "osm-system");
}

/// With changed values too: strings, numbers, the enforceSingleMesh label, tracing, lists.
#[test]
fn chart_renders_the_same_objects_with_values_set() {
    let mut values = Values::default();
    values
        .set_all([
            "osm.meshName=blue",
            "osm.osmNamespace=blue-system",
            "osm.enforceSingleMesh=false",
            "osm.osmController.replicaCount=3",
            "osm.injector.webhookTimeoutSeconds=25",
            "osm.enableEgress=false",
            "osm.tracing.enable=true",
            "osm.outboundPortExclusionList={6379,8080}",
            "osm.image.registry=example.com/mesh",
            "osm.image.tag=1.2.3",
            "osm.validatorWebhook.webhookConfigurationName=my-validator",
            "osm.envoyLogLevel=debug",
            "osm.controllerLogLevel=debug",
            "osm.certificateProvider.serviceCertValidityDuration=1h",
            "osm.enablePermissiveTrafficPolicy=false",
            "osm.enablePrivilegedInitContainer=true",
            "osm.featureFlags.enableRetryPolicy=true",
            "osm.localProxyMode=PodIP",
            "osm.trustDomain=example.org",
        ])
        .unwrap();
    assert_same(values, "ignored");
}
