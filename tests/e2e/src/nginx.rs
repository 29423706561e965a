//! A real nginx as the "ingress controller" of ingress tests: Debian's `/usr/sbin/nginx` (installed by
//! `scripts/setup.sh`) in a pod namespace with no sidecar and no interception (like the host of
//! [`crate::internet`]), listening on one port and proxying `location /` to one backend, over plain
//! HTTP or over HTTPS with a client certificate (the way an ingress controller reaches an
//! `IngressBackend` with `protocol: https`).
//!
//! Every file nginx touches lives in a private temp dir (config, pid, lock, logs, every temp path), so
//! nothing of the system nginx (`/etc/nginx`, `/var/lib/nginx`, `/var/log/nginx`) is read or written.
//! The master runs as root (it binds the port and reads the certificates); its worker runs as root or,
//! with [`Nginx::start_as`], as a given user. [`Nginx::reconfigure`] rewrites the config and reloads the
//! running master (`nginx -s reload`), as an ingress controller does when an Ingress changes.
//!
//! The pod's address is not routable from the test process's own namespace: clients run inside a pod
//! (or the hub) namespace — [`Nginx::get`], [`http_get`].

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use osm_harness::{HttpResponse, Pod, PodProcess, http_exchange};

/// Where Debian installs nginx, looked at when `nginx` is not on PATH (`/usr/sbin` often is not, for
/// non-login shells and IDEs).
const NGINX_FALLBACKS: [&str; 2] = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"];

/// The exact-match location that answers the config generation; used to see a (re)load take effect.
pub const GENERATION_PATH: &str = "/.osm-nginx-generation";

/// How long to wait for nginx to listen, or for a reload to take effect.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect/read timeout of the helper clients.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often waits poll.
const POLL: Duration = Duration::from_millis(20);

/// The client side of an HTTPS upstream: the files nginx's `proxy_ssl_*` directives point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyTls {
    /// `proxy_ssl_certificate`: the client certificate (chain) nginx presents (PEM, e.g. `tls.crt`).
    pub cert: PathBuf,
    /// `proxy_ssl_certificate_key`: its private key (PEM, e.g. `tls.key`).
    pub key: PathBuf,
    /// `proxy_ssl_trusted_certificate`: the CA(s) the backend's certificate must chain to (`ca.crt`).
    pub trusted_ca: PathBuf,
    /// `proxy_ssl_name`: the SNI sent and the name the backend's certificate must carry.
    pub name: String,
}

/// Where `location /` goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// `proxy_pass http://<addr>;`
    Http(SocketAddr),
    /// `proxy_pass https://<addr>;` with a client certificate and verification of the backend's.
    Https { addr: SocketAddr, tls: ProxyTls },
}

impl Upstream {
    /// The backend's address.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Upstream::Http(addr) | Upstream::Https { addr, .. } => *addr,
        }
    }
}

/// The nginx executable: `OSM_NGINX_BIN` if set, else `nginx` on PATH, else Debian's `/usr/sbin/nginx`.
pub fn nginx_bin() -> Result<PathBuf> {
    if let Some(explicit) = std::env::var_os("OSM_NGINX_BIN") {
        let path = PathBuf::from(explicit);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(anyhow!(
                "OSM_NGINX_BIN={} is not an executable file",
                path.display()
            ))
        };
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nginx"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(NGINX_FALLBACKS.iter().map(PathBuf::from))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            anyhow!("nginx not found (not on PATH, nor {NGINX_FALLBACKS:?}): run scripts/setup.sh")
        })
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// For tests that need nginx, after [`crate::require_or_skip`]: whether it is installed. When it is
/// not, prints a loud SKIPPED message and returns `false` — or panics under `CI=true`, like the harness
/// does for its own prerequisites.
pub fn nginx_or_skip(test_name: &str) -> bool {
    match nginx_bin() {
        Ok(_) => true,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test_name}: prerequisite missing under CI=true: {e}")
        }
        Err(e) => {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "\n!!!!! SKIPPED {test_name}: {e} !!!!!\n");
            false
        }
    }
}

