//! What the validating webhook checks: an SMI or OSM object decodes as its kind and passes the
//! semantic rules of `osm_api::validate` (rules a CRD schema cannot express). Every refusal names the
//! object and the offending field's JSON path.

use osm_api::MeshObject;
use osm_api::validate::Validate as _;
use serde_json::Value;

/// `Ok(())` when `object` is acceptable: one of our kinds that decodes and validates, or any kind that
/// is not ours (the webhook has nothing to say about it). Otherwise the reason, e.g.
/// `TrafficTarget shop/t: spec.destination.namespace: must equal the TrafficTarget's namespace "shop"
/// (got "other")`.
pub fn validate_object(object: &Value) -> Result<(), String> {
    let decoded = MeshObject::from_value(object.clone()).map_err(|e| error_chain(&e))?;
    let Some(decoded) = decoded else {
        return Ok(());
    };
    decoded.validate().map_err(|errors| {
        let name = match decoded.namespace() {
            Some(ns) => format!("{ns}/{}", decoded.name()),
            None => decoded.name().to_owned(),
        };
        format!("{} {name}: {errors}", decoded.kind())
    })
}

/// What an acceptable `object` asks for that the control plane will not do
/// ([`osm_api::unsupported`]), one admission warning each. Empty for kinds that are not ours.
pub fn admission_warnings(object: &Value) -> Vec<String> {
    match MeshObject::from_value(object.clone()) {
        Ok(Some(decoded)) => osm_api::unsupported::warnings(&decoded)
            .iter()
            .map(ToString::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// An error and its sources, `outer: inner: innermost`.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
