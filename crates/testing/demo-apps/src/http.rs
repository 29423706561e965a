//! The HTTP server (answers everything with its name), the serve loop the bookstore apps share, and
//! one HTTP request on its own connection ([`call`]; [`attempt`] for the `http-client` loop).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::summary::Outcome;
use crate::url::HttpUrl;

/// What `http-server --record-requests` prints before each request's method and path.
pub const RECORDED_REQUEST: &str = "request:";

/// Response header naming the server that answered; the client tallies it in `served_by`.
pub const SERVED_BY: &str = "x-served-by";

/// The next connection on `listener`. Accept errors are transient (out of file descriptors, an
/// aborted handshake): they are printed and the server keeps serving.
pub(crate) async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => return stream,
            Err(err) => {
                eprintln!("accept: {err}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Serves HTTP/1.1 on `listener` forever: every request gets `200`, body `name`, header
/// `x-served-by: name` — except `/status/<code>`, answered with that status as httpbin does (upstream
/// OSM's retry tests ask httpbin for `/status/503`). Keep-alive is supported (Envoy pools upstream
/// connections). With `record`, each request is printed as [`RECORDED_REQUEST`]` METHOD PATH` (path
/// and query exactly as received); otherwise nothing is logged per request.
pub async fn serve(listener: TcpListener, name: String, record: bool) -> std::io::Result<()> {
    let name: Arc<str> = name.into();
    let value = header_value(&name)?;
    serve_with(listener, move |req: Request<Incoming>| {
        let (name, value) = (Arc::clone(&name), value.clone());
        if record {
            let path = req.uri().path_and_query().map_or("", |p| p.as_str());
            println!("{RECORDED_REQUEST} {} {path}", req.method());
        }
        let status = requested_status(req.uri().path());
        async move {
            // Read the request body to its end so the connection can carry the next request.
            let _ = req.into_body().collect().await;
            let mut resp = Response::new(Full::new(Bytes::from(name.as_bytes().to_vec())));
            *resp.status_mut() = status;
            resp.headers_mut()
                .insert(HeaderName::from_static(SERVED_BY), value);
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            resp
        }
    })
    .await
}

/// The status a path asks for: `/status/<code>` with a valid code, else 200.
fn requested_status(path: &str) -> StatusCode {
    path.strip_prefix("/status/")
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::OK)
}

/// Serves HTTP/1.1 on `listener` forever, one task per connection, answering every request with
/// `handler` (which reads the request body itself). Keep-alive is supported.
pub async fn serve_with<H, Fut>(listener: TcpListener, handler: H) -> std::io::Result<()>
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    loop {
        let stream = accept(&listener).await;
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let response = handler(req);
                async move { Ok::<_, Infallible>(response.await) }
            });
            // A client going away mid-request is normal: nothing to report.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// An app's name as a header value (`x-served-by`), or an `InvalidInput` error.
pub fn header_value(name: &str) -> std::io::Result<HeaderValue> {
    HeaderValue::from_str(name).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("name {name:?} is not a valid header value"),
        )
    })
}

/// What an HTTP client attempt sends.
#[derive(Debug, Clone)]
pub struct HttpRequestSpec {
    /// Where to.
    pub url: HttpUrl,
    /// Which method.
    pub method: Method,
    /// Extra headers; they replace the defaults of the same name (`user-agent`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Bound on resolve + connect + request + response.
    pub timeout: Duration,
}

/// One request on a new connection (`Connection: close`, so every request is routed on its own). The
/// host is resolved with the system resolver on every attempt, so `/etc/hosts` (and changes to it)
/// apply.
pub async fn attempt(spec: &HttpRequestSpec) -> Outcome {
    match call(&spec.url, &spec.method, &spec.headers, Bytes::new(), spec.timeout).await {
        Ok(reply) => Outcome::Response {
            status: reply.status,
            served_by: reply.served_by,
        },
        Err(err) => Outcome::Error(err),
    }
}

/// A response to [`call`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// The `x-served-by` header.
    pub served_by: Option<String>,
    /// The whole body.
    pub body: Bytes,
}

/// One request on a new connection (`Connection: close`), resolving the host with the system resolver;
/// `headers` replace the defaults of the same name (`user-agent`). `Err` describes why no (whole)
/// response arrived within `timeout`: resolve, connect or protocol failure, or the timeout itself.
pub async fn call(
    url: &HttpUrl,
    method: &Method,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
    timeout: Duration,
) -> Result<Reply, String> {
    match tokio::time::timeout(timeout, exchange(url, method, headers, body)).await {
        Ok(result) => result,
        Err(_) => Err(format!("timeout after {timeout:?}")),
    }
}

async fn exchange(
    url: &HttpUrl,
    method: &Method,
    extra_headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
) -> Result<Reply, String> {
    let stream = connect(&url.host, url.port).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    // The connection future must run while we talk; it is aborted when this attempt ends.
    let conn = AbortOnDrop(tokio::spawn(conn));
    // An empty `Full` is an empty body, exactly like `Empty`.
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = method.clone();
    *req.uri_mut() = url
        .path
        .parse()
        .map_err(|e| format!("path {:?}: {e}", url.path))?;
    let headers = req.headers_mut();
    headers.insert(
        HOST,
        HeaderValue::from_str(&url.authority()).map_err(|e| format!("host header: {e}"))?,
    );
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("osm-demo-app/", env!("CARGO_PKG_VERSION"))),
    );
    for (name, value) in extra_headers {
        headers.insert(name.clone(), value.clone());
    }
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let served_by = resp
        .headers()
        .get(SERVED_BY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("response body: {e}"))?
        .to_bytes();
    drop(conn);
    Ok(Reply {
        status,
        served_by,
        body,
    })
}

/// Resolves `host` (system resolver: `/etc/hosts` first) and connects to the first address that accepts.
pub(crate) async fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("resolve {host}: {e}"))?;
    let mut last = format!("resolve {host}: no addresses");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = format!("connect {addr}: {e}"),
        }
    }
    Err(last)
}

/// Aborts a spawned task when dropped.
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
