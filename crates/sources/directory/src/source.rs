//! [`ManifestDir`] (where and how to read) and [`ManifestSource`] (the last good state of a directory
//! and how it changes on reload).
//!
//! Last good state is kept **per file**: a file with a problem keeps serving the contents it had at
//! its last good load (or nothing, if it never loaded), while the other files' changes apply. A
//! problem between files (an object defined twice, a named port no pod declares) is blamed on a file
//! changed since the served state, which is put back to its last good contents; if the problem stays
//! with only unchanged files involved, the whole reload is refused and the served state is kept.
//! The served input is therefore always one that loaded without a problem.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use osm_model::MeshInput;

use crate::assemble::{FileDocs, LoadResult, Settings, assemble};
use crate::document::{Document, parse_file};
use crate::error::SourceError;

/// Largest manifest file read; larger ones are an error (they are not hand-written manifests).
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Deepest directory nesting followed below the manifest directory.
pub const MAX_DEPTH: usize = 16;

/// A directory of manifests and how to read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestDir {
    root: PathBuf,
    settings: Settings,
}

impl ManifestDir {
    /// The directory `root`, for mesh `osm` with trust domain `cluster.local`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            settings: Settings {
                mesh_name: "osm".to_string(),
                trust_domain: "cluster.local".to_string(),
            },
        }
    }

    /// The mesh name that `openservicemesh.io/monitored-by` labels must name (default `osm`).
    pub fn with_mesh_name(mut self, mesh_name: impl Into<String>) -> Self {
        self.settings.mesh_name = mesh_name.into();
        self
    }

    /// The trust domain of the input (default `cluster.local`).
    pub fn with_trust_domain(mut self, trust_domain: impl Into<String>) -> Self {
        self.settings.trust_domain = trust_domain.into();
        self
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads and validates the whole directory once: every problem, or the result when there is none.
    pub fn load(&self) -> Result<LoadResult, Vec<SourceError>> {
        let mut source = ManifestSource::new(self.clone());
        match source.reload() {
            Reload::Rejected(errors) => Err(errors),
            Reload::Reloaded(_) | Reload::Unchanged => Ok(source.served),
        }
    }
}

/// What a [`ManifestSource::reload`] did.
#[derive(Clone, Debug, PartialEq)]
// One value per reload, matched at once: boxing the input would only add noise.
#[allow(clippy::large_enum_variant)]
pub enum Reload {
    /// No file changed since the previous reload (the previous outcome still holds).
    Unchanged,
    /// Every file loaded: this is the input now served.
    Reloaded(MeshInput),
    /// Some files (or the directory) have problems. Those files keep their last good contents; the
    /// other files' changes were applied when that left no problem. The input now served is
    /// [`ManifestSource::input`].
    Rejected(Vec<SourceError>),
}

/// How a file looked at its last read, to skip re-parsing unchanged files.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fingerprint {
    Content { len: usize, hash: u64 },
    Unreadable(String),
}

type Docs = Arc<Vec<Document>>;

#[derive(Debug)]
struct FileEntry {
    /// On disk at the last scan.
    present: bool,
    fingerprint: Option<Fingerprint>,
    /// The latest read: its documents, or its problems. A deleted file reads as no documents.
    latest: Result<Docs, Vec<SourceError>>,
    /// The contents in the served state.
    good: Option<Docs>,
}

