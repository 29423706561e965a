//! Watching a manifest directory: reload when files are added, edited or deleted.
//!
//! inotify (through `notify`) wakes the watcher; a burst of events is coalesced for a few tens of
//! milliseconds (bounded, so a file written continuously still reloads), then the directory is
//! reloaded. A periodic re-read backs it up: every 200 ms while inotify cannot be set up (the
//! directory does not exist yet, no inotify instances left), every second otherwise. inotify is
//! re-armed when the directory appears or is replaced (renamed over). Reloads read every file but
//! parse only the ones whose contents changed.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use osm_model::MeshInput;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::error::SourceError;
use crate::source::{ManifestDir, ManifestSource, Reload};

/// Timings of [`ManifestSource::watch_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchOptions {
    /// Quiet time that ends a burst of file events (default 50 ms).
    pub coalesce: Duration,
    /// Longest a burst may delay a reload (default 250 ms).
    pub max_delay: Duration,
    /// Re-read period without inotify (default 200 ms).
    pub poll_interval: Duration,
    /// Re-read period with inotify, as a safety net (default 1 s).
    pub safety_interval: Duration,
    /// Use inotify when it can be set up (default true); false polls only.
    pub use_notify: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            coalesce: Duration::from_millis(50),
            max_delay: Duration::from_millis(250),
            poll_interval: Duration::from_millis(200),
            safety_interval: Duration::from_secs(1),
            use_notify: true,
        }
    }
}

/// Watches `dir` (mesh `osm`, trust domain `cluster.local`) until `shutdown` turns true or its sender
/// is dropped. See [`ManifestSource::watch`].
pub async fn watch<F>(dir: impl Into<PathBuf>, shutdown: watch::Receiver<bool>, on_change: F)
where
    F: FnMut(Result<MeshInput, Vec<SourceError>>),
{
    ManifestSource::new(ManifestDir::new(dir))
        .watch(shutdown, on_change)
        .await;
}

/// Is this file event worth a reload? Our own reads open files, so opens and read-only closes are not.
fn relevant(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

fn start_notify(root: &Path, tx: mpsc::UnboundedSender<()>) -> notify::Result<RecommendedWatcher> {
    let handler = move |event: notify::Result<notify::Event>| match event {
        Ok(event) if !relevant(&event.kind) => {}
        // An error (e.g. the event queue overflowed) may hide changes: reload to be sure.
        _ => {
            let _ = tx.send(());
        }
    };
    let mut watcher = notify::recommended_watcher(handler)?;
    watcher.watch(root, RecursiveMode::Recursive)?;
    Ok(watcher)
}

/// (device, inode) of a directory: tells a replaced directory from the watched one.
fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// inotify on the manifest directory, (re)armed when the directory appears or is replaced.
struct Notifier {
    root: PathBuf,
    tx: mpsc::UnboundedSender<()>,
    watcher: Option<RecommendedWatcher>,
    watched: Option<(u64, u64)>,
    told: bool,
}

impl Notifier {
    fn new(root: &Path, tx: mpsc::UnboundedSender<()>) -> Self {
        Self {
            root: root.to_path_buf(),
            tx,
            watcher: None,
            watched: None,
            told: false,
        }
    }

    fn active(&self) -> bool {
        self.watcher.is_some()
    }

    /// Arms inotify if it is not watching the directory there now. Cheap when nothing changed.
    fn refresh(&mut self) {
        let now = identity(&self.root);
        if self.watcher.is_some() && now == self.watched {
            return;
        }
        self.watcher = None;
        self.watched = None;
        if now.is_none() {
            return;
        }
        match start_notify(&self.root, self.tx.clone()) {
            Ok(w) => {
                tracing::debug!(dir = %self.root.display(), "watching the manifest directory with inotify");
                self.watcher = Some(w);
                self.watched = now;
            }
            Err(e) if !self.told => {
                self.told = true;
                tracing::info!(dir = %self.root.display(), error = %e, "no inotify; polling the manifest directory");
            }
            Err(_) => {}
        }
    }
}

/// Waits until events stop for `coalesce` (at most `max_delay` in all), then drops the rest.
async fn coalesce(rx: &mut mpsc::UnboundedReceiver<()>, options: &WatchOptions) {
    let deadline = Instant::now() + options.max_delay;
    loop {
        let wait = options
            .coalesce
            .min(deadline.saturating_duration_since(Instant::now()));
        if wait.is_zero() {
            break;
        }
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(())) => continue,
            _ => break,
        }
    }
    while rx.try_recv().is_ok() {}
}

/// What has been handed to the callback, so only real changes are.
struct Delivered {
    input: Option<MeshInput>,
    errors: Vec<SourceError>,
}

