//! Named network namespaces: entering one from a helper thread ([`in_netns`]) and owning one
//! ([`NetnsGuard`], deleted with everything running in it on drop).

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{HarnessError, Result, run_cmd};

/// Where `ip netns` keeps its namespace handles.
const NETNS_RUN_DIR: &str = "/run/netns";
/// Where `ip netns exec` looks for per-namespace files to bind-mount over `/etc`.
pub(crate) const NETNS_ETC_DIR: &str = "/etc/netns";

/// Runs `f` on a fresh thread that has joined the named network namespace (as created by `ip netns add`)
/// and returns its result. Only that thread switches namespace, so the caller's process is unaffected;
/// sockets created by `f` stay in that namespace for their whole life, wherever they are used later.
/// A panic in `f` is resumed on the calling thread.
pub fn in_netns<T, F>(netns: &str, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let path = Path::new(NETNS_RUN_DIR).join(netns);
    let handle = File::open(&path).map_err(HarnessError::io(format!(
        "cannot open network namespace {}",
        path.display()
    )))?;
    std::thread::scope(|scope| {
        let joined = scope
            .spawn(move || {
                setns(&handle, CloneFlags::CLONE_NEWNET).map_err(|source| HarnessError::Sys {
                    what: format!("setns into {netns}"),
                    source,
                })?;
                Ok(f())
            })
            .join();
        match joined {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// A network namespace created with `ip netns add` and owned by this process. Drop kills every process
/// still inside it, deletes it, and removes its `/etc/netns/<name>` directory.
#[derive(Debug)]
pub(crate) struct NetnsGuard {
    name: String,
}

impl NetnsGuard {
    /// Creates the namespace and brings its loopback up.
    pub(crate) fn create(name: &str) -> Result<Self> {
        run_cmd(&["ip", "netns", "add", name])?;
        // From here on, drop cleans up even if a later step fails.
        let guard = Self {
            name: name.to_owned(),
        };
        guard.ip(&["link", "set", "lo", "up"])?;
        Ok(guard)
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <netns> args…`.
    pub(crate) fn ip(&self, args: &[&str]) -> Result<String> {
        let argv: Vec<&str> = ["ip", "-n", self.name.as_str()]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        run_cmd(&argv)
    }

    /// `/etc/netns/<name>`, bind-mounted over `/etc` entries by `ip netns exec`.
    pub(crate) fn etc_dir(&self) -> PathBuf {
        Path::new(NETNS_ETC_DIR).join(&self.name)
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        destroy_netns(&self.name);
    }
}

/// Kills all processes in a namespace, deletes it and its `/etc/netns` directory. Best effort: used from
/// `Drop` and stale cleanup, where there is nobody to report to.
pub(crate) fn destroy_netns(name: &str) {
    kill_all_in(name);
    let _ = run_cmd(&["ip", "netns", "del", name]);
    let _ = std::fs::remove_dir_all(Path::new(NETNS_ETC_DIR).join(name));
}

/// SIGKILLs every process whose network namespace is `name`. A namespace lives on (with its veths) until
/// its last process exits, even after `ip netns del`, so strays must not survive a test.
fn kill_all_in(name: &str) {
    let Ok(pids) = run_cmd(&["ip", "netns", "pids", name]) else {
        return;
    };
    for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Names of all namespaces `ip netns list` shows (it prints `name (id: N)` once a namespace has an id).
pub(crate) fn list_netns() -> Result<Vec<String>> {
    Ok(run_cmd(&["ip", "netns", "list"])?
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}
