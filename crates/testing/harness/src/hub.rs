//! The hub: one network namespace per test with a bridge that pods attach to, plus naming, addressing and
//! stale-namespace cleanup.
//!
//! Names are `<prefix>-<pid>-<n>-hub` for the hub and `<prefix>-<pid>-<n>-<pod index>` for pods, where
//! `<pid>` is this process and `<n>` counts hubs within it: parallel tests and parallel test binaries
//! never collide, and [`cleanup_stale`] can tell a crashed run's namespaces (dead pid) from a running one's.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tempfile::TempDir;

use crate::netns::{NetnsGuard, destroy_netns, in_netns, list_netns};
use crate::pod::{Pod, PodSpec};
use crate::process::{PodProcess, SpawnAs, spawn_in};
use crate::{HarnessError, Result};

/// Name of the bridge inside the hub namespace.
const BRIDGE: &str = "br0";
/// Prefix length of the hub subnet.
pub(crate) const SUBNET_PREFIX_LEN: u8 = 24;
/// Host numbers .2 ..= .254 are for pods (.1 is the hub).
const MAX_PODS: u32 = 253;

/// The "node network" of one test: a namespace with a bridge at `10.<a>.<b>.1/24`, where `<a>.<b>` is
/// derived from the hub's id and always lies in 10.128.0.0/10, so virtual Service IPs picked from
/// 10.96.0.0/12 (Kubernetes' default range) never clash with pod addresses.
///
/// Pods keep the hub alive (they share its state), so dropping a `Hub` before its pods is fine: the
/// namespace goes away with the last of them.
#[derive(Debug)]
pub struct Hub {
    inner: Arc<HubInner>,
}

#[derive(Debug)]
pub(crate) struct HubInner {
    /// Declared first: the namespace is deleted before its log directory.
    pub(crate) netns: NetnsGuard,
    pub(crate) prefix: String,
    pub(crate) id: String,
    pub(crate) ip: Ipv4Addr,
    next_pod: AtomicU32,
    next_process: AtomicU32,
    pub(crate) dir: Arc<TempDir>,
}

impl Hub {
    /// Creates a hub namespace `<prefix>-<id>-hub` with a bridge and its address. `prefix` should be short
    /// and specific to the caller (e.g. `osme2e`); it is what [`cleanup_stale`] matches on.
    pub fn create(prefix: &str) -> Result<Hub> {
        static NEXT_HUB: AtomicU32 = AtomicU32::new(0);
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(HarnessError::Invalid(format!(
                "hub prefix {prefix:?} must be non-empty [A-Za-z0-9_]"
            )));
        }
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT_HUB.fetch_add(1, Ordering::Relaxed)
        );
        let netns = NetnsGuard::create(&format!("{prefix}-{id}-hub"))?;
        let ip = hub_ip(&id);
        // A fixed MAC: a bridge without one takes the lowest MAC of its ports, so it would change as pods
        // join, leaving earlier pods' ARP entries for the gateway pointing at an address the bridge no
        // longer answers to (their traffic through the hub then stalls until the entry expires).
        netns.ip(&[
            "link",
            "add",
            BRIDGE,
            "address",
            &bridge_mac(ip),
            "type",
            "bridge",
        ])?;
        netns.ip(&["addr", "add", &format!("{ip}/{SUBNET_PREFIX_LEN}"), "dev", BRIDGE])?;
        netns.ip(&["link", "set", BRIDGE, "up"])?;
        let dir = make_dir(netns.name())?;
        Ok(Hub {
            inner: Arc::new(HubInner {
                netns,
                prefix: prefix.to_owned(),
                id,
                ip,
                next_pod: AtomicU32::new(0),
                next_process: AtomicU32::new(0),
                dir: Arc::new(dir),
            }),
        })
    }

    /// The short unique id (`<pid>-<n>`) shared by this hub's namespace names.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The hub's address on the bridge; pods route everything through it.
    pub fn ip(&self) -> Ipv4Addr {
        self.inner.ip
    }

    /// The hub's namespace name.
    pub fn netns(&self) -> &str {
        self.inner.netns.name()
    }

    /// A TCP listener bound to `<hub ip>:port` inside the hub namespace (port 0 picks a free one), e.g.
    /// for the control plane's ADS server. Use it from any thread; for tokio, call
    /// `set_nonblocking(true)` and `tokio::net::TcpListener::from_std`.
    pub fn bind_tcp(&self, port: u16) -> Result<TcpListener> {
        let addr = SocketAddr::from((self.ip(), port));
        in_netns(self.netns(), move || TcpListener::bind(addr))?
            .map_err(HarnessError::io(format!("bind {addr} in hub")))
    }

    /// Runs `f` on a thread inside the hub namespace (see [`in_netns`]).
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        in_netns(self.netns(), f)
    }

    /// Runs a process inside the hub namespace as root (e.g. a control plane binary), with logs in the
    /// hub's directory. See [`Pod::spawn`] for the details.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(&self, argv: &[S], env: &[(&str, &str)]) -> Result<PodProcess> {
        let n = self.inner.next_process.fetch_add(1, Ordering::Relaxed);
        spawn_in(self.netns(), &self.inner.dir, n, SpawnAs::Root, argv, env)
    }

    /// Adds a pod: its own namespace joined to the bridge by a veth pair, `eth0` with the next free
    /// address of the hub subnet, and a default route via the hub.
    pub fn add_pod(&self, spec: PodSpec) -> Result<Pod> {
        let n = self.inner.next_pod.fetch_add(1, Ordering::Relaxed) + 1;
        if n > MAX_PODS {
            return Err(HarnessError::Invalid(format!(
                "a hub holds at most {MAX_PODS} pods"
            )));
        }
        let netns = NetnsGuard::create(&format!("{}-{}-{n}", self.inner.prefix, self.inner.id))?;
        let [a, b, c, _] = self.ip().octets();
        let ip = Ipv4Addr::new(a, b, c, (n + 1) as u8);
        // The pair is created inside the hub (its names only need to be unique there) and the pod end
        // is moved into the pod in the same step, so no interface ever appears in the host namespace.
        let host_end = format!("veth{n}");
        self.inner.netns.ip(&[
            "link",
            "add",
            &host_end,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            netns.name(),
        ])?;
        self.inner
            .netns
            .ip(&["link", "set", &host_end, "master", BRIDGE, "up"])?;
        netns.ip(&["addr", "add", &format!("{ip}/{SUBNET_PREFIX_LEN}"), "dev", "eth0"])?;
        netns.ip(&["link", "set", "eth0", "up"])?;
        // A default route (rather than only the subnet) so connections to virtual Service IPs have a
        // route; the pod's iptables rules then redirect them to Envoy before they leave.
        netns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &self.ip().to_string(),
            "dev",
            "eth0",
        ])?;
        let dir = make_dir(netns.name())?;
        Ok(Pod::new(spec, netns, ip, dir, Arc::clone(&self.inner)))
    }
}

