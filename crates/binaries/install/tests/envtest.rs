//! The install against a real kube-apiserver v1.20: everything is created, a second apply changes
//! nothing (every object reported unchanged, no resourceVersion moved), the mesh is listed, the
//! Deployment wait sees status changes (the test plays kubelet), the CRDs refuse a wrongly typed
//! MeshConfig, and uninstall removes the install (cluster-wide objects and the namespace only when
//! asked). Each test starts its own apiserver; without the binaries it skips loudly (fails under
//! `CI=true`).

#![forbid(unsafe_code)]

use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use osm_api::config::{MeshConfig, MeshConfigSpec};
use osm_install::cluster::{ClusterError, api_for, wait_for_deployments};
use osm_install::{
    ApplyOutcome, FIELD_MANAGER, InstallOptions, UninstallOptions, Values, apply, describe, mesh_list,
    render, uninstall,
};
use serde_json::{Value, json};

fn options(namespace: &str, mesh: &str) -> InstallOptions {
    let mut values = Values::default();
    values.osm.osm_namespace = namespace.into();
    values.osm.mesh_name = mesh.into();
    values.set("osm.enableEgress=false").expect("valid");
    InstallOptions {
        values,
        set: vec!["osm.enableEgress=false".into()],
    }
}

async fn exists(client: &Client, object: &Value) -> anyhow::Result<Option<String>> {
    let (api, name) = api_for(client, object)?;
    Ok(api
        .get_opt(&name)
        .await
        .with_context(|| format!("reading {}", describe(object)))?
        .map(|o| o.resource_version().unwrap_or_default()))
}

