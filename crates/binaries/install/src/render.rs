//! The control plane as Kubernetes objects, built from typed k8s-openapi / osm_api values and
//! converted to JSON: the install, the upgrade and `--dry-run` all use this one rendering.
//!
//! Deterministic: no timestamps, no random names, maps ordered, so a re-render is byte-identical and
//! a re-apply of an unchanged install is a no-op on the apiserver.

use osm_api::contract::{
    ADS_PORT, APP_NAME_LABEL, APP_NAME_VALUE, BOOTSTRAP, CONTROLLER, DEBUG_PORT, HTTP_PORT, IGNORE_LABEL,
    INJECTOR, INJECTOR_PATH, INJECTOR_PORT, MONITORED_BY_LABEL, PRESET_CONFIG_MAP, PRESET_KEY,
    VALIDATOR_PATH, VALIDATOR_PORT, VALIDATOR_SERVICE,
};
use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference, ValidatingWebhook,
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, Namespace, ObjectFieldSelector,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Service, ServiceAccount, ServicePort, ServiceSpec,
};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use osm_api::config::{LocalProxyMode, MeshConfigSpec};
use serde::Serialize;
use serde_json::Value;

use crate::values::{VERSION, Values};

/// The mesh an object belongs to.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// The version that rendered it.
pub const VERSION_LABEL: &str = "app.kubernetes.io/version";
/// The `--set` arguments of the install, kept on the preset ConfigMap so `osm mesh upgrade` can
/// reapply them.
pub const SET_ANNOTATION: &str = "openservicemesh.io/install-set";

/// Mutating webhook name, path.
pub const INJECTOR_WEBHOOK: &str = "osm-inject.k8s.io";
/// Validating webhook name.
pub const VALIDATOR_WEBHOOK: &str = "osm-validator.k8s.io";

/// What to render: the values (mesh name, namespace and the rest) and the `--set` arguments that
/// produced them (recorded for upgrades).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstallOptions {
    /// Chart-style values.
    pub values: Values,
    /// The `--set` arguments, kept on the preset ConfigMap.
    pub set: Vec<String>,
}

impl InstallOptions {
    /// The mesh name.
    pub fn mesh_name(&self) -> &str {
        &self.values.osm.mesh_name
    }

    /// The control-plane namespace (`osm.osmNamespace`, default `osm-system`).
    pub fn namespace(&self) -> &str {
        match self.values.osm.osm_namespace.as_str() {
            "" => "osm-system",
            ns => ns,
        }
    }

    /// `<webhookConfigNamePrefix>-<meshName>`.
    pub fn mutating_webhook_name(&self) -> String {
        format!(
            "{}-{}",
            self.values.osm.webhook_config_name_prefix,
            self.mesh_name()
        )
    }

    /// `osm.validatorWebhook.webhookConfigurationName`, default `osm-validator-mesh-<meshName>`.
    pub fn validating_webhook_name(&self) -> String {
        match self
            .values
            .osm
            .validator_webhook
            .webhook_configuration_name
            .as_str()
        {
            "" => format!("osm-validator-mesh-{}", self.mesh_name()),
            name => name.to_string(),
        }
    }

    /// Name of a component's ClusterRole and ClusterRoleBinding: `<mesh>-<component>` (cluster-wide
    /// objects need the mesh in their name).
    pub fn cluster_role_name(&self, component: &str) -> String {
        format!("{}-{component}", self.mesh_name())
    }

    /// The control-plane image.
    pub fn image(&self) -> String {
        let i = &self.values.osm.image;
        format!("{}/osm-control-plane:{}", i.registry, i.tag)
    }

    /// One warning per `--set` value that asks for something the control plane does not do yet
    /// ([`osm_api::unsupported`]), e.g. `--set osm.tracing.enable=true: spec.observability.tracing.enable:
    /// not supported yet, accepted and ignored: no traces are sent`. Values left at their defaults
    /// are not reported: the validating webhook reports the MeshConfig as a whole.
    pub fn unsupported_warnings(&self) -> Vec<String> {
        let spec = self.mesh_config_spec();
        osm_api::unsupported::mesh_config_fields(&spec)
            .into_iter()
            .filter_map(|(path, effect)| {
                let spec_key = path.strip_prefix("spec.")?;
                let values_key = crate::chart::PRESET_KEYS
                    .iter()
                    .find(|(k, _)| *k == spec_key)
                    .map(|(_, source)| source.values_key())?;
                let arg = self
                    .set
                    .iter()
                    .rev()
                    .find(|a| a.split_once('=').is_some_and(|(k, _)| k == values_key))?;
                Some(format!(
                    "--set {arg}: {path}: not supported yet, accepted and ignored: {effect}"
                ))
            })
            .collect()
    }

