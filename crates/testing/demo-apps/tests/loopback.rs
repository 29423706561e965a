//! The real `osm-demo-app` binary on 127.0.0.1 (no root needed): servers answer, clients count, and
//! every stop mode prints the summary.
#![forbid(unsafe_code)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use osm_demo_apps::Summary;

const BIN: &str = env!("CARGO_BIN_EXE_osm-demo-app");
const TIMEOUT: Duration = Duration::from_secs(10);

/// A child process killed on drop, with its stdout/stderr lines arriving on channels.
struct App {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl App {
    fn start(args: &[&str]) -> App {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start osm-demo-app");
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        App {
            child,
            stdout,
            stderr,
        }
    }

    /// Waits for a line containing `needle` on stdout or stderr and returns it.
    fn wait_line(&self, stdout: bool, needle: &str) -> String {
        let rx = if stdout { &self.stdout } else { &self.stderr };
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line with {needle:?}: {e}"),
            }
        }
    }

    /// Waits for exit and returns the summary from stdout.
    fn summary(mut self) -> Summary {
        let deadline = std::time::Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(std::time::Instant::now() < deadline, "client did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{status}");
        // Read stdout to its end (the reader thread hangs up at EOF), not just what has arrived so far.
        let mut out = Vec::new();
        while let Ok(line) = self
            .stdout
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        {
            out.push(line);
        }
        Summary::from_output(&out.join("\n")).unwrap_or_else(|| panic!("no summary in {out:?}"))
    }

    fn sigterm(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Starts a server on 127.0.0.1 with a free port and returns it with its address.
fn server(args: &[&str]) -> (App, String) {
    let mut all = args.to_vec();
    all.extend(["--port", "0", "--address", "127.0.0.1"]);
    let app = App::start(&all);
    let line = app.wait_line(true, "listening on ");
    let addr = line.trim_start_matches("listening on ").trim().to_owned();
    (app, addr)
}

/// The HTTP server answers with its name; the client counts statuses and `x-served-by`, resolving
/// `localhost` through the system resolver.
#[test]
fn http_client_counts_responses() {
    let (_srv, addr) = server(&["http-server", "--name", "bookstore-v1"]);
    let port = addr.rsplit(':').next().unwrap();
    let url = format!("http://localhost:{port}/books-bought");
    let client = App::start(&[
        "http-client",
        "--url",
        &url,
        "--count",
        "4",
        "--header",
        "client-app: bookbuyer",
    ]);
    let s = client.summary();
    assert_eq!((s.sent, s.ok, s.errors), (4, 4, 0), "{s:?}");
    assert_eq!(s.status.get("200"), Some(&4));
    assert_eq!(s.served_by.get("bookstore-v1"), Some(&4));
}

/// Refused connections are errors, not statuses, and the last error is reported.
#[test]
fn http_client_counts_errors() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/", free.local_addr().unwrap().port());
    drop(free);
    let s = App::start(&[
        "http-client",
        "--url",
        &url,
        "--count",
        "2",
        "--timeout-ms",
        "1000",
    ])
    .summary();
    assert_eq!((s.sent, s.ok, s.errors), (2, 0, 2), "{s:?}");
    assert!(s.status.is_empty());
    assert!(s.last_error.unwrap().contains("connect"));
}

/// TCP echo round trip, with the same summary shape.
#[test]
fn tcp_echo_round_trip() {
    let (_srv, addr) = server(&["tcp-echo"]);
    let s = App::start(&[
        "tcp-client",
        "--addr",
        &addr,
        "--message",
        "hello mesh",
        "--count",
        "3",
    ])
    .summary();
    assert_eq!((s.sent, s.ok, s.errors), (3, 3, 0), "{s:?}");
}

/// A client without a stop flag runs until SIGTERM, then prints the summary with no failures.
#[test]
fn sigterm_prints_summary() {
    let (_srv, addr) = server(&["http-server", "--name", "v2"]);
    let client = App::start(&[
        "http-client",
        "--url",
        &format!("http://{addr}/"),
        "--interval-ms",
        "5",
    ]);
    // The first result proves the signal handler is installed and traffic flows.
    client.wait_line(false, "first-result");
    client.sigterm();
    let s = client.summary();
    assert!(s.sent >= 1 && s.ok == s.sent && s.errors == 0, "{s:?}");
}

