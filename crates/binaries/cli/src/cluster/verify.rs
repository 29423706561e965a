//! `osm verify connectivity` and `osm verify control-plane-health`: a list of checks, each PASS,
//! FAIL or SKIPPED with its reason; the command fails when any check fails.
//!
//! Connectivity: both pods exist, their namespaces are monitored by the same mesh, both have a
//! sidecar (an `envoy` container and the `osm-proxy-uuid` label), the service (if given) selects the
//! destination pod, the policy allows the pair ([`osm_model::explain`]), and — read through the API
//! server's pod proxy — the source Envoy has a cluster for the destination service. Control plane:
//! the osm-controller, osm-injector and osm-bootstrap Deployments are available and osm-controller
//! answers `/health/ready` (through the service proxy).

use osm_api::contract::HTTP_PORT;
use std::fmt;

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use osm_model::AppProtocol;
use osm_model::explain::{RuleExplanation, Verdict};

use super::{
    api_error, envoy_admin, get_namespace, get_pod, has_envoy, is_not_found, monitored_by, parse_namespaced,
    proxy_get, proxy_uuid, with_client,
};
use osm_api::contract::{DEFAULT_MESH_NAME, ENVOY_CONTAINER_NAME, MONITORED_BY_LABEL, PROXY_UUID_LABEL};

#[derive(clap::Subcommand, Debug)]
pub enum VerifyCommand {
    /// Verify that a pod can reach another pod (and service) through the mesh.
    Connectivity {
        /// The source pod, <namespace>/<pod>.
        #[arg(long, value_name = "NS/POD")]
        from_pod: String,
        /// The destination pod, <namespace>/<pod>.
        #[arg(long, value_name = "NS/POD")]
        to_pod: String,
        /// The destination service, <namespace>/<service>.
        #[arg(long, value_name = "NS/SVC")]
        to_service: Option<String>,
        /// The application protocol of the destination.
        #[arg(long, value_enum, default_value = "http")]
        app_protocol: Protocol,
        /// Name of the mesh both namespaces should belong to.
        #[arg(long, default_value = DEFAULT_MESH_NAME)]
        mesh_name: String,
    },
    /// Verify that the control plane is running and healthy.
    ControlPlaneHealth,
}

/// `--app-protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Http,
    Tcp,
}

/// A check's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Pass,
    Fail,
    Skipped,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skipped => "SKIPPED",
        })
    }
}

struct Check {
    name: String,
    status: Status,
    reason: String,
}

#[derive(Default)]
struct Report(Vec<Check>);

impl Report {
    fn add(&mut self, name: impl Into<String>, status: Status, reason: impl Into<String>) {
        let check = Check {
            name: name.into(),
            status,
            reason: reason.into(),
        };
        println!("[{}] {}: {}", check.status, check.name, check.reason);
        self.0.push(check);
    }

    fn pass(&mut self, name: &str, reason: impl Into<String>) {
        self.add(name, Status::Pass, reason);
    }

    fn fail(&mut self, name: &str, reason: impl Into<String>) {
        self.add(name, Status::Fail, reason);
    }

    fn skip(&mut self, name: &str, reason: impl Into<String>) {
        self.add(name, Status::Skipped, reason);
    }

    fn check(&mut self, name: &str, ok: bool, pass: impl Into<String>, fail: impl Into<String>) -> bool {
        if ok {
            self.pass(name, pass);
        } else {
            self.fail(name, fail);
        }
        ok
    }

    /// Prints the summary; failure when any check failed.
    fn finish(self) -> std::process::ExitCode {
        let count = |s: Status| self.0.iter().filter(|c| c.status == s).count();
        let (pass, fail, skipped) = (count(Status::Pass), count(Status::Fail), count(Status::Skipped));
        println!("---------------------------------------------");
        if fail == 0 {
            println!("Verification succeeded: {pass} passed, {skipped} skipped");
            std::process::ExitCode::SUCCESS
        } else {
            let failed: Vec<&str> = self
                .0
                .iter()
                .filter(|c| c.status == Status::Fail)
                .map(|c| c.name.as_str())
                .collect();
            println!(
                "Verification failed: {fail} failed ({}), {pass} passed, {skipped} skipped",
                failed.join(", ")
            );
            std::process::ExitCode::FAILURE
        }
    }
}