    /// The preset MeshConfig spec: upstream defaults overridden by the values.
    pub fn mesh_config_spec(&self) -> MeshConfigSpec {
        let v = &self.values.osm;
        let mut spec = MeshConfigSpec::default();
        spec.sidecar.enable_privileged_init_container = v.enable_privileged_init_container;
        spec.sidecar.log_level = v.envoy_log_level.clone();
        spec.sidecar.envoy_image = Some(v.sidecar_image.clone());
        spec.sidecar.init_container_image = Some(format!("{}/osm-init:{}", v.image.registry, v.image.tag));
        spec.sidecar.max_data_plane_connections = v.max_data_plane_connections;
        spec.sidecar.config_resync_interval = v.config_resync_interval;
        spec.sidecar.local_proxy_mode = match v.local_proxy_mode.as_str() {
            "PodIP" => LocalProxyMode::PodIp,
            _ => LocalProxyMode::Localhost,
        };
        spec.traffic.enable_egress = v.enable_egress;
        spec.traffic.enable_permissive_traffic_policy_mode = v.enable_permissive_traffic_policy;
        spec.traffic.inbound_port_exclusion_list = v.inbound_port_exclusion_list.clone();
        spec.traffic.outbound_port_exclusion_list = v.outbound_port_exclusion_list.clone();
        spec.traffic.outbound_ip_range_exclusion_list = v.outbound_ip_range_exclusion_list.clone();
        spec.traffic.outbound_ip_range_inclusion_list = v.outbound_ip_range_inclusion_list.clone();
        spec.traffic.network_interface_exclusion_list = v.network_interface_exclusion_list.clone();
        spec.observability.osm_log_level = v.controller_log_level.clone();
        spec.observability.enable_debug_server = v.enable_debug_server;
        spec.observability.tracing.enable = v.tracing.enable;
        spec.observability.tracing.port = v.tracing.port;
        spec.observability.tracing.endpoint = v.tracing.endpoint.clone();
        spec.observability.tracing.address = v.tracing.enable.then(|| match v.tracing.address.as_str() {
            "" => format!("jaeger.{}.svc.cluster.local", self.namespace()),
            a => a.to_string(),
        });
        spec.certificate.service_cert_validity_duration =
            v.certificate_provider.service_cert_validity_duration;
        spec.certificate.cert_key_bit_size = v.certificate_provider.cert_key_bit_size;
        let f = &v.feature_flags;
        spec.feature_flags.enable_wasm_stats = f.enable_wasm_stats;
        spec.feature_flags.enable_egress_policy = f.enable_egress_policy;
        spec.feature_flags.enable_snapshot_cache_mode = f.enable_snapshot_cache_mode;
        spec.feature_flags.enable_async_proxy_service_mapping = f.enable_async_proxy_service_mapping;
        spec.feature_flags.enable_ingress_backend_policy = f.enable_ingress_backend_policy;
        spec.feature_flags.enable_envoy_active_health_checks = f.enable_envoy_active_health_checks;
        spec.feature_flags.enable_retry_policy = f.enable_retry_policy;
        spec
    }

    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (APP_NAME_LABEL.to_string(), APP_NAME_VALUE.to_string()),
            (INSTANCE_LABEL.to_string(), self.mesh_name().to_string()),
            (VERSION_LABEL.to_string(), VERSION.to_string()),
        ])
    }

    fn meta(&self, name: &str, namespaced: bool) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: namespaced.then(|| self.namespace().to_string()),
            labels: Some(self.labels()),
            ..ObjectMeta::default()
        }
    }

    fn meta_with(&self, name: &str, namespaced: bool, extra: &[(&str, &str)]) -> ObjectMeta {
        let mut meta = self.meta(name, namespaced);
        let labels = meta.labels.get_or_insert_with(BTreeMap::new);
        for (k, v) in extra {
            labels.insert(k.to_string(), v.to_string());
        }
        meta
    }
}