impl ManifestSource {
    /// Loads the directory, then reloads it whenever files are added, edited or deleted, until
    /// `shutdown` turns true or its sender is dropped.
    ///
    /// `on_change` gets `Ok(input)` whenever the served input changes (once at start, even when
    /// empty) and `Err(problems)` whenever the set of problems changes to a non-empty one. A reload
    /// that applies some files and rejects others delivers both, `Ok` first: the input always
    /// reflects every valid file.
    ///
    /// Reloads run on the blocking pool. Stop it with `shutdown` rather than by dropping the future:
    /// dropped in the middle of a reload, the source forgets its state and starts afresh next time.
    pub async fn watch<F>(&mut self, shutdown: watch::Receiver<bool>, on_change: F)
    where
        F: FnMut(Result<MeshInput, Vec<SourceError>>),
    {
        self.watch_with(WatchOptions::default(), shutdown, on_change)
            .await;
    }

    /// [`watch`](Self::watch) with explicit timings.
    pub async fn watch_with<F>(
        &mut self,
        options: WatchOptions,
        mut shutdown: watch::Receiver<bool>,
        mut on_change: F,
    ) where
        F: FnMut(Result<MeshInput, Vec<SourceError>>),
    {
        if *shutdown.borrow_and_update() {
            return;
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut notifier = options.use_notify.then(|| Notifier::new(self.dir().root(), tx));
        let period = |notifier: &Option<Notifier>| {
            if notifier.as_ref().is_some_and(Notifier::active) {
                options.safety_interval
            } else {
                options.poll_interval
            }
        };
        let mut delivered = Delivered {
            input: None,
            errors: Vec::new(),
        };
        if let Some(n) = &mut notifier {
            n.refresh();
        }
        self.reload_and_deliver(&mut delivered, &mut on_change).await;
        let mut current = period(&notifier);
        let mut ticker = tokio::time::interval_at(Instant::now() + current, current);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    continue;
                }
                Some(()) = rx.recv() => coalesce(&mut rx, &options).await,
                _ = ticker.tick() => {}
            }
            // Re-arm before reading, so a change made after the read is seen by the new watch.
            if let Some(n) = &mut notifier {
                n.refresh();
            }
            self.reload_and_deliver(&mut delivered, &mut on_change).await;
            if period(&notifier) != current {
                current = period(&notifier);
                ticker = tokio::time::interval_at(Instant::now() + current, current);
                ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            }
        }
    }

    async fn reload_and_deliver<F>(&mut self, delivered: &mut Delivered, on_change: &mut F)
    where
        F: FnMut(Result<MeshInput, Vec<SourceError>>),
    {
        if let Reload::Unchanged = self.reload_blocking().await {
            return;
        }
        if delivered.input.as_ref() != Some(self.input()) {
            delivered.input = Some(self.input().clone());
            tracing::info!(
                services = self.input().services.len(),
                pods = self.input().pods.len(),
                "manifest directory loaded"
            );
            on_change(Ok(self.input().clone()));
        }
        if delivered.errors != self.errors() {
            delivered.errors = self.errors().to_vec();
            if !delivered.errors.is_empty() {
                on_change(Err(delivered.errors.clone()));
            }
        }
    }

    /// [`reload`](Self::reload) on the blocking pool (it reads files).
    async fn reload_blocking(&mut self) -> Reload {
        let placeholder = ManifestSource::new(self.dir().clone());
        let mut source = std::mem::replace(self, placeholder);
        match tokio::task::spawn_blocking(move || {
            let outcome = source.reload();
            (source, outcome)
        })
        .await
        {
            Ok((source, outcome)) => {
                *self = source;
                outcome
            }
            Err(e) => {
                // Only a bug could get here; start afresh rather than stop watching.
                tracing::error!(error = %e, "manifest reload failed; starting afresh");
                Reload::Unchanged
            }
        }
    }
}

/// The manifest directory as a [`osm_model::Source`]: the initial load, then every change, until
/// `stop`. Rejected files are summarised as `<n> invalid manifest(s): <first, with file and field>`.
impl osm_model::Source for ManifestSource {
    async fn run_until(
        mut self,
        stop: osm_model::Stop,
        mut sink: Box<dyn FnMut(osm_model::SourceEvent) + Send>,
    ) {
        let (tx, rx) = watch::channel(false);
        let stopper = async move {
            stop.await;
            let _ = tx.send(true);
        };
        let watching = self.watch(rx, |change| match change {
            Ok(input) => sink(osm_model::SourceEvent::Input(Box::new(input))),
            Err(errors) => sink(osm_model::SourceEvent::Rejected(format!(
                "{} invalid manifest(s): {}",
                errors.len(),
                errors.first().map(ToString::to_string).unwrap_or_default()
            ))),
        });
        tokio::join!(stopper, watching);
    }
}