fn same(a: &Option<Docs>, b: &Option<Docs>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// A manifest directory's last good state. [`reload`](Self::reload) re-reads the directory (parsing
/// only files whose contents changed); [`watch`](Self::watch) does so whenever files change.
///
/// The state is kept per file: a file with a problem keeps serving what it held at its last good
/// load (nothing, if it never loaded) while the other files' changes apply. A problem between files
/// is blamed on a changed file, which is put back to its last good contents; if it remains with only
/// unchanged files involved, or the directory cannot be listed, the whole previous state stays. The
/// served input always loaded without a problem.
#[derive(Debug)]
pub struct ManifestSource {
    dir: ManifestDir,
    files: BTreeMap<PathBuf, FileEntry>,
    served: LoadResult,
    errors: Vec<SourceError>,
    loaded: bool,
    /// The previous reload could not list the directory.
    scan_failed: bool,
}

impl ManifestSource {
    /// A source that has read nothing yet: its input is empty until the first reload.
    pub fn new(dir: ManifestDir) -> Self {
        let served = LoadResult {
            input: MeshInput::new(dir.settings.trust_domain.as_str()),
            extra: Vec::new(),
            warnings: Vec::new(),
        };
        Self {
            dir,
            files: BTreeMap::new(),
            served,
            errors: Vec::new(),
            loaded: false,
            scan_failed: false,
        }
    }

    /// The directory this source reads.
    pub fn dir(&self) -> &ManifestDir {
        &self.dir
    }

    /// The input served now.
    pub fn input(&self) -> &MeshInput {
        &self.served.input
    }

    /// Everything served now, including objects the model does not use.
    pub fn current(&self) -> &LoadResult {
        &self.served
    }

    /// The problems found by the latest reload that changed anything (empty after a clean one).
    pub fn errors(&self) -> &[SourceError] {
        &self.errors
    }

    /// Re-reads the directory. Never panics, whatever the files hold.
    pub fn reload(&mut self) -> Reload {
        let root = self.dir.root.clone();
        let scanned = match scan(&root) {
            Ok(files) => files,
            Err(e) => {
                self.loaded = true;
                self.scan_failed = true;
                if self.errors != [e.clone()] {
                    tracing::warn!(error = %e, "manifest directory not readable; keeping the last good state");
                }
                self.errors = vec![e];
                return Reload::Rejected(self.errors.clone());
            }
        };
        // After a failed listing, the errors to report have changed even if no file did.
        let mut changed = !self.loaded || std::mem::take(&mut self.scan_failed);
        self.loaded = true;
        let mut seen = BTreeSet::new();
        for rel in scanned {
            let (fingerprint, latest) = match read(&root.join(&rel)) {
                Ok(bytes) => {
                    let mut h = DefaultHasher::new();
                    bytes.hash(&mut h);
                    let fp = Fingerprint::Content {
                        len: bytes.len(),
                        hash: h.finish(),
                    };
                    (fp, Some(bytes))
                }
                // Deleted between the scan and the read: it is gone.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => (Fingerprint::Unreadable(e.to_string()), None),
            };
            seen.insert(rel.clone());
            let entry = self.files.entry(rel.clone()).or_insert_with(|| FileEntry {
                present: false,
                fingerprint: None,
                latest: Ok(Arc::default()),
                good: None,
            });
            if entry.present && entry.fingerprint.as_ref() == Some(&fingerprint) {
                continue;
            }
            changed = true;
            entry.latest = match (&fingerprint, latest) {
                (_, Some(bytes)) => parse_file(&rel, &bytes).map(Arc::new),
                (Fingerprint::Unreadable(why), None) => {
                    Err(vec![SourceError::file(&rel, format!("cannot read: {why}"))])
                }
                (Fingerprint::Content { .. }, None) => Ok(Arc::default()),
            };
            entry.present = true;
            entry.fingerprint = Some(fingerprint);
        }
        for (rel, entry) in &mut self.files {
            if entry.present && !seen.contains(rel) {
                entry.present = false;
                entry.fingerprint = None;
                entry.latest = Ok(Arc::default());
                changed = true;
            }
        }
        if !changed {
            return Reload::Unchanged;
        }
        self.apply();
        if self.errors.is_empty() {
            Reload::Reloaded(self.served.input.clone())
        } else {
            Reload::Rejected(self.errors.clone())
        }
    }

    /// Chooses each file's contents (latest if valid, else last good), assembles, blames and puts
    /// back fresh files until the result has no problem, then serves it.
    fn apply(&mut self) {
        let paths: Vec<PathBuf> = self.files.keys().cloned().collect();
        let entries: Vec<&FileEntry> = self.files.values().collect();
        let mut errors: Vec<SourceError> = entries
            .iter()
            .filter_map(|e| e.latest.as_ref().err())
            .flatten()
            .cloned()
            .collect();
        let mut chosen: Vec<Option<Docs>> = entries
            .iter()
            .map(|e| match &e.latest {
                Ok(docs) => Some(docs.clone()),
                Err(_) => e.good.clone(),
            })
            .collect();
        let accepted = loop {
            let fresh: Vec<bool> = entries
                .iter()
                .zip(&chosen)
                .map(|(e, c)| !same(c, &e.good))
                .collect();
            // Files with documents, and which entry each one is.
            let mut owners = Vec::new();
            let mut files = Vec::new();
            for (i, docs) in chosen.iter().enumerate() {
                if let Some(docs) = docs.as_ref().filter(|d| !d.is_empty()) {
                    owners.push(i);
                    files.push(FileDocs {
                        file: &paths[i],
                        docs,
                        fresh: fresh[i],
                    });
                }
            }
            let (result, cross) = assemble(&files, &self.dir.settings);
            if cross.is_empty() {
                break Some(result);
            }
            let mut put_back = BTreeSet::new();
            let mut stuck = Vec::new();
            for (f, e) in cross {
                let i = owners[f];
                if fresh[i] {
                    put_back.insert(i);
                    errors.push(e);
                } else {
                    stuck.push(e);
                }
            }
            if put_back.is_empty() {
                // Only unchanged files are involved: refuse the whole reload.
                errors.extend(stuck);
                break None;
            }
            for i in put_back {
                chosen[i] = entries[i].good.clone();
            }
        };
        if let Some(result) = accepted {
            for (entry, docs) in self.files.values_mut().zip(chosen) {
                entry.good = docs;
            }
            // A deletion that was applied is forgotten.
            self.files
                .retain(|_, e| e.present || e.good.as_ref().is_some_and(|d| !d.is_empty()));
            // Each warning is logged when it appears, not on every reload.
            for w in result
                .warnings
                .iter()
                .filter(|w| !self.served.warnings.contains(w))
            {
                tracing::warn!(warning = %w, "accepted, not supported yet");
            }
            self.served = result;
        }
        errors.sort();
        errors.dedup();
        for e in &errors {
            tracing::warn!(error = %e, "manifest rejected; its last good contents stay in effect");
        }
        self.errors = errors;
    }
}

/// Reads a file, refusing oversized ones.
fn read(path: &Path) -> io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(io::Error::other(format!(
            "larger than {} MiB",
            MAX_FILE_BYTES >> 20
        )));
    }
    std::fs::read(path)
}

