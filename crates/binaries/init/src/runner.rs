//! Running iptables: the [`CommandRunner`] seam (so the harness can run the same steps through
//! `ip netns exec <ns>`), the process-spawning [`SystemRunner`], and [`apply`].

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::InitError;
use crate::config::InitConfig;
use crate::rules::render_restore;

/// Runs one external command. Implementations decide *where* it runs (this process's network namespace,
/// another one via `ip netns exec`, a recording fake in tests).
pub trait CommandRunner {
    /// Runs `program args…`, feeding `stdin` when given, and returns its stdout. A non-zero exit is an
    /// error carrying stderr.
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, InitError>;
}

/// Runs commands as child processes, optionally behind a fixed prefix such as
/// `["ip", "netns", "exec", "pod-ns"]`.
#[derive(Debug, Clone, Default)]
pub struct SystemRunner {
    prefix: Vec<String>,
}

impl SystemRunner {
    /// Runs commands directly, in the current network namespace.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs every command as `prefix… program args…`.
    pub fn with_prefix<I, S>(prefix: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            prefix: prefix.into_iter().map(Into::into).collect(),
        }
    }
}

impl CommandRunner for SystemRunner {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, InitError> {
        let argv: Vec<&str> = self
            .prefix
            .iter()
            .map(String::as_str)
            .chain([program])
            .chain(args.iter().copied())
            .collect();
        let shown = argv.join(" ");
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| InitError::Spawn {
                command: shown.clone(),
                source,
            })?;
        let output = std::thread::scope(|scope| {
            // Feed stdin from another thread so a child that writes a lot before reading cannot
            // deadlock against us.
            if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
                scope.spawn(move || {
                    // A write error means the child exited early; its status and stderr tell why.
                    let _ = pipe.write_all(input.as_bytes());
                });
            }
            child.wait_with_output()
        })
        .map_err(|source| InitError::Spawn {
            command: shown.clone(),
            source,
        })?;
        if !output.status.success() {
            return Err(InitError::Command {
                command: shown,
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// Installs (or re-installs) the interception rules: reads the nat table with `iptables-save -t nat`,
/// renders the restore input against it and applies it in one `iptables-restore --noflush` transaction.
/// Returns the restore input that was applied.
pub fn apply(cfg: &InitConfig, runner: &dyn CommandRunner) -> Result<String, InitError> {
    cfg.validate()?;
    let existing = runner.run("iptables-save", &["-t", "nat"], None)?;
    let input = render_restore(cfg, &existing);
    // `-w`: wait for the xtables lock instead of failing when another iptables user holds it (legacy
    // backend; the nft backend accepts and ignores it).
    runner.run("iptables-restore", &["--noflush", "-w"], Some(&input))?;
    Ok(input)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// Records calls and answers `iptables-save` with a canned dump.
    struct FakeRunner {
        dump: &'static str,
        calls: RefCell<Vec<(String, Option<String>)>>,
    }

    impl CommandRunner for FakeRunner {
        fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, InitError> {
            self.calls
                .borrow_mut()
                .push((format!("{program} {}", args.join(" ")), stdin.map(str::to_owned)));
            Ok(if program == "iptables-save" {
                self.dump.to_owned()
            } else {
                String::new()
            })
        }
    }

    /// `apply` reads the table first, then restores exactly what `render_restore` gives for that dump.
    #[test]
    fn apply_saves_then_restores() {
        let fake = FakeRunner {
            dump: "*nat\n-A OUTPUT -p tcp -j OSM_PROXY_OUTBOUND\nCOMMIT\n",
            calls: RefCell::default(),
        };
        let applied = apply(&InitConfig::default(), &fake).unwrap();
        let calls = fake.calls.into_inner();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0], ("iptables-save -t nat".to_owned(), None));
        assert_eq!(calls[1].0, "iptables-restore --noflush -w");
        assert_eq!(calls[1].1.as_deref(), Some(applied.as_str()));
        assert_eq!(applied, render_restore(&InitConfig::default(), fake.dump));
    }

    /// An invalid config never reaches iptables.
    #[test]
    fn apply_validates_first() {
        let fake = FakeRunner {
            dump: "",
            calls: RefCell::default(),
        };
        let cfg = InitConfig {
            inbound_port: 0,
            ..InitConfig::default()
        };
        assert!(matches!(apply(&cfg, &fake), Err(InitError::InvalidConfig(_))));
        assert!(fake.calls.borrow().is_empty());
    }

    /// The system runner reports a failing command with its stderr, and passes stdin through.
    #[test]
    fn system_runner_reports_failures_and_feeds_stdin() {
        let runner = SystemRunner::with_prefix(["sh", "-c"]);
        let out = runner.run("cat; echo done", &[], Some("hello\n")).unwrap();
        assert_eq!(out, "hello\ndone\n");
        let err = runner.run("echo oops >&2; exit 3", &[], None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("oops") && text.contains('3'), "{text}");
        let missing = SystemRunner::new()
            .run("/nonexistent/osm-init-test", &[], None)
            .unwrap_err();
        assert!(matches!(missing, InitError::Spawn { .. }));
    }
}
