//! Our CRDs and objects against a real kube-apiserver v1.20.2: every CRD from `osm_api::crds::all()`
//! is accepted and Established, the MeshConfig schema refuses a wrongly typed field with a message
//! naming it, and the bookstore SMI policies survive a round trip unchanged (nothing pruned, nothing
//! defaulted).
//!
//! Each test starts its own apiserver; without the binaries they skip loudly (fail under `CI=true`).

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt as _};
use osm_api::config::{MeshConfig, MeshConfigSpec};
use osm_envtest::{ApiServer, require_or_skip};
use serde_json::{Value, json};

const MANAGER: &str = "osm-envtest";

/// Starts an apiserver, or `None` when the test should skip.
async fn start(test: &str) -> Option<ApiServer> {
    let assets = require_or_skip(test)?;
    Some(
        ApiServer::start_with(&assets)
            .await
            .unwrap_or_else(|e| panic!("{test}: starting the test apiserver: {e}")),
    )
}

async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    osm_envtest::create_namespace(client, name, &[], &[])
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

/// The `Established` (and, when false, `NamesAccepted`) condition of a CRD, as `(status, message)`.
fn condition(crd: &CustomResourceDefinition, type_: &str) -> Option<(String, String)> {
    crd.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.message.clone().unwrap_or_default()))
}

/// What the apiserver said about our CRDs: the names applied and every `Warning` header it sent.
struct Installed {
    names: Vec<String>,
    warnings: Vec<String>,
}

/// Server-side applies `crd`, returning the apiserver's `Warning` headers; a refusal is the
/// apiserver's status message.
async fn apply_crd(client: &Client, crd: &CustomResourceDefinition) -> Result<Vec<String>, String> {
    let name = crd.name_any();
    let request = kube::core::Request::new("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
        .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(crd))
        .map_err(|e| e.to_string())?
        .map(kube::client::Body::from);
    let response = client.send(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let warnings = response
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let body = response
        .into_body()
        .collect_bytes()
        .await
        .map_err(|e| e.to_string())?;
    if !status.is_success() {
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Err(format!("{status}: {message}"));
    }
    Ok(warnings)
}

/// Server-side applies every CRD of `osm_api::crds::all()` and waits until each is Established
/// (and not flagged NonStructuralSchema). Fails with every CRD's problem at once (the apiserver's
/// own words), not only the first.
async fn install_crds(client: &Client) -> anyhow::Result<Installed> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let mut names = Vec::new();
    let mut warnings = Vec::new();
    let mut refused = Vec::new();
    for crd in osm_api::crds::all() {
        let name = crd.name_any();
        match apply_crd(client, &crd).await {
            Ok(w) => {
                warnings.extend(w.into_iter().map(|w| format!("{name}: {w}")));
                names.push(name);
            }
            Err(e) => refused.push(format!("{name}: {e}")),
        }
    }
    ensure!(
        refused.is_empty(),
        "the apiserver refused {} CRD(s):\n{}",
        refused.len(),
        refused.join("\n")
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pending = names.clone();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for name in pending {
            let crd = api
                .get(&name)
                .await
                .with_context(|| format!("reading CRD {name}"))?;
            match condition(&crd, "Established") {
                Some((status, _)) if status == "True" => {}
                established => {
                    let names_accepted = condition(&crd, "NamesAccepted");
                    still.push((name, established, names_accepted));
                }
            }
        }
        if still.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let report: Vec<String> = still
                .iter()
                .map(|(n, e, a)| format!("{n}: Established={e:?} NamesAccepted={a:?}"))
                .collect();
            bail!("CRDs not Established after 30 s:\n{}", report.join("\n"));
        }
        pending = still.into_iter().map(|(n, _, _)| n).collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for name in &names {
        let crd = api.get(name).await?;
        if let Some((status, message)) = condition(&crd, "NonStructuralSchema") {
            ensure!(status != "True", "{name} has a non-structural schema: {message}");
        }
    }
    Ok(Installed { names, warnings })
}

