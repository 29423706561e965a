//! The bookstore demo apps as real `osm-demo-app` processes on 127.0.0.1 (no root, no mesh): they talk
//! to each other, count what happens in their stats files, and write final stats when signalled.
#![forbid(unsafe_code)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use osm_demo_apps::{AppStats, read_stats};

const BIN: &str = env!("CARGO_BIN_EXE_osm-demo-app");
const TIMEOUT: Duration = Duration::from_secs(20);

/// A child process, killed on drop, with its stdout lines on a channel.
struct App {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stats: PathBuf,
}

impl App {
    fn start(args: &[&str], stats: &Path) -> App {
        let mut child = Command::new(BIN)
            .args(args)
            .args(["--stats-file", stats.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start osm-demo-app");
        let (tx, stdout) = mpsc::channel();
        let pipe = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        App {
            child,
            stdout,
            stats: stats.to_owned(),
        }
    }

    /// Starts a server on 127.0.0.1 with a free port; returns it with its base URL once it listens.
    fn server(args: &[&str], stats: &Path) -> (App, String) {
        let mut all = args.to_vec();
        all.extend(["--port", "0", "--address", "127.0.0.1"]);
        let app = App::start(&all, stats);
        let deadline = Instant::now() + TIMEOUT;
        let addr = loop {
            match app
                .stdout
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        break addr.trim().to_owned();
                    }
                }
                Err(e) => panic!("{args:?} did not start listening: {e}"),
            }
        };
        (app, format!("http://{addr}"))
    }

    /// The latest stats (panics if the file is missing or unreadable).
    fn stats(&self) -> AppStats {
        read_stats(&self.stats).unwrap_or_else(|| panic!("no stats in {}", self.stats.display()))
    }

    /// Waits until the stats satisfy `ready`.
    fn wait_stats(&self, what: &str, ready: impl Fn(&AppStats) -> bool) -> AppStats {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(stats) = read_stats(&self.stats).filter(|s| ready(s)) {
                return stats;
            }
            assert!(Instant::now() < deadline, "{what}: {:?}", read_stats(&self.stats));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// Waits for the process to exit by itself (or after a signal) and returns its final stats.
    fn finish(&mut self) -> AppStats {
        let status = wait_exit(&mut self.child);
        assert!(status.success(), "{status}");
        self.stats()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A 127.0.0.1 port where connections are refused for as long as the returned socket lives: it is bound
/// (so no parallel test's server can take the port) but never listens.
fn refusing_port() -> (std::os::fd::OwnedFd, u16) {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, getsockname, socket};
    use std::os::fd::AsRawFd as _;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).unwrap();
    let port = getsockname::<SockaddrIn>(fd.as_raw_fd()).unwrap().port();
    (fd, port)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// bookbuyer → bookstore-v1 → bookwarehouse over 127.0.0.1: every buy succeeds and is restocked in
/// SQLite; SIGTERM and SIGINT stop each app with its final counters written, and no temp file is left.
#[test]
fn buyer_store_and_warehouse_work_together() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("warehouse.db");
    let (mut warehouse, warehouse_url) = App::server(
        &["bookwarehouse", "--db", db.to_str().unwrap()],
        &dir.path().join("bookwarehouse.json"),
    );
    let (mut store, store_url) = App::server(
        &[
            "bookstore",
            "--name",
            "bookstore-v1",
            "--warehouse-url",
            &warehouse_url,
        ],
        &dir.path().join("bookstore-v1.json"),
    );
    let mut buyer = App::start(
        &["bookbuyer", "--bookstore-url", &store_url, "--interval-ms", "10"],
        &dir.path().join("bookbuyer.json"),
    );

    buyer.wait_stats("buyer buys", |s| s.ok >= 6);
    store.wait_stats("store restocks", |s| s.restock_ok >= Some(3));
    buyer.signal(Signal::SIGTERM);
    let b = buyer.finish();
    assert_eq!(b.app, "bookbuyer");
    assert!(b.sent >= 6 && b.ok == b.sent && b.refused == 0, "{b:?}");
    assert_eq!(b.served_by.get("bookstore-v1"), Some(&b.sent), "{b:?}");

    // The buyer's last request may have been cut off by the SIGTERM after reaching the store: the store
    // then still sells that book (the buyer, by design, does not count the request), and that sale's
    // restock may be in flight when the store stops. Everything else must add up exactly.
    store.wait_stats("the store saw the buyer's requests", |s| {
        s.requests >= Some(b.sent) && s.restock_ok.unwrap_or(0) + 1 >= s.books_sold.unwrap_or(u64::MAX)
    });
    store.signal(Signal::SIGTERM);
    let s = store.finish();
    assert_eq!(
        (s.app.as_str(), s.name.as_deref()),
        ("bookstore", Some("bookstore-v1"))
    );
    let (sold, restocked) = (s.books_sold.unwrap(), s.restock_ok.unwrap());
    assert!(
        sold == b.sent.div_ceil(2) || sold == b.sent / 2 + 1,
        "{s:?} {b:?}"
    );
    assert!(restocked == sold || restocked + 1 == sold, "{s:?}");
    assert_eq!(s.restock_failed, Some(0), "{s:?}");
    assert_eq!((s.sent, s.ok, s.refused), (restocked, restocked, 0), "{s:?}");
    assert_eq!(s.served_by.get("bookwarehouse"), Some(&restocked), "{s:?}");
    let requests = s.requests.unwrap();
    assert!(requests == b.sent || requests == b.sent + 1, "{s:?} {b:?}");

    // The warehouse may have applied the restock the store did not see answered.
    warehouse.wait_stats("the warehouse restocked", |w| w.restocked >= Some(restocked));
    warehouse.signal(Signal::SIGINT);
    let w = warehouse.finish();
    assert_eq!(w.app, "bookwarehouse");
    let applied = w.restocked.unwrap();
    assert!(applied == restocked || applied == restocked + 1, "{w:?} {s:?}");
    assert_eq!(w.stock_total, Some(applied as i64), "{w:?}");

    let conn = rusqlite::Connection::open(&db).unwrap();
    let (rows, by): (i64, Option<String>) = conn
        .query_row(
            "SELECT COUNT(*), GROUP_CONCAT(DISTINCT restocked_by) FROM restocks",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!((rows, by.as_deref()), (applied as i64, Some("bookstore-v1")));
    let (titles, stock): (i64, i64) = conn
        .query_row("SELECT COUNT(*), SUM(stock) FROM books", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .unwrap();
    assert_eq!((titles, stock), (3, applied as i64));

    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// bookthief against a store that answers 403: every request is refused with a status (not a
/// connection error), and it sends bookbuyer's requests with its own `client-app`.
#[test]
fn bookthief_counts_refusals() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&heads);
    // Answers at most 10,000 connections, then ends (the test process ends first).
    std::thread::spawn(move || {
        for stream in listener.incoming().take(10_000) {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).to_lowercase());
            let _ =
                stream.write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let mut thief = App::start(
        &[
            "bookthief",
            "--bookstore-url",
            &url,
            "--interval-ms",
            "10",
            "--duration-ms",
            "400",
        ],
        &dir.path().join("bookthief.json"),
    );
    let s = thief.finish();
    assert_eq!(s.app, "bookthief");
    assert!(s.sent >= 2 && s.ok == 0, "{s:?}");
    assert_eq!(
        (s.refused, s.status_non_2xx, s.conn_errors),
        (s.sent, s.sent, 0),
        "{s:?}"
    );
    assert_eq!(s.status.get("403"), Some(&s.sent), "{s:?}");

    // The last connection may have been dropped by the stop before its request was sent.
    let heads: Vec<String> = heads
        .lock()
        .unwrap()
        .iter()
        .filter(|h| !h.is_empty())
        .cloned()
        .collect();
    assert!(heads.len() as u64 >= s.sent, "{heads:?}");
    assert!(
        heads[0].starts_with("get /buy-a-book/new http/1.1\r\n"),
        "{heads:?}"
    );
    assert!(
        heads[1].starts_with("get /books-bought http/1.1\r\n"),
        "{heads:?}"
    );
    for head in heads.iter() {
        for header in [
            "client-app: bookthief\r\n",
            "user-agent: go-http-client/1.1\r\n",
            "connection: close\r\n",
        ] {
            assert!(head.contains(header), "{header:?} missing in {head:?}");
        }
    }
}

/// Without a bookstore, requests fail as connection errors, apart from refusals by status.
#[test]
fn connection_errors_are_counted_apart() {
    let (_reserved, port) = refusing_port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let mut buyer = App::start(
        &[
            "bookbuyer",
            "--bookstore-url",
            &url,
            "--interval-ms",
            "10",
            "--duration-ms",
            "200",
        ],
        &dir.path().join("bookbuyer.json"),
    );
    let s = buyer.finish();
    assert!(s.sent >= 2, "{s:?}");
    assert_eq!(
        (s.ok, s.refused, s.conn_errors, s.status_non_2xx),
        (0, s.sent, s.sent, 0),
        "{s:?}"
    );
    assert!(
        s.last_error.as_deref().unwrap_or_default().contains("connect"),
        "{s:?}"
    );
}

/// A running loop stops on SIGTERM with a successful exit and stats written after the signal.
#[test]
fn sigterm_writes_final_stats() {
    let dir = tempfile::tempdir().unwrap();
    // The plain http-server answers 200 to everything, like a bookstore.
    let mut server = Command::new(BIN)
        .args([
            "http-server",
            "--port",
            "0",
            "--address",
            "127.0.0.1",
            "--name",
            "bookstore-v2",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap().to_owned();
    let mut buyer = App::start(
        &[
            "bookbuyer",
            "--bookstore-url",
            &format!("http://{addr}"),
            "--interval-ms",
            "50",
        ],
        &dir.path().join("bookbuyer.json"),
    );
    buyer.wait_stats("buyer runs", |s| s.ok >= 2);
    let before = now_ms();
    buyer.signal(Signal::SIGTERM);
    let s = buyer.finish();
    assert!(s.updated_unix_ms >= before, "{s:?} not written after {before}");
    assert!(s.ok == s.sent && s.refused == 0, "{s:?}");
    assert_eq!(s.served_by.get("bookstore-v2"), Some(&s.sent), "{s:?}");
    let _ = server.kill();
    let _ = server.wait();
}
