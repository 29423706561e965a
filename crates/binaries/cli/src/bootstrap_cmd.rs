//! `osm bootstrap`: an Envoy bootstrap for a workload identity, signed by the local controller's CA.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use osm_ca::{CertificateAuthority, TrustDomain};
use osm_model::{Pod, PodRef};
use osm_xds::bootstrap::AdsApi;

#[derive(clap::Args)]
pub struct BootstrapArgs {
    /// The workload's namespace.
    #[arg(long)]
    namespace: String,
    /// The workload's ServiceAccount (its mesh identity).
    #[arg(long)]
    service_account: String,
    /// The proxy uuid; must match the pod's `osm-proxy-uuid` in the controller's config directory.
    #[arg(long)]
    proxy_uuid: String,
    /// Host or IP where the controller's ADS port (15128) is reachable.
    #[arg(long, default_value = "127.0.0.1")]
    ads_host: String,
    /// Use incremental (delta) ADS instead of state of the world.
    #[arg(long)]
    delta: bool,
    /// The controller's state directory (holds the CA).
    #[arg(long, default_value_os_t = crate::default_state_dir())]
    state_dir: PathBuf,
    /// Where to write the bootstrap (contains a private key; written with mode 0600).
    #[arg(long, short)]
    output: PathBuf,
    /// A Pod manifest (say, the workload's Pod in the controller's config directory) whose liveness,
    /// readiness and startup probes the sidecar serves, rewritten exactly as the injector rewrites them
    /// on Kubernetes; the rewritten probes are printed for the host's health checker.
    #[arg(long, value_name = "POD_YAML")]
    probes_from: Option<PathBuf>,
}

/// The probes of the Pod in `path`, as the injector plans them.
fn probe_plan(path: &std::path::Path) -> Result<osm_webhook::inject::ProbePlan> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let pod: k8s_openapi::api::core::v1::Pod =
        serde_saphyr::from_str(&text).with_context(|| format!("{}: not a Pod", path.display()))?;
    let spec = pod
        .spec
        .with_context(|| format!("{}: the Pod has no spec", path.display()))?;
    osm_webhook::inject::plan_probes(&spec).with_context(|| path.display().to_string())
}

/// One line per rewritten probe: what a health checker must send instead of the original probe.
fn probe_lines(plan: &osm_webhook::inject::ProbePlan) -> Vec<String> {
    let mut lines: Vec<String> = plan
        .edits
        .iter()
        .map(|e| {
            let get = &e.http_get;
            let scheme = get.scheme.as_deref().unwrap_or("HTTP");
            let port = match &get.port {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => n.to_string(),
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s.clone(),
            };
            let headers: String = get
                .http_headers
                .iter()
                .flatten()
                .map(|h| format!(" (header {}: {})", h.name, h.value))
                .collect();
            format!(
                "container {} {}: {scheme} GET :{port}{}{headers}",
                e.container,
                e.field,
                get.path.as_deref().unwrap_or("/")
            )
        })
        .collect();
    if !plan.healthcheck_ports.is_empty() {
        let ports: Vec<String> = plan.healthcheck_ports.iter().map(u16::to_string).collect();
        lines.push(format!(
            "TCP probes: run `osm-init healthcheck --allowed-ports={}` on the host (port 15904)",
            ports.join(",")
        ));
    }
    if !plan.extra_ports.is_empty() {
        let ports: Vec<String> = plan.extra_ports.iter().map(u16::to_string).collect();
        lines.push(format!(
            "run osm-init with --inbound-port-exclusion-list={}",
            ports.join(",")
        ));
    }
    lines
}

pub fn run(osm_namespace: &str, a: BootstrapArgs) -> Result<()> {
    let ca = CertificateAuthority::load_or_create(
        &a.state_dir,
        TrustDomain::default(),
        Duration::from_secs(10 * 365 * 24 * 3600),
    )
    .with_context(|| format!("loading the CA from {}", a.state_dir.display()))?;
    let pod = Pod {
        id: PodRef::new(&a.namespace, &a.proxy_uuid),
        service_account: a.service_account.clone(),
        proxy_uuid: Some(a.proxy_uuid.clone()),
        ip: None,
        labels: Default::default(),
        hostname: None,
        subdomain: None,
    };
    let api = if a.delta {
        AdsApi::Delta
    } else {
        AdsApi::StateOfTheWorld
    };
    let server_name = osm_api::contract::ads_server_name(osm_namespace);
    let plan = match &a.probes_from {
        Some(path) => probe_plan(path)?,
        None => Default::default(),
    };
    let yaml = osm_xds::proxy_bootstrap::render(&ca, &pod, &a.ads_host, &server_name, api, &plan.probes)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&a.output)
        .with_context(|| format!("writing {}", a.output.display()))?;
    f.write_all(yaml.as_bytes())?;
    println!(
        "wrote {} for {}.{} (node id {}.sidecar.{}.{}.cluster.local); start Envoy with: envoy -c {}",
        a.output.display(),
        a.service_account,
        a.namespace,
        a.proxy_uuid,
        a.service_account,
        a.namespace,
        a.output.display()
    );
    for line in probe_lines(&plan) {
        println!("probe: {line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Pod file's probes come out as the injector rewrites them, with what the host must run.
    #[test]
    fn probes_from_a_pod_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yaml");
        let yaml = [
            "apiVersion: v1",
            "kind: Pod",
            "metadata: {name: web, namespace: shop}",
            "spec:",
            "  containers:",
            "  - name: web",
            "    livenessProbe: {httpGet: {port: 8080, path: /live}}",
            "    readinessProbe: {tcpSocket: {port: 5432}}",
            "  - name: admin",
            "    livenessProbe: {httpGet: {port: 9000, path: /live}}",
        ]
        .join("\n");
        std::fs::write(&path, yaml).unwrap();
        let plan = probe_plan(&path).unwrap();
        assert_eq!(plan.probes.len(), 2);
        assert_eq!(
            probe_lines(&plan),
            [
                "container 0 livenessProbe: HTTP GET :15901/osm-liveness-probe",
                "container 0 readinessProbe: HTTP GET :15904/osm-healthcheck (header Original-Tcp-Port: 5432)",
                "container 1 livenessProbe: HTTP GET :15905/osm-liveness-probe/admin",
                "TCP probes: run `osm-init healthcheck --allowed-ports=5432` on the host (port 15904)",
                "run osm-init with --inbound-port-exclusion-list=15905",
            ]
        );
    }
}
