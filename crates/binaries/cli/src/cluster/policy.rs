//! `osm policy check-pods SRC_NS/SRC_POD DST_NS/DST_POD`: may the source pod call the destination
//! pod, and why. This module reads the cluster (the two pods, MeshConfig `osm-mesh-config` in the
//! control plane's namespace, and the TrafficTargets, HTTPRouteGroups and TCPRoutes of the
//! destination's namespace, where SMI requires them to be); the reasoning is
//! [`osm_model::explain`], shared with `osm verify connectivity`.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow, bail};
use k8s_openapi::api::core::v1::Pod as KubePod;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams};
use osm_api::config::MeshConfig;
use osm_api::smi::access::TrafficTarget;
use osm_api::smi::specs::{HTTPRouteGroup, TCPRoute};
use osm_api::validate::Validate;
use osm_model::explain::{Explanation, explain};
use osm_model::{MeshInput, ObjectRef, Pod, PodRef};
use serde::de::DeserializeOwned;

use super::{api_error, get_pod, is_not_found, parse_namespaced, proxy_uuid, with_client};
use crate::output::{OutputFormat, print_structured};
use osm_api::contract::MESH_CONFIG_NAME;

#[derive(clap::Subcommand, Debug)]
pub enum PolicyCommand {
    /// Check whether a source pod may send traffic to a destination pod, and by which SMI
    /// TrafficTarget and routes (or because permissive mode is on).
    CheckPods {
        /// The source pod, <namespace>/<pod> (or <pod> in namespace default).
        #[arg(value_name = "SOURCE_POD")]
        source: String,
        /// The destination pod, <namespace>/<pod> (or <pod> in namespace default).
        #[arg(value_name = "DESTINATION_POD")]
        destination: String,
        /// Output format (the table form is the explanation as text).
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: OutputFormat,
    },
}

pub fn run(global: &crate::Global, command: PolicyCommand) -> Result<std::process::ExitCode> {
    let PolicyCommand::CheckPods {
        source,
        destination,
        output,
    } = command;
    let (src_ns, src_name) = parse_namespaced(&source, "the source pod")?;
    let (dst_ns, dst_name) = parse_namespaced(&destination, "the destination pod")?;
    with_client(global, |client| async move {
        let src = meshed_pod(&client, &src_ns, &src_name).await?;
        let dst = meshed_pod(&client, &dst_ns, &dst_name).await?;
        let (explanation, warnings) = explain_pods(&client, &global.osm_namespace, &src, &dst).await?;
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        if !print_structured(output, &explanation)? {
            print!("{explanation}");
        }
        Ok(std::process::ExitCode::SUCCESS)
    })
}

/// A pod that exists and has a sidecar (the `osm-proxy-uuid` label the injector sets).
async fn meshed_pod(client: &kube::Client, ns: &str, name: &str) -> Result<KubePod> {
    let pod = get_pod(client, ns, name).await?;
    if proxy_uuid(&pod).is_none() {
        bail!(
            "pod {ns}/{name} is not part of a mesh (no {} label: no sidecar was injected)",
            osm_api::contract::PROXY_UUID_LABEL
        );
    }
    Ok(pod)
}

/// The model's view of a Kubernetes pod.
pub fn model_pod(pod: &KubePod) -> Pod {
    let labels: BTreeMap<String, String> = pod.metadata.labels.clone().unwrap_or_default();
    Pod {
        id: pod_ref(pod),
        service_account: pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into()),
        proxy_uuid: labels.get(osm_api::contract::PROXY_UUID_LABEL).cloned(),
        ip: pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok()),
        labels,
        hostname: pod.spec.as_ref().and_then(|s| s.hostname.clone()),
        subdomain: pod.spec.as_ref().and_then(|s| s.subdomain.clone()),
    }
}

fn pod_ref(pod: &KubePod) -> PodRef {
    PodRef::new(
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// Whether `src` may call `dst`, from the cluster's MeshConfig and the SMI policies of `dst`'s
/// namespace; plus warnings about policy objects that were skipped as invalid.
pub async fn explain_pods(
    client: &kube::Client,
    osm_namespace: &str,
    src: &KubePod,
    dst: &KubePod,
) -> Result<(Explanation, Vec<String>)> {
    let mut input = MeshInput::new("cluster.local");
    let mut warnings = Vec::new();
    input.mesh_config = Api::<MeshConfig>::namespaced(client.clone(), osm_namespace)
        .get(MESH_CONFIG_NAME)
        .await
        .map_err(|e| match e {
            e if is_not_found(&e) => anyhow!(
                "MeshConfig {osm_namespace}/{MESH_CONFIG_NAME} not found (is the mesh installed in \
                 namespace {osm_namespace}? see --osm-namespace)"
            ),
            e => api_error(e).context(format!("reading MeshConfig {osm_namespace}/{MESH_CONFIG_NAME}")),
        })?
        .spec;
    for pod in [src, dst] {
        let p = model_pod(pod);
        input.pods.insert(p.id.clone(), p);
    }
    if !input.mesh_config.traffic.enable_permissive_traffic_policy_mode {
        let ns = dst.metadata.namespace.as_deref().unwrap_or("default");
        for (id, tt) in list_valid::<TrafficTarget>(client, ns, &mut warnings).await? {
            input.traffic_targets.insert(id, tt.spec);
        }
        for (id, g) in list_valid::<HTTPRouteGroup>(client, ns, &mut warnings).await? {
            input.http_route_groups.insert(id, g.spec);
        }
        for (id, r) in list_valid::<TCPRoute>(client, ns, &mut warnings).await? {
            input.tcp_routes.insert(id, r.spec);
        }
    }
    let explanation = explain(&input, &pod_ref(src), &pod_ref(dst))?;
    Ok((explanation, warnings))
}

/// The objects of kind `K` in `ns` that decode and validate; the others become warnings naming
/// them (a broken object does not hide the rest). A kind whose CRD is not installed lists nothing.
async fn list_valid<K>(
    client: &kube::Client,
    ns: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<(ObjectRef, K)>>
where
    K: kube::Resource<DynamicType = ()> + DeserializeOwned + Validate,
{
    let resource = ApiResource::erase::<K>(&());
    let kind = resource.kind.clone();
    let list = match Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list,
        Err(e) if is_not_found(&e) => {
            warnings.push(format!("{kind} is not installed in this cluster (CRD missing)"));
            return Ok(Vec::new());
        }
        Err(e) => return Err(api_error(e).context(format!("listing {kind}s in namespace {ns}"))),
    };
    let mut out = Vec::new();
    for item in list.items {
        let id = ObjectRef::new(ns, item.metadata.name.clone().unwrap_or_default());
        let mut value = serde_json::to_value(&item)?;
        value["apiVersion"] = resource.api_version.clone().into();
        value["kind"] = kind.clone().into();
        match serde_json::from_value::<K>(value) {
            Ok(object) => match object.validate() {
                Ok(()) => out.push((id, object)),
                Err(errors) => {
                    let why: Vec<String> = errors
                        .iter()
                        .map(|e| format!("{}: {}", e.field, e.message))
                        .collect();
                    warnings.push(format!("{kind} {id} is invalid and ignored: {}", why.join("; ")));
                }
            },
            Err(e) => warnings.push(format!("{kind} {id} cannot be read and is ignored: {e}")),
        }
    }
    Ok(out)
}