/// Runs `op` until it stops failing with 404/503: a just-Established CRD's resource can take a
/// moment to appear in the apiserver's handlers.
async fn retry_not_found<T, F, Fut>(what: &str, mut op: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = kube::Result<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match op().await {
            Err(kube::Error::Api(s)) if (s.code == 404 || s.code == 503) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other.with_context(|| what.to_string()),
        }
    }
}

/// The apiserver starts with RBAC on: admin (client cert or static token) may list namespaces,
/// an unknown token is refused, a ServiceAccount token (TokenRequest) is authenticated but forbidden.
#[tokio::test]
async fn apiserver_starts_with_admin_and_rbac() -> anyhow::Result<()> {
    let Some(server) = start("apiserver_starts_with_admin_and_rbac").await else {
        return Ok(());
    };
    let namespaces = Api::<Namespace>::all(server.client());
    let listed = namespaces.list(&Default::default()).await?;
    let names: Vec<String> = listed.items.iter().map(|n| n.name_any()).collect();
    ensure!(
        names.iter().any(|n| n == "kube-system"),
        "namespaces listed: {names:?}"
    );

    let by_token = Api::<Namespace>::all(server.client_for_token(server.admin_token())?);
    by_token.list(&Default::default()).await.context("admin token")?;

    let stranger = Api::<Namespace>::all(server.client_for_token("not-a-token")?);
    match stranger.list(&Default::default()).await {
        Err(kube::Error::Api(s)) if s.code == 401 => {}
        other => bail!("an unknown token should get 401, got {other:?}"),
    }

    // A ServiceAccount token: authenticated, but RBAC grants it nothing.
    create_namespace(&server.client(), "rbac-test").await?;
    let sa = k8s_openapi::api::core::v1::ServiceAccount {
        metadata: ObjectMeta {
            name: Some("probe".into()),
            ..ObjectMeta::default()
        },
        ..Default::default()
    };
    let sas = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(server.client(), "rbac-test");
    sas.create(&PostParams::default(), &sa).await?;
    let request = k8s_openapi::api::authentication::v1::TokenRequest {
        spec: Some(k8s_openapi::api::authentication::v1::TokenRequestSpec {
            audiences: Some(vec!["https://kubernetes.default.svc.cluster.local".into()]),
            expiration_seconds: Some(600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let issued = sas
        .create_token_request("probe", &PostParams::default(), &request)
        .await
        .context("TokenRequest for rbac-test/probe")?;
    let token = issued
        .status
        .and_then(|s| s.token)
        .context("TokenRequest answered without a token")?;
    let as_sa = Api::<Namespace>::all(server.client_for_token(&token)?);
    match as_sa.list(&Default::default()).await {
        Err(kube::Error::Api(s)) if s.code == 403 => {
            ensure!(
                s.message.contains("system:serviceaccount:rbac-test:probe"),
                "403 names someone else: {}",
                s.message
            );
        }
        other => bail!("a ServiceAccount without roles should get 403, got {other:?}"),
    }
    Ok(())
}

/// Every CRD we generate is accepted by a real apiserver and becomes Established.
#[tokio::test]
async fn every_crd_is_established() -> anyhow::Result<()> {
    let Some(server) = start("every_crd_is_established").await else {
        return Ok(());
    };
    let installed = install_crds(&server.client()).await?;
    assert_eq!(installed.names.len(), osm_api::crds::all().len());
    eprintln!("established: {:?}", installed.names);
    assert!(
        installed.warnings.is_empty(),
        "the apiserver warned about our CRDs:\n{}",
        installed.warnings.join("\n")
    );
    Ok(())
}

/// `kubectl patch meshconfig osm-mesh-config --type=merge -p '{"spec":{"traffic":{"enableEgress":"no"}}}'`
/// is refused by the CRD schema with a message naming the field; `enableEgress: false` is accepted.
#[tokio::test]
async fn meshconfig_schema_refuses_a_string_for_a_boolean() -> anyhow::Result<()> {
    let Some(server) = start("meshconfig_schema_refuses_a_string_for_a_boolean").await else {
        return Ok(());
    };
    let client = server.client();
    install_crds(&client).await?;
    create_namespace(&client, "osm-system").await?;

    let api = Api::<MeshConfig>::namespaced(client.clone(), "osm-system");
    let mut mesh_config = MeshConfig::new("osm-mesh-config", MeshConfigSpec::default());
    mesh_config.metadata.namespace = Some("osm-system".into());
    let post = PostParams::default();
    let created = retry_not_found("creating osm-system/osm-mesh-config", || {
        api.create(&post, &mesh_config)
    })
    .await?;
    assert_eq!(
        created.spec,
        MeshConfigSpec::default(),
        "the defaults came back changed (pruned or defaulted by the schema)"
    );
    assert!(
        created.spec.traffic.enable_egress,
        "the default is enableEgress: true"
    );

    let bad = Patch::Merge(json!({"spec": {"traffic": {"enableEgress": "no"}}}));
    match api.patch("osm-mesh-config", &PatchParams::default(), &bad).await {
        Err(kube::Error::Api(status)) => {
            eprintln!(
                "apiserver refused the patch ({}): {}",
                status.code, status.message
            );
            assert_eq!(status.code, 422, "{status:?}");
            assert!(
                status.message.contains("spec.traffic.enableEgress") && status.message.contains("boolean"),
                "the message should name spec.traffic.enableEgress and boolean: {}",
                status.message
            );
        }
        other => panic!("enableEgress: \"no\" should be refused, got {other:?}"),
    }
    let unchanged = api.get("osm-mesh-config").await?;
    assert!(
        unchanged.spec.traffic.enable_egress,
        "a refused patch changed nothing"
    );

    let good = Patch::Merge(json!({"spec": {"traffic": {"enableEgress": false}}}));
    api.patch("osm-mesh-config", &PatchParams::default(), &good)
        .await
        .context("enableEgress: false")?;
    let read = api.get("osm-mesh-config").await?;
    assert!(!read.spec.traffic.enable_egress);
    let mut expected = MeshConfigSpec::default();
    expected.traffic.enable_egress = false;
    assert_eq!(read.spec, expected, "only enableEgress changed");
    Ok(())
}

/// The bookstore demo's TrafficTargets, HTTPRouteGroups and TrafficSplit, created through the
/// apiserver, read back with the same spec.
#[tokio::test]
async fn bookstore_smi_objects_round_trip() -> anyhow::Result<()> {
    let Some(server) = start("bookstore_smi_objects_round_trip").await else {
        return Ok(());
    };
    let client = server.client();
    install_crds(&client).await?;

    let mut docs: Vec<Value> = serde_saphyr::from_multiple(osm_fixtures::BOOKSTORE_POLICIES)
        .context("parsing BOOKSTORE_POLICIES")?;
    docs.extend(
        serde_saphyr::from_multiple::<Value>(&osm_fixtures::bookstore_split(80, 20))
            .context("parsing bookstore_split")?,
    );
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in ["TrafficTarget", "HTTPRouteGroup", "TrafficSplit"] {
        ensure!(kinds.contains(&kind), "the fixtures have no {kind}: {kinds:?}");
    }

    let mut namespaces: Vec<&str> = docs
        .iter()
        .filter_map(|d| d["metadata"]["namespace"].as_str())
        .collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    for ns in namespaces {
        create_namespace(&client, ns).await?;
    }

    for doc in &docs {
        let api_version = doc["apiVersion"].as_str().context("apiVersion")?;
        let kind = doc["kind"].as_str().context("kind")?;
        let (group, version) = api_version.split_once('/').context("group/version")?;
        let info = osm_api::crds::kinds()
            .iter()
            .find(|k| k.group == group && k.version == version && k.kind == kind)
            .with_context(|| format!("{api_version} {kind} is not one of our kinds"))?;
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), info.plural);
        let object: DynamicObject = serde_json::from_value(doc.clone())?;
        let ns = object.namespace().context("namespaced")?;
        let name = object.name_any();
        let what = format!("{kind} {ns}/{name}");
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &resource);
        let post = PostParams::default();
        retry_not_found(&format!("creating {what}"), || api.create(&post, &object)).await?;
        let read = api.get(&name).await.with_context(|| format!("reading {what}"))?;
        assert_eq!(
            read.data["spec"], doc["spec"],
            "{what} came back different (pruned or defaulted by the schema)"
        );
        eprintln!("round trip ok: {what}");
    }
    Ok(())
}
