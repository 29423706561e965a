//! A real kube-apiserver (v1.20.2) backed by etcd on 127.0.0.1 for tests, in the style of
//! controller-runtime's *envtest*: no kubelet, no controllers, no nodes (see `docs/envtest.md`).
//!
//! [`ApiServer::start`] finds the binaries ([`find_assets`]), generates fresh credentials, starts
//! etcd and kube-apiserver on free ports with their data, keys and logs in a private temp dir, waits
//! for `/readyz` and hands out clients. Dropping the [`ApiServer`] stops both processes and deletes
//! the temp dir. Every instance is independent, so tests may run in parallel.
//!
//! Tests call [`require_or_skip`] first: without the binaries it prints a loud `SKIPPED` line and
//! the test returns early, except under `CI=true`, where a missing prerequisite is a failure.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use k8s_openapi::api::core::v1::Namespace;
//!
//! let Some(assets) = osm_envtest::require_or_skip("my_test") else {
//!     return Ok(());
//! };
//! let server = osm_envtest::ApiServer::start_with(&assets).await?;
//! let namespaces = kube::Api::<Namespace>::all(server.client());
//! namespaces.list(&Default::default()).await?;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod certs;
mod forward;
mod process;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube::config::{AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use process::Proc;

/// Environment variable naming the directory with `kube-apiserver` and `etcd`.
pub const ASSETS_ENV: &str = "KUBEBUILDER_ASSETS";
/// Set to `1` to let [`find_assets`] build the binaries with `scripts/envtest-assets.sh` (~8 min).
pub const BUILD_ENV: &str = "OSM_ENVTEST_BUILD";
/// Overrides the cache dir the assets script installs into.
pub const CACHE_ENV: &str = "OSM_ENVTEST_CACHE";
/// Where `scripts/envtest-assets.sh` installs the binaries by default.
pub const DEFAULT_CACHE: &str = "/var/cache/osm-envtest/bin";

/// Creates Namespace `name` with these labels and annotations (the common first step of a test).
pub async fn create_namespace(
    client: &kube::Client,
    name: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
) -> std::result::Result<k8s_openapi::api::core::v1::Namespace, kube::Error> {
    let map = |pairs: &[(&str, &str)]| {
        (!pairs.is_empty()).then(|| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
    };
    let ns = k8s_openapi::api::core::v1::Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            labels: map(labels),
            annotations: map(annotations),
            ..Default::default()
        },
        ..Default::default()
    };
    kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&Default::default(), &ns)
        .await
}

/// How long [`apply_crds`] waits for each CRD to be Established.
const ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(30);

/// Server-side applies `crds` (field manager `osm-envtest`) and waits until each is Established,
/// so custom objects can be created right after.
pub async fn apply_crds(
    client: &kube::Client,
    crds: &[k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition],
) -> Result<()> {
    use kube::ResourceExt as _;
    let api = kube::Api::<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    >::all(client.clone());
    let params = kube::api::PatchParams::apply("osm-envtest").force();
    for crd in crds {
        let name = crd.name_any();
        api.patch(&name, &params, &kube::api::Patch::Apply(crd))
            .await
            .map_err(|source| Error::Api {
                what: format!("applying CRD {name}"),
                source,
            })?;
    }
    for crd in crds {
        let name = crd.name_any();
        let deadline = Instant::now() + ESTABLISHED_TIMEOUT;
        loop {
            let got = api.get(&name).await.map_err(|source| Error::Api {
                what: format!("reading CRD {name}"),
                source,
            })?;
            let established = got
                .status
                .and_then(|s| s.conditions)
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::NotEstablished(name, ESTABLISHED_TIMEOUT));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Creates every object of a multi-document YAML, as `kubectl create -f` would: any kind, through
/// its apiVersion/kind (plural guessed the way kube-rs does), namespaced when it names a namespace.
pub async fn create_yaml(client: &kube::Client, yaml: &str) -> Result<()> {
    use kube::ResourceExt as _;
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(yaml).map_err(|e| Error::Yaml(e.to_string()))?;
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        let field = |name: &str| {
            doc[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| Error::Yaml(format!("a document without {name}")))
        };
        let (api_version, kind) = (field("apiVersion")?, field("kind")?);
        let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &kind));
        let object: DynamicObject =
            serde_json::from_value(doc.clone()).map_err(|e| Error::Yaml(e.to_string()))?;
        let ns = object.namespace();
        let api: kube::Api<DynamicObject> = match &ns {
            Some(ns) => kube::Api::namespaced_with(client.clone(), ns, &resource),
            None => kube::Api::all_with(client.clone(), &resource),
        };
        api.create(&Default::default(), &object)
            .await
            .map_err(|source| Error::Api {
                what: format!("creating {kind} {}/{}", ns.unwrap_or_default(), object.name_any()),
                source,
            })?;
    }
    Ok(())
}