/// The hub address for an id: 10.<128..=191>.<0..=255>.1, from a hash of the id. Uniqueness across hubs
/// is not needed (each hub is its own namespace); a spread just makes logs of parallel tests easier to
/// tell apart.
fn hub_ip(id: &str) -> Ipv4Addr {
    // FNV-1a: tiny, deterministic, good enough spread.
    let hash = id.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    Ipv4Addr::new(10, 128 + (hash % 64) as u8, (hash >> 8) as u8, 1)
}

/// The bridge's MAC: locally administered, unicast, from the hub address.
fn bridge_mac(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:00:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// A private directory for a namespace's logs and files. Mode 0711 so an unprivileged process (Envoy as
/// UID 1500) can reach a subdirectory it owns, without being able to list the others.
pub(crate) fn make_dir(netns: &str) -> Result<TempDir> {
    use std::os::unix::fs::PermissionsExt as _;
    let base = std::env::var_os("OSM_HARNESS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix(&format!("{netns}-"))
        .tempdir_in(&base)
        .map_err(HarnessError::io(format!(
            "create a temp dir in {}",
            base.display()
        )))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
        .map_err(HarnessError::io(format!("chmod {}", dir.path().display())))?;
    Ok(dir)
}

/// Deletes namespaces named `<prefix>-<pid>-…` whose creating process is gone (a crashed or killed test
/// run), with everything running in them and their `/etc/netns` directories. Namespaces of live
/// processes, including other tests running right now, are left alone. Returns the deleted names.
pub fn cleanup_stale(prefix: &str) -> Result<Vec<String>> {
    let own = std::process::id();
    let mut removed = Vec::new();
    for name in list_netns()? {
        let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != own && !Path::new(&format!("/proc/{pid}")).exists() {
            destroy_netns(&name);
            removed.push(name);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ip_is_in_10_128_slash_10() {
        for id in ["1-0", "1-1", "4194303-77", "42-3"] {
            let [a, b, c, d] = hub_ip(id).octets();
            assert_eq!((a, d), (10, 1));
            assert!((128..192).contains(&b), "{id}: {b}");
            let _ = c;
        }
        assert_eq!(hub_ip("7-1"), hub_ip("7-1"));
    }
}
