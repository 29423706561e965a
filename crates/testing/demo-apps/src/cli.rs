//! Command line of `osm-demo-app`: one subcommand per app, and [`run`] to start it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use hyper::Method;
use hyper::header::{HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;

use crate::bookbuyer::{self, BuyerConfig};
use crate::bookstore::{self, Bookstore};
use crate::bookwarehouse::{self, Warehouse, WarehouseServer};
use crate::client_loop::{self, StopWhen};
use crate::grpc::{self, GrpcCallSpec, GrpcMethod, GrpcTarget};
use crate::http::{self, HttpRequestSpec};
use crate::stats::{AppStats, SharedStats, StatsFile, StopSignals};
use crate::summary::Summary;
use crate::tcp;
use crate::url::HttpUrl;

/// Tiny servers and clients for service-mesh tests and demos.
#[derive(Debug, Parser)]
#[command(name = "osm-demo-app", version)]
pub struct Cli {
    /// Which app to run.
    #[command(subcommand)]
    pub command: App,
}

/// The apps.
#[derive(Debug, Subcommand)]
pub enum App {
    /// Answer every HTTP request with 200, body NAME and header `x-served-by: NAME`.
    HttpServer {
        /// Port to listen on (0: any free port; the chosen one is printed).
        #[arg(long)]
        port: u16,
        /// Name to answer with.
        #[arg(long)]
        name: String,
        /// Address to listen on.
        #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
        address: IpAddr,
        /// Print `request: METHOD PATH` on stdout for every request, the path exactly as received (tests
        /// assert which paths reached the app).
        #[arg(long)]
        record_requests: bool,
    },
    /// `http-server`'s answers over TLS with the given certificate (PEM chain and key).
    HttpsServer {
        /// Port to listen on (0: any free port; the chosen one is printed).
        #[arg(long)]
        port: u16,
        /// Name to answer with.
        #[arg(long)]
        name: String,
        /// Address to listen on.
        #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
        address: IpAddr,
        /// The server's certificate chain (PEM).
        #[arg(long)]
        cert: std::path::PathBuf,
        /// Its private key (PEM).
        #[arg(long)]
        key: std::path::PathBuf,
    },
    /// Echo every byte received on TCP.
    TcpEcho {
        /// Port to listen on (0: any free port; the chosen one is printed).
        #[arg(long)]
        port: u16,
        /// Address to listen on.
        #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
        address: IpAddr,
    },
    /// Answer gRPC calls over h2c (raw-bytes messages): `/demo.Echo/Unary` with `NAME:M`,
    /// `/demo.Echo/ServerStream` with `NAME:<i>:M` for i in 0..5, header `x-served-by: NAME`; any other
    /// method gets `grpc-status: 12`.
    GrpcServer {
        /// Port to listen on (0: any free port; the chosen one is printed).
        #[arg(long)]
        port: u16,
        /// Name to answer with.
        #[arg(long)]
        name: String,
        /// Address to listen on.
        #[arg(long, visible_alias = "bind", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
        address: IpAddr,
        /// Print `request: METHOD PATH` (POST for gRPC) on stdout for every call, the path exactly as
        /// received (tests assert which calls reached the app).
        #[arg(long)]
        record_requests: bool,
    },
    /// Answer Envoy's external authorization checks (`envoy.service.auth.v3.Authorization`, gRPC over
    /// h2c): deny requests with the `--deny-header` or a `--deny-path-prefix`, allow the rest; print
    /// `check: {json}` for each check (path, caller principal, verdict).
    ExtAuthzServer(ExtAuthzServerArgs),
    /// Send HTTP requests, one connection each, and print a JSON summary line at the end.
    HttpClient(HttpClientArgs),
    /// Send a message over TCP and expect it echoed, one connection each; print a JSON summary line.
    TcpClient(TcpClientArgs),
    /// Call `grpc-server` over h2c, one connection per call, and print a JSON summary line at the end
    /// (statuses `grpc-<code>`, or `http-<code>` when the HTTP status is not 200).
    GrpcClient(GrpcClientArgs),
    /// The bookstore demo's bookstore: sells books, restocks each sale from the bookwarehouse.
    Bookstore(BookstoreArgs),
    /// The bookstore demo's bookwarehouse: restocks books in a SQLite store.
    Bookwarehouse(BookwarehouseArgs),
    /// The bookstore demo's bookbuyer: buys books in a loop.
    Bookbuyer(BuyerArgs),
    /// The bookstore demo's bookthief: bookbuyer's loop with `client-app: bookthief`.
    Bookthief(BuyerArgs),
}

/// Arguments of `bookstore`.
#[derive(Debug, Args)]
pub struct BookstoreArgs {
    /// Instance name, sent as `x-served-by` and `identity` (bookstore-v1, bookstore-v2).
    #[arg(long)]
    pub name: String,
    /// The bookwarehouse's base URL.
    #[arg(long, default_value = "http://bookwarehouse.bookwarehouse:14001")]
    pub warehouse_url: HttpUrl,
    /// Timeout of one restock call, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub restock_timeout_ms: u64,
    /// Where to listen, and where the counters go.
    #[command(flatten)]
    pub server: DemoServerArgs,
}

/// Arguments of `bookwarehouse`.
#[derive(Debug, Args)]
pub struct BookwarehouseArgs {
    /// The SQLite file holding the stock (created if missing).
    #[arg(long)]
    pub db: PathBuf,
    /// Name sent as `x-served-by`.
    #[arg(long, default_value = "bookwarehouse")]
    pub name: String,
    /// Where to listen, and where the counters go.
    #[command(flatten)]
    pub server: DemoServerArgs,
}

/// What the bookstore demo servers share.
#[derive(Debug, Args)]
pub struct DemoServerArgs {
    /// Port to listen on (0: any free port; the chosen one is printed).
    #[arg(long, default_value_t = 14001)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub address: IpAddr,
    /// JSON counters, rewritten atomically while running and on SIGTERM/SIGINT.
    #[arg(long)]
    pub stats_file: PathBuf,
}

/// Arguments of `bookbuyer` and `bookthief`. They run until SIGTERM/SIGINT or `--duration-ms`.
#[derive(Debug, Args)]
pub struct BuyerArgs {
    /// The bookstore's base URL.
    #[arg(long, default_value = "http://bookstore.bookstore:14001")]
    pub bookstore_url: HttpUrl,
    /// JSON counters, rewritten atomically while running and when stopping.
    #[arg(long)]
    pub stats_file: PathBuf,
    /// Pause after each buy + books-bought pair, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub interval_ms: u64,
    /// Stop after this many milliseconds.
    #[arg(long)]
    pub duration_ms: Option<u64>,
    /// Per-request timeout, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
}

/// Arguments of `ext-authz-server`.
#[derive(Debug, Args)]
pub struct ExtAuthzServerArgs {
    /// Port to listen on (0: any free port; the chosen one is printed).
    #[arg(long)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub address: IpAddr,
    /// Name added to allowed requests as `x-ext-authz-checked` and to denials' gRPC message.
    #[arg(long, default_value = "ext-authz")]
    pub name: String,
    /// Deny requests carrying this header (any value).
    #[arg(long)]
    pub deny_header: Option<String>,
    /// Deny requests whose path starts with this; repeatable.
    #[arg(long = "deny-path-prefix")]
    pub deny_path_prefixes: Vec<String>,
    /// Answer each check after this many milliseconds (a slow service).
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
}

/// Arguments of `http-client`.
#[derive(Debug, Args)]
pub struct HttpClientArgs {
    /// Target, `http://host[:port][/path]`; the host is resolved via the system resolver (/etc/hosts).
    #[arg(long)]
    pub url: HttpUrl,
    /// Request method.
    #[arg(long, default_value = "GET", value_parser = parse_method)]
    pub method: Method,
    /// Extra request header `name: value`; repeatable.
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// When to stop, pacing and timeout.
    #[command(flatten)]
    pub run: LoopArgs,
}

/// Arguments of `tcp-client`.
#[derive(Debug, Args)]
pub struct TcpClientArgs {
    /// Target `host:port`.
    #[arg(long)]
    pub addr: String,
    /// Message to send (and expect back).
    #[arg(long, default_value = "ping", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub message: String,
    /// When to stop, pacing and timeout.
    #[command(flatten)]
    pub run: LoopArgs,
}

/// Arguments of `grpc-client`.
#[derive(Debug, Args)]
pub struct GrpcClientArgs {
    /// Target `host:port`, sent as `:authority`; the host is resolved via the system resolver
    /// (/etc/hosts).
    #[arg(long)]
    pub target: GrpcTarget,
    /// Method to call.
    #[arg(long, value_enum)]
    pub method: GrpcMethod,
    /// Request message (the answer must echo it).
    #[arg(long, default_value = "hello")]
    pub message: String,
    /// Call this path instead of the method's, still expecting the method's answer (tests: an unknown
    /// method).
    #[arg(long, hide = true, value_parser = parse_path)]
    pub path: Option<PathAndQuery>,
    /// When to stop, pacing and timeout.
    #[command(flatten)]
    pub run: LoopArgs,
}

/// How long a client runs. Without `--count`, `--duration-ms` or `--until-file` it runs until SIGTERM or
/// SIGINT; in every case it prints the summary when it stops.
#[derive(Debug, Args, Clone)]
pub struct LoopArgs {
    /// Stop after N attempts.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this many milliseconds.
    #[arg(long)]
    pub duration_ms: Option<u64>,
    /// Stop as soon as this file exists.
    #[arg(long)]
    pub until_file: Option<PathBuf>,
    /// Pause between attempts, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub interval_ms: u64,
    /// Per-attempt timeout, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
}

impl LoopArgs {
    /// The stop conditions.
    pub fn stop_when(&self) -> StopWhen {
        StopWhen {
            count: self.count,
            duration: self.duration_ms.map(Duration::from_millis),
            until_file: self.until_file.clone(),
        }
    }
}

fn parse_method(s: &str) -> Result<Method, String> {
    Method::from_bytes(s.to_ascii_uppercase().as_bytes()).map_err(|e| format!("{s:?}: {e}"))
}

fn parse_path(s: &str) -> Result<PathAndQuery, String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?}: expected an absolute path"));
    }
    s.parse().map_err(|e| format!("{s:?}: {e}"))
}

fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected `name: value`"))?;
    let name =
        HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| format!("{s:?}: header name: {e}"))?;
    let value = HeaderValue::from_str(value.trim()).map_err(|e| format!("{s:?}: header value: {e}"))?;
    Ok((name, value))
}

/// Runs the chosen app. Servers run until killed; clients print their summary line to stdout when they
/// stop. Servers print `listening on ADDR` once bound, which tests wait for. The bookstore demo apps
/// stop on SIGTERM/SIGINT (the loops also after `--duration-ms`) and keep their `--stats-file` current.
pub async fn run(cli: Cli) -> std::io::Result<()> {
    match cli.command {
        App::HttpServer {
            port,
            name,
            address,
            record_requests,
        } => {
            let listener = bind(address, port).await?;
            http::serve(listener, name, record_requests).await
        }
        App::HttpsServer {
            port,
            name,
            address,
            cert,
            key,
        } => {
            let tls = crate::tls_server::server_config(&cert, &key)?;
            let listener = bind(address, port).await?;
            crate::tls_server::serve(listener, name, tls).await
        }
        App::GrpcServer {
            port,
            name,
            address,
            record_requests,
        } => {
            let listener = bind(address, port).await?;
            grpc::serve(listener, name, record_requests).await
        }
        App::ExtAuthzServer(args) => {
            let policy = crate::ext_authz::AuthzPolicy {
                deny_header: args.deny_header.map(|h| h.to_ascii_lowercase()),
                deny_path_prefixes: args.deny_path_prefixes,
                delay: Duration::from_millis(args.delay_ms),
            };
            let listener = bind(args.address, args.port).await?;
            crate::ext_authz::serve(listener, crate::ext_authz::AuthzService::new(args.name, policy)).await
        }
        App::TcpEcho { port, address } => {
            let listener = bind(address, port).await?;
            tcp::serve_echo(listener).await
        }
        App::HttpClient(args) => {
            let spec = HttpRequestSpec {
                url: args.url,
                method: args.method,
                headers: args.headers,
                timeout: Duration::from_millis(args.run.timeout_ms),
            };
            let interval = Duration::from_millis(args.run.interval_ms);
            print_summary(client_loop::run(&args.run.stop_when(), interval, || http::attempt(&spec)).await);
            Ok(())
        }
        App::TcpClient(args) => {
            let timeout = Duration::from_millis(args.run.timeout_ms);
            let interval = Duration::from_millis(args.run.interval_ms);
            let message = args.message.as_bytes();
            let addr = args.addr.as_str();
            print_summary(
                client_loop::run(&args.run.stop_when(), interval, || {
                    tcp::attempt(addr, message, timeout)
                })
                .await,
            );
            Ok(())
        }
        App::GrpcClient(args) => {
            let timeout = Duration::from_millis(args.run.timeout_ms);
            let mut spec = GrpcCallSpec::new(args.target, args.method, args.message, timeout);
            if let Some(path) = args.path {
                spec.path = path;
            }
            let interval = Duration::from_millis(args.run.interval_ms);
            print_summary(client_loop::run(&args.run.stop_when(), interval, || grpc::attempt(&spec)).await);
            Ok(())
        }
        App::Bookstore(args) => {
            let signals = StopSignals::install()?;
            let stats = SharedStats::new(bookstore::new_stats(&args.name));
            let store = Bookstore::new(
                &args.name,
                &args.warehouse_url,
                Duration::from_millis(args.restock_timeout_ms),
                stats.clone(),
            )?;
            let file = stats_file(&args.server, stats)?;
            let listener = bind(args.server.address, args.server.port).await?;
            file.run_app(signals, None, store.serve(listener), || ()).await
        }
        App::Bookwarehouse(args) => {
            let signals = StopSignals::install()?;
            let db_error = |e: &dyn std::error::Error| {
                let mut message = format!("{}: {e}", args.db.display());
                let mut cause = e.source();
                while let Some(err) = cause {
                    message.push_str(&format!(": {err}"));
                    cause = err.source();
                }
                std::io::Error::other(message)
            };
            let store = Warehouse::open(&args.db).map_err(|e| db_error(&e))?;
            let total = store.stock_total().map_err(|e| db_error(&e))?;
            let stats = SharedStats::new(bookwarehouse::new_stats(&args.name, total));
            let server = WarehouseServer::new(store.clone(), &args.name, stats.clone())?;
            let file = stats_file(&args.server, stats)?;
            let listener = bind(args.server.address, args.server.port).await?;
            // Closing waits for a restock still running on a blocking thread, so its count is final.
            file.run_app(signals, None, server.serve(listener), || store.close())
                .await
        }
        App::Bookbuyer(args) => run_buyer("bookbuyer", args).await,
        App::Bookthief(args) => run_buyer("bookthief", args).await,
    }
}