pub fn run(global: &crate::Global, command: VerifyCommand) -> Result<std::process::ExitCode> {
    match command {
        VerifyCommand::Connectivity {
            from_pod,
            to_pod,
            to_service,
            app_protocol,
            mesh_name,
        } => {
            let from = parse_namespaced(&from_pod, "--from-pod")?;
            let to = parse_namespaced(&to_pod, "--to-pod")?;
            let service = to_service
                .as_deref()
                .map(|s| parse_namespaced(s, "--to-service"))
                .transpose()?;
            with_client(global, |client| async move {
                let args = Connectivity {
                    from,
                    to,
                    service,
                    protocol: app_protocol,
                    mesh: mesh_name,
                };
                Ok(connectivity(&client, &global.osm_namespace, args).await)
            })
        }
        VerifyCommand::ControlPlaneHealth => with_client(global, |client| async move {
            Ok(control_plane(&client, &global.osm_namespace).await)
        }),
    }
}

struct Connectivity {
    from: (String, String),
    to: (String, String),
    service: Option<(String, String)>,
    protocol: Protocol,
    mesh: String,
}

const PODS: &str = "pods exist";
const NAMESPACES: &str = "namespaces in mesh";
const SOURCE_SIDECAR: &str = "source sidecar";
const DESTINATION_SIDECAR: &str = "destination sidecar";
const SERVICE: &str = "service selects destination";
const POLICY: &str = "policy allows";
const SOURCE_ENVOY: &str = "source Envoy config";

