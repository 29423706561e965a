//! The bookstore demo apps' live counters: one JSON object per app in its `--stats-file`, rewritten
//! atomically (temp file + rename) every [`WRITE_EVERY`] and once more when the app stops, e.g.
//!
//! ```json
//! {"app":"bookbuyer","sent":12,"ok":10,"refused":2,"status_non_2xx":2,"conn_errors":0,
//!  "status":{"200":10,"403":2},"served_by":{"bookstore-v1":6,"bookstore-v2":4},"updated_unix_ms":1700000000000}
//! ```
//!
//! `sent`/`ok`/`refused` always describe the HTTP requests the app itself sent: the buyer's and thief's
//! calls to the bookstore, the bookstore's restock calls to the warehouse (so there `ok == restock_ok`),
//! nothing for the warehouse. The app-specific fields are present only for their app. An orchestrator
//! reads a file with [`read_stats`].

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// How often the stats file is rewritten while the app runs.
pub const WRITE_EVERY: Duration = Duration::from_millis(200);

/// One app's counters, as written to its stats file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStats {
    /// `bookbuyer`, `bookthief`, `bookstore` or `bookwarehouse`.
    pub app: String,
    /// The instance name when the app has one (`bookstore-v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Finished requests this app sent (one cut short by the stop signal is not counted).
    pub sent: u64,
    /// Of those, the 2xx responses.
    pub ok: u64,
    /// Of those, the failures: `status_non_2xx + conn_errors`.
    pub refused: u64,
    /// Responses with a status other than 2xx.
    #[serde(default)]
    pub status_non_2xx: u64,
    /// Requests without a response: resolve/connect/IO failure or timeout.
    #[serde(default)]
    pub conn_errors: u64,
    /// HTTP status code → count, for every response (2xx included).
    #[serde(default)]
    pub status: BTreeMap<String, u64>,
    /// `x-served-by` response header value → count.
    #[serde(default)]
    pub served_by: BTreeMap<String, u64>,
    /// The most recent connection error, for diagnosis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Servers: requests received, whatever their path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    /// bookstore: books sold since the start or the last `/reset` (what `/books-bought` answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub books_sold: Option<u64>,
    /// bookstore: restock calls the warehouse answered with 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restock_ok: Option<u64>,
    /// bookstore: restock calls that failed (non-2xx or no response).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restock_failed: Option<u64>,
    /// bookwarehouse: restock requests applied to the store by this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restocked: Option<u64>,
    /// bookwarehouse: the sum of all books' stock, read back from SQLite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stock_total: Option<i64>,
    /// When the file was written, milliseconds since the Unix epoch.
    pub updated_unix_ms: u64,
}

impl AppStats {
    /// Zeroed counters of `app`.
    pub fn new(app: &str) -> AppStats {
        AppStats {
            app: app.to_owned(),
            ..AppStats::default()
        }
    }

    /// Records a response to a request this app sent.
    pub fn record_response(&mut self, status: u16, served_by: Option<&str>) {
        self.sent += 1;
        if (200..300).contains(&status) {
            self.ok += 1;
        } else {
            self.refused += 1;
            self.status_non_2xx += 1;
        }
        *self.status.entry(status.to_string()).or_default() += 1;
        if let Some(name) = served_by {
            *self.served_by.entry(name.to_owned()).or_default() += 1;
        }
    }

    /// Records a request this app sent that got no response.
    pub fn record_conn_error(&mut self, error: impl Into<String>) {
        self.sent += 1;
        self.refused += 1;
        self.conn_errors += 1;
        self.last_error = Some(error.into());
    }

    /// The stats as one JSON object (no newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("AppStats always serializes")
    }
}

/// Reads an app's stats file. `None` when it does not exist (yet) or does not hold an [`AppStats`];
/// since writers replace the file atomically, a reader never sees half a file.
pub fn read_stats(path: impl AsRef<Path>) -> Option<AppStats> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Writes `stats` to `path` atomically: a temp file in the same directory, then a rename over `path`.
pub fn write_stats(path: &Path, stats: &AppStats) -> std::io::Result<()> {
    let file_name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("stats file {} has no file name", path.display()),
        )
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut bytes = stats.to_json().into_bytes();
    bytes.push(b'\n');
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            std::io::Error::new(e.kind(), format!("write stats {}: {e}", path.display()))
        })
}

/// An app's counters shared between its request handlers and the stats writer. Updates are short and
/// never span an `.await`.
#[derive(Debug, Clone)]
pub struct SharedStats(Arc<Mutex<AppStats>>);

impl SharedStats {
    /// Shares `stats`.
    pub fn new(stats: AppStats) -> SharedStats {
        SharedStats(Arc::new(Mutex::new(stats)))
    }