/// The stats file of a demo server, written once before it binds (so it exists when the server
/// announces it is listening).
fn stats_file(args: &DemoServerArgs, stats: SharedStats) -> std::io::Result<StatsFile> {
    let file = StatsFile {
        path: args.stats_file.clone(),
        stats,
    };
    file.write_now()?;
    Ok(file)
}

async fn run_buyer(app: &str, args: BuyerArgs) -> std::io::Result<()> {
    let signals = StopSignals::install()?;
    let config = BuyerConfig {
        app: app.to_owned(),
        bookstore: args.bookstore_url,
        interval: Duration::from_millis(args.interval_ms),
        timeout: Duration::from_millis(args.timeout_ms),
    };
    let stats = SharedStats::new(AppStats::new(app));
    let file = StatsFile {
        path: args.stats_file,
        stats: stats.clone(),
    };
    let stop_after = args.duration_ms.map(Duration::from_millis);
    file.run_app(signals, stop_after, bookbuyer::run(&config, &stats), || ())
        .await
}

async fn bind(address: IpAddr, port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let addr = SocketAddr::new(address, port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("bind {addr}: {e}")))?;
    println!("listening on {}", listener.local_addr()?);
    Ok(listener)
}

fn print_summary(summary: Summary) {
    println!("{}", summary.to_json_line());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("osm-demo-app").chain(args.iter().copied()))
    }

    #[test]
    fn http_client_args() {
        let cli = parse(&[
            "http-client",
            "--url",
            "http://bookstore.bookstore:14001/books-bought",
            "--method",
            "post",
            "--header",
            "client-app: bookbuyer",
            "--header",
            "user-agent:Go-http-client/1.1",
            "--count",
            "3",
            "--interval-ms",
            "10",
        ])
        .unwrap();
        let App::HttpClient(args) = cli.command else {
            panic!("wrong subcommand")
        };
        assert_eq!(args.url.host, "bookstore.bookstore");
        assert_eq!(args.method, Method::POST);
        assert_eq!(args.headers.len(), 2);
        assert_eq!(args.headers[0].0.as_str(), "client-app");
        assert_eq!(args.headers[1].1, "Go-http-client/1.1");
        assert_eq!(
            args.run.stop_when(),
            StopWhen {
                count: Some(3),
                ..StopWhen::default()
            }
        );
        assert_eq!((args.run.interval_ms, args.run.timeout_ms), (10, 2000));
    }

    /// No count, duration or file: run until a signal.
    #[test]
    fn continuous_modes() {
        let cli = parse(&["http-client", "--url", "http://h/"]).unwrap();
        let App::HttpClient(args) = cli.command else {
            panic!("wrong subcommand")
        };
        assert_eq!(args.run.stop_when(), StopWhen::default());
        let cli = parse(&[
            "tcp-client",
            "--addr",
            "h:1",
            "--until-file",
            "/tmp/stop",
            "--duration-ms",
            "500",
        ])
        .unwrap();
        let App::TcpClient(args) = cli.command else {
            panic!("wrong subcommand")
        };
        assert_eq!(args.message, "ping");
        let stop = args.run.stop_when();
        assert_eq!(
            stop.until_file.as_deref(),
            Some(std::path::Path::new("/tmp/stop"))
        );
        assert_eq!(stop.duration, Some(Duration::from_millis(500)));
    }

    #[test]
    fn servers() {
        let cli = parse(&["http-server", "--port", "14001", "--name", "bookstore-v1"]).unwrap();
        assert!(
            matches!(cli.command, App::HttpServer { port: 14001, ref name, .. } if name == "bookstore-v1")
        );
        let cli = parse(&["tcp-echo", "--port", "0", "--address", "127.0.0.1"]).unwrap();
        assert!(matches!(cli.command, App::TcpEcho { port: 0, address } if address.is_loopback()));
    }

    #[test]
    fn grpc_args() {
        let cli = parse(&[
            "grpc-server",
            "--port",
            "0",
            "--name",
            "echo-v1",
            "--bind",
            "127.0.0.1",
            "--record-requests",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            App::GrpcServer { port: 0, ref name, address, record_requests: true }
                if name == "echo-v1" && address.is_loopback()
        ));
        let cli = parse(&["grpc-server", "--port", "9090", "--name", "e"]).unwrap();
        assert!(matches!(cli.command, App::GrpcServer { address, .. } if address.is_unspecified()));

        let cli = parse(&[
            "grpc-client",
            "--target",
            "echo.demo:9090",
            "--method",
            "server-stream",
            "--count",
            "2",
            "--timeout-ms",
            "300",
        ])
        .unwrap();
        let App::GrpcClient(args) = cli.command else {
            panic!("wrong subcommand")
        };
        assert_eq!((args.target.host.as_str(), args.target.port), ("echo.demo", 9090));
        assert_eq!(args.method, GrpcMethod::ServerStream);
        assert_eq!((args.message.as_str(), args.path), ("hello", None));
        assert_eq!(args.run.stop_when().count, Some(2));
        assert_eq!(args.run.timeout_ms, 300);

        let cli = parse(&[
            "grpc-client",
            "--target",
            "h:1",
            "--method",
            "unary",
            "--message",
            "m",
            "--path",
            "/demo.Echo/Nope",
        ])
        .unwrap();
        let App::GrpcClient(args) = cli.command else {
            panic!("wrong subcommand")
        };
        assert_eq!(args.path.unwrap().as_str(), "/demo.Echo/Nope");
    }

    #[test]
    fn bookstore_demo_args() {
        let cli = parse(&[
            "bookstore",
            "--name",
            "bookstore-v1",
            "--stats-file",
            "/tmp/s.json",
        ])
        .unwrap();
        let App::Bookstore(args) = cli.command else {
            panic!("wrong subcommand")
        };
        assert_eq!(args.name, "bookstore-v1");
        assert_eq!(
            args.warehouse_url.to_string(),
            "http://bookwarehouse.bookwarehouse:14001/"
        );
        assert_eq!((args.server.port, args.restock_timeout_ms), (14001, 2000));

        let cli = parse(&[
            "bookwarehouse",
            "--db",
            "/tmp/w.db",
            "--stats-file",
            "/tmp/w.json",
        ])
        .unwrap();
        let App::Bookwarehouse(args) = cli.command else {
            panic!("wrong subcommand")
        };
        assert_eq!((args.name.as_str(), args.server.port), ("bookwarehouse", 14001));

        for sub in ["bookbuyer", "bookthief"] {
            let cli = parse(&[sub, "--stats-file", "/tmp/b.json", "--duration-ms", "5"]).unwrap();
            let (App::Bookbuyer(args) | App::Bookthief(args)) = cli.command else {
                panic!("wrong subcommand")
            };
            assert_eq!(args.bookstore_url.authority(), "bookstore.bookstore:14001");
            assert_eq!(
                (args.interval_ms, args.duration_ms, args.timeout_ms),
                (200, Some(5), 2000)
            );
        }
    }

    #[test]
    fn bad_args_are_refused() {
        for args in [
            &["http-client", "--url", "https://h/"][..],
            &["http-client", "--url", "http://h/", "--header", "no-colon"],
            &["http-client", "--url", "http://h/", "--header", "bad name: v"],
            &["http-client", "--url", "http://h/", "--count", "-1"],
            &["tcp-client", "--addr", "h:1", "--message", ""],
            &["grpc-client", "--target", "h:1"],
            &["grpc-client", "--target", "h", "--method", "unary"],
            &["grpc-client", "--target", "h:1", "--method", "bidi"],
            &[
                "grpc-client",
                "--target",
                "h:1",
                "--method",
                "unary",
                "--path",
                "x",
            ],
            &["grpc-server", "--port", "1"],
            &["http-server", "--port", "70000", "--name", "x"],
            &["http-server", "--port", "80"],
            &["bookstore", "--stats-file", "/tmp/s"],
            &["bookstore", "--name", "v1"],
            &["bookwarehouse", "--stats-file", "/tmp/s"],
            &["bookbuyer"],
            &[
                "bookthief",
                "--stats-file",
                "/tmp/s",
                "--bookstore-url",
                "https://x/",
            ],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }
}