/// Every object of the install, in apply order: Namespace, CRDs, then the namespaced and cluster
/// objects of the control plane, webhooks last.
pub fn render(opts: &InstallOptions) -> Vec<Value> {
    let mut out = Vec::new();
    push(&mut out, ("v1", "Namespace"), &namespace(opts));
    for mut crd in osm_api::crds::all() {
        crd.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .extend(opts.labels());
        push(
            &mut out,
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
            &crd,
        );
    }
    for component in [CONTROLLER, INJECTOR, BOOTSTRAP] {
        let sa = ServiceAccount {
            metadata: opts.meta(component, true),
            ..ServiceAccount::default()
        };
        push(&mut out, ("v1", "ServiceAccount"), &sa);
    }
    for (component, cluster_rules, ns_rules) in rbac_rules(opts) {
        let role_name = opts.cluster_role_name(component);
        let subject = Subject {
            kind: "ServiceAccount".into(),
            name: component.into(),
            namespace: Some(opts.namespace().into()),
            ..Subject::default()
        };
        let cluster_role = ClusterRole {
            metadata: opts.meta(&role_name, false),
            rules: Some(cluster_rules),
            ..ClusterRole::default()
        };
        push(
            &mut out,
            ("rbac.authorization.k8s.io/v1", "ClusterRole"),
            &cluster_role,
        );
        let binding = ClusterRoleBinding {
            metadata: opts.meta(&role_name, false),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: role_name.clone(),
            },
            subjects: Some(vec![subject.clone()]),
        };
        push(
            &mut out,
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
            &binding,
        );
        let role = Role {
            metadata: opts.meta(component, true),
            rules: Some(ns_rules),
        };
        push(&mut out, ("rbac.authorization.k8s.io/v1", "Role"), &role);
        let role_binding = RoleBinding {
            metadata: opts.meta(component, true),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: component.into(),
            },
            subjects: Some(vec![subject]),
        };
        push(
            &mut out,
            ("rbac.authorization.k8s.io/v1", "RoleBinding"),
            &role_binding,
        );
    }
    push(&mut out, ("v1", "ConfigMap"), &preset_config_map(opts));
    for service in services(opts) {
        push(&mut out, ("v1", "Service"), &service);
    }
    for deployment in deployments(opts) {
        push(&mut out, ("apps/v1", "Deployment"), &deployment);
    }
    push(
        &mut out,
        ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"),
        &mutating_webhook(opts),
    );
    push(
        &mut out,
        (
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
        ),
        &validating_webhook(opts),
    );
    out
}

/// The objects as one multi-document YAML stream (`---` between documents).
pub fn render_yaml(objects: &[Value]) -> String {
    serde_saphyr::to_string_multiple(objects).expect("rendered objects are plain JSON values")
}

/// Serializes `object` with `apiVersion` and `kind` first (k8s-openapi's Serialize adds them for
/// its own types; CRD-derived and our own are handled the same way here) and nulls dropped.
fn push<T: Serialize>(out: &mut Vec<Value>, (api_version, kind): (&str, &str), object: &T) {
    let body = serde_json::to_value(object).expect("Kubernetes objects serialize to JSON");
    let mut map = serde_json::Map::new();
    map.insert("apiVersion".into(), Value::from(api_version));
    map.insert("kind".into(), Value::from(kind));
    if let Value::Object(fields) = body {
        for (k, v) in fields {
            if k != "apiVersion" && k != "kind" && !v.is_null() {
                map.insert(k, v);
            }
        }
    }
    out.push(Value::Object(map));
}

fn namespace(opts: &InstallOptions) -> Namespace {
    Namespace {
        metadata: opts.meta_with(opts.namespace(), false, &[(IGNORE_LABEL, "true")]),
        ..Namespace::default()
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..PolicyRule::default()
    }
}

fn named_rule(groups: &[&str], resources: &[&str], names: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        resource_names: Some(names.iter().map(|s| s.to_string()).collect()),
        ..rule(groups, resources, verbs)
    }
}

const READ: &[&str] = &["get", "list", "watch"];
const SMI_AND_OSM_GROUPS: &[&str] = &[
    "access.smi-spec.io",
    "specs.smi-spec.io",
    "split.smi-spec.io",
    "config.openservicemesh.io",
    "policy.openservicemesh.io",
];

