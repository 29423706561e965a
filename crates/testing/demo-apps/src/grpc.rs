//! gRPC over plain-text HTTP/2 (h2c, prior knowledge) on `h2` directly, without protobuf: a message is
//! its raw bytes in the usual gRPC frame (compressed flag 0, 4-byte big-endian length, the bytes).
//!
//! The server ([`serve`]) answers the `demo.Echo` service: `/demo.Echo/Unary` with one message
//! `NAME:M`, `/demo.Echo/ServerStream` with five messages `NAME:<i>:M` (one DATA frame each), where `M`
//! is the request's message, both with `x-served-by: NAME` and trailers `grpc-status: 0`; any other
//! path gets a trailers-only `grpc-status: 12`. The client ([`attempt`] for the `grpc-client` loop)
//! makes one call on a new connection and judges the answer ([`judge`]).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use h2::RecvStream;
use h2::server::SendResponse;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, TE, USER_AGENT};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use tokio::net::{TcpListener, TcpStream};

use crate::http::{AbortOnDrop, RECORDED_REQUEST, SERVED_BY, connect, header_value};
use crate::summary::Outcome;

/// Path of the unary method.
pub const UNARY_PATH: &str = "/demo.Echo/Unary";
/// Path of the server-streaming method.
pub const SERVER_STREAM_PATH: &str = "/demo.Echo/ServerStream";
/// How many messages the server-streaming method answers with.
pub const STREAM_MESSAGES: usize = 5;
/// `content-type` of gRPC requests and responses.
pub const GRPC_CONTENT_TYPE: &str = "application/grpc";
/// Trailer (or header, in a trailers-only response) carrying the gRPC status code.
pub const GRPC_STATUS: &str = "grpc-status";
/// Trailer (or header) carrying the gRPC status message.
pub const GRPC_MESSAGE: &str = "grpc-message";

/// gRPC status `OK`.
pub const OK: u32 = 0;
/// gRPC status `UNIMPLEMENTED`: the server's answer to an unknown method.
pub const UNIMPLEMENTED: u32 = 12;
/// gRPC status `INTERNAL`: the server's answer to a request without a (valid) message.
pub const INTERNAL: u32 = 13;

/// Largest message accepted, like gRPC's default limit.
const MAX_MESSAGE: usize = 4 << 20;
/// Length of a message's frame header: compressed flag and length.
const FRAME_HEADER: usize = 5;

/// The methods of the `demo.Echo` service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GrpcMethod {
    /// `/demo.Echo/Unary`: one message back.
    Unary,
    /// `/demo.Echo/ServerStream`: five messages back.
    ServerStream,
}

impl GrpcMethod {
    /// The method's request path.
    pub fn path(self) -> &'static str {
        match self {
            GrpcMethod::Unary => UNARY_PATH,
            GrpcMethod::ServerStream => SERVER_STREAM_PATH,
        }
    }

    /// The method a request path names, if any.
    pub fn from_path(path: &str) -> Option<GrpcMethod> {
        [GrpcMethod::Unary, GrpcMethod::ServerStream]
            .into_iter()
            .find(|method| method.path() == path)
    }
}

/// The messages server `name` answers `message` with: `name:message` for [`GrpcMethod::Unary`],
/// `name:<i>:message` for i in 0..[`STREAM_MESSAGES`] for [`GrpcMethod::ServerStream`].
pub fn answer_messages(method: GrpcMethod, name: &[u8], message: &[u8]) -> Vec<Bytes> {
    let join = |middle: &[u8]| Bytes::from([name, middle, message].concat());
    match method {
        GrpcMethod::Unary => vec![join(b":")],
        GrpcMethod::ServerStream => (0..STREAM_MESSAGES)
            .map(|i| join(format!(":{i}:").as_bytes()))
            .collect(),
    }
}

/// One message in its gRPC frame (uncompressed).
pub fn encode(message: &[u8]) -> Bytes {
    let len = u32::try_from(message.len()).expect("a demo message is shorter than 4 GiB");
    let mut frame = BytesMut::with_capacity(FRAME_HEADER + message.len());
    frame.put_u8(0);
    frame.put_u32(len);
    frame.extend_from_slice(message);
    frame.freeze()
}

