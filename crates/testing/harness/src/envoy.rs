//! Real Envoy in a pod: bootstrap written for UID 1500, process run as UID 1500, admin interface reached
//! from inside the pod namespace, readiness observed through `/ready`.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::http::{HttpResponse, http_request};
use crate::netns::in_netns;
use crate::pod::Pod;
use crate::process::{POLL, PodProcess, tail};
use crate::{HarnessError, Result};

/// Envoy's admin address in an OSM pod (upstream: 127.0.0.1:15000), used when the bootstrap names none.
pub const ENVOY_ADMIN_DEFAULT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 15000);

/// How long one admin request may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// An Envoy process in a pod. Killed on drop, like any [`PodProcess`].
#[derive(Debug)]
pub struct EnvoyProcess {
    process: PodProcess,
    netns: String,
    admin: SocketAddr,
    bootstrap: PathBuf,
}

impl EnvoyProcess {
    pub(crate) fn spawn(pod: &Pod, bootstrap_yaml: &str) -> Result<Self> {
        Self::spawn_with(pod, bootstrap_yaml, None)
    }

    /// `container`: the sidecar container's args and the directory its bootstrap volume is mounted
    /// at (e.g. `/etc/envoy`); args under that directory are pointed at the pod's copy, the way the
    /// volume mount would show it. `None`: the harness's own arguments.
    pub(crate) fn spawn_with(
        pod: &Pod,
        bootstrap_yaml: &str,
        container: Option<(&str, &[String])>,
    ) -> Result<Self> {
        let envoy =
            crate::prereqs::envoy_bin().map_err(|missing| HarnessError::Invalid(missing.to_string()))?;
        let admin = admin_address(bootstrap_yaml)?;
        let uid = osm_init::PROXY_UID;

        // The bootstrap may hold a private key: a directory and file only UID 1500 can read.
        let dir = pod.dir().join(format!("envoy-{}", pod.next_process()));
        std::fs::create_dir(&dir).map_err(HarnessError::io(format!("create {}", dir.display())))?;
        let bootstrap = dir.join("bootstrap.yaml");
        std::fs::write(&bootstrap, bootstrap_yaml)
            .map_err(HarnessError::io(format!("write {}", bootstrap.display())))?;
        for (path, mode) in [(&dir, 0o700), (&bootstrap, 0o600)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(HarnessError::io(format!("chmod {}", path.display())))?;
            std::os::unix::fs::chown(path, Some(uid), Some(uid))
                .map_err(HarnessError::io(format!("chown {} to {uid}", path.display())))?;
        }

        if let Some((mount, args)) = container {
            let mount = mount.trim_end_matches('/');
            let mut argv: Vec<std::ffi::OsString> = vec![envoy.clone().into_os_string()];
            for arg in args {
                argv.push(
                    match arg.strip_prefix(mount).filter(|rest| rest.starts_with('/')) {
                        Some(rest) => dir.join(rest.trim_start_matches('/')).into_os_string(),
                        None => arg.into(),
                    },
                );
            }
            // See below: no hot restart, so parallel Envoys need no unique --base-id.
            argv.push("--disable-hot-restart".into());
            let process = pod.spawn_as(uid, &argv, &[])?;
            return Ok(Self {
                process,
                netns: pod.netns().to_owned(),
                admin,
                bootstrap,
            });
        }
        let argv: Vec<&std::ffi::OsStr> = vec![
            envoy.as_os_str(),
            "-c".as_ref(),
            bootstrap.as_os_str(),
            "--concurrency".as_ref(),
            "1".as_ref(),
            "-l".as_ref(),
            "info".as_ref(),
            // No hot restart: its shared-memory region is named by --base-id in /dev/shm, which every
            // namespace shares, so parallel Envoys would otherwise need machine-wide unique base ids.
            "--disable-hot-restart".as_ref(),
        ];
        // Logs go to stderr, which the harness captures in the pod directory.
        let process = pod.spawn_as(uid, &argv, &[])?;
        Ok(Self {
            process,
            netns: pod.netns().to_owned(),
            admin,
            bootstrap,
        })
    }

    /// The underlying process (pid, logs, signals).
    pub fn process(&mut self) -> &mut PodProcess {
        &mut self.process
    }