/// Per component: its cluster-wide rules and its rules in the control-plane namespace.
fn rbac_rules(opts: &InstallOptions) -> Vec<(&'static str, Vec<PolicyRule>, Vec<PolicyRule>)> {
    let ca = opts.values.osm.ca_bundle_secret_name.as_str();
    // Every component loads the mesh CA (the first one to start creates it).
    let ca_rules = || {
        vec![
            rule(&[""], &["secrets"], &["create"]),
            named_rule(&[""], &["secrets"], &[ca], &["get", "update"]),
        ]
    };
    let controller = vec![
        rule(
            &[""],
            &["namespaces", "services", "endpoints", "pods", "serviceaccounts"],
            READ,
        ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
        rule(SMI_AND_OSM_GROUPS, &["*"], READ),
        rule(&[""], &["events"], &["create", "patch"]),
        // The ingress gateway certificate goes into the Secret MeshConfig
        // `spec.certificate.ingressGateway` names, in any namespace (created, replaced, deleted).
        rule(&[""], &["secrets"], &["create", "get", "update", "delete"]),
    ];
    let injector = vec![
        rule(&[""], &["namespaces"], READ),
        // Bootstrap Secrets `envoy-bootstrap-config-<uuid>` live next to the injected pods.
        rule(&[""], &["secrets"], &["create", "get", "update", "delete"]),
        rule(&["config.openservicemesh.io"], &["meshconfigs"], READ),
    ];
    let webhooks = [opts.mutating_webhook_name(), opts.validating_webhook_name()];
    let webhook_names: Vec<&str> = webhooks.iter().map(String::as_str).collect();
    let bootstrap = vec![
        rule(
            &["apiextensions.k8s.io"],
            &["customresourcedefinitions"],
            &["get", "list", "watch", "create", "update", "patch"],
        ),
        rule(
            &["admissionregistration.k8s.io"],
            &["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
            &["list", "watch"],
        ),
        named_rule(
            &["admissionregistration.k8s.io"],
            &["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
            &webhook_names,
            &["get", "update", "patch"],
        ),
    ];
    let mut bootstrap_ns = ca_rules();
    bootstrap_ns.push(rule(
        &["config.openservicemesh.io"],
        &["meshconfigs"],
        &["get", "list", "watch", "create", "update", "patch"],
    ));
    bootstrap_ns.push(named_rule(&[""], &["configmaps"], &[PRESET_CONFIG_MAP], &["get"]));
    vec![
        (CONTROLLER, controller, ca_rules()),
        (INJECTOR, injector, ca_rules()),
        (BOOTSTRAP, bootstrap, bootstrap_ns),
    ]
}

fn preset_config_map(opts: &InstallOptions) -> ConfigMap {
    let spec = serde_json::to_string_pretty(&opts.mesh_config_spec()).expect("MeshConfigSpec is plain JSON");
    let mut metadata = opts.meta(PRESET_CONFIG_MAP, true);
    metadata.annotations = Some(BTreeMap::from([(
        SET_ANNOTATION.to_string(),
        serde_json::to_string(&opts.set).expect("strings"),
    )]));
    ConfigMap {
        metadata,
        data: Some(BTreeMap::from([(PRESET_KEY.to_string(), spec)])),
        ..ConfigMap::default()
    }
}

fn port(name: &str, port: u16, target: u16) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: port.into(),
        target_port: Some(IntOrString::Int(target.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

fn services(opts: &InstallOptions) -> Vec<Service> {
    let service = |name: &str, app: &str, ports: Vec<ServicePort>| Service {
        metadata: opts.meta_with(name, true, &[("app", app)]),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([("app".to_string(), app.to_string())])),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    vec![
        service(
            CONTROLLER,
            CONTROLLER,
            vec![
                port("ads-port", ADS_PORT, ADS_PORT),
                port("debug-port", DEBUG_PORT, DEBUG_PORT),
                port("metrics", HTTP_PORT, HTTP_PORT),
            ],
        ),
        service(
            INJECTOR,
            INJECTOR,
            vec![port("sidecar-inject", INJECTOR_PORT, INJECTOR_PORT)],
        ),
        service(
            VALIDATOR_SERVICE,
            CONTROLLER,
            vec![port("validator", VALIDATOR_PORT, VALIDATOR_PORT)],
        ),
        service(BOOTSTRAP, BOOTSTRAP, vec![port("health", HTTP_PORT, HTTP_PORT)]),
    ]
}

fn container_port(name: &str, port: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port.into(),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(HTTP_PORT.into()),
            scheme: Some("HTTP".into()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(1),
        timeout_seconds: Some(5),
        ..Probe::default()
    }
}

fn resources(cpu_limit: &str, mem_limit: &str, cpu_req: &str, mem_req: &str) -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_string());
    ResourceRequirements {
        limits: Some(BTreeMap::from([
            ("cpu".to_string(), q(cpu_limit)),
            ("memory".to_string(), q(mem_limit)),
        ])),
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), q(cpu_req)),
            ("memory".to_string(), q(mem_req)),
        ])),
        ..ResourceRequirements::default()
    }
}