async fn connectivity(client: &kube::Client, osm_ns: &str, args: Connectivity) -> std::process::ExitCode {
    let mut report = Report::default();
    let ((src_ns, src_name), (dst_ns, dst_name)) = (&args.from, &args.to);
    println!(
        "Verifying connectivity from pod {src_ns}/{src_name} to pod {dst_ns}/{dst_name}{} (mesh {}, {})",
        args.service
            .as_ref()
            .map(|(ns, n)| format!(" through service {ns}/{n}"))
            .unwrap_or_default(),
        args.mesh,
        match args.protocol {
            Protocol::Http => "http",
            Protocol::Tcp => "tcp",
        },
    );
    let (src, dst) = match (
        get_pod(client, src_ns, src_name).await,
        get_pod(client, dst_ns, dst_name).await,
    ) {
        (Ok(s), Ok(d)) => {
            report.pass(PODS, format!("found {src_ns}/{src_name} and {dst_ns}/{dst_name}"));
            (s, d)
        }
        (s, d) => {
            let errs: Vec<String> = [s.err(), d.err()]
                .into_iter()
                .flatten()
                .map(|e| format!("{e:#}"))
                .collect();
            report.fail(PODS, errs.join("; "));
            for name in [
                NAMESPACES,
                SOURCE_SIDECAR,
                DESTINATION_SIDECAR,
                SERVICE,
                POLICY,
                SOURCE_ENVOY,
            ] {
                report.skip(name, "the pods are needed");
            }
            return report.finish();
        }
    };

    // Namespaces.
    let mut meshes = Vec::new();
    for ns in [src_ns, dst_ns] {
        meshes.push(match get_namespace(client, ns).await {
            Ok(n) => monitored_by(&n).map(str::to_string).ok_or(format!(
                "namespace {ns} is not monitored by any mesh (no {MONITORED_BY_LABEL} label, or ignored)"
            )),
            Err(e) => Err(format!("{e:#}")),
        });
    }
    let problems: Vec<String> = meshes
        .iter()
        .zip([src_ns, dst_ns])
        .filter_map(|(m, ns)| match m {
            Err(e) => Some(e.clone()),
            Ok(m) if *m != args.mesh => Some(format!(
                "namespace {ns} is monitored by mesh {m}, not {}",
                args.mesh
            )),
            Ok(_) => None,
        })
        .collect();
    report.check(
        NAMESPACES,
        problems.is_empty(),
        format!(
            "namespaces {src_ns} and {dst_ns} are monitored by mesh {}",
            args.mesh
        ),
        problems.join("; "),
    );

    // Sidecars.
    for (name, pod) in [(SOURCE_SIDECAR, &src), (DESTINATION_SIDECAR, &dst)] {
        let id = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        let mut missing = Vec::new();
        if !has_envoy(pod) {
            missing.push(format!("no {ENVOY_CONTAINER_NAME} container"));
        }
        if proxy_uuid(pod).is_none() {
            missing.push(format!("no {PROXY_UUID_LABEL} label"));
        }
        report.check(
            name,
            missing.is_empty(),
            format!(
                "pod {id} has an {ENVOY_CONTAINER_NAME} sidecar ({PROXY_UUID_LABEL}={})",
                proxy_uuid(pod).unwrap_or("")
            ),
            format!("pod {id} is not injected: {}", missing.join(", ")),
        );
    }

    // Service.
    let service = match &args.service {
        None => {
            report.skip(SERVICE, "no --to-service given");
            None
        }
        Some((ns, name)) => check_service(&mut report, client, ns, name, &dst, args.protocol).await,
    };

    // Policy.
    match super::policy::explain_pods(client, osm_ns, &src, &dst).await {
        Ok((e, _)) => {
            let (src_id, dst_id) = (&e.source_identity, &e.destination_identity);
            match &e.verdict {
                Verdict::AllowedByPermissiveMode => report.pass(
                    POLICY,
                    "permissive traffic policy mode is enabled: every meshed pod may call every other",
                ),
                Verdict::AllowedByTrafficTargets { targets } => {
                    let names: Vec<String> = targets.iter().map(|t| t.traffic_target.to_string()).collect();
                    let names = names.join(", ");
                    let tcp_rule = targets
                        .iter()
                        .flat_map(|t| &t.rules)
                        .any(|r| matches!(r, RuleExplanation::Tcp { .. }));
                    // HTTPRouteGroup matches only apply to HTTP; a TCP port needs a TCPRoute rule.
                    report.check(
                        POLICY,
                        args.protocol == Protocol::Http || tcp_rule,
                        format!("ServiceAccount {src_id} may call {dst_id} by TrafficTarget {names}"),
                        format!(
                            "ServiceAccount {src_id} may call {dst_id} only over HTTPRouteGroup rules \
                             (TrafficTarget {names}), which do not apply to TCP traffic: a TCPRoute rule \
                             is needed"
                        ),
                    );
                }
                Verdict::Denied { .. } => {
                    let text = e.to_string();
                    let why = text.lines().nth(2).unwrap_or_default().trim();
                    report.fail(POLICY, format!("SMI mode: {src_id} may not call {dst_id}: {why}"));
                }
            }
        }
        Err(e) => report.skip(POLICY, format!("cannot evaluate the policy: {e:#}")),
    }

    // The source Envoy's clusters.
    match &service {
        None => report.skip(
            SOURCE_ENVOY,
            "needs --to-service (the cluster is named after the service)",
        ),
        Some(svc) => {
            let (ns, name) = args.service.as_ref().expect("service was given");
            let ports: Vec<String> = svc
                .spec
                .iter()
                .flat_map(|s| s.ports.iter().flatten())
                .map(|p| format!("{ns}/{name}|{}", p.port))
                .collect();
            match envoy_admin(client, src_ns, src_name, "clusters").await {
                Ok(text) => {
                    let found: Vec<&String> = ports
                        .iter()
                        .filter(|c| text.lines().any(|l| l.starts_with(&format!("{c}::"))))
                        .collect();
                    report.check(
                        SOURCE_ENVOY,
                        !found.is_empty(),
                        format!(
                            "the source Envoy has cluster {}",
                            found.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                        format!("the source Envoy has none of the clusters {}", ports.join(", ")),
                    );
                }
                Err(e) => report.skip(SOURCE_ENVOY, format!("{e:#}")),
            }
        }
    }
    report.finish()
}

/// The service exists, selects the destination pod, and has a port of the expected protocol.
async fn check_service(
    report: &mut Report,
    client: &kube::Client,
    ns: &str,
    name: &str,
    dst: &Pod,
    protocol: Protocol,
) -> Option<Service> {
    let svc = match Api::<Service>::namespaced(client.clone(), ns).get(name).await {
        Ok(s) => s,
        Err(e) if is_not_found(&e) => {
            report.fail(SERVICE, format!("service {ns}/{name} not found"));
            return None;
        }
        Err(e) => {
            report.fail(SERVICE, format!("{:#}", api_error(e)));
            return None;
        }
    };
    let spec = svc.spec.clone().unwrap_or_default();
    let selector = spec.selector.clone().unwrap_or_default();
    let labels = dst.metadata.labels.clone().unwrap_or_default();
    let dst_ns = dst.metadata.namespace.as_deref().unwrap_or_default();
    let dst_name = dst.metadata.name.as_deref().unwrap_or_default();
    let want = match protocol {
        Protocol::Http => AppProtocol::Http,
        Protocol::Tcp => AppProtocol::Tcp,
    };
    let protocol_ok = spec
        .ports
        .iter()
        .flatten()
        .any(|p| AppProtocol::detect(p.app_protocol.as_deref(), p.name.as_deref()) == want);
    if ns != dst_ns {
        report.fail(
            SERVICE,
            format!("service {ns}/{name} is not in the destination pod's namespace {dst_ns}"),
        );
    } else if selector.is_empty() {
        report.fail(SERVICE, format!("service {ns}/{name} has no selector"));
    } else if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
        let sel: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
        report.fail(
            SERVICE,
            format!(
                "service {ns}/{name} selector {} does not match pod {dst_ns}/{dst_name}",
                sel.join(",")
            ),
        );
    } else if !protocol_ok {
        report.fail(
            SERVICE,
            format!(
                "service {ns}/{name} has no {} port (by appProtocol or port name)",
                want.as_str()
            ),
        );
    } else {
        report.pass(
            SERVICE,
            format!("service {ns}/{name} selects pod {dst_ns}/{dst_name}"),
        );
    }
    Some(svc)
}