/// Splits a stream of DATA bytes into gRPC messages.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    /// Appends received bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole message, `None` if more bytes are needed, or why the bytes are not a message
    /// (compressed, or longer than the limit).
    pub fn next_message(&mut self) -> Result<Option<Bytes>, String> {
        let Some(header) = self.buf.get(..FRAME_HEADER) else {
            return Ok(None);
        };
        if header[0] != 0 {
            return Err(format!("unsupported message flags {:#04x}", header[0]));
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_MESSAGE {
            return Err(format!(
                "message of {len} bytes is over the {MAX_MESSAGE}-byte limit"
            ));
        }
        if self.buf.len() < FRAME_HEADER + len {
            return Ok(None);
        }
        self.buf.advance(FRAME_HEADER);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Whether no partial message is left over.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Serves gRPC over h2c on `listener` forever, one task per connection and per call (see the module
/// docs for the answers). With `record`, each request is printed as [`RECORDED_REQUEST`]` METHOD PATH`,
/// like `http-server --record-requests`.
pub async fn serve(listener: TcpListener, name: String, record: bool) -> std::io::Result<()> {
    let name: Arc<str> = name.into();
    let served_by = header_value(&name)?;
    loop {
        let stream = crate::http::accept(&listener).await;
        tokio::spawn(connection(stream, Arc::clone(&name), served_by.clone(), record));
    }
}

/// One h2c connection: accepting its streams also drives it (sends what the calls queue).
async fn connection(stream: TcpStream, name: Arc<str>, served_by: HeaderValue, record: bool) {
    // A client that does not speak h2c, or goes away, is normal: nothing to report.
    let Ok(mut conn) = h2::server::handshake(stream).await else {
        return;
    };
    while let Some(Ok((req, respond))) = conn.accept().await {
        if record {
            let path = req.uri().path_and_query().map_or("", |p| p.as_str());
            println!("{RECORDED_REQUEST} {} {path}", req.method());
        }
        let (name, served_by) = (Arc::clone(&name), served_by.clone());
        tokio::spawn(async move {
            // A client resetting the call or going away is normal too.
            let _ = answer(req, respond, &name, served_by).await;
        });
    }
}

/// Answers one call.
async fn answer(
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    name: &str,
    served_by: HeaderValue,
) -> Result<(), h2::Error> {
    let method = match GrpcMethod::from_path(req.uri().path()) {
        Some(method) if req.method() == Method::POST => method,
        _ => return trailers_only(&mut respond, UNIMPLEMENTED, "unknown method"),
    };
    let message = match first_message(req.into_body()).await {
        Ok(message) => message,
        Err(problem) => return trailers_only(&mut respond, INTERNAL, &problem),
    };
    let mut head = grpc_response();
    head.headers_mut()
        .insert(HeaderName::from_static(SERVED_BY), served_by);
    let mut body = respond.send_response(head, false)?;
    // One DATA frame per message: h2 never merges separate `send_data` calls.
    for reply in answer_messages(method, name.as_bytes(), &message) {
        body.send_data(encode(&reply), false)?;
    }
    body.send_trailers(status_fields(OK, None))
}

/// Reads the request body up to its first whole message; the rest is not waited for.
async fn first_message(mut body: RecvStream) -> Result<Bytes, String> {
    let mut decoder = Decoder::default();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| format!("request body: {e}"))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        decoder.push(&chunk);
        if let Some(message) = decoder.next_message()? {
            return Ok(message);
        }
    }
    Err("the request has no whole message".to_owned())
}

/// `:status 200`, `content-type: application/grpc`.
fn grpc_response() -> Response<()> {
    let mut resp = Response::new(());
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(GRPC_CONTENT_TYPE));
    resp
}

/// `grpc-status` (and `grpc-message`) fields.
fn status_fields(code: u32, message: Option<&str>) -> HeaderMap {
    let mut fields = HeaderMap::new();
    fields.insert(HeaderName::from_static(GRPC_STATUS), HeaderValue::from(code));
    // Our messages are plain ASCII; one that is not a valid field value is left out.
    if let Some(value) = message.and_then(|m| HeaderValue::from_str(m).ok()) {
        fields.insert(HeaderName::from_static(GRPC_MESSAGE), value);
    }
    fields
}