fn deployments(opts: &InstallOptions) -> Vec<Deployment> {
    let v = &opts.values.osm;
    let mesh = opts.mesh_name();
    let common_args = |component: &str| {
        vec![
            "osm-control-plane".to_string(),
            component.to_string(),
            "--mesh-name".into(),
            mesh.to_string(),
            "--osm-namespace".into(),
            opts.namespace().to_string(),
            "--trust-domain".into(),
            v.trust_domain.clone(),
            "--ca-bundle-secret-name".into(),
            v.ca_bundle_secret_name.clone(),
        ]
    };
    let controller_cmd = common_args("controller");
    let mut injector_cmd = common_args("injector");
    injector_cmd.extend(["--webhook-config-name".to_string(), opts.mutating_webhook_name()]);
    let mut bootstrap_cmd = common_args("bootstrap");
    bootstrap_cmd.extend([
        "--webhook-config-name".to_string(),
        opts.mutating_webhook_name(),
        "--validator-webhook-config-name".to_string(),
        opts.validating_webhook_name(),
    ]);

    let enforce = v.enforce_single_mesh.then_some(("enforceSingleMesh", "true"));
    let deployment = |name: &str,
                      replicas: i32,
                      command: Vec<String>,
                      ports: Vec<ContainerPort>,
                      res: ResourceRequirements| {
        let mut extra = vec![("app", name), ("meshName", mesh)];
        if name == CONTROLLER {
            extra.extend(enforce);
        }
        let pod_labels = BTreeMap::from([
            ("app".to_string(), name.to_string()),
            ("meshName".to_string(), mesh.to_string()),
            (APP_NAME_LABEL.to_string(), APP_NAME_VALUE.to_string()),
            (INSTANCE_LABEL.to_string(), mesh.to_string()),
            (VERSION_LABEL.to_string(), VERSION.to_string()),
        ]);
        Deployment {
            metadata: opts.meta_with(name, true, &extra),
            spec: DeploymentSpec {
                replicas: Some(replicas),
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([("app".to_string(), name.to_string())])),
                    ..LabelSelector::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(pod_labels),
                        annotations: Some(BTreeMap::from([
                            ("prometheus.io/scrape".to_string(), "true".to_string()),
                            ("prometheus.io/port".to_string(), HTTP_PORT.to_string()),
                        ])),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        service_account_name: Some(name.to_string()),
                        containers: vec![Container {
                            name: name.to_string(),
                            image: Some(opts.image()),
                            image_pull_policy: Some(v.image.pull_policy.clone()),
                            command: Some(command),
                            ports: Some(ports),
                            env: Some(vec![
                                EnvVar {
                                    name: "RUST_LOG".into(),
                                    value: Some(v.controller_log_level.clone()),
                                    ..EnvVar::default()
                                },
                                EnvVar {
                                    name: "POD_NAME".into(),
                                    value_from: Some(EnvVarSource {
                                        field_ref: Some(ObjectFieldSelector {
                                            field_path: "metadata.name".into(),
                                            ..ObjectFieldSelector::default()
                                        }),
                                        ..EnvVarSource::default()
                                    }),
                                    ..EnvVar::default()
                                },
                            ]),
                            liveness_probe: Some(probe("/health/alive")),
                            readiness_probe: Some(probe("/health/ready")),
                            resources: Some(res),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            },
            ..Deployment::default()
        }
    };
    vec![
        deployment(
            CONTROLLER,
            v.osm_controller.replica_count,
            controller_cmd,
            vec![
                container_port("ads-port", ADS_PORT),
                container_port("metrics", HTTP_PORT),
                container_port("debug-port", DEBUG_PORT),
                container_port("validator", VALIDATOR_PORT),
            ],
            resources("1500m", "1G", "500m", "128M"),
        ),
        deployment(
            INJECTOR,
            v.injector.replica_count,
            injector_cmd,
            vec![
                container_port("sidecar-inject", INJECTOR_PORT),
                container_port("metrics", HTTP_PORT),
            ],
            resources("500m", "64M", "300m", "64M"),
        ),
        deployment(
            BOOTSTRAP,
            v.osm_bootstrap.replica_count,
            bootstrap_cmd,
            vec![container_port("health", HTTP_PORT)],
            resources("500m", "128M", "300m", "128M"),
        ),
    ]
}

/// Namespaces of the mesh, minus ignored ones and the control plane's own (upstream's selector).
fn mesh_namespace_selector(opts: &InstallOptions) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            MONITORED_BY_LABEL.to_string(),
            opts.mesh_name().to_string(),
        )])),
        match_expressions: Some(vec![
            LabelSelectorRequirement {
                key: IGNORE_LABEL.into(),
                operator: "DoesNotExist".into(),
                values: None,
            },
            LabelSelectorRequirement {
                key: "name".into(),
                operator: "NotIn".into(),
                values: Some(vec![opts.namespace().to_string()]),
            },
            LabelSelectorRequirement {
                key: "control-plane".into(),
                operator: "DoesNotExist".into(),
                values: None,
            },
        ]),
    }
}