/// Service ClusterIPs in netns mode.
const NETNS_SERVICE_CIDR: &str = "10.0.0.0/24";

/// A /26 in 127.64.0.0/10 made of the port's 16 bits: distinct ports give disjoint ranges.
fn service_cidr(port: u16) -> String {
    format!(
        "127.{}.{}.{}/26",
        64 + (port >> 10),
        (port >> 2) & 0xff,
        (port & 3) << 6
    )
}

/// How long etcd may take to answer `/health`.
const ETCD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long kube-apiserver may take to answer `/readyz` (5–6 s is typical on 2 busy cores).
const APISERVER_TIMEOUT: Duration = Duration::from_secs(60);
/// Poll interval for both.
const POLL: Duration = Duration::from_millis(100);
/// Attempts when a free port is taken by someone else between choosing and binding it.
const PORT_ATTEMPTS: usize = 3;

/// Why a test apiserver could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binaries were not found; the message says where we looked and how to get them.
    #[error("envtest assets (kube-apiserver + etcd) not found: {0}")]
    MissingAssets(String),
    /// `scripts/envtest-assets.sh` (run because `OSM_ENVTEST_BUILD=1`) failed.
    #[error("{script} failed ({reason}); last lines of its output:\n{tail}")]
    BuildAssets {
        /// The script.
        script: PathBuf,
        /// Exit status or spawn error.
        reason: String,
        /// The end of its stderr.
        tail: String,
    },
    /// A file or process operation failed.
    #[error("{what}")]
    Io {
        /// What we were doing.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Generating the CA, certificates or keys failed.
    #[error("generating test credentials")]
    Credentials(#[source] rcgen::Error),
    /// A process exited while we waited for it to become ready.
    #[error("{process} exited before it was ready ({status}); last lines of {log}:\n{tail}", log = log.display())]
    Exited {
        /// `etcd` or `kube-apiserver`.
        process: &'static str,
        /// Its exit status.
        status: String,
        /// Its log file (deleted with the temp dir).
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// A process did not become ready in time.
    #[error("{process} not ready after {waited:?} (last check: {last}); last lines of {log}:\n{tail}", log = log.display())]
    NotReady {
        /// `etcd` or `kube-apiserver`.
        process: &'static str,
        /// How long we waited.
        waited: Duration,
        /// The result of the last readiness check.
        last: String,
        /// Its log file (deleted with the temp dir).
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// Building a kube client for the apiserver failed.
    #[error("building a kube client for the test apiserver")]
    Client(#[source] kube::Error),
    /// An API call of a fixture helper failed (e.g. a create refused by admission).
    #[error("{what}: {source}")]
    Api {
        /// The call, naming the object.
        what: String,
        #[source]
        source: kube::Error,
    },
    /// A fixture helper was given YAML it cannot use.
    #[error("test YAML: {0}")]
    Yaml(String),
    /// A CRD did not become Established in time.
    #[error("CRD {0} not Established within {1:?}")]
    NotEstablished(String, Duration),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The two binaries, found by [`find_assets`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assets {
    /// The directory holding both (what `KUBEBUILDER_ASSETS` names).
    pub dir: PathBuf,
    /// `dir/kube-apiserver`.
    pub kube_apiserver: PathBuf,
    /// `dir/etcd`.
    pub etcd: PathBuf,
}

impl Assets {
    /// The assets in `dir`, if it holds both executables.
    pub fn in_dir(dir: &Path) -> Option<Self> {
        let kube_apiserver = dir.join("kube-apiserver");
        let etcd = dir.join("etcd");
        (is_executable(&kube_apiserver) && is_executable(&etcd)).then(|| Self {
            dir: dir.to_path_buf(),
            kube_apiserver,
            etcd,
        })
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The repository's `scripts/envtest-assets.sh`.
fn assets_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../scripts/envtest-assets.sh")
}

/// Finds `kube-apiserver` and `etcd`:
/// 1. in `$KUBEBUILDER_ASSETS` when set (an error if it lacks them);
/// 2. else, with `OSM_ENVTEST_BUILD=1`, in the dir printed by `scripts/envtest-assets.sh` (which
///    builds them once, ~8 min);
/// 3. else in `$OSM_ENVTEST_CACHE` or `/var/cache/osm-envtest/bin` if both are there;
/// 4. else [`Error::MissingAssets`].
pub fn find_assets() -> Result<Assets> {
    let how = "run `export KUBEBUILDER_ASSETS=\"$(scripts/envtest-assets.sh)\"` (builds them once, ~8 min; see docs/envtest.md) or set OSM_ENVTEST_BUILD=1 to let the tests do it";
    if let Some(dir) = std::env::var_os(ASSETS_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return Assets::in_dir(&dir).ok_or_else(|| {
            Error::MissingAssets(format!(
                "{ASSETS_ENV}={} does not hold executable `kube-apiserver` and `etcd`; {how}",
                dir.display()
            ))
        });
    }
    if std::env::var(BUILD_ENV).as_deref() == Ok("1") {
        return build_assets();
    }
    let cache = std::env::var_os(CACHE_ENV)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE));
    Assets::in_dir(&cache).ok_or_else(|| {
        Error::MissingAssets(format!(
            "{ASSETS_ENV} is not set and {} does not hold `kube-apiserver` and `etcd`; {how}",
            cache.display()
        ))
    })
}

fn build_assets() -> Result<Assets> {
    let script = assets_script();
    eprintln!(
        "osm-envtest: {BUILD_ENV}=1: running {} (the first build takes ~8 min)",
        script.display()
    );
    let out = std::process::Command::new("bash")
        .arg(&script)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| Error::BuildAssets {
            script: script.clone(),
            reason: e.to_string(),
            tail: String::new(),
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail = || {
        let lines: Vec<&str> = stderr.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    if !out.status.success() {
        return Err(Error::BuildAssets {
            script,
            reason: out.status.to_string(),
            tail: tail(),
        });
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    Assets::in_dir(&dir).ok_or_else(|| Error::BuildAssets {
        script,
        reason: format!("it printed {}, which lacks the binaries", dir.display()),
        tail: tail(),
    })
}

/// For tests: the assets, or `None` after a loud `SKIPPED` message when they are missing.
///
/// Under `CI=true` a missing prerequisite panics instead (never a silent skip in CI); so does any
/// other failure to provide the assets (e.g. a failed build with `OSM_ENVTEST_BUILD=1`).
#[track_caller]
pub fn require_or_skip(test: &str) -> Option<Assets> {
    match find_assets() {
        Ok(assets) => Some(assets),
        Err(Error::MissingAssets(why)) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("SKIPPED {test}: needs a real kube-apiserver + etcd: {why}");
            None
        }
        Err(e) => panic!("{test}: needs a real kube-apiserver + etcd: {e}"),
    }
}

/// A port on 127.0.0.1 that was free a moment ago (etcd and kube-apiserver need concrete ports).
fn free_port() -> Result<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| Error::Io {
            what: "choosing a free port on 127.0.0.1".into(),
            source,
        })
}

fn write(path: &Path, contents: &[u8]) -> Result<()> {
    std::fs::write(path, contents).map_err(|source| Error::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

/// A running etcd + kube-apiserver pair on 127.0.0.1. Dropping it stops both and deletes its files.
pub struct ApiServer {
    // Drop order matters: the apiserver stops before etcd, both before the temp dir goes.
    // Held for its Drop: forwarding stops with the instance.
    _forwarder: Option<forward::Forwarder>,
    apiserver: Proc,
    etcd: Proc,
    client: kube::Client,
    /// Where clients on the host connect (the forwarder's port in netns mode).
    port: u16,
    /// Set in netns mode: the namespace and the apiserver's port inside it.
    netns: Option<(String, u16)>,
    etcd_port: u16,
    admin_token: String,
    ca_cert_der: Vec<u8>,
    ca_cert_pem: String,
    startup: Duration,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("url", &self.url())
            .field("etcd_port", &self.etcd_port)
            .field("dir", &self.dir.path())
            .field("startup", &self.startup)
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// Finds the binaries ([`find_assets`]) and starts a fresh etcd + kube-apiserver.
    pub async fn start() -> Result<Self> {
        Self::start_with(&find_assets()?).await
    }

    /// Starts a fresh etcd + kube-apiserver from `assets` and waits until `/readyz` answers 200.
    pub async fn start_with(assets: &Assets) -> Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::try_start(assets).await {
                // Another process may grab one of our "free" ports before we bind it: try new ones.
                Err(Error::Exited { process, tail, .. })
                    if attempt < PORT_ATTEMPTS && tail.contains("address already in use") =>
                {
                    eprintln!(
                        "osm-envtest: {process} lost a port race (attempt {attempt}); retrying with new ports"
                    );
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Like [`Self::start_with`], but etcd and kube-apiserver run inside the network namespace `netns`
    /// (which must exist, with `lo` up), listening on 127.0.0.1 there, with Service ClusterIPs in
    /// 10.0.0.0/24. Clients on the host reach it through a forwarder ([`Self::url`]); processes
    /// inside `netns` use [`Self::in_netns_url`]. This is how a test gives the apiserver a network
    /// where Services' ClusterIPs can be made reachable (as kube-proxy would) without touching the
    /// host's.
    pub async fn start_in_netns(assets: &Assets, netns: &str) -> Result<Self> {
        Self::try_start_in(assets, Some(netns)).await
    }

    async fn try_start(assets: &Assets) -> Result<Self> {
        Self::try_start_in(assets, None).await
    }

    async fn try_start_in(assets: &Assets, netns: Option<&str>) -> Result<Self> {
        let started = Instant::now();
        // On tmpfs when there is one: etcd 3.4 fsyncs every write and has no way to turn that off.
        let shm = Path::new("/dev/shm");
        let mut builder = tempfile::Builder::new();
        builder.prefix("osm-envtest-");
        let dir = if shm.is_dir() {
            builder.tempdir_in(shm).or_else(|_| builder.tempdir())
        } else {
            builder.tempdir()
        }
        .map_err(|source| Error::Io {
            what: "creating the envtest temp dir".into(),
            source,
        })?;
        let p = |name: &str| dir.path().join(name);

        let creds = certs::generate().map_err(Error::Credentials)?;
        write(&p("ca.crt"), creds.ca_cert_pem.as_bytes())?;
        write(&p("apiserver.crt"), creds.server_cert_pem.as_bytes())?;
        write(&p("apiserver.key"), creds.server_key_pem.as_bytes())?;
        write(&p("admin.crt"), creds.admin_cert_pem.as_bytes())?;
        write(&p("admin.key"), creds.admin_key_pem.as_bytes())?;
        write(&p("sa.key"), creds.sa_key_pem.as_bytes())?;
        write(&p("sa.pub"), creds.sa_pub_pem.as_bytes())?;
        write(
            &p("tokens.csv"),
            format!("{},admin,admin,\"system:masters\"\n", creds.admin_token).as_bytes(),
        )?;

        // etcd.
        // A fresh namespace has every port free.
        let (etcd_port, peer_port) = match netns {
            Some(_) => (2379, 2380),
            None => (free_port()?, free_port()?),
        };
        let client_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_args = vec![
            "--name=envtest".to_string(),
            format!("--data-dir={}", p("etcd").display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=envtest={peer_url}"),
            "--logger=zap".into(),
            "--log-level=warn".into(),
        ];
        let mut etcd = Proc::spawn_in("etcd", netns, &assets.etcd, &etcd_args, p("etcd.log"))?;
        if netns.is_none() {
            // (In a namespace, readiness shows through the apiserver's /readyz, which checks etcd.)
            wait_etcd(&mut etcd, etcd_port).await?;
        }
        let etcd_ready = started.elapsed();

        // kube-apiserver.
        let port = match netns {
            Some(_) => 6443,
            None => free_port()?,
        };
        let service_cidr = match netns {
            Some(_) => NETNS_SERVICE_CIDR.to_string(),
            None => service_cidr(port),
        };
        let api_args = vec![
            format!("--etcd-servers={client_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            // 1.20 still opens an unauthenticated HTTP port 8080 unless told not to.
            "--insecure-port=0".into(),
            format!("--cert-dir={}", p("certs").display()),
            format!("--tls-cert-file={}", p("apiserver.crt").display()),
            format!("--tls-private-key-file={}", p("apiserver.key").display()),
            format!("--client-ca-file={}", p("ca.crt").display()),
            format!("--token-auth-file={}", p("tokens.csv").display()),
            // Services get ClusterIPs on this host's loopback (all of 127.0.0.0/8 reaches `lo`), so the
            // apiserver's calls to admission webhooks by Service reference reach a process that
            // listens on that ClusterIP. The range is derived from the (unique) secure port, so
            // parallel instances never share a ClusterIP.
            format!("--service-cluster-ip-range={service_cidr}"),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", p("sa.pub").display()),
            format!("--service-account-signing-key-file={}", p("sa.key").display()),
            "--authorization-mode=RBAC".into(),
            // As envtest does: there is no token controller, so Pods could not be created otherwise.
            "--disable-admission-plugins=ServiceAccount".into(),
            "--allow-privileged=true".into(),
        ];
        let mut apiserver = Proc::spawn_in(
            "kube-apiserver",
            netns,
            &assets.kube_apiserver,
            &api_args,
            p("kube-apiserver.log"),
        )?;

        let forwarder = match netns {
            Some(ns) => Some(
                forward::Forwarder::start(ns, (Ipv4Addr::LOCALHOST, port).into()).map_err(|source| {
                    Error::Io {
                        what: format!("forwarding 127.0.0.1 into network namespace {ns}"),
                        source,
                    }
                })?,
            ),
            None => None,
        };
        let host_port = forwarder.as_ref().map_or(port, |f| f.addr().port());
        let url = format!("https://127.0.0.1:{host_port}");
        let client = build_client(&url, &creds.ca_cert_der, |config| {
            config.auth_info = AuthInfo {
                client_certificate: Some(p("admin.crt").display().to_string()),
                client_key: Some(p("admin.key").display().to_string()),
                ..AuthInfo::default()
            };
        })?;
        wait_apiserver(&mut apiserver, &client).await?;
        let startup = started.elapsed();
        eprintln!(
            "osm-envtest: kube-apiserver ready at {url} in {:.1} s (etcd on 127.0.0.1:{etcd_port} after {:.1} s; files in {})",
            startup.as_secs_f64(),
            etcd_ready.as_secs_f64(),
            dir.path().display()
        );

        let server = Self {
            _forwarder: forwarder,
            apiserver,
            etcd,
            client,
            port: host_port,
            netns: netns.map(|ns| (ns.to_string(), port)),
            etcd_port,
            admin_token: creds.admin_token,
            ca_cert_der: creds.ca_cert_der,
            ca_cert_pem: creds.ca_cert_pem,
            startup,
            dir,
        };
        let kubeconfig =
            serde_json::to_vec_pretty(&server.kubeconfig()).expect("a Kubeconfig is plain strings and lists");
        write(&server.kubeconfig_path(), &kubeconfig)?;
        Ok(server)
    }

    /// The Service ClusterIP range of this instance: a /26 in 127.64.0.0/10, unique per secure port.
    pub fn service_cidr(&self) -> String {
        match self.netns {
            Some(_) => NETNS_SERVICE_CIDR.to_string(),
            None => service_cidr(self.port),
        }
    }

    /// The URL processes inside the apiserver's network namespace use (netns mode), else [`Self::url`].
    pub fn in_netns_url(&self) -> String {
        match &self.netns {
            Some((_, port)) => format!("https://127.0.0.1:{port}"),
            None => self.url(),
        }
    }

    /// A kubeconfig file in this instance's temp dir that authenticates with `token` (e.g. a
    /// ServiceAccount token from a TokenRequest), for running a component as that identity. It
    /// points at [`Self::in_netns_url`]: components run where the apiserver runs.
    pub fn write_token_kubeconfig(&self, name: &str, token: &str) -> Result<PathBuf> {
        let mut config = self.kubeconfig();
        for cluster in &mut config.clusters {
            if let Some(c) = cluster.cluster.as_mut() {
                c.server = Some(self.in_netns_url());
            }
        }
        for user in &mut config.auth_infos {
            user.auth_info = Some(AuthInfo {
                token: Some(token.to_string().into()),
                ..AuthInfo::default()
            });
        }
        let path = self.dir.path().join(format!("kubeconfig-{name}"));
        let bytes = serde_json::to_vec_pretty(&config).expect("a Kubeconfig is plain strings and lists");
        write(&path, &bytes)?;
        Ok(path)
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The apiserver's secure port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How long the start took, etcd included.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// A client authenticated as `admin` (group `system:masters`, i.e. cluster-admin) by its
    /// client certificate. Cheap: clones share one connection pool.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// A client sending `Authorization: Bearer TOKEN` (e.g. a ServiceAccount token from a
    /// TokenRequest, to test RBAC) and no client certificate. Needs a tokio runtime.
    pub fn client_for_token(&self, token: &str) -> Result<kube::Client> {
        let header = http::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| Error::Io {
            what: "the token is not a valid HTTP header value".into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
        build_client(&self.url(), &self.ca_cert_der, |config| {
            config.headers.push((http::header::AUTHORIZATION, header));
        })
    }

    /// The static admin bearer token (user `admin`, group `system:masters`).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The CA that signed the serving and admin certificates (PEM).
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// A kubeconfig for the admin (client certificate), with paths into this instance's temp dir.
    pub fn kubeconfig(&self) -> Kubeconfig {
        let path = |name: &str| Some(self.dir.path().join(name).display().to_string());
        Kubeconfig {
            clusters: vec![NamedCluster {
                name: "envtest".into(),
                cluster: Some(Cluster {
                    server: Some(self.url()),
                    certificate_authority: path("ca.crt"),
                    ..Cluster::default()
                }),
                other: Default::default(),
            }],
            auth_infos: vec![NamedAuthInfo {
                name: "admin".into(),
                auth_info: Some(AuthInfo {
                    client_certificate: path("admin.crt"),
                    client_key: path("admin.key"),
                    ..AuthInfo::default()
                }),
                other: Default::default(),
            }],
            contexts: vec![NamedContext {
                name: "envtest".into(),
                context: Some(Context {
                    cluster: "envtest".into(),
                    user: Some("admin".into()),
                    ..Context::default()
                }),
                other: Default::default(),
            }],
            current_context: Some("envtest".into()),
            api_version: Some("v1".into()),
            kind: Some("Config".into()),
            ..Kubeconfig::default()
        }
    }

    /// The [`kubeconfig`](Self::kubeconfig) as a file (JSON, which kubectl reads as YAML).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The instance's temp dir (certificates, keys, etcd data, logs); deleted on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last `lines` lines of the kube-apiserver log, then of the etcd log (for failure messages).
    pub fn log_tails(&self, lines: usize) -> String {
        format!(
            "--- {} ({}):\n{}\n--- {} ({}):\n{}",
            self.apiserver.name(),
            self.apiserver.log_path().display(),
            self.apiserver.log_tail(lines),
            self.etcd.name(),
            self.etcd.log_path().display(),
            self.etcd.log_tail(lines),
        )
    }
}

fn build_client(url: &str, ca_der: &[u8], auth: impl FnOnce(&mut kube::Config)) -> Result<kube::Client> {
    let uri: http::Uri = url.parse().expect("https://127.0.0.1:PORT is a valid URI");
    let mut config = kube::Config::new(uri);
    config.root_cert = Some(vec![ca_der.to_vec()]);
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(30));
    auth(&mut config);
    kube::Client::try_from(config).map_err(Error::Client)
}

/// Polls etcd's `/health` until it says `"health":"true"`.
async fn wait_etcd(etcd: &mut Proc, port: u16) -> Result<()> {
    let started = Instant::now();
    loop {
        if let Some(status) = etcd.exited() {
            return Err(etcd.exited_error(status));
        }
        let last = match etcd_health(port).await {
            Ok(body) if body.starts_with("HTTP/1.1 200") && body.contains("\"health\":\"true\"") => {
                return Ok(());
            }
            Ok(body) => body.lines().next().unwrap_or_default().to_string(),
            Err(e) => e.to_string(),
        };
        if started.elapsed() > ETCD_TIMEOUT {
            return Err(Error::NotReady {
                process: etcd.name(),
                waited: started.elapsed(),
                last,
                log: etcd.log_path().to_path_buf(),
                tail: etcd.log_tail(40),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn etcd_health(port: u16) -> std::io::Result<String> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(2), io)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer in 2 s",
            ))
        })
}

/// Polls `/readyz` as admin until it answers 200.
async fn wait_apiserver(apiserver: &mut Proc, client: &kube::Client) -> Result<()> {
    let started = Instant::now();
    loop {
        if let Some(status) = apiserver.exited() {
            return Err(apiserver.exited_error(status));
        }
        let req = http::Request::get("/readyz")
            .body(Vec::new())
            .expect("a GET with an empty body is a valid request");
        let last = match tokio::time::timeout(Duration::from_secs(5), client.request_text(req)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer in 5 s".to_string(),
        };
        if started.elapsed() > APISERVER_TIMEOUT {
            return Err(Error::NotReady {
                process: apiserver.name(),
                waited: started.elapsed(),
                last,
                log: apiserver.log_path().to_path_buf(),
                tail: apiserver.log_tail(40),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}
