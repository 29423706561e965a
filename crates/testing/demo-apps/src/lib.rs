//! `osm-demo-app`: tiny HTTP and TCP servers and clients for mesh tests and the bookstore demo.
//!
//! - `http-server --port P --name NAME`: 200, body `NAME`, header `x-served-by: NAME`, for everything.
//! - `https-server --port P --name NAME --cert PEM --key PEM`: the same answers over TLS.
//! - `tcp-echo --port P`: echoes bytes.
//! - `http-client --url URL [--method M] [--header 'k: v']… [--count N | --duration-ms D | --until-file F]`:
//!   one connection per request (`Connection: close`); prints one JSON [`Summary`] line when it stops.
//! - `tcp-client --addr host:port --message M [stop flags]`: the same for echoes.
//! - `grpc-server --port P --name NAME`: gRPC over h2c with raw-bytes messages (no protobuf), service
//!   `demo.Echo` (methods `Unary`, `ServerStream`), see [`grpc`].
//! - `grpc-client --target host:port --method unary|server-stream [--message M] [stop flags]`: one
//!   connection per call; the summary's statuses are `grpc-<code>` (or `http-<code>`).
//! - `ext-authz-server --port P [--deny-header H] [--deny-path-prefix P]… [--delay-ms D]`: Envoy's
//!   external authorization gRPC service, printing each check it answers, see [`ext_authz`].
//! - `bookstore`, `bookwarehouse`, `bookbuyer`, `bookthief`: the bookstore demo's apps speaking the upstream
//!   demo's HTTP API (port 14001), each keeping a JSON [`stats::AppStats`] in its `--stats-file`, which
//!   the demo orchestrator reads with [`stats::read_stats`].
//!
//! Clients with no stop flag run until SIGTERM/SIGINT and still print the summary, which is what a
//! "no failed request while certificates rotate" test needs. Names resolve through the system resolver,
//! so `/etc/netns/<pod>/hosts` works under `ip netns exec`. Tests in other crates find the binary with
//! `osm_harness::demo_app_bin()` and parse its output with [`Summary::from_output`].
#![forbid(unsafe_code)]

pub mod bookbuyer;
pub mod bookstore;
pub mod bookwarehouse;
pub mod cli;
pub mod client_loop;
pub mod ext_authz;
pub mod grpc;
pub mod http;
pub mod stats;
pub mod summary;
pub mod tcp;
pub mod tls_server;
pub mod url;

pub use stats::{AppStats, read_stats};
pub use summary::{Outcome, Summary};
