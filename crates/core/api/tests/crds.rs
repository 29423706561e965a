//! The generated CRDs: a reviewed snapshot of the YAML, structural-schema sanity, agreement with the
//! kinds table, and schema checks that refuse wrong types the way the apiserver does.

use std::collections::BTreeSet;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use osm_api::crds;
use osm_api::schema::{check, check_object, schema_for};
use serde_json::{Value, json};

/// The rendered CRDs, reviewed. Regenerate with `INSTA_UPDATE=always cargo test -p osm-api` and
/// review the diff.
#[test]
fn rendered_crds() {
    insta::assert_snapshot!(crds::render_yaml());
}

/// The YAML stream parses back to the same CRDs.
#[test]
fn rendered_yaml_parses_back() {
    let docs: Vec<Value> = serde_saphyr::from_multiple(&crds::render_yaml()).unwrap();
    let expected: Vec<Value> = crds::all()
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect();
    assert_eq!(docs, expected);
}

/// Walks every schema node with its path.
fn visit(s: &JSONSchemaProps, path: &str, f: &mut dyn FnMut(&JSONSchemaProps, &str)) {
    f(s, path);
    for (k, p) in s.properties.iter().flatten() {
        visit(p, &format!("{path}.{k}"), f);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(i)) = &s.items {
        visit(i, &format!("{path}[]"), f);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(a)) = &s.additional_properties {
        visit(a, &format!("{path}{{}}"), f);
    }
}

/// Every schema is structural: each node has a type (or is int-or-string), no logic junctions,
/// never both properties and additionalProperties, and every default passes its own schema.
#[test]
fn schemas_are_structural() {
    for crd in crds::all() {
        let name = crd.metadata.name.clone().unwrap();
        for version in &crd.spec.versions {
            let root = version
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap();
            visit(root, &format!("{name}/{}", version.name), &mut |s, path| {
                assert!(
                    s.type_.is_some() || s.x_kubernetes_int_or_string == Some(true),
                    "{path} has no type"
                );
                assert!(
                    s.any_of.is_none() && s.one_of.is_none() && s.all_of.is_none(),
                    "{path}"
                );
                assert!(
                    !(s.properties.is_some() && s.additional_properties.is_some()),
                    "{path} has both properties and additionalProperties"
                );
                if let Some(default) = &s.default {
                    check(s, &default.0).unwrap_or_else(|e| panic!("{path} default: {e}"));
                }
            });
            assert!(root.properties.as_ref().unwrap().get("metadata").is_none());
        }
    }
}

/// The kinds table lists exactly the served versions, with the right plural and storage version.
#[test]
fn kinds_table_matches_crds() {
    let mut from_crds = BTreeSet::new();
    for crd in crds::all() {
        let storage: Vec<_> = crd.spec.versions.iter().filter(|v| v.storage).collect();
        assert_eq!(storage.len(), 1, "{:?}", crd.metadata.name);
        for v in &crd.spec.versions {
            from_crds.insert((
                crd.spec.group.clone(),
                v.name.clone(),
                crd.spec.names.kind.clone(),
                crd.spec.names.plural.clone(),
                v.storage,
            ));
        }
    }
    let from_table: BTreeSet<_> = crds::kinds()
        .iter()
        .map(|k| {
            (
                k.group.to_string(),
                k.version.to_string(),
                k.kind.to_string(),
                k.plural.to_string(),
                k.storage,
            )
        })
        .collect();
    assert_eq!(from_crds, from_table);
    assert_eq!(
        crds::versions_of("config.openservicemesh.io", "MeshConfig"),
        ["v1alpha2", "v1alpha1"]
    );
    let mc = crds::by_name("meshconfigs.config.openservicemesh.io").unwrap();
    let v1 = mc.spec.versions.iter().find(|v| v.name == "v1alpha1").unwrap();
    assert_eq!(v1.deprecated, Some(true));
    assert!(v1.served);
}

