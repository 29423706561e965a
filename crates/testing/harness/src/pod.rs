//! A pod: one network namespace on the hub's bridge, with its hosts file, interception rules, processes
//! and Envoy.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tempfile::TempDir;

use crate::envoy::EnvoyProcess;
use crate::hub::HubInner;
use crate::netns::{NetnsGuard, in_netns};
use crate::process::{PodProcess, SpawnAs, spawn_in};
use crate::{HarnessError, Result};

/// What to create a pod with.
#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    /// A human-readable name (e.g. `bookstore-v1`), used in messages; namespace names use an index.
    pub name: String,
}

impl PodSpec {
    /// A spec with just a name.
    pub fn named(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// A pod namespace. Dropping it kills every process inside, deletes the namespace (and with it the veth
/// pair) and removes `/etc/netns/<netns>`.
#[derive(Debug)]
pub struct Pod {
    /// Declared first so the namespace goes before the log directory and the hub.
    netns: NetnsGuard,
    name: String,
    ip: Ipv4Addr,
    next_process: AtomicU32,
    dir: Arc<TempDir>,
    _hub: Arc<HubInner>,
}

impl Pod {
    pub(crate) fn new(
        spec: PodSpec,
        netns: NetnsGuard,
        ip: Ipv4Addr,
        dir: TempDir,
        hub: Arc<HubInner>,
    ) -> Self {
        Self {
            netns,
            name: spec.name,
            ip,
            next_process: AtomicU32::new(0),
            dir: Arc::new(dir),
            _hub: hub,
        }
    }

    /// The name from the spec.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pod's address on `eth0`.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The pod's network namespace name (for `ip netns exec`).
    pub fn netns(&self) -> &str {
        self.netns.name()
    }

    /// The pod's private directory (process logs, Envoy bootstrap); removed on drop.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Runs `f` on a thread inside the pod namespace (see [`in_netns`]); e.g. to connect a client socket
    /// "from the pod" without a separate process.
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        in_netns(self.netns(), f)
    }

    /// A TCP listener bound to `addr:port` inside the pod (use `0.0.0.0` for every address).
    pub fn bind_tcp(&self, addr: Ipv4Addr, port: u16) -> Result<TcpListener> {
        let addr = SocketAddr::from((addr, port));
        self.in_netns(move || TcpListener::bind(addr))?
            .map_err(HarnessError::io(format!("bind {addr} in {}", self.name)))
    }

    /// Writes `/etc/netns/<netns>/hosts` (which `ip netns exec` bind-mounts over `/etc/hosts`): localhost
    /// plus one line per entry, e.g. `(10.96.0.10, ["bookstore.bookstore", "bookstore.bookstore.svc.cluster.local"])`.
    /// Call it before spawning: only processes started afterwards see the file. Later calls rewrite it in
    /// place (same inode), so those processes see updates too. Also writes a `resolv.conf` without
    /// nameservers, so unknown names fail fast instead of waiting on a DNS server that cannot be reached.
    pub fn set_hosts(&self, entries: &[(IpAddr, Vec<String>)]) -> Result<()> {
        let dir = self.netns.etc_dir();
        std::fs::create_dir_all(&dir).map_err(HarnessError::io(format!("create {}", dir.display())))?;
        let mut hosts = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        for (ip, names) in entries {
            if names
                .iter()
                .any(|n| n.is_empty() || n.contains(char::is_whitespace))
            {
                return Err(HarnessError::Invalid(format!("bad host name in {names:?}")));
            }
            hosts.push_str(&format!("{ip}\t{}\n", names.join(" ")));
        }
        write_in_place(&dir.join("hosts"), &hosts)?;
        let resolv = dir.join("resolv.conf");
        if !resolv.exists() {
            write_in_place(
                &resolv,
                "# osm-harness pod: names come from /etc/hosts only\noptions timeout:1 attempts:1\n",
            )?;
        }
        Ok(())
    }

    /// Installs the OSM interception rules in the pod (`iptables-save`/`iptables-restore` run through
    /// `ip netns exec`). Returns the restore input that was applied.
    pub fn apply_init(&self, cfg: &osm_init::InitConfig) -> Result<String> {
        let runner = osm_init::SystemRunner::with_prefix(["ip", "netns", "exec", self.netns()]);
        Ok(osm_init::apply(cfg, &runner)?)
    }

    /// Runs `argv` in the pod as root (`ip netns exec <netns> argv…`) with the given extra environment;
    /// stdout/stderr go to log files in the pod directory. The process (group) is killed when the handle
    /// is dropped, or at the latest when the pod is.
    pub fn spawn<S: AsRef<OsStr>>(&self, argv: &[S], env: &[(&str, &str)]) -> Result<PodProcess> {
        spawn_in(
            self.netns(),
            &self.dir,
            self.next_process(),
            SpawnAs::Root,
            argv,
            env,
        )
    }

    /// Like [`Pod::spawn`], but as `uid` (same GID, no supplementary groups) via `setpriv`.
    pub fn spawn_as<S: AsRef<OsStr>>(
        &self,
        uid: u32,
        argv: &[S],
        env: &[(&str, &str)],
    ) -> Result<PodProcess> {
        spawn_in(
            self.netns(),
            &self.dir,
            self.next_process(),
            SpawnAs::Uid(uid),
            argv,
            env,
        )
    }

    /// Starts real Envoy in the pod as UID 1500 with this bootstrap (YAML or JSON). See
    /// [`EnvoyProcess`] for the admin helpers; wait for it with [`EnvoyProcess::wait_ready`].
    pub fn spawn_envoy(&self, bootstrap_yaml: &str) -> Result<EnvoyProcess> {
        EnvoyProcess::spawn(self, bootstrap_yaml)
    }

    /// Starts Envoy as a Kubernetes sidecar container would run: `args` from the container spec, with
    /// the bootstrap Secret's `bootstrap.yaml` under `mount_path` (its volume mount). The harness adds
    /// only `--disable-hot-restart`.
    pub fn spawn_envoy_container(
        &self,
        bootstrap_yaml: &str,
        mount_path: &str,
        args: &[String],
    ) -> Result<EnvoyProcess> {
        EnvoyProcess::spawn_with(self, bootstrap_yaml, Some((mount_path, args)))
    }

    pub(crate) fn next_process(&self) -> u32 {
        self.next_process.fetch_add(1, Ordering::Relaxed)
    }
}

/// Truncates and rewrites a file, keeping its inode (bind mounts of it keep showing the new content).
fn write_in_place(path: &std::path::Path, content: &str) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(HarnessError::io(format!("open {}", path.display())))?;
    file.write_all(content.as_bytes())
        .map_err(HarnessError::io(format!("write {}", path.display())))
}
