//! `osm-init healthcheck`: the process that answers a meshed pod's rewritten TCP probes (upstream's
//! `osm-healthcheck` container).
//!
//! The injector turns a `tcpSocket` probe into `httpGet` on [`DEFAULT_LISTEN_PORT`] (15904, which the
//! interception rules never redirect), path [`PATH`], header [`PORT_HEADER`]`: <port>`. This server dials
//! `127.0.0.1:<port>` for each such request: 200 when the connection is accepted, 503 when it is not.
//! The kubelet cannot dial the app port itself: inbound connections to it are redirected to Envoy, which
//! accepts them whether or not the app listens. Anyone who reaches the pod reaches this port, so it dials
//! only the ports the pod's TCP probes name (`--allowed-ports`, which the injector writes): it must not
//! tell a stranger which other loopback ports (Envoy's admin interface, say) are open. Blocking std I/O, one short-lived thread per request:
//! a probe every few seconds needs nothing more, and the init image stays one small binary.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The path the rewritten probes ask for (upstream's).
pub const PATH: &str = "/osm-healthcheck";
/// The header carrying the port the original `tcpSocket` probe named (upstream's).
pub const PORT_HEADER: &str = "Original-Tcp-Port";
/// Where the kubelet sends rewritten TCP probes; exempt from the inbound redirect.
pub const DEFAULT_LISTEN_PORT: u16 = 15904;

/// Longest request head read; a probe's is a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// Requests answered at once; more connections are closed unanswered (the port is reachable by anyone
/// who reaches the pod, so a flood must not create unbounded threads).
const MAX_IN_FLIGHT: usize = 64;
/// Bounds reading the request and writing the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds the dial: on loopback a connection is accepted or refused at once unless the backlog is full,
/// and the kubelet's own timeout (1 s by default) is about as long.
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);

/// What a request asks for, read from its head ([`parse_request`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `GET`/`HEAD` of [`PATH`] with a valid [`PORT_HEADER`]: dial that port.
    Check {
        /// The port to dial on 127.0.0.1.
        port: u16,
        /// `HEAD`: answer without a body.
        head: bool,
    },
    /// Another path or method.
    NotFound,
    /// No, or an invalid, [`PORT_HEADER`]; or an unreadable request.
    BadRequest(String),
}

/// An answer: status code and a one-line body saying why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// 200, 400, 404 or 503.
    pub status: u16,
    /// Plain text.
    pub body: String,
    /// Leave the body out (`HEAD`).
    pub head: bool,
}

/// Reads a request head (request line and headers, without the body). Pure.
pub fn parse_request(head: &str) -> Request {
    let mut lines = head.split("\r\n");
    let mut words = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return Request::BadRequest("malformed request line".into());
    };
    // The query string is not part of the route (the kubelet sends none).
    let path = target.split('?').next().unwrap_or("");
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Request::NotFound,
    };
    if path != PATH {
        return Request::NotFound;
    }
    let value = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case(PORT_HEADER)
            .then(|| value.trim())
    });
    match value.map(|v| v.parse::<u16>()) {
        Some(Ok(port)) if port != 0 => Request::Check {
            port,
            head: head_only,
        },
        Some(_) => Request::BadRequest(format!("header {PORT_HEADER} is not a port (1-65535)")),
        None => Request::BadRequest(format!("header {PORT_HEADER} not found in request")),
    }
}

/// The answer to `request`, dialling with `dial` (pure apart from `dial`).
/// Only `allowed` ports are dialled (empty: any).
pub fn answer(request: Request, allowed: &[u16], dial: impl FnOnce(u16) -> std::io::Result<()>) -> Answer {
    let (status, body, head) = match request {
        Request::Check { port, .. } if !allowed.is_empty() && !allowed.contains(&port) => (
            403,
            format!("port {port} is not one of this pod's TCP probe ports"),
            false,
        ),
        Request::Check { port, head } => match dial(port) {
            Ok(()) => (200, format!("connected to 127.0.0.1:{port}"), head),
            Err(e) => (503, format!("cannot connect to 127.0.0.1:{port}: {e}"), head),
        },
        Request::NotFound => (404, "not found".into(), false),
        Request::BadRequest(why) => (400, why, false),
    };
    Answer { status, body, head }
}

impl Answer {
    /// The HTTP/1.1 response, `Connection: close`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            _ => "Service Unavailable",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            self.body.len()
        )
        .into_bytes();
        if !self.head {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// Dials `127.0.0.1:port` and closes the connection at once.
pub fn dial_loopback(port: u16) -> std::io::Result<()> {
    TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), DIAL_TIMEOUT).map(drop)
}