fn client_config(opts: &InstallOptions, service: &str, path: &str, port: u16) -> WebhookClientConfig {
    // No caBundle: osm-bootstrap fills it in (and a re-apply does not own, so does not clear, it).
    WebhookClientConfig {
        service: Some(ServiceReference {
            name: service.into(),
            namespace: opts.namespace().into(),
            path: Some(path.into()),
            port: Some(port.into()),
        }),
        ..WebhookClientConfig::default()
    }
}

fn mutating_webhook(opts: &InstallOptions) -> MutatingWebhookConfiguration {
    MutatingWebhookConfiguration {
        metadata: opts.meta_with(&opts.mutating_webhook_name(), false, &[("app", INJECTOR)]),
        webhooks: Some(vec![MutatingWebhook {
            name: INJECTOR_WEBHOOK.into(),
            client_config: client_config(opts, INJECTOR, INJECTOR_PATH, INJECTOR_PORT),
            rules: Some(vec![RuleWithOperations {
                operations: Some(vec!["CREATE".into()]),
                api_groups: Some(vec!["".into()]),
                api_versions: Some(vec!["v1".into()]),
                resources: Some(vec!["pods".into()]),
                scope: Some("*".into()),
            }]),
            namespace_selector: Some(mesh_namespace_selector(opts)),
            failure_policy: Some("Fail".into()),
            match_policy: Some("Exact".into()),
            side_effects: "NoneOnDryRun".into(),
            admission_review_versions: vec!["v1".into(), "v1beta1".into()],
            timeout_seconds: Some(opts.values.osm.injector.webhook_timeout_seconds),
            // Written out although they are the apiserver's defaults: the webhook list is atomic in
            // v1.20's apply, and an applied list lacking defaulted fields counts as a change.
            object_selector: Some(LabelSelector::default()),
            reinvocation_policy: Some("Never".into()),
            match_conditions: None,
        }]),
    }
}

fn validating_webhook(opts: &InstallOptions) -> ValidatingWebhookConfiguration {
    let rule = |group: &str, version: &str, resources: &[&str]| RuleWithOperations {
        operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
        api_groups: Some(vec![group.into()]),
        api_versions: Some(vec![version.into()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        scope: Some("*".into()),
    };
    // One rule per (group, version) of our kinds, resources sorted: deterministic.
    let mut by_gv: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for k in osm_api::crds::kinds() {
        by_gv.entry((k.group, k.version)).or_default().push(k.plural);
    }
    let rules = by_gv
        .into_iter()
        .map(|((g, v), mut plurals)| {
            plurals.sort_unstable();
            plurals.dedup();
            rule(g, v, &plurals)
        })
        .collect();
    ValidatingWebhookConfiguration {
        metadata: opts.meta_with(&opts.validating_webhook_name(), false, &[("app", CONTROLLER)]),
        webhooks: Some(vec![ValidatingWebhook {
            name: VALIDATOR_WEBHOOK.into(),
            client_config: client_config(opts, VALIDATOR_SERVICE, VALIDATOR_PATH, VALIDATOR_PORT),
            rules: Some(rules),
            namespace_selector: Some(mesh_namespace_selector(opts)),
            failure_policy: Some("Fail".into()),
            match_policy: Some("Exact".into()),
            side_effects: "NoneOnDryRun".into(),
            admission_review_versions: vec!["v1".into(), "v1beta1".into()],
            object_selector: Some(LabelSelector::default()),
            timeout_seconds: Some(10),
            match_conditions: None,
        }]),
    }
}

/// `kind` and `metadata.name` of a rendered object, for reports.
pub fn describe(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or("?");
    let name = object["metadata"]["name"].as_str().unwrap_or("?");
    match object["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}