/// A trailers-only response: the status in the headers, which end the stream.
fn trailers_only(respond: &mut SendResponse<Bytes>, code: u32, message: &str) -> Result<(), h2::Error> {
    let mut resp = grpc_response();
    resp.headers_mut().extend(status_fields(code, Some(message)));
    respond.send_response(resp, true).map(drop)
}

/// `grpc-client --target`: `host:port`. The host is resolved with the system resolver on every
/// attempt; the string as given is the `:authority`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTarget {
    /// Host name or address (an IPv6 address without its brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    authority: Authority,
}

impl GrpcTarget {
    /// The `:authority` sent: the target as given.
    pub fn authority(&self) -> &str {
        self.authority.as_str()
    }
}

impl FromStr for GrpcTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?}: expected host:port"))?;
        let port = port.parse().map_err(|e| format!("{s:?}: port: {e}"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(format!("{s:?}: expected host:port"));
        }
        let authority = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
        Ok(GrpcTarget {
            host: host.to_owned(),
            port,
            authority,
        })
    }
}

impl fmt::Display for GrpcTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.authority())
    }
}

/// What a `grpc-client` attempt sends.
#[derive(Debug, Clone)]
pub struct GrpcCallSpec {
    /// Where to.
    pub target: GrpcTarget,
    /// Which method's answer to expect.
    pub method: GrpcMethod,
    /// Path to call: the method's, unless overridden (tests call an unknown method).
    pub path: PathAndQuery,
    /// The request message.
    pub message: Bytes,
    /// Bound on resolve + connect + handshake + call + answer.
    pub timeout: Duration,
}

impl GrpcCallSpec {
    /// A call of `method` with `message`.
    pub fn new(target: GrpcTarget, method: GrpcMethod, message: impl Into<Bytes>, timeout: Duration) -> Self {
        GrpcCallSpec {
            target,
            method,
            path: PathAndQuery::from_static(method.path()),
            message: message.into(),
            timeout,
        }
    }
}

/// The answer to one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcReply {
    /// HTTP status code.
    pub http_status: u16,
    /// `grpc-status`, from the trailers or a trailers-only response's headers; the body is not read
    /// when the HTTP status is not 200.
    pub grpc_status: Option<u32>,
    /// `grpc-message`, from the same place.
    pub grpc_message: Option<String>,
    /// The `x-served-by` header.
    pub served_by: Option<String>,
    /// The messages received, in order.
    pub messages: Vec<Bytes>,
}

/// One call on a new connection, judged by [`judge`]; every failure to get an answer within the
/// timeout (resolve, connect, handshake, reset, malformed answer, the timeout itself) is an error.
pub async fn attempt(spec: &GrpcCallSpec) -> Outcome {
    match call(spec).await {
        Ok(reply) => judge(&reply, spec.method, &spec.message),
        Err(err) => Outcome::Error(err),
    }
}

/// One call on a new connection: resolve (system resolver), connect, h2c handshake, the request with
/// one message, then the whole answer, all within `spec.timeout`.
pub async fn call(spec: &GrpcCallSpec) -> Result<GrpcReply, String> {
    match tokio::time::timeout(spec.timeout, exchange(spec)).await {
        Ok(result) => result,
        Err(_) => Err(format!("timeout after {:?}", spec.timeout)),
    }
}

