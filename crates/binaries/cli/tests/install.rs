//! The real `osm` binary against a real kube-apiserver v1.20: `osm install` creates the control
//! plane, a second install reports every object unchanged, an install with `--timeout` waits until
//! the test (playing kubelet) marks the Deployments available, `osm mesh list -o json` shows the
//! mesh, `osm mesh upgrade --set` changes the Deployments but not MeshConfig `osm-mesh-config`, and
//! `osm uninstall mesh -f` removes it. Skips loudly without the envtest binaries (fails under CI).

#![forbid(unsafe_code)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use osm_api::config::{MeshConfig, MeshConfigSpec};
use serde_json::{Value, json};

const NS: &str = "osm-cli-install";

fn osm(kubeconfig: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_osm"));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--osm-namespace", NS])
        .args(args)
        .stdin(Stdio::null());
    cmd
}

fn run(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out: Output = osm(kubeconfig, args).output().context("running osm")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "osm {args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    eprintln!("$ osm {}\n{stdout}", args.join(" "));
    Ok(stdout)
}

fn outcome_lines<'a>(stdout: &'a str, outcome: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .filter(|l| l.starts_with(&format!("{outcome} ")))
        .collect()
}

async fn play_kubelet(client: &Client, name: &str) -> anyhow::Result<()> {
    let status = json!({"status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}});
    Api::<Deployment>::namespaced(client.clone(), NS)
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .with_context(|| format!("marking {name} available"))?;
    Ok(())
}

#[tokio::test]
async fn install_reinstall_list_upgrade_uninstall() -> anyhow::Result<()> {
    let Some(assets) = osm_envtest::require_or_skip("install_reinstall_list_upgrade_uninstall") else {
        return Ok(());
    };
    let server = osm_envtest::ApiServer::start_with(&assets).await?;
    let kubeconfig = server.kubeconfig_path();
    let client = server.client();

    // First install: everything created; no wait.
    let first = run(
        &kubeconfig,
        &["install", "--timeout", "0s", "--set", "osm.enableEgress=false"],
    )?;
    let created = outcome_lines(&first, "created");
    assert!(
        created
            .iter()
            .any(|l| l.ends_with(&format!("Deployment {NS}/osm-controller"))),
        "{first}"
    );
    assert!(
        created
            .iter()
            .any(|l| l.ends_with("MutatingWebhookConfiguration osm-webhook-osm"))
    );
    assert!(outcome_lines(&first, "unchanged").is_empty(), "{first}");
    assert!(first.contains(&format!(
        "OSM installed successfully in namespace [{NS}] with mesh name [osm]"
    )));

    // Second install of the same values: every object unchanged.
    let second = run(
        &kubeconfig,
        &["install", "--timeout", "0s", "--set", "osm.enableEgress=false"],
    )?;
    assert_eq!(
        outcome_lines(&second, "unchanged").len(),
        created.len(),
        "{second}"
    );
    assert!(outcome_lines(&second, "created").is_empty(), "{second}");
    assert!(outcome_lines(&second, "configured").is_empty(), "{second}");

    // An install that waits: it returns once the Deployments report an available replica.
    let child = osm(
        &kubeconfig,
        &["install", "--timeout", "60s", "--set", "osm.enableEgress=false"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()?;
    for name in ["osm-controller", "osm-injector", "osm-bootstrap"] {
        play_kubelet(&client, name).await?;
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "waiting install failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["osm-controller", "osm-injector", "osm-bootstrap"] {
        assert!(
            stdout.contains(&format!("available  Deployment {NS}/{name}")),
            "{stdout}"
        );
    }

    // mesh list -o json.
    let listed: Value = serde_json::from_str(&run(&kubeconfig, &["mesh", "list", "-o", "json"])?)?;
    let meshes = listed.as_array().context("a JSON array")?;
    assert_eq!(meshes.len(), 1, "{listed}");
    assert_eq!(meshes[0]["name"], "osm");
    assert_eq!(meshes[0]["namespace"], NS);
    assert_eq!(meshes[0]["version"], env!("CARGO_PKG_VERSION"));
    let table = run(&kubeconfig, &["mesh", "list"])?;
    assert!(table.contains("MESH NAME") && table.contains(NS), "{table}");

    // Upgrade: the Deployments follow the new values, the MeshConfig (bootstrap's) is untouched.
    let mesh_configs = Api::<MeshConfig>::namespaced(client.clone(), NS);
    let mut mc = MeshConfig::new("osm-mesh-config", MeshConfigSpec::default());
    mc.metadata.namespace = Some(NS.into());
    let mc_rv = mesh_configs
        .create(&PostParams::default(), &mc)
        .await?
        .resource_version();
    let upgraded = run(
        &kubeconfig,
        &[
            "mesh",
            "upgrade",
            "--timeout",
            "0s",
            "--set",
            "osm.osmController.replicaCount=2",
        ],
    )?;
    assert!(
        upgraded.contains(&format!("configured Deployment {NS}/osm-controller")),
        "{upgraded}"
    );
    let deployments = Api::<Deployment>::namespaced(client.clone(), NS);
    assert_eq!(deployments.get("osm-controller").await?.spec.replicas, Some(2));
    assert_eq!(
        mesh_configs.get("osm-mesh-config").await?.resource_version(),
        mc_rv
    );
    let preset = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), NS)
        .get("preset-mesh-config")
        .await?;
    let preset_json = &preset.data.as_ref().context("data")?["preset-mesh-config.json"];
    let spec: MeshConfigSpec = serde_json::from_str(preset_json)?;
    assert!(
        !spec.traffic.enable_egress,
        "the install's --set survives the upgrade"
    );

    // Uninstall without prompting.
    let removed = run(&kubeconfig, &["uninstall", "mesh", "-f"])?;
    assert!(
        removed.contains(&format!("deleted    Deployment {NS}/osm-controller")),
        "{removed}"
    );
    assert!(deployments.get_opt("osm-controller").await?.is_none());
    assert!(mesh_configs.get_opt("osm-mesh-config").await?.is_none());
    let empty: Value = serde_json::from_str(&run(&kubeconfig, &["mesh", "list", "-o", "json"])?)?;
    assert_eq!(empty, json!([]));
    Ok(())
}