/// Answers health checks on `listener` until accepting fails for good, dialling only `allowed` ports
/// (empty: any).
pub fn serve(listener: TcpListener, allowed: &[u16]) -> std::io::Result<()> {
    let allowed: Arc<[u16]> = allowed.into();
    let in_flight = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            // Transient (a reset before accept, out of descriptors): keep serving.
            Err(e) if e.kind() != std::io::ErrorKind::InvalidInput => {
                eprintln!("osm-healthcheck: accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(e) => return Err(e),
        };
        if in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let in_flight = Arc::clone(&in_flight);
        let allowed = Arc::clone(&allowed);
        std::thread::spawn(move || {
            if let Err(e) = handle(stream, &allowed) {
                eprintln!("osm-healthcheck: {e}");
            }
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

fn handle(mut stream: TcpStream, allowed: &[u16]) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let request = loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break Request::BadRequest("connection closed before the request ended".into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break parse_request(&String::from_utf8_lossy(&head[..end]));
        }
        if head.len() > MAX_HEAD {
            break Request::BadRequest("request head too long".into());
        }
    };
    let answer = answer(request, allowed, dial_loopback);
    stream.write_all(&answer.to_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(headers: &str) -> String {
        format!("GET {PATH} HTTP/1.1\r\nHost: 10.0.0.1:15904\r\n{headers}User-Agent: kube-probe/1.20")
    }

    /// The kubelet's request (header name in any case) asks to dial the port it carries.
    #[test]
    fn probe_request_names_the_port() {
        assert_eq!(
            parse_request(&get("Original-Tcp-Port: 6379\r\n")),
            Request::Check {
                port: 6379,
                head: false
            }
        );
        assert_eq!(
            parse_request(&get("original-tcp-port:8080\r\n")),
            Request::Check {
                port: 8080,
                head: false
            }
        );
    }

    /// Without a valid header: 400; another path or method: 404; nothing is dialled.
    #[test]
    fn probe_request_refusals() {
        assert!(matches!(parse_request(&get("")), Request::BadRequest(_)));
        assert!(matches!(
            parse_request(&get("Original-Tcp-Port: 0\r\n")),
            Request::BadRequest(_)
        ));
        assert!(matches!(
            parse_request(&get("Original-Tcp-Port: 70000\r\n")),
            Request::BadRequest(_)
        ));
        assert_eq!(
            parse_request("GET /other HTTP/1.1\r\nOriginal-Tcp-Port: 80"),
            Request::NotFound
        );
        assert_eq!(
            parse_request(&format!("POST {PATH} HTTP/1.1\r\nOriginal-Tcp-Port: 80")),
            Request::NotFound
        );
        let a = answer(Request::NotFound, &[], |_| panic!("must not dial"));
        assert_eq!(a.status, 404);
    }

    /// A dial that connects answers 200, a refused one 503 (the kubelet counts both ≥ 400 and timeouts as
    /// failures; upstream answered 404 here, which reads as "no such path").
    #[test]
    fn probe_answer_follows_the_dial() {
        let ok = answer(Request::Check { port: 1, head: false }, &[], |_| Ok(()));
        assert_eq!(ok.status, 200);
        let refused = answer(Request::Check { port: 1, head: true }, &[1], |_| {
            Err(std::io::ErrorKind::ConnectionRefused.into())
        });
        assert_eq!(refused.status, 503);
        let bytes = String::from_utf8(refused.to_bytes()).unwrap();
        assert!(
            bytes.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{bytes}"
        );
        assert!(bytes.ends_with("\r\n\r\n"), "HEAD has no body: {bytes}");
    }

    /// A port no TCP probe names is not dialled: a stranger learns nothing of the pod's other ports.
    #[test]
    fn probe_port_not_allowed_is_not_dialled() {
        let no = answer(
            Request::Check {
                port: 15000,
                head: false,
            },
            &[5432],
            |_| panic!("must not dial"),
        );
        assert_eq!(no.status, 403, "{no:?}");
        assert!(
            String::from_utf8(no.to_bytes())
                .unwrap()
                .starts_with("HTTP/1.1 403 Forbidden\r\n")
        );
    }

    /// Over real sockets on loopback: a listening port → 200, the same port once closed → 503, a port
    /// not allowed → 403 however open.
    #[test]
    fn probe_server_dials_loopback() {
        let server = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let server_addr = server.local_addr().unwrap();
        let app = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let app_port = app.local_addr().unwrap().port();
        std::thread::spawn(move || serve(server, &[app_port]));
        let ask_port = |port: u16| {
            let mut s = TcpStream::connect(server_addr).unwrap();
            write!(s, "GET {PATH} HTTP/1.1\r\n{PORT_HEADER}: {port}\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let ask = || ask_port(app_port);
        let up = ask();
        assert!(up.starts_with("HTTP/1.1 200 "), "{up}");
        let other = ask_port(server_addr.port());
        assert!(other.starts_with("HTTP/1.1 403 "), "{other}");
        drop(app);
        let down = ask();
        assert!(down.starts_with("HTTP/1.1 503 "), "{down}");
    }
}
