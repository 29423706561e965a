//! Finding workspace binaries that tests run inside pods.
//!
//! Cargo builds a package's binaries for that package's own tests only (`CARGO_BIN_EXE_<name>`); it
//! does not build the binaries of dependencies. Tests in other packages therefore look for
//! `osm-demo-app` next to themselves in the target directory and refuse a missing or stale one with
//! a message saying how to build it: `cargo build -p osm-demo-apps` (a `cargo test --workspace` run
//! builds it too, before any test starts).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::prereqs::WORKSPACE_DIR;
use crate::{HarnessError, Result};

/// Name of the demo-app executable.
const DEMO_APP: &str = "osm-demo-app";

/// Path of the `osm-demo-app` binary: `OSM_DEMO_APP_BIN` if set, else `<target>/<profile>/osm-demo-app`
/// found from the running executable (a test binary lives in `<target>/<profile>/deps/`). Fails when it
/// is missing, or older than the demo-apps sources (then it would test old code).
pub fn demo_app_bin() -> Result<PathBuf> {
    workspace_bin(
        DEMO_APP,
        "osm-demo-apps",
        "crates/testing/demo-apps",
        "OSM_DEMO_APP_BIN",
    )
}

/// Any workspace binary, found like [`demo_app_bin`]: `env_override` if set, else next to the running
/// executable; refused when older than the sources of its package (in `package_dir`, relative to the
/// workspace) — e.g. `workspace_bin("osm", "osm-cli", "crates/binaries/cli", "OSM_CLI_BIN")`.
pub fn workspace_bin(name: &str, package: &str, package_dir: &str, env_override: &str) -> Result<PathBuf> {
    if let Some(explicit) = std::env::var_os(env_override) {
        let path = PathBuf::from(explicit);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(HarnessError::Invalid(format!(
                "{env_override}={} does not exist",
                path.display()
            )))
        };
    }
    let exe = std::env::current_exe().map_err(HarnessError::io("locate the running executable"))?;
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .collect();
    let Some(found) = candidates.iter().find(|p| p.is_file()) else {
        return Err(HarnessError::Invalid(format!(
            "{name} not found (looked at {candidates:?}); build it first: cargo build -p {package}"
        )));
    };
    let sources = Path::new(WORKSPACE_DIR).join(package_dir);
    if let (Some(built), Some(newest)) = (modified(found), newest_source(&sources))
        && newest > built
    {
        return Err(HarnessError::Invalid(format!(
            "{} is older than the sources in {}; rebuild it: cargo build -p {package}",
            found.display(),
            sources.display()
        )));
    }
    Ok(found.clone())
}

fn modified(path: &Path) -> Option<SystemTime> {
    path.metadata().and_then(|m| m.modified()).ok()
}

/// The newest modification time of any file under `src/` (None if there are none, e.g. when running
/// from an installed copy without the sources). `Cargo.toml` is left out: editing it (say, adding a
/// dev-dependency) does not make cargo relink the binary, so it would look stale forever.
fn newest_source(crate_dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    let mut stack = vec![crate_dir.join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(t) = modified(&path) {
                newest = newest.max(Some(t));
            }
        }
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_source_sees_nested_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(newest_source(dir.path()), None);
        std::fs::create_dir_all(dir.path().join("src/a")).unwrap();
        std::fs::write(dir.path().join("src/a/x.rs"), "").unwrap();
        assert!(newest_source(dir.path()).is_some());
    }
}