const CONTROL_PLANE: [&str; 3] = ["osm-controller", "osm-injector", "osm-bootstrap"];

/// Components whose `/health/ready` is probed (on their Service's HTTP port 9091), when available.
const PROBED: [&str; 2] = ["osm-controller", "osm-bootstrap"];

async fn control_plane(client: &kube::Client, osm_ns: &str) -> std::process::ExitCode {
    let mut report = Report::default();
    println!("Verifying the control plane in namespace {osm_ns}");
    let deployments = Api::<Deployment>::namespaced(client.clone(), osm_ns);
    let mut available_components = Vec::new();
    for name in CONTROL_PLANE {
        let check = format!("deployment {name}");
        match deployments.get(name).await {
            Ok(d) => {
                let status = d.status.unwrap_or_default();
                let wanted = d.spec.replicas.unwrap_or(1);
                let available = status.available_replicas.unwrap_or(0);
                let ok = report.check(
                    &check,
                    available >= 1,
                    format!("{osm_ns}/{name}: {available}/{wanted} replicas available"),
                    format!("{osm_ns}/{name}: no replica available (0/{wanted})"),
                );
                if ok {
                    available_components.push(name);
                }
            }
            Err(e) if is_not_found(&e) => {
                report.fail(&check, format!("deployment {osm_ns}/{name} not found"))
            }
            Err(e) => report.fail(&check, format!("{:#}", api_error(e))),
        }
    }
    for name in PROBED {
        let check = format!("{name} /health/ready");
        if !available_components.contains(&name) {
            report.skip(&check, format!("{name} has no available replica"));
            continue;
        }
        let path = format!("/api/v1/namespaces/{osm_ns}/services/{name}:{HTTP_PORT}/proxy/health/ready");
        match proxy_get(client, &path).await {
            Ok(_) => report.pass(&check, "ready"),
            Err(e) => report.fail(
                &check,
                format!("not ready through the API server's service proxy (service {osm_ns}/{name}): {e:#}"),
            ),
        }
    }
    report.finish()
}