/// `--until-file` stops once the file exists; `--duration-ms` stops by itself.
#[test]
fn stop_file_and_duration() {
    let (_srv, addr) = server(&["tcp-echo"]);
    let stop = std::env::temp_dir().join(format!("osm-demo-app-stop-{}", std::process::id()));
    let _ = std::fs::remove_file(&stop);
    let client = App::start(&[
        "tcp-client",
        "--addr",
        &addr,
        "--until-file",
        stop.to_str().unwrap(),
        "--interval-ms",
        "5",
    ]);
    client.wait_line(false, "first-result");
    std::fs::write(&stop, "").unwrap();
    let s = client.summary();
    std::fs::remove_file(&stop).unwrap();
    assert!(s.sent >= 1 && s.errors == 0, "{s:?}");

    let s = App::start(&[
        "tcp-client",
        "--addr",
        &addr,
        "--duration-ms",
        "200",
        "--interval-ms",
        "20",
    ])
    .summary();
    assert!(s.sent >= 1 && s.errors == 0, "{s:?}");
}

/// Other crates' tests find this very binary through the harness.
#[test]
fn harness_finds_the_binary() {
    let found = osm_harness::demo_app_bin().unwrap();
    assert_eq!(
        found.canonicalize().unwrap(),
        std::path::Path::new(BIN).canonicalize().unwrap()
    );
}

/// gRPC over h2c: unary and server-streaming calls are answered by name (the client resolving
/// `localhost` through the system resolver), an unknown method is `grpc-12`, and `--record-requests`
/// prints each call's path.
#[test]
fn grpc_calls() {
    let (srv, addr) = server(&["grpc-server", "--name", "echo-v1", "--record-requests"]);
    let port = addr.rsplit(':').next().unwrap();
    let target = format!("localhost:{port}");
    for (method, count) in [("unary", "3"), ("server-stream", "2")] {
        let s = App::start(&[
            "grpc-client",
            "--target",
            &target,
            "--method",
            method,
            "--message",
            "hello mesh",
            "--count",
            count,
        ])
        .summary();
        let n: u64 = count.parse().unwrap();
        assert_eq!((s.sent, s.ok, s.errors), (n, n, 0), "{method}: {s:?}");
        assert_eq!(s.status.get("grpc-0"), Some(&n), "{method}: {s:?}");
        assert_eq!(s.served_by.get("echo-v1"), Some(&n), "{method}: {s:?}");
    }
    srv.wait_line(true, "request: POST /demo.Echo/Unary");
    srv.wait_line(true, "request: POST /demo.Echo/ServerStream");

    let s = App::start(&[
        "grpc-client",
        "--target",
        &addr,
        "--method",
        "unary",
        "--path",
        "/demo.Echo/Nope",
        "--count",
        "2",
    ])
    .summary();
    assert_eq!((s.sent, s.ok, s.errors), (2, 0, 0), "{s:?}");
    assert_eq!(s.status.get("grpc-12"), Some(&2), "{s:?}");
    srv.wait_line(true, "request: POST /demo.Echo/Nope");
}

/// A refused connection and a server that never answers are errors, each bounded by `--timeout-ms`.
#[test]
fn grpc_client_counts_errors() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = free.local_addr().unwrap().to_string();
    drop(free);
    let s = App::start(&[
        "grpc-client",
        "--target",
        &target,
        "--method",
        "unary",
        "--count",
        "2",
        "--timeout-ms",
        "1000",
    ])
    .summary();
    assert_eq!((s.sent, s.ok, s.errors), (2, 0, 2), "{s:?}");
    assert!(s.status.is_empty(), "{s:?}");
    assert!(s.last_error.unwrap().contains("connect"));

    // Accepted by the kernel (backlog) but never served: the attempt times out.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = silent.local_addr().unwrap().to_string();
    let started = std::time::Instant::now();
    let s = App::start(&[
        "grpc-client",
        "--target",
        &target,
        "--method",
        "server-stream",
        "--count",
        "2",
        "--timeout-ms",
        "200",
    ])
    .summary();
    assert_eq!((s.sent, s.ok, s.errors), (2, 0, 2), "{s:?}");
    assert!(s.last_error.unwrap().contains("timeout"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
}
