//! Checks an object against a CRD's `openAPIV3Schema` offline, the way the kube-apiserver does
//! before storing it: types, enums, required fields, numeric ranges, unknown fields. Errors read like
//! the apiserver's (`spec.traffic.enableEgress: Invalid value: "string": spec.traffic.enableEgress in
//! body must be of type boolean: "string"`), so a manifest refused here would be refused by a cluster
//! with the same words.
//!
//! Only what our generated schemas use is checked; CEL rules and `oneOf`/`anyOf` are not.

use std::sync::OnceLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_json::Value;

use crate::crds;
use crate::validate::{Errors, ValidationErrors};

/// Root fields every object has that CRD schemas do not describe.
const ROOT_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

fn all_crds() -> &'static [CustomResourceDefinition] {
    static CRDS: OnceLock<Vec<CustomResourceDefinition>> = OnceLock::new();
    CRDS.get_or_init(crds::all)
}

/// The `openAPIV3Schema` of one of our kinds at `apiVersion` (`group/version`), if we serve it.
pub fn schema_for(api_version: &str, kind: &str) -> Option<&'static JSONSchemaProps> {
    let (group, version) = api_version.split_once('/')?;
    all_crds()
        .iter()
        .filter(|c| c.spec.group == group && c.spec.names.kind == kind)
        .flat_map(|c| c.spec.versions.iter())
        .find(|v| v.name == version)
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
}

/// Checks a whole object (with `apiVersion`, `kind`, `metadata`) against `schema`, the
/// `openAPIV3Schema` of its CRD version.
pub fn check(schema: &JSONSchemaProps, object: &Value) -> Result<(), ValidationErrors> {
    let mut errs = Errors::default();
    walk(schema, object, "", true, &mut errs);
    errs.finish()
}

/// Checks a whole object against the schema of its own `apiVersion` and `kind`. Objects that are not
/// ours (or lack type metadata) pass: there is nothing to check them against.
pub fn check_object(object: &Value) -> Result<(), ValidationErrors> {
    let api_version = object.get("apiVersion").and_then(Value::as_str);
    let kind = object.get("kind").and_then(Value::as_str);
    match (api_version, kind) {
        (Some(a), Some(k)) => match schema_for(a, k) {
            Some(schema) => check(schema, object),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// The JSON type name the apiserver reports for a value.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(expected: &str, v: &Value) -> bool {
    match expected {
        "number" => v.is_number(),
        other => type_name(v) == other,
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Renders a JSON value the way Go's `%v` / `%q` shows it in apiserver messages.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn walk(schema: &JSONSchemaProps, value: &Value, path: &str, root: bool, errs: &mut Errors) {
    if value.is_null() {
        // The apiserver prunes nulls of non-nullable fields before validating, so only a null where
        // the schema itself is the object (the root) is a type error.
        if !root {
            return;
        }
    }
    if schema.x_kubernetes_int_or_string == Some(true) {
        if !(type_name(value) == "integer" || value.is_string()) {
            errs.add(
                path,
                format!(
                    "Invalid value: {:?}: {path} in body must be of type integer-or-string: {:?}",
                    type_name(value),
                    type_name(value)
                ),
            );
        }
        return;
    }
    if let Some(expected) = &schema.type_
        && !type_matches(expected, value)
    {
        errs.add(
            path,
            format!(
                "Invalid value: {:?}: {path} in body must be of type {expected}: {:?}",
                type_name(value),
                type_name(value)
            ),
        );
        return;
    }
    if let Some(allowed) = &schema.enum_
        && !allowed.iter().any(|a| a.0 == *value)
    {
        let list: Vec<String> = allowed.iter().map(|a| show(&a.0)).collect();
        errs.add(
            path,
            format!(
                "Unsupported value: {}: supported values: {}",
                show(value),
                list.join(", ")
            ),
        );
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.minimum
            && n < min
        {
            errs.add(
                path,
                format!("Invalid value: {value}: {path} in body should be greater than or equal to {min}"),
            );
        }
        if let Some(max) = schema.maximum
            && n > max
        {
            errs.add(
                path,
                format!("Invalid value: {value}: {path} in body should be less than or equal to {max}"),
            );
        }
    }
    if let (Some(pattern), Some(s)) = (&schema.pattern, value.as_str())
        && let Ok(re) = crate::validate::compile_regex(pattern)
        && !re.is_match(s)
    {
        errs.add(
            path,
            format!("Invalid value: {s:?}: {path} in body should match '{pattern}'"),
        );
    }
    match value {
        Value::Object(map) => {
            for name in schema.required.iter().flatten() {
                if map.get(name).is_none_or(Value::is_null) {
                    errs.add(child(path, name), "Required value");
                }
            }
            let preserve = schema.x_kubernetes_preserve_unknown_fields == Some(true);
            for (key, v) in map {
                if root && ROOT_FIELDS.contains(&key.as_str()) {
                    continue;
                }
                let field = child(path, key);
                if let Some(prop) = schema.properties.as_ref().and_then(|p| p.get(key)) {
                    walk(prop, v, &field, false, errs);
                    continue;
                }
                match &schema.additional_properties {
                    Some(JSONSchemaPropsOrBool::Schema(s)) => {
                        walk(s, v, &format!("{path}[{key}]"), false, errs);
                    }
                    Some(JSONSchemaPropsOrBool::Bool(true)) => {}
                    _ if preserve => {}
                    _ => errs.add(field, "unknown field"),
                }
            }
        }
        Value::Array(items) => {
            if let Some(min) = schema.min_items
                && (items.len() as i64) < min
            {
                errs.add(
                    path,
                    format!(
                        "Invalid value: {}: {path} in body should have at least {min} items",
                        items.len()
                    ),
                );
            }
            if let Some(max) = schema.max_items
                && (items.len() as i64) > max
            {
                errs.add(
                    path,
                    format!("Too many: {}: must have at most {max} items", items.len()),
                );
            }
            if let Some(JSONSchemaPropsOrArray::Schema(item)) = &schema.items {
                for (i, v) in items.iter().enumerate() {
                    walk(item, v, &format!("{path}[{i}]"), false, errs);
                }
            }
        }
        _ => {}
    }
}