    /// Changes the counters.
    pub fn update<R>(&self, change: impl FnOnce(&mut AppStats) -> R) -> R {
        change(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> AppStats {
        self.update(|s| s.clone())
    }
}

/// SIGTERM and SIGINT handlers. Install them before announcing readiness, so a signal sent as soon as
/// the app looks ready is seen.
#[derive(Debug)]
pub struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    /// Installs the handlers (needs a Tokio runtime).
    pub fn install() -> std::io::Result<StopSignals> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Where and when an app's stats go.
#[derive(Debug, Clone)]
pub struct StatsFile {
    /// The stats file.
    pub path: PathBuf,
    /// The counters.
    pub stats: SharedStats,
}

impl StatsFile {
    /// Writes the current counters, stamped with the current time.
    pub fn write_now(&self) -> std::io::Result<()> {
        let mut stats = self.stats.snapshot();
        stats.updated_unix_ms = unix_ms();
        write_stats(&self.path, &stats)
    }

    /// Runs `app` while rewriting the stats file every [`WRITE_EVERY`] (the first write happens before
    /// `app` is first polled, so the file's existence means the signal handlers are in place), until
    /// `app` ends, `stop_after` passes, or a signal in `signals` arrives; then calls `on_stop` (which
    /// settles work still running off the runtime, e.g. a database transaction) and writes the final
    /// stats. `app` is dropped when stopped: a request in flight then is not counted. A periodic write
    /// that fails is reported and retried at the next tick; a failed final write is the result.
    pub async fn run_app<F>(
        &self,
        mut signals: StopSignals,
        stop_after: Option<Duration>,
        app: F,
        on_stop: impl FnOnce(),
    ) -> std::io::Result<()>
    where
        F: Future<Output = std::io::Result<()>>,
    {
        self.write_now()?;
        let deadline = async {
            match stop_after {
                Some(after) => tokio::time::sleep(after).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(app, deadline);
        let mut ticks = tokio::time::interval(WRITE_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                biased;
                () = signals.recv() => break Ok(()),
                () = &mut deadline => break Ok(()),
                result = &mut app => break result,
                _ = ticks.tick() => {
                    if let Err(err) = self.write_now() {
                        eprintln!("{err}");
                    }
                }
            }
        };
        on_stop();
        let written = self.write_now();
        result.and(written)
    }
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON has the agreed field names, with app-specific fields only when set.
    #[test]
    fn json_shape() {
        let mut s = AppStats::new("bookbuyer");
        s.record_response(200, Some("bookstore-v1"));
        s.record_response(403, None);
        s.record_conn_error("connect 10.0.0.1:14001: refused");
        s.updated_unix_ms = 7;
        assert_eq!(
            s.to_json(),
            r#"{"app":"bookbuyer","sent":3,"ok":1,"refused":2,"status_non_2xx":1,"conn_errors":1,"status":{"200":1,"403":1},"served_by":{"bookstore-v1":1},"last_error":"connect 10.0.0.1:14001: refused","updated_unix_ms":7}"#
        );
        let mut store = AppStats::new("bookstore");
        store.name = Some("bookstore-v1".into());
        store.books_sold = Some(2);
        store.restock_ok = Some(1);
        store.restock_failed = Some(0);
        let json: serde_json::Value = serde_json::from_str(&store.to_json()).unwrap();
        assert_eq!(json["name"], "bookstore-v1");
        assert_eq!(json["books_sold"], 2);
        assert!(json.get("stock_total").is_none());
    }

    /// Files round-trip; a missing or foreign file reads as `None`; no temp file is left behind.
    #[test]
    fn write_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("buyer.json");
        assert_eq!(read_stats(&path), None);
        let mut s = AppStats::new("bookwarehouse");
        s.restocked = Some(3);
        s.stock_total = Some(-1);
        write_stats(&path, &s).unwrap();
        assert_eq!(read_stats(&path), Some(s));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        std::fs::write(&path, "{\"sent\":1}").unwrap();
        assert_eq!(read_stats(&path), None);
        std::fs::write(&path, "not json").unwrap();
        assert_eq!(read_stats(&path), None);
    }

    /// A reader racing a writer always sees a whole file.
    #[test]
    fn readers_never_see_partial_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats.json");
        write_stats(&path, &AppStats::new("bookbuyer")).unwrap();
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut s = AppStats::new("bookbuyer");
                for i in 0..500 {
                    // Vary the length so a torn read could not parse.
                    s.served_by.insert(format!("bookstore-v{i}"), i);
                    s.record_response(200, None);
                    write_stats(&path, &s).unwrap();
                }
            })
        };
        let mut reads = 0;
        while !writer.is_finished() {
            let s = read_stats(&path).expect("a whole stats file");
            assert_eq!(s.served_by.len() as u64, s.sent);
            reads += 1;
        }
        writer.join().unwrap();
        assert!(reads > 0);
        assert_eq!(read_stats(&path).unwrap().sent, 500);
    }

    /// The runner writes before the app starts, stops at the deadline and writes the final counters.
    #[tokio::test]
    async fn run_app_writes_first_and_last() {
        let dir = tempfile::tempdir().unwrap();
        let file = StatsFile {
            path: dir.path().join("s.json"),
            stats: SharedStats::new(AppStats::new("bookbuyer")),
        };
        let path = file.path.clone();
        let stats = file.stats.clone();
        let app = async move {
            assert_eq!(read_stats(&path).unwrap().sent, 0, "written before the app runs");
            stats.update(|s| s.record_response(200, Some("x")));
            std::future::pending().await
        };
        let signals = StopSignals::install().unwrap();
        file.run_app(signals, Some(Duration::from_millis(50)), app, || ())
            .await
            .unwrap();
        let s = read_stats(&file.path).unwrap();
        assert_eq!((s.sent, s.ok), (1, 1));
        assert!(s.updated_unix_ms > 0);
    }
}