/// A running nginx. Dropping it stops it (master and workers: one process group; SIGTERM, then
/// SIGKILL after 5 s) and removes its directory.
pub struct Nginx {
    // Drop order: the process before the directory it writes to.
    process: PodProcess,
    dir: tempfile::TempDir,
    bin: PathBuf,
    netns: String,
    addr: SocketAddr,
    worker_user: String,
    upstream: Upstream,
    generation: u64,
}

impl Nginx {
    /// Starts nginx in `pod` (which must have no interception rules), listening on `listen_port` on every
    /// address of the pod and proxying to `upstream`; the worker runs as root. Returns once it answers on
    /// the port.
    pub fn start(pod: &Pod, listen_port: u16, upstream: Upstream) -> Result<Nginx> {
        Self::start_as(pod, listen_port, upstream, "root")
    }

    /// [`Nginx::start`] with the worker process as `worker_user` (nginx's `user` directive: `"www-data"`,
    /// or `"nobody nogroup"` where the group is not named like the user). The master stays root: it binds
    /// the port and reads the certificates and key, so those need not be readable by `worker_user`.
    pub fn start_as(pod: &Pod, listen_port: u16, upstream: Upstream, worker_user: &str) -> Result<Nginx> {
        let bin = nginx_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("osm-nginx-")
            .tempdir()
            .context("nginx temp dir")?;
        // The worker (maybe not root) must reach the temp paths nginx creates (and chowns to it) inside.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .context("chmod the nginx temp dir")?;
        let generation = 1;
        write_config(
            dir.path(),
            &render_config(dir.path(), listen_port, worker_user, &upstream, generation),
        )?;
        check_config(&bin, dir.path())?;
        let process = pod
            .spawn(&nginx_argv(&bin, dir.path(), &[]), &[])
            .context("spawning nginx")?;
        let mut nginx = Nginx {
            process,
            dir,
            bin,
            netns: pod.netns().to_string(),
            addr: SocketAddr::from((pod.ip(), listen_port)),
            worker_user: worker_user.to_string(),
            upstream,
            generation,
        };
        nginx.wait_generation(Instant::now() + READY_TIMEOUT)?;
        Ok(nginx)
    }

