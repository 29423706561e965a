//! Processes running inside a namespace: started through `ip netns exec` (optionally `setpriv` to
//! another UID) in their own process group, output captured to log files, the whole group killed on drop.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::{HarnessError, Result};

/// How often waits poll.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// Who a spawned process runs as.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SpawnAs {
    Root,
    /// UID and GID (the same number), no supplementary groups.
    Uid(u32),
}

/// A process started in a pod (or hub) namespace. Its stdout and stderr go to files in the pod's
/// directory. Dropping it kills its whole process group and reaps it.
#[derive(Debug)]
pub struct PodProcess {
    child: Child,
    label: String,
    stdout: PathBuf,
    stderr: PathBuf,
    /// Set once `child` was reaped: its pid (and group id) may then belong to someone else.
    reaped: bool,
    /// Keeps the log directory alive as long as the process handle, even past the pod.
    _dir: Arc<TempDir>,
}

/// Starts `ip netns exec <netns> [setpriv …] argv…` with logs `<dir>/<n>-<program>.{out,err}`.
pub(crate) fn spawn_in<S: AsRef<OsStr>>(
    netns: &str,
    dir: &Arc<TempDir>,
    n: u32,
    who: SpawnAs,
    argv: &[S],
    env: &[(&str, &str)],
) -> Result<PodProcess> {
    let Some(program) = argv.first() else {
        return Err(HarnessError::Invalid("spawn: empty command".into()));
    };
    let base = Path::new(program.as_ref())
        .file_name()
        .unwrap_or(program.as_ref())
        .to_string_lossy()
        .into_owned();
    let label = format!("{n}-{base}");
    let stdout = dir.path().join(format!("{label}.out"));
    let stderr = dir.path().join(format!("{label}.err"));
    let create =
        |path: &Path| File::create(path).map_err(HarnessError::io(format!("create {}", path.display())));

    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns]);
    if let SpawnAs::Uid(uid) = who {
        // setpriv drops to the UID before exec'ing, so the pid we hold is the program's own.
        cmd.args([
            "setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "--",
        ]);
    }
    cmd.args(argv.iter().map(AsRef::as_ref))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(create(&stdout)?)
        .stderr(create(&stderr)?)
        // Its own process group, so drop can kill whatever the program forks, too.
        .process_group(0);
    let shown = format!("{label} in {netns}");
    let child = cmd.spawn().map_err(HarnessError::io(format!("spawn {shown}")))?;
    Ok(PodProcess {
        child,
        label: shown,
        stdout,
        stderr,
        reaped: false,
        _dir: Arc::clone(dir),
    })
}

impl PodProcess {
    /// The process id (`ip netns exec` and `setpriv` exec the program, so this is the program itself).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Path of the stdout log.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    /// Path of the stderr log.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The last `lines` lines of stdout and of stderr, labelled, for test failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "--- {} stdout (tail) ---\n{}\n--- {} stderr (tail) ---\n{}",
            self.label,
            tail(&self.stdout(), lines),
            self.label,
            tail(&self.stderr(), lines)
        )
    }

    /// The exit status if the process has exited (reaping it), `None` while it runs.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        let status = self
            .child
            .try_wait()
            .map_err(HarnessError::io(format!("wait for {}", self.label)))?;
        self.reaped |= status.is_some();
        Ok(status)
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout(format!(
                    "{} still running after {timeout:?}\n{}",
                    self.label,
                    self.log_tail(20)
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Polls the stdout and stderr logs until `needle` appears (e.g. a "listening" line), failing early if
    /// the process exits first.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout().contains(needle) || self.stderr().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.try_wait()? {
                return Err(HarnessError::Exited(format!(
                    "{} exited ({status}) before printing {needle:?}\n{}",
                    self.label,
                    self.log_tail(20)
                )));
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout(format!(
                    "{} did not print {needle:?} within {timeout:?}\n{}",
                    self.label,
                    self.log_tail(20)
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Sends `signal` to the process group (no-op once reaped).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        if self.reaped {
            return Ok(());
        }
        killpg(self.pgid(), signal).map_err(|source| HarnessError::Sys {
            what: format!("signal {}", self.label),
            source,
        })
    }

    /// Asks the process to stop (SIGTERM to its group) and waits up to `grace` for it; then kills it
    /// (SIGKILL) and reports a timeout. Use this for programs that print a summary on SIGTERM.
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        self.signal(Signal::SIGTERM)?;
        match self.wait_timeout(grace) {
            Ok(status) => Ok(status),
            Err(err) => {
                self.kill();
                Err(err)
            }
        }
    }

    /// Kills the process group with SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        if !self.reaped {
            // The group id stays reserved until we reap the leader, so this cannot hit a stranger.
            let _ = killpg(self.pgid(), Signal::SIGKILL);
        }
        let _ = self.child.wait();
        self.reaped = true;
    }

    fn pgid(&self) -> Pid {
        // process_group(0) made the child its group's leader.
        Pid::from_raw(self.child.id() as i32)
    }
}

impl Drop for PodProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 3), "");
    }
}
