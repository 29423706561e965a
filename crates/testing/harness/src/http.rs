//! A minimal blocking HTTP/1.1 client for Envoy's admin interface and quick probes from inside a
//! namespace: one request per connection (`Connection: close`), `Content-Length`, chunked and
//! read-to-close bodies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::{HarnessError, Result};

/// A response: status code, headers (names lower-cased) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8).
    pub body: String,
}

impl HttpResponse {
    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request without a body to `addr` from the calling thread's network namespace (wrap it in
/// [`crate::in_netns`] to send from a pod) and reads the whole response. `timeout` bounds connecting
/// and each read/write. `path` is sent exactly as given (no normalisation), as `curl --path-as-is` would.
pub fn http_request(addr: SocketAddr, method: &str, path: &str, timeout: Duration) -> Result<HttpResponse> {
    let err = |what: &str| {
        let what = format!("{method} http://{addr}{path}: {what}");
        move |e: std::io::Error| HarnessError::Http(format!("{what}: {e}"))
    };
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(err("connect"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(err("set timeout"))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(err("set timeout"))?;
    http_exchange(stream, &addr.to_string(), method, path)
}

/// One request without a body on an open connection (plain or TLS), `Host: host`, `path` sent as given;
/// reads the response until the peer closes (an unclean close after data, as a TLS peer may do without
/// `close_notify`, still ends the response).
pub fn http_exchange(
    mut stream: impl Read + Write,
    host: &str,
    method: &str,
    path: &str,
) -> Result<HttpResponse> {
    let err = |what: &str| {
        let what = format!("{method} {host}{path}: {what}");
        move |e: std::io::Error| HarnessError::Http(format!("{what}: {e}"))
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\nUser-Agent: osm-harness\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(err("send"))?;
    stream.flush().map_err(err("send"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err("read")(e)),
        }
    }
    parse_response(&raw).map_err(|e| HarnessError::Http(format!("{method} {host}{path}: {e}")))
}

/// Parses a complete HTTP/1.1 response (the connection was read to its end).
fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = code
        .parse()
        .map_err(|_| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let rest = &raw[head_end + 4..];
    let body = if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().map_err(|_| format!("bad content-length {len:?}"))?;
        rest.get(..len)
            .ok_or_else(|| format!("body shorter than content-length {len}"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Decodes a chunked body (extensions and trailers ignored).
fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_field = std::str::from_utf8(&data[..line_end]).map_err(|_| "bad chunk size")?;
        let size_hex = size_field.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| format!("bad chunk size {size_hex:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = data.get(..size).ok_or("truncated chunk")?;
        body.extend_from_slice(chunk);
        data = data.get(size + 2..).ok_or("truncated chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_body() {
        let r =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Served-By: a\r\n\r\nLIVE").unwrap();
        assert_eq!(
            (r.status, r.body.as_str(), r.header("x-served-by")),
            (200, "LIVE", Some("a"))
        );
    }

    #[test]
    fn chunked_body() {
        let raw = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4;ext=1\r\nLI\r\n\r\n2\r\nVE\r\n0\r\nx-trailer: 1\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap().body, "LI\r\nVE");
    }

    #[test]
    fn read_to_close_body_and_errors() {
        assert_eq!(
            parse_response(b"HTTP/1.1 503 Service Unavailable\r\n\r\nPRE_INITIALIZING\n")
                .unwrap()
                .status,
            503
        );
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort").is_err());
    }

    /// Against a local one-shot server: the client sends a well-formed request and reads the answer.
    #[test]
    fn round_trip_on_loopback() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = conn.read(&mut buf).unwrap();
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let resp = http_request(addr, "GET", "/ready", Duration::from_secs(5)).unwrap();
        assert_eq!(resp.body, "ok");
        let request = server.join().unwrap();
        assert!(
            request.starts_with("GET /ready HTTP/1.1\r\n") && request.contains("Connection: close"),
            "{request}"
        );
    }
}