    /// Where clients reach it: the pod's address and the listen port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `location /` goes now.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The config nginx runs with.
    pub fn config(&self) -> String {
        std::fs::read_to_string(self.conf_path()).unwrap_or_default()
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The worker processes' pids (one per generation still running; one once a reload is done).
    pub fn worker_pids(&self) -> Vec<u32> {
        children(self.pid())
    }

    /// Points `location /` at `upstream`: rewrites the config, checks it (`nginx -t`), reloads the running
    /// master (`nginx -s reload`) and returns once the new config serves every new connection (the new
    /// generation answers and every worker of the old one has exited).
    pub fn reconfigure(&mut self, upstream: Upstream) -> Result<()> {
        let generation = self.generation + 1;
        let conf = render_config(
            self.dir.path(),
            self.addr.port(),
            &self.worker_user,
            &upstream,
            generation,
        );
        write_config(self.dir.path(), &conf)?;
        check_config(&self.bin, self.dir.path())?;
        let old_workers = children(self.pid());
        run(&nginx_argv(&self.bin, self.dir.path(), &["-s", "reload"]))
            .with_context(|| format!("nginx -s reload\n{}", self.log_tail()))?;
        self.generation = generation;
        self.upstream = upstream;
        let deadline = Instant::now() + READY_TIMEOUT;
        self.wait_generation(deadline)?;
        // Old workers stop accepting on their way out, but until they are gone a new connection could
        // still land on one of them.
        while children(self.pid()).iter().any(|w| old_workers.contains(w)) {
            if Instant::now() > deadline {
                bail!(
                    "old nginx workers {old_workers:?} still running after the reload\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// A GET of `path` through nginx, sent from inside the network namespace `from_netns` (a pod's
    /// [`Pod::netns`] or the hub's), `Host` being nginx's address.
    pub fn get(&self, from_netns: &str, path: &str) -> Result<HttpResponse> {
        http_get(from_netns, self.addr, path)
    }

    /// Everything in nginx's error log (at `info` level: connection and upstream errors, reloads).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// The access log: one line per request, `<client> "<request line>" <status> upstream=<addr>
    /// upstream_status=<status>` (`-` where nginx reached no upstream).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// The last lines of the error log and of the process output, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.error_log();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "--- nginx error.log (tail) ---\n{}\n{}",
            lines[lines.len().saturating_sub(30)..].join("\n"),
            self.process.log_tail(10)
        )
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.path().join("nginx.conf")
    }

    /// Polls [`GENERATION_PATH`] until it answers with the current generation; fails early if nginx
    /// exits.
    fn wait_generation(&mut self, deadline: Instant) -> Result<()> {
        let want = self.generation.to_string();
        loop {
            let last = match http_get(&self.netns, self.addr, GENERATION_PATH) {
                Ok(r) if r.status == 200 && r.body.trim() == want => return Ok(()),
                Ok(r) => format!("{} {:?}", r.status, r.body.trim()),
                Err(e) => format!("{e:#}"),
            };
            if let Some(status) = self.process.try_wait()? {
                bail!("nginx exited ({status})\n{}", self.log_tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "nginx on {} did not serve config generation {want} in time (last: {last})\n{}",
                    self.addr,
                    self.log_tail()
                );
            }
            std::thread::sleep(POLL);
        }
    }
}

/// A GET of `path` to `addr`, sent from inside the network namespace `from_netns` (a pod's
/// [`Pod::netns`], or the hub's: the test process's own namespace has no route to pods), with
/// `Host: <addr>`.
pub fn http_get(from_netns: &str, addr: SocketAddr, path: &str) -> Result<HttpResponse> {
    http_get_host(from_netns, addr, &addr.to_string(), path)
}

/// [`http_get`] with a chosen `Host` header (say, the host of an Ingress rule).
pub fn http_get_host(from_netns: &str, addr: SocketAddr, host: &str, path: &str) -> Result<HttpResponse> {
    let stream = osm_harness::in_netns(from_netns, move || {
        TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)
    })?
    .with_context(|| format!("connect to {addr} from {from_netns}"))?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    Ok(http_exchange(stream, host, "GET", path)?)
}

/// The status code of [`http_get`].
pub fn http_status(from_netns: &str, addr: SocketAddr, path: &str) -> Result<u16> {
    Ok(http_get(from_netns, addr, path)?.status)
}

/// `nginx -p <dir> -c <dir>/nginx.conf -e <dir>/error.log [extra…]`: `-e` keeps nginx from opening the
/// compiled-in `/var/log/nginx/error.log` before it has read the config.
fn nginx_argv(bin: &Path, dir: &Path, extra: &[&str]) -> Vec<String> {
    let mut argv = vec![
        bin.to_string_lossy().into_owned(),
        "-p".into(),
        format!("{}/", dir.display()),
        "-c".into(),
        dir.join("nginx.conf").to_string_lossy().into_owned(),
        "-e".into(),
        dir.join("error.log").to_string_lossy().into_owned(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    argv
}

/// `nginx -t` on the config in `dir`: a bad config is reported here rather than as a reload that
/// silently keeps the old one.
fn check_config(bin: &Path, dir: &Path) -> Result<()> {
    run(&nginx_argv(bin, dir, &["-q", "-t"])).with_context(|| {
        format!(
            "nginx rejects its config:\n{}",
            std::fs::read_to_string(dir.join("nginx.conf")).unwrap_or_default()
        )
    })
}

fn run(argv: &[String]) -> Result<()> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {}", argv.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Replaces `nginx.conf` in `dir` atomically (a reload never reads half a file).
fn write_config(dir: &Path, conf: &str) -> Result<()> {
    let tmp = dir.join("nginx.conf.new");
    std::fs::write(&tmp, conf).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join("nginx.conf")).context("replacing nginx.conf")
}

/// The whole config: one server on `listen_port`, `location /` to the upstream, the generation
/// location, and every path under `dir`.
fn render_config(
    dir: &Path,
    listen_port: u16,
    worker_user: &str,
    upstream: &Upstream,
    generation: u64,
) -> String {
    let d = dir.display();
    let proxy = match upstream {
        Upstream::Http(addr) => format!("proxy_pass http://{addr};"),
        Upstream::Https { addr, tls } => format!(
            "proxy_pass https://{addr};
            proxy_ssl_certificate {cert};
            proxy_ssl_certificate_key {key};
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 3;
            proxy_ssl_name {name};
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse off;",
            cert = tls.cert.display(),
            key = tls.key.display(),
            ca = tls.trusted_ca.display(),
            name = tls.name,
        ),
    };
    format!(
        "# Generated by osm-e2e (tests/e2e/src/nginx.rs), generation {generation}.
daemon off;
master_process on;
worker_processes 1;
user {worker_user};
pid {d}/nginx.pid;
lock_file {d}/nginx.lock;
error_log {d}/error.log info;

events {{
    worker_connections 256;
}}

http {{
    log_format osm '$remote_addr \"$request\" $status upstream=$upstream_addr upstream_status=$upstream_status';
    access_log {d}/access.log osm;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type text/plain;
    server_tokens off;

    server {{
        listen {listen_port};

        location = {GENERATION_PATH} {{
            return 200 \"{generation}\\n\";
        }}

        location / {{
            {proxy}
            # HTTP/1.1 to the backend, as ingress controllers do: Envoy refuses HTTP/1.0 (nginx's default).
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            # The client's Host, as an ingress controller passes it on.
            proxy_set_header Host $http_host;
            proxy_connect_timeout 5s;
            proxy_read_timeout 30s;
        }}
    }}
}}
"
    )
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM (to the group) rather than the process handle's SIGKILL: the master then reaps its
        // workers before it exits, instead of leaving them to be reaped by init.
        let _ = self.process.terminate(Duration::from_secs(5));
    }
}

/// The pids whose parent is `pid` (nginx's workers), from `/proc/<pid>/stat`.
fn children(pid: u32) -> Vec<u32> {
    let parent = pid.to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                // "pid (comm) state ppid …": comm may hold spaces and parentheses.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(|pp| pp == parent))
                    .unwrap_or(false)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_everything_in_its_dir() {
        let tls = ProxyTls {
            cert: "/x/tls.crt".into(),
            key: "/x/tls.key".into(),
            trusted_ca: "/x/ca.crt".into(),
            name: "bookstore.bookstore.cluster.local".into(),
        };
        let addr: SocketAddr = "10.0.0.2:14001".parse().unwrap();
        let conf = render_config(Path::new("/tmp/n"), 80, "root", &Upstream::Https { addr, tls }, 3);
        for line in [
            "proxy_pass https://10.0.0.2:14001;",
            "proxy_ssl_certificate /x/tls.crt;",
            "proxy_ssl_certificate_key /x/tls.key;",
            "proxy_ssl_trusted_certificate /x/ca.crt;",
            "proxy_ssl_name bookstore.bookstore.cluster.local;",
            "return 200 \"3\\n\";",
            "listen 80;",
        ] {
            assert!(conf.contains(line), "{line} missing in\n{conf}");
        }
        let paths = ["_temp_path ", "pid ", "lock_file ", "error_log ", "access_log "];
        let path_lines: Vec<&str> = conf
            .lines()
            .map(str::trim)
            .filter(|l| paths.iter().any(|p| l.starts_with(p) || l.contains(p)))
            .collect();
        assert_eq!(path_lines.len(), 9, "{path_lines:?}");
        assert!(
            path_lines.iter().all(|l| l.contains(" /tmp/n/")),
            "{path_lines:?}"
        );
        let plain = render_config(Path::new("/tmp/n"), 8080, "www-data", &Upstream::Http(addr), 1);
        assert!(plain.contains("proxy_pass http://10.0.0.2:14001;") && !plain.contains("proxy_ssl"));
        assert!(plain.contains("user www-data;"));
    }
}