/// `*.yaml` / `*.yml` files below `root` (relative paths, sorted), recursing into subdirectories.
/// Hidden entries (names starting with `.`) are skipped, and so are symlinked directories (no loops);
/// symlinked files are read (a Kubernetes ConfigMap volume is a set of such links).
pub(crate) fn scan(root: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let mut files = Vec::new();
    let mut pending = vec![(PathBuf::new(), 0usize)];
    while let Some((rel, depth)) = pending.pop() {
        let dir = root.join(&rel);
        let shown = if rel.as_os_str().is_empty() { root } else { &rel };
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| SourceError::file(shown, format!("cannot read the directory: {e}")))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| SourceError::file(shown, format!("cannot read the directory: {e}")))?;
            let name = entry.file_name();
            let Some(name_str) = name.to_str() else {
                continue;
            };
            if name_str.starts_with('.') {
                continue;
            }
            let child = rel.join(&name);
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                if depth + 1 < MAX_DEPTH {
                    pending.push((child, depth + 1));
                }
                continue;
            }
            let is_manifest = Path::new(name_str)
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
            if !is_manifest {
                continue;
            }
            let is_file = file_type.is_file()
                || (file_type.is_symlink() && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()));
            if is_file {
                files.push(child);
            }
        }
    }
    files.sort();
    Ok(files)
}