    /// Everything Envoy wrote to stdout so far (its access log, when configured to log there).
    pub fn stdout(&self) -> String {
        self.process.stdout()
    }

    /// Envoy's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The admin address taken from the bootstrap (inside the pod namespace).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// Where the bootstrap was written (owned by UID 1500, mode 0600).
    pub fn bootstrap_path(&self) -> &Path {
        &self.bootstrap
    }

    /// Sends an admin request from inside the pod namespace and returns the response, whatever its
    /// status (e.g. `("POST", "/logging?level=debug")`).
    pub fn admin_request(&self, method: &str, path: &str) -> Result<HttpResponse> {
        let admin = self.admin;
        in_netns(&self.netns, || http_request(admin, method, path, ADMIN_TIMEOUT))?
    }

    /// `GET <path>` on the admin interface; a non-2xx status is an error carrying the body.
    pub fn admin_get(&self, path: &str) -> Result<String> {
        let resp = self.admin_request("GET", path)?;
        if (200..300).contains(&resp.status) {
            Ok(resp.body)
        } else {
            Err(HarnessError::Http(format!(
                "GET {path} on Envoy admin: status {}: {}",
                resp.status,
                resp.body.trim()
            )))
        }
    }

    /// Polls `/ready` until Envoy reports `LIVE` (all static and initial dynamic resources loaded). Fails
    /// early with the log tail if Envoy exits, or after `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.try_wait()? {
                return Err(HarnessError::Exited(format!(
                    "Envoy exited ({status}) before ready\n{}",
                    self.log_tail()
                )));
            }
            let last = match self.admin_request("GET", "/ready") {
                Ok(resp) if resp.status == 200 && resp.body.trim() == "LIVE" => return Ok(()),
                Ok(resp) => format!("{} {}", resp.status, resp.body.trim()),
                Err(err) => err.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout(format!(
                    "Envoy not ready after {timeout:?} (last /ready: {last})\n{}",
                    self.log_tail()
                )));
            }
            std::thread::sleep(POLL * 5);
        }
    }

    /// The last 60 lines of Envoy's log, for failure messages.
    pub fn log_tail(&self) -> String {
        format!("--- envoy log (tail) ---\n{}", tail(&self.process.stderr(), 60))
    }
}

/// Reads `admin.address.socket_address` from a bootstrap; [`ENVOY_ADMIN_DEFAULT`] when absent.
fn admin_address(bootstrap: &str) -> Result<SocketAddr> {
    #[derive(Deserialize, Default)]
    struct Bootstrap {
        #[serde(default)]
        admin: Option<Admin>,
    }
    #[derive(Deserialize)]
    struct Admin {
        address: Option<Address>,
    }
    #[derive(Deserialize)]
    struct Address {
        socket_address: Option<SocketAddress>,
    }
    #[derive(Deserialize)]
    struct SocketAddress {
        address: String,
        port_value: u16,
    }
    let parsed: Bootstrap = serde_saphyr::from_str(bootstrap)
        .map_err(|e| HarnessError::Invalid(format!("Envoy bootstrap is not valid YAML: {e}")))?;
    let Some(sa) = parsed
        .admin
        .and_then(|a| a.address)
        .and_then(|a| a.socket_address)
    else {
        return Ok(ENVOY_ADMIN_DEFAULT);
    };
    let ip = sa
        .address
        .parse()
        .map_err(|_| HarnessError::Invalid(format!("admin address {:?} is not an IP", sa.address)))?;
    Ok(SocketAddr::new(ip, sa.port_value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_address_from_bootstrap() {
        let yaml = "node: {id: x}\nadmin:\n  address:\n    socket_address: {address: 127.0.0.1, port_value: 15000}\n\
                    static_resources: {listeners: []}\n";
        assert_eq!(admin_address(yaml).unwrap(), ENVOY_ADMIN_DEFAULT);
        let json =
            r#"{"admin": {"address": {"socket_address": {"address": "127.0.0.2", "port_value": 9901}}}}"#;
        assert_eq!(admin_address(json).unwrap(), "127.0.0.2:9901".parse().unwrap());
        assert_eq!(admin_address("node: {id: x}\n").unwrap(), ENVOY_ADMIN_DEFAULT);
        assert!(
            admin_address("admin: {address: {socket_address: {address: localhost, port_value: 1}}}").is_err()
        );
    }
}
