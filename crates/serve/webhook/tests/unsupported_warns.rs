//! Nothing accepted and ignored, in local mode: every entry of `osm_api::unsupported::UNSUPPORTED`,
//! written to a manifest directory, is served and reported as a warning naming its file, document,
//! object and field. (The Kubernetes side, the admission warning kubectl prints, is in `envtest.rs`.)
#![forbid(unsafe_code)]

#[path = "support/unsupported_samples.rs"]
mod samples;

use osm_sources::ManifestDir;

#[test]
fn unsupported_warns_in_local_mode() {
    let mut missing = Vec::new();
    for (entry, name, object) in samples::all("shop") {
        let dir = tempfile::tempdir().expect("tempdir");
        let yaml = serde_saphyr::to_string(&object).expect("yaml");
        std::fs::write(dir.path().join("policy.yaml"), yaml).expect("write");
        let loaded = ManifestDir::new(dir.path())
            .load()
            .unwrap_or_else(|errors| panic!("{entry:?}: the sample must be valid: {errors:?}"));
        let kind = object["kind"].as_str().expect("kind");
        let want_object = format!("{kind} shop/{name}");
        let found = loaded.warnings.iter().find(|w| {
            w.file.to_str() == Some("policy.yaml")
                && w.document == 1
                && w.object.as_deref() == Some(want_object.as_str())
                && w.field.as_deref() == samples::field(entry)
                && w.message.contains("not supported yet")
        });
        match found {
            Some(w) => {
                // What the user reads: file, object, field, then why.
                let text = w.to_string();
                assert!(
                    text.starts_with(&format!("policy.yaml (document 1, {want_object}): ")),
                    "{text}"
                );
                if let Some(field) = samples::field(entry) {
                    assert!(text.contains(&format!(": {field}: not supported yet")), "{text}");
                }
            }
            None => missing.push(format!("{entry:?}: got {:?}", loaded.warnings)),
        }
    }
    assert!(
        missing.is_empty(),
        "entries without a local-mode warning:\n{}",
        missing.join("\n")
    );
}

/// The defaults warn about nothing but what they really ask for: a MeshConfig at upstream's
/// defaults earns exactly the entries whose default is "on" (WASM stats), so a clean install is not
/// buried in warnings.
#[test]
fn unsupported_warns_not_for_defaults() {
    let spec = osm_api::config::MeshConfigSpec::default();
    let fields: Vec<&str> = osm_api::unsupported::mesh_config_fields(&spec)
        .into_iter()
        .map(|(path, _)| path)
        .collect();
    assert_eq!(fields, ["spec.featureFlags.enableWASMStats"]);
}