async fn exchange(spec: &GrpcCallSpec) -> Result<GrpcReply, String> {
    let stream = connect(&spec.target.host, spec.target.port).await?;
    let (client, conn) = h2::client::handshake(stream)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    // The connection future must run while we talk; it is aborted when this attempt ends.
    let conn = AbortOnDrop(tokio::spawn(conn));
    let mut client = client.ready().await.map_err(|e| format!("connection: {e}"))?;
    let uri = Uri::builder()
        .scheme("http")
        .authority(spec.target.authority.clone())
        .path_and_query(spec.path.clone())
        .build()
        .map_err(|e| format!("request uri: {e}"))?;
    let mut req = Request::new(());
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    let headers = req.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(GRPC_CONTENT_TYPE));
    headers.insert(TE, HeaderValue::from_static("trailers"));
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("osm-demo-app/", env!("CARGO_PKG_VERSION"))),
    );
    let (response, mut body) = client
        .send_request(req, false)
        .map_err(|e| format!("request: {e}"))?;
    body.send_data(encode(&spec.message), true)
        .map_err(|e| format!("request body: {e}"))?;
    let (head, mut body) = response.await.map_err(|e| format!("response: {e}"))?.into_parts();
    let mut reply = GrpcReply {
        http_status: head.status.as_u16(),
        grpc_status: None,
        grpc_message: None,
        served_by: text(&head.headers, SERVED_BY),
        messages: Vec::new(),
    };
    if head.status == StatusCode::OK {
        let mut decoder = Decoder::default();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| format!("response body: {e}"))?;
            let _ = body.flow_control().release_capacity(chunk.len());
            decoder.push(&chunk);
            while let Some(message) = decoder.next_message()? {
                reply.messages.push(message);
            }
        }
        if !decoder.is_empty() {
            return Err("response body: truncated message".to_owned());
        }
    }
    // A trailers-only answer (or an HTTP error) has its status in the headers.
    let trailers = if head.status == StatusCode::OK {
        body.trailers()
            .await
            .map_err(|e| format!("response trailers: {e}"))?
    } else {
        None
    };
    let fields = trailers.as_ref().unwrap_or(&head.headers);
    reply.grpc_status = match text(fields, GRPC_STATUS) {
        Some(code) => Some(code.parse().map_err(|_| format!("bad {GRPC_STATUS} {code:?}"))?),
        None => None,
    };
    reply.grpc_message = text(fields, GRPC_MESSAGE);
    drop(conn);
    Ok(reply)
}

