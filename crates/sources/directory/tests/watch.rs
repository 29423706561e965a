//! Watching a manifest directory: adding, editing and deleting files produce updates quickly, bad
//! edits produce problems (and keep the last good state), and shutdown stops the watcher.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use osm_model::{MeshInput, ObjectRef};
use osm_sources::{ManifestDir, ManifestSource, SourceError, WatchOptions};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

type Update = Result<MeshInput, Vec<SourceError>>;

/// Generous: a wait ends as soon as the update arrives; this only bounds a failing test.
const TIMEOUT: Duration = Duration::from_secs(10);

/// inotify only: the periodic safety re-read is pushed past [`TIMEOUT`], so an update that arrives
/// was delivered by inotify (a wall-clock budget would say the same, but flakily on a busy machine).
fn inotify_only() -> WatchOptions {
    WatchOptions {
        safety_interval: Duration::from_secs(600),
        ..WatchOptions::default()
    }
}

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn split(v1: u32, v2: u32) -> String {
    osm_fixtures::bookstore_split(v1, v2)
}

fn split_weights(input: &MeshInput) -> Option<(i64, i64)> {
    let s = input
        .traffic_splits
        .get(&ObjectRef::new("bookstore", "bookstore-split"))?;
    Some((s.backends[0].weight, s.backends[1].weight))
}

struct Watching {
    updates: mpsc::UnboundedReceiver<Update>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

fn start(dir: &Path, options: WatchOptions) -> Watching {
    let (tx, updates) = mpsc::unbounded_channel();
    let (stop, stop_rx) = watch::channel(false);
    let mut source = ManifestSource::new(ManifestDir::new(dir));
    let task = tokio::spawn(async move {
        source
            .watch_with(options, stop_rx, move |update| {
                let _ = tx.send(update);
            })
            .await;
    });
    Watching { updates, stop, task }
}

impl Watching {
    /// The next update, failing the test after [`TIMEOUT`].
    async fn next(&mut self) -> Update {
        tokio::time::timeout(TIMEOUT, self.updates.recv())
            .await
            .expect("an update within the timeout")
            .expect("the watcher is running")
    }

    /// Skips updates until one satisfies `pred`.
    async fn until(&mut self, what: &str, pred: impl Fn(&Update) -> bool) -> Update {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let update = tokio::time::timeout(left, self.updates.recv())
                .await
                .unwrap_or_else(|_| panic!("no update where {what} within {TIMEOUT:?}"))
                .expect("the watcher is running");
            if pred(&update) {
                return update;
            }
        }
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("the watcher stops on shutdown")
            .unwrap();
    }
}

fn one_split_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("manifests");
    write(&dir, "policies/split.yaml", &split(50, 50));
    (tmp, dir)
}

async fn add_edit_delete(options: WatchOptions) {
    let (_tmp, dir) = one_split_dir();
    let mut w = start(&dir, options);
    let first = w.next().await.expect("a clean initial load");
    assert_eq!(split_weights(&first), Some((50, 50)));

    // Edit.
    write(&dir, "policies/split.yaml", &split(80, 20));
    w.until(
        "the edit applied",
        |u| matches!(u, Ok(i) if split_weights(i) == Some((80, 20))),
    )
    .await
    .unwrap();

    // Add a file in a new subdirectory.
    write(
        &dir,
        "more/route.yaml",
        "apiVersion: specs.smi-spec.io/v1alpha4\nkind: TCPRoute\nmetadata:\n  name: tcp\n  namespace: bookstore\n\
         spec:\n  matches:\n    ports: [3306]\n",
    );
    w.until(
        "the new file applied",
        |u| matches!(u, Ok(i) if i.tcp_routes.len() == 1),
    )
    .await
    .unwrap();

    // A bad edit: problems reported, last good state kept (no new input).
    write(
        &dir,
        "policies/split.yaml",
        &split(80, 20).replace("weight: 80", "weight: -80"),
    );
    let Err(errors) = w.next().await else {
        panic!("expected problems")
    };
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].field.as_deref(), Some("spec.backends[0].weight"));

    // Delete.
    fs::remove_file(dir.join("policies/split.yaml")).unwrap();
    let update = w
        .until(
            "the deletion applied",
            |u| matches!(u, Ok(i) if i.traffic_splits.is_empty()),
        )
        .await
        .unwrap();
    assert_eq!(update.tcp_routes.len(), 1);
    w.stop().await;
}

/// inotify: an edit, an added file, a bad edit and a deletion each produce an update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inotify_add_edit_delete() {
    add_edit_delete(inotify_only()).await;
}

/// The polling fallback does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_add_edit_delete() {
    add_edit_delete(WatchOptions {
        use_notify: false,
        ..WatchOptions::default()
    })
    .await;
}