/// Upstream's example: `kubectl patch ... -p '{"spec":{"traffic":{"enableEgress":"no"}}}'` is refused
/// naming the field, in the apiserver's words.
#[test]
fn mesh_config_schema_refuses_wrong_type() {
    let schema = schema_for("config.openservicemesh.io/v1alpha2", "MeshConfig").unwrap();
    let traffic = &schema.properties.as_ref().unwrap()["spec"]
        .properties
        .as_ref()
        .unwrap()["traffic"];
    let enable_egress = &traffic.properties.as_ref().unwrap()["enableEgress"];
    assert_eq!(enable_egress.type_.as_deref(), Some("boolean"));

    let errs = check(schema, &json!({"spec": {"traffic": {"enableEgress": "no"}}})).unwrap_err();
    assert_eq!(errs.fields().collect::<Vec<_>>(), ["spec.traffic.enableEgress"]);
    assert_eq!(
        errs.to_string(),
        "spec.traffic.enableEgress: Invalid value: \"string\": spec.traffic.enableEgress in body must be of type boolean: \"string\""
    );
    check(schema, &json!({"spec": {"traffic": {"enableEgress": false}}})).unwrap();
    // v1alpha1 has the same rule.
    let v1 = schema_for("config.openservicemesh.io/v1alpha1", "MeshConfig").unwrap();
    assert!(check(v1, &json!({"spec": {"traffic": {"enableEgress": "no"}}})).is_err());
}

/// Enums, ranges, required fields, map value types and unknown fields are refused too.
#[test]
fn schemas_refuse_other_mistakes() {
    let cases = [
        (
            json!({"apiVersion": "config.openservicemesh.io/v1alpha2", "kind": "MeshConfig",
                   "metadata": {"name": "m"}, "spec": {"sidecar": {"logLevel": "verbose"}}}),
            "spec.sidecar.logLevel: Unsupported value: \"verbose\": supported values: \"trace\", \"debug\", \"info\", \"warning\", \"warn\", \"error\", \"critical\", \"off\"",
        ),
        (
            json!({"apiVersion": "config.openservicemesh.io/v1alpha2", "kind": "MeshConfig",
                   "metadata": {"name": "m"}, "spec": {"traffic": {"inboundPortExclusionList": [70000]}}}),
            "spec.traffic.inboundPortExclusionList[0]: Invalid value: 70000: spec.traffic.inboundPortExclusionList[0] in body should be less than or equal to 65535",
        ),
        (
            json!({"apiVersion": "config.openservicemesh.io/v1alpha2", "kind": "MeshConfig",
                   "metadata": {"name": "m"}, "spec": {"trafic": {}}}),
            "spec.trafic: unknown field",
        ),
        (
            json!({"apiVersion": "access.smi-spec.io/v1alpha3", "kind": "TrafficTarget",
                   "metadata": {"name": "t"}, "spec": {"destination": {"kind": "ServiceAccount"}, "rules": [], "sources": []}}),
            "spec.destination.name: Required value",
        ),
        (
            json!({"apiVersion": "specs.smi-spec.io/v1alpha4", "kind": "HTTPRouteGroup",
                   "metadata": {"name": "h"}, "spec": {"matches": [{"name": "m", "headers": [{"x-n": 1}]}]}}),
            "spec.matches[0].headers[0][x-n]: Invalid value: \"integer\": spec.matches[0].headers[0][x-n] in body must be of type string: \"integer\"",
        ),
        (
            json!({"apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
                   "metadata": {"name": "s"}, "spec": {"service": "a", "backends": [{"service": "b", "weight": "50"}]}}),
            "spec.backends[0].weight: Invalid value: \"string\": spec.backends[0].weight in body must be of type integer: \"string\"",
        ),
    ];
    for (doc, expected) in cases {
        assert_eq!(check_object(&doc).unwrap_err().to_string(), expected);
    }
    // Not ours: nothing to check.
    check_object(&json!({"apiVersion": "v1", "kind": "Service", "spec": {"x": 1}})).unwrap();
}

/// Every fixture manifest passes its CRD schema, as does a MeshConfig with default values.
#[test]
fn fixtures_pass_their_schemas() {
    for yaml in [
        include_str!("fixtures/bookstore.yaml"),
        include_str!("fixtures/config.yaml"),
        include_str!("fixtures/policies.yaml"),
    ] {
        for doc in serde_saphyr::from_multiple::<Value>(yaml).unwrap() {
            check_object(&doc).unwrap_or_else(|e| panic!("{}: {e}", doc["metadata"]["name"]));
        }
    }
    let mc = osm_api::config::MeshConfig::new("osm-mesh-config", Default::default());
    check_object(&serde_json::to_value(&mc).unwrap()).unwrap();
}