/// Marks a Deployment available, as a kubelet + controller-manager would.
async fn play_kubelet(client: &Client, namespace: &str, name: &str) -> anyhow::Result<()> {
    let api = Api::<Deployment>::namespaced(client.clone(), namespace);
    let status = json!({"status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .with_context(|| format!("patching status of {namespace}/{name}"))?;
    Ok(())
}

/// Install on an empty apiserver creates every object; re-applying reports all unchanged and moves
/// no resourceVersion; the mesh is listed; uninstall removes the mesh's objects and keeps the CRDs
/// and namespace until asked.
#[tokio::test]
async fn install_reapply_list_uninstall() -> anyhow::Result<()> {
    let Some(assets) = osm_envtest::require_or_skip("install_reapply_list_uninstall") else {
        return Ok(());
    };
    let server = osm_envtest::ApiServer::start_with(&assets).await?;
    let client = server.client();
    let ns = "osm-install-it1";
    let opts = options(ns, "osm");
    let objects = render(&opts);

    let first = apply(&client, &objects, FIELD_MANAGER).await?;
    assert_eq!(first.objects.len(), objects.len());
    assert_eq!(
        first.count(ApplyOutcome::Created),
        objects.len(),
        "an empty apiserver: everything created: {:?}",
        first.objects
    );
    for object in &objects {
        ensure!(
            exists(&client, object).await?.is_some(),
            "{} missing",
            describe(object)
        );
    }

    // The apiserver itself updates CRD status after the first apply: compare with what is stored now.
    let mut stored = std::collections::BTreeMap::new();
    for object in &objects {
        stored.insert(
            describe(object),
            exists(&client, object).await?.unwrap_or_default(),
        );
    }
    let second = apply(&client, &objects, FIELD_MANAGER).await?;
    let changed: Vec<_> = second
        .objects
        .iter()
        .filter(|o| o.outcome != ApplyOutcome::Unchanged)
        .collect();
    assert!(changed.is_empty(), "a re-apply changed: {changed:?}");
    assert_eq!(second.objects.len(), objects.len());
    for applied in &second.objects {
        assert_eq!(
            stored.get(&applied.object),
            Some(&applied.resource_version),
            "{} moved",
            applied.object
        );
    }
    for object in &objects {
        let now = exists(&client, object).await?.unwrap_or_default();
        assert_eq!(stored[&describe(object)], now, "{} moved", describe(object));
    }

    let meshes = mesh_list(&client).await?;
    assert_eq!(meshes.len(), 1, "{meshes:?}");
    assert_eq!(meshes[0].name, "osm");
    assert_eq!(meshes[0].namespace, ns);
    assert_eq!(meshes[0].version, osm_install::VERSION);
    assert!(meshes[0].enforce_single_mesh);
    assert_eq!(meshes[0].controller_replicas, "0/1");

    // What bootstrap would do: create osm-mesh-config from the preset.
    let api = Api::<MeshConfig>::namespaced(client.clone(), ns);
    let mut mc = MeshConfig::new("osm-mesh-config", opts.mesh_config_spec());
    mc.metadata.namespace = Some(ns.into());
    api.create(&PostParams::default(), &mc)
        .await
        .context("creating osm-mesh-config")?;

    let report = uninstall(&client, "osm", ns, &UninstallOptions::default()).await?;
    eprintln!("deleted: {:#?}", report.deleted);
    for object in &objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        let present = exists(&client, object).await?.is_some();
        match kind {
            "Namespace" | "CustomResourceDefinition" => {
                ensure!(present, "{} deleted without the flag", describe(object))
            }
            _ => ensure!(!present, "{} left behind", describe(object)),
        }
    }
    ensure!(
        api.get_opt("osm-mesh-config").await?.is_none(),
        "MeshConfig left behind"
    );
    let again = uninstall(&client, "osm", ns, &UninstallOptions::default()).await?;
    assert!(again.deleted.is_empty(), "idempotent: {:?}", again.deleted);
    assert!(mesh_list(&client).await?.is_empty());

    let all = UninstallOptions {
        delete_namespace: true,
        delete_cluster_wide_resources: true,
        ca_bundle_secret_name: String::new(),
    };
    let report = uninstall(&client, "osm", ns, &all).await?;
    let crds = osm_api::crds::all().len();
    assert_eq!(
        report
            .deleted
            .iter()
            .filter(|d| d.starts_with("CustomResourceDefinition "))
            .count(),
        crds
    );
    // No namespace controller in envtest: the namespace is Terminating rather than gone.
    let namespace = Api::<Namespace>::all(client.clone()).get_opt(ns).await?;
    assert!(
        namespace.is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
        "namespace {ns} not being deleted"
    );
    Ok(())
}

/// The Deployment wait watches status: it times out while nothing is available and returns once the
/// test (playing kubelet) marks the three Deployments available.
#[tokio::test]
async fn wait_for_deployments_sees_status() -> anyhow::Result<()> {
    let Some(assets) = osm_envtest::require_or_skip("wait_for_deployments_sees_status") else {
        return Ok(());
    };
    let server = osm_envtest::ApiServer::start_with(&assets).await?;
    let client = server.client();
    let ns = "osm-install-it2";
    apply(&client, &render(&options(ns, "blue")), FIELD_MANAGER).await?;
    let names = ["osm-controller", "osm-injector", "osm-bootstrap"];

    match wait_for_deployments(&client, ns, &names, Duration::from_millis(300), |_| {}).await {
        Err(ClusterError::Timeout { what, .. }) => {
            assert!(what.contains("osm-controller"), "{what}")
        }
        other => bail!("expected a timeout, got {other:?}"),
    }

    let waiter = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut ready = Vec::new();
            wait_for_deployments(&client, ns, &names, Duration::from_secs(30), |n| {
                ready.push(n.to_string())
            })
            .await
            .map(|()| ready)
        })
    };
    for name in names {
        play_kubelet(&client, ns, name).await?;
    }
    let ready = waiter.await??;
    assert_eq!(ready, names);
    assert_eq!(mesh_list(&client).await?[0].controller_replicas, "1/1");
    Ok(())
}

/// The installed CRDs refuse `spec.traffic.enableEgress: "no"` with a message naming the field.
#[tokio::test]
async fn installed_crds_refuse_a_wrongly_typed_meshconfig() -> anyhow::Result<()> {
    let Some(assets) = osm_envtest::require_or_skip("installed_crds_refuse_a_wrongly_typed_meshconfig")
    else {
        return Ok(());
    };
    let server = osm_envtest::ApiServer::start_with(&assets).await?;
    let client = server.client();
    let ns = "osm-install-it3";
    apply(&client, &render(&options(ns, "osm")), FIELD_MANAGER).await?;
    let api = Api::<MeshConfig>::namespaced(client.clone(), ns);
    let mut mc = MeshConfig::new("osm-mesh-config", MeshConfigSpec::default());
    mc.metadata.namespace = Some(ns.into());
    // A just-Established CRD may take a moment to be served.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match api.create(&PostParams::default(), &mc).await {
            Ok(_) => break,
            Err(kube::Error::Api(s)) if s.code == 404 && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => return Err(e).context("creating osm-mesh-config"),
        }
    }
    let bad = Patch::Merge(json!({"spec": {"traffic": {"enableEgress": "no"}}}));
    match api.patch("osm-mesh-config", &PatchParams::default(), &bad).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(
                status.message.contains("spec.traffic.enableEgress"),
                "the message should name spec.traffic.enableEgress: {}",
                status.message
            );
        }
        other => bail!("enableEgress: \"no\" should be refused, got {other:?}"),
    }
    Ok(())
}