/// An Egress policy written into a watched directory is served in `MeshInput.egresses`; one in an
/// ignored namespace is not; deleting the file removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_egress_is_served() {
    let (_tmp, dir) = one_split_dir();
    let mut w = start(&dir, inotify_only());
    let first = w.next().await.expect("a clean initial load");
    assert!(first.egresses.is_empty());
    let shop = ObjectRef::new("shop", "allow-example");
    let egress = |ns: &str| {
        format!(
            "apiVersion: policy.openservicemesh.io/v1alpha1\nkind: Egress\nmetadata:\n  name: allow-example\n  \
             namespace: {ns}\nspec:\n  sources:\n  - kind: ServiceAccount\n    name: web\n    namespace: {ns}\n  \
             hosts: [example.com]\n  ports:\n  - number: 443\n    protocol: https\n"
        )
    };
    write(
        &dir,
        "egress.yaml",
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ignored\n  labels:\n    \
             openservicemesh.io/ignore: \"true\"\n---\n{}---\n{}",
            egress("shop"),
            egress("ignored")
        ),
    );
    let input = w
        .until(
            "the Egress served",
            |u| matches!(u, Ok(i) if i.egresses.contains_key(&shop)),
        )
        .await
        .unwrap();
    let keys: Vec<&ObjectRef> = input.egresses.keys().collect();
    assert_eq!(keys, [&shop], "the ignored namespace's Egress was served");
    let spec = &input.egresses[&shop];
    assert_eq!(spec.hosts, ["example.com"]);
    assert_eq!(
        (spec.ports[0].number, spec.ports[0].protocol.as_str()),
        (443, "https")
    );
    assert_eq!(split_weights(&input), Some((50, 50)), "the rest is still served");

    fs::remove_file(dir.join("egress.yaml")).unwrap();
    w.until(
        "the Egress removed",
        |u| matches!(u, Ok(i) if i.egresses.is_empty()),
    )
    .await
    .unwrap();
    w.stop().await;
}

/// A burst of writes is coalesced: the final contents are delivered, without one update per write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_are_coalesced() {
    let (_tmp, dir) = one_split_dir();
    let mut w = start(&dir, WatchOptions::default());
    w.next().await.unwrap();
    for i in 0..20 {
        write(&dir, "policies/split.yaml", &split(i, 100 - i));
    }
    let mut updates = 0;
    loop {
        updates += 1;
        let input = w.next().await.unwrap();
        if split_weights(&input) == Some((19, 81)) {
            break;
        }
    }
    // Twenty writes within a few milliseconds: one reload, or a couple if a window ended mid-burst.
    assert!(updates <= 3, "{updates} updates for one burst");
    assert!(w.updates.try_recv().is_err(), "nothing after the final state");
    w.stop().await;
}

/// A directory that does not exist yet: problems first, then its contents once it is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_created_later() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("later");
    let mut w = start(&dir, WatchOptions::default());
    assert_eq!(w.next().await.unwrap(), MeshInput::new("cluster.local"));
    let Err(errors) = w.next().await else {
        panic!("expected a problem")
    };
    assert!(
        errors[0].message.contains("cannot read the directory"),
        "{}",
        errors[0]
    );
    write(&dir, "split.yaml", &split(1, 1));
    w.until(
        "the directory loaded",
        |u| matches!(u, Ok(i) if split_weights(i) == Some((1, 1))),
    )
    .await
    .unwrap();
    w.stop().await;
}

/// The watcher also stops when the shutdown sender is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_when_shutdown_sender_is_dropped() {
    let (_tmp, dir) = one_split_dir();
    let (stop, stop_rx) = watch::channel(false);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(osm_sources::watch(dir, stop_rx, move |u| {
        let _ = tx.send(u);
    }));
    assert!(rx.recv().await.unwrap().is_ok());
    drop(stop);
    tokio::time::timeout(TIMEOUT, task).await.unwrap().unwrap();
}

/// The directory replaced by another (removed, then a new one renamed into place): its contents are
/// loaded, and inotify follows the new directory, so a later edit is seen without the safety re-read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_replaced() {
    let (tmp, dir) = one_split_dir();
    let mut w = start(&dir, inotify_only());
    w.next().await.unwrap();
    let staged = tmp.path().join("staged");
    write(&staged, "split.yaml", &split(7, 3));
    fs::remove_dir_all(&dir).unwrap();
    fs::rename(&staged, &dir).unwrap();
    w.until(
        "the new directory loaded",
        |u| matches!(u, Ok(i) if split_weights(i) == Some((7, 3))),
    )
    .await
    .unwrap();
    write(&dir, "split.yaml", &split(8, 2));
    w.until(
        "the edit applied",
        |u| matches!(u, Ok(i) if split_weights(i) == Some((8, 2))),
    )
    .await
    .unwrap();
    w.stop().await;
}