/// A header field as text, if present and valid.
fn text(fields: &HeaderMap, name: &str) -> Option<String> {
    fields.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// The outcome of a call of `method` with `message` that got `reply`: `http-<code>` if the HTTP status
/// is not 200; else `grpc-<code>` if `grpc-status` is not 0; else `grpc-0`, ok, when the messages are
/// exactly [`answer_messages`] of the server named by `x-served-by` (or, without it, by the first
/// message), which is then counted in `served_by`. No `grpc-status`, or wrong messages, is an error.
pub fn judge(reply: &GrpcReply, method: GrpcMethod, message: &[u8]) -> Outcome {
    let labelled = |status: String, ok: bool, served_by: Option<String>| Outcome::Labelled {
        status,
        ok,
        served_by,
    };
    if reply.http_status != StatusCode::OK.as_u16() {
        return labelled(
            format!("http-{}", reply.http_status),
            false,
            reply.served_by.clone(),
        );
    }
    match reply.grpc_status {
        None => return Outcome::Error(format!("no {GRPC_STATUS} in the answer")),
        Some(OK) => {}
        Some(code) => return labelled(format!("grpc-{code}"), false, reply.served_by.clone()),
    }
    match answered_by(reply, method, message) {
        Ok(name) => labelled(format!("grpc-{OK}"), true, Some(name)),
        Err(err) => Outcome::Error(err),
    }
}

/// The name of the server whose answer `reply` is, or why it is not a correct answer.
fn answered_by(reply: &GrpcReply, method: GrpcMethod, message: &[u8]) -> Result<String, String> {
    let name = match &reply.served_by {
        Some(name) => name.clone(),
        None => {
            // The first message is the name followed by what a nameless server would answer.
            let nameless = answer_messages(method, b"", message);
            reply
                .messages
                .first()
                .and_then(|first| first.strip_suffix(&nameless[0][..]))
                .and_then(|name| std::str::from_utf8(name).ok())
                .ok_or_else(|| format!("unexpected answer {}", show(&reply.messages)))?
                .to_owned()
        }
    };
    if reply.messages == answer_messages(method, name.as_bytes(), message) {
        Ok(name)
    } else {
        Err(format!(
            "unexpected answer from {name:?}: {}",
            show(&reply.messages)
        ))
    }
}

/// Messages for an error text.
fn show(messages: &[Bytes]) -> String {
    let texts: Vec<_> = messages.iter().map(|m| String::from_utf8_lossy(m)).collect();
    format!("{texts:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(
        http_status: u16,
        grpc_status: Option<u32>,
        served_by: Option<&str>,
        messages: &[&str],
    ) -> GrpcReply {
        GrpcReply {
            http_status,
            grpc_status,
            grpc_message: None,
            served_by: served_by.map(str::to_owned),
            messages: messages.iter().map(|m| Bytes::from(m.to_string())).collect(),
        }
    }

    fn labelled(status: &str, ok: bool, served_by: Option<&str>) -> Outcome {
        Outcome::Labelled {
            status: status.to_owned(),
            ok,
            served_by: served_by.map(str::to_owned),
        }
    }

    #[test]
    fn frames_round_trip_in_any_chunks() {
        let mut wire = encode(b"hello").to_vec();
        assert_eq!(wire, b"\0\0\0\0\x05hello");
        wire.extend_from_slice(&encode(b""));
        wire.extend_from_slice(&encode(b"x:1"));
        let mut decoder = Decoder::default();
        let mut messages = Vec::new();
        for byte in wire {
            decoder.push(&[byte]);
            while let Some(m) = decoder.next_message().unwrap() {
                messages.push(m);
            }
        }
        assert_eq!(messages, ["hello", "", "x:1"]);
        assert!(decoder.is_empty());

        let mut compressed = Decoder::default();
        compressed.push(b"\x01\0\0\0\x01a");
        assert!(compressed.next_message().is_err());
        let mut huge = Decoder::default();
        huge.push(b"\0\xff\xff\xff\xff");
        assert!(huge.next_message().is_err());
    }

    #[test]
    fn answers() {
        assert_eq!(answer_messages(GrpcMethod::Unary, b"v1", b"hi"), ["v1:hi"]);
        assert_eq!(
            answer_messages(GrpcMethod::ServerStream, b"v1", b"hi"),
            ["v1:0:hi", "v1:1:hi", "v1:2:hi", "v1:3:hi", "v1:4:hi"]
        );
        assert_eq!(
            GrpcMethod::from_path(SERVER_STREAM_PATH),
            Some(GrpcMethod::ServerStream)
        );
        assert_eq!(GrpcMethod::from_path("/demo.Echo/Nope"), None);
    }

    #[test]
    fn targets() {
        let t: GrpcTarget = "echo.demo:9090".parse().unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.authority()),
            ("echo.demo", 9090, "echo.demo:9090")
        );
        let t: GrpcTarget = "[::1]:80".parse().unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.to_string().as_str()),
            ("::1", 80, "[::1]:80")
        );
        for bad in ["echo", "echo:", ":80", "echo:99999", "::1:80", "a b:80"] {
            assert!(bad.parse::<GrpcTarget>().is_err(), "{bad}");
        }
    }

    #[test]
    fn judging() {
        use GrpcMethod::{ServerStream, Unary};
        let stream = ["v1:0:m", "v1:1:m", "v1:2:m", "v1:3:m", "v1:4:m"];
        // Ok, with the name from the header or from the message.
        let ok = labelled("grpc-0", true, Some("v1"));
        assert_eq!(
            judge(&reply(200, Some(0), Some("v1"), &["v1:m"]), Unary, b"m"),
            ok
        );
        assert_eq!(judge(&reply(200, Some(0), None, &["v1:m"]), Unary, b"m"), ok);
        assert_eq!(judge(&reply(200, Some(0), None, &stream), ServerStream, b"m"), ok);
        // Statuses.
        let denied = reply(403, None, None, &[]);
        assert_eq!(judge(&denied, Unary, b"m"), labelled("http-403", false, None));
        let unavailable = reply(200, Some(14), Some("v1"), &[]);
        assert_eq!(
            judge(&unavailable, Unary, b"m"),
            labelled("grpc-14", false, Some("v1"))
        );
        // Wrong answers are errors.
        for (wrong, method) in [
            (reply(200, None, None, &["v1:m"]), Unary),
            (reply(200, Some(0), Some("v2"), &["v1:m"]), Unary),
            (reply(200, Some(0), None, &["v1:m", "v1:m"]), Unary),
            (reply(200, Some(0), None, &[]), Unary),
            (reply(200, Some(0), None, &["v1:x"]), Unary),
            (reply(200, Some(0), None, &stream[..4]), ServerStream),
            (reply(200, Some(0), None, &["v1:m"]), ServerStream),
        ] {
            assert!(
                matches!(judge(&wrong, method, b"m"), Outcome::Error(_)),
                "{wrong:?}"
            );
        }
    }

    async fn server(name: &str) -> GrpcTarget {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap().to_string().parse().unwrap();
        tokio::spawn(serve(listener, name.to_owned(), false));
        target
    }

    /// The client against the server, in process.
    #[tokio::test]
    async fn calls() {
        let target = server("echo-v1").await;
        let timeout = Duration::from_secs(10);
        for method in [GrpcMethod::Unary, GrpcMethod::ServerStream] {
            let spec = GrpcCallSpec::new(target.clone(), method, "hi", timeout);
            let reply = call(&spec).await.unwrap();
            assert_eq!(reply.served_by.as_deref(), Some("echo-v1"));
            assert_eq!(reply.messages, answer_messages(method, b"echo-v1", b"hi"));
            assert_eq!(attempt(&spec).await, labelled("grpc-0", true, Some("echo-v1")));
        }
        let mut spec = GrpcCallSpec::new(target, GrpcMethod::Unary, "hi", timeout);
        spec.path = PathAndQuery::from_static("/demo.Echo/Nope");
        let reply = call(&spec).await.unwrap();
        assert_eq!(
            (
                reply.http_status,
                reply.grpc_status,
                reply.grpc_message.as_deref()
            ),
            (200, Some(UNIMPLEMENTED), Some("unknown method"))
        );
        assert_eq!(attempt(&spec).await, labelled("grpc-12", false, None));
    }

    /// The wire shape, seen by a bare h2 client: one DATA frame per streamed message then trailers; a
    /// trailers-only answer to an unknown method; INTERNAL for a request without a message.
    #[tokio::test]
    async fn wire_shape() {
        let target = server("echo-v1").await;
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        let _conn = AbortOnDrop(tokio::spawn(conn));
        let mut client = client.ready().await.unwrap();
        let mut send = |path: &str, body: &[u8]| {
            let req = Request::post(format!("http://{target}{path}"))
                .header(CONTENT_TYPE, GRPC_CONTENT_TYPE)
                .header(TE, "trailers")
                .body(())
                .unwrap();
            let (response, mut stream) = client.send_request(req, false).unwrap();
            stream.send_data(Bytes::copy_from_slice(body), true).unwrap();
            response
        };
        let streamed = send(SERVER_STREAM_PATH, &encode(b"m"));
        let unknown = send("/demo.Echo/Nope", &encode(b"m"));
        let empty = send(UNARY_PATH, b"");

        let (head, mut body) = streamed.await.unwrap().into_parts();
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.headers[CONTENT_TYPE], GRPC_CONTENT_TYPE);
        assert_eq!(head.headers[SERVED_BY], "echo-v1");
        let mut frames = Vec::new();
        while let Some(frame) = body.data().await {
            frames.push(frame.unwrap());
        }
        let expected: Vec<_> = answer_messages(GrpcMethod::ServerStream, b"echo-v1", b"m")
            .iter()
            .map(|m| encode(m))
            .collect();
        assert_eq!(frames, expected);
        let trailers = body.trailers().await.unwrap().unwrap();
        assert_eq!(trailers[GRPC_STATUS], "0");

        for (response, code, message) in [
            (unknown, "12", "unknown method"),
            (empty, "13", "the request has no whole message"),
        ] {
            let (head, mut body) = response.await.unwrap().into_parts();
            assert!(body.is_end_stream(), "trailers-only");
            assert_eq!(head.status, StatusCode::OK);
            assert_eq!(head.headers[CONTENT_TYPE], GRPC_CONTENT_TYPE);
            assert_eq!(head.headers[GRPC_STATUS], code);
            assert_eq!(head.headers[GRPC_MESSAGE], message);
            assert!(body.trailers().await.unwrap().is_none());
        }
    }
}
