//! The bookstore (v1, v2, … by `--name`): sells books and restocks each sale from the bookwarehouse.
//!
//! - `GET /books-bought`: how many books were sold, as JSON `{"identity":NAME,"books_bought":N}`.
//! - `GET /buy-a-book/new`: sells one book (same answer, new count) and restocks it in the background by
//!   `POST <warehouse>/restock-books` `{"name":TITLE,"quantity":1}`, as upstream does: the sale never
//!   waits for or fails with the warehouse; a failed restock is counted in `restock_failed`.
//! - `GET /reset`: sets the count back to 0.
//! - anything else: 404 (405 for a known path with another method).
//!
//! Every response carries `x-served-by: NAME` and `identity: NAME`; the 200s also `booksbought: N`.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use crate::bookbuyer::{BOOKS_BOUGHT_PATH, BUY_PATH, USER_AGENT_VALUE};
use crate::bookwarehouse::{RESTOCK_PATH, RestockRequest};
use crate::http::{self, SERVED_BY};
use crate::stats::{AppStats, SharedStats};
use crate::url::HttpUrl;

/// Path that sets the sales count back to zero.
pub const RESET_PATH: &str = "/reset";

/// Largest request body read.
const MAX_BODY: usize = 64 * 1024;

/// The titles restocked, in turn.
const TITLES: [&str; 3] = [
    "The Hitchhiker's Guide to the Galaxy",
    "A Wizard of Earthsea",
    "The Left Hand of Darkness",
];

/// A bookstore instance; clones share the counters.
#[derive(Debug, Clone)]
pub struct Bookstore {
    served_by: HeaderValue,
    warehouse: Arc<HttpUrl>,
    restock_headers: Arc<[(HeaderName, HeaderValue)]>,
    restock_timeout: Duration,
    stats: SharedStats,
}

impl Bookstore {
    /// A bookstore called `name` restocking from `warehouse` (its base URL), counting in `stats`
    /// (see [`new_stats`]).
    pub fn new(
        name: &str,
        warehouse: &HttpUrl,
        restock_timeout: Duration,
        stats: SharedStats,
    ) -> std::io::Result<Bookstore> {
        let served_by = http::header_value(name)?;
        Ok(Bookstore {
            restock_headers: Arc::new([
                (CONTENT_TYPE, HeaderValue::from_static("application/json")),
                (HeaderName::from_static("client-app"), served_by.clone()),
                (USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE)),
            ]),
            served_by,
            warehouse: Arc::new(warehouse.join(RESTOCK_PATH)),
            restock_timeout,
            stats,
        })
    }

    /// Serves HTTP on `listener` forever.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        http::serve_with(listener, move |req| {
            let store = self.clone();
            async move { store.handle(req).await }
        })
        .await
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        // Read the request body (none expected) to its end so the connection can carry the next request.
        let _ = Limited::new(body, MAX_BODY).collect().await;
        self.stats.update(|s| *s.requests.get_or_insert(0) += 1);
        let path = parts.uri.path();
        let known = [BOOKS_BOUGHT_PATH, BUY_PATH, RESET_PATH].contains(&path);
        let mut resp = if !known {
            text(StatusCode::NOT_FOUND, "not found\n")
        } else if parts.method != Method::GET {
            let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            resp.headers_mut().insert(ALLOW, HeaderValue::from_static("GET"));
            resp
        } else {
            let sold = self.stats.update(|s| {
                let sold = s.books_sold.get_or_insert(0);
                match path {
                    BUY_PATH => *sold += 1,
                    RESET_PATH => *sold = 0,
                    _ => {}
                }
                *sold
            });
            if path == BUY_PATH {
                let store = self.clone();
                tokio::spawn(async move { store.restock(sold).await });
            }
            self.books_bought(sold)
        };
        let headers = resp.headers_mut();
        headers.insert(HeaderName::from_static(SERVED_BY), self.served_by.clone());
        headers.insert(HeaderName::from_static("identity"), self.served_by.clone());
        resp
    }

    fn books_bought(&self, sold: u64) -> Response<Full<Bytes>> {
        let body = serde_json::json!({
            "identity": self.served_by.to_str().unwrap_or_default(),
            "books_bought": sold,
        });
        let mut resp = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(HeaderName::from_static("booksbought"), HeaderValue::from(sold));
        resp
    }

    /// Restocks the book sold as sale number `sale` and counts the outcome.
    async fn restock(&self, sale: u64) {
        let title = TITLES[usize::try_from(sale).unwrap_or_default() % TITLES.len()];
        let request = RestockRequest {
            name: title.to_owned(),
            quantity: 1,
        };
        let body = serde_json::to_vec(&request).expect("a RestockRequest always serializes");
        let result = http::call(
            &self.warehouse,
            &Method::POST,
            &self.restock_headers,
            body.into(),
            self.restock_timeout,
        )
        .await;
        self.stats.update(|s| {
            let ok = match result {
                Ok(reply) => {
                    s.record_response(reply.status, reply.served_by.as_deref());
                    (200..300).contains(&reply.status)
                }
                Err(err) => {
                    s.record_conn_error(format!("POST {}: {err}", self.warehouse));
                    false
                }
            };
            let counter = if ok {
                &mut s.restock_ok
            } else {
                &mut s.restock_failed
            };
            *counter.get_or_insert(0) += 1;
        });
    }
}

/// A bookstore's zeroed counters, with its own fields present.
pub fn new_stats(name: &str) -> AppStats {
    AppStats {
        name: Some(name.to_owned()),
        requests: Some(0),
        books_sold: Some(0),
        restock_ok: Some(0),
        restock_failed: Some(0),
        ..AppStats::new("bookstore")
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start(warehouse: &str) -> (HttpUrl, SharedStats) {
        let stats = SharedStats::new(new_stats("bookstore-v2"));
        let store = Bookstore::new(
            "bookstore-v2",
            &warehouse.parse().unwrap(),
            Duration::from_secs(2),
            stats.clone(),
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        tokio::spawn(store.serve(listener));
        (url, stats)
    }

    async fn get(base: &HttpUrl, method: Method, path: &str) -> http::Reply {
        http::call(
            &base.join(path),
            &method,
            &[],
            Bytes::new(),
            Duration::from_secs(5),
        )
        .await
        .unwrap()
    }

    /// Sales count up and reset; unknown paths are 404 and wrong methods 405, all naming the server.
    #[tokio::test]
    async fn routes() {
        // A bound socket that never listens: connections to its port are refused, and no other test can
        // take the port meanwhile.
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, getsockname, socket};
        use std::os::fd::AsRawFd as _;
        let dead = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        bind(dead.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).unwrap();
        let port = getsockname::<SockaddrIn>(dead.as_raw_fd()).unwrap().port();
        let (url, stats) = start(&format!("http://127.0.0.1:{port}")).await;
        for (method, path, status, body) in [
            (Method::GET, "/books-bought", 200, Some(0)),
            (Method::GET, "/buy-a-book/new", 200, Some(1)),
            (Method::GET, "/buy-a-book/new", 200, Some(2)),
            (Method::GET, "/books-bought", 200, Some(2)),
            (Method::GET, "/reset", 200, Some(0)),
            (Method::GET, "/books-bought", 200, Some(0)),
            (Method::GET, "/", 404, None),
            (Method::GET, "/buy-a-book", 404, None),
            (Method::POST, "/books-bought", 405, None),
        ] {
            let reply = get(&url, method.clone(), path).await;
            assert_eq!(reply.status, status, "{method} {path}");
            assert_eq!(
                reply.served_by.as_deref(),
                Some("bookstore-v2"),
                "{method} {path}"
            );
            if let Some(n) = body {
                let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
                assert_eq!(json["books_bought"], n, "{method} {path}");
                assert_eq!(json["identity"], "bookstore-v2");
            }
        }
        // Both restocks fail (nobody listens) without failing the sales.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while stats.snapshot().restock_failed != Some(2) {
            assert!(tokio::time::Instant::now() < deadline, "{:?}", stats.snapshot());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let s = stats.snapshot();
        assert_eq!(
            (s.requests, s.restock_ok, s.sent, s.conn_errors),
            (Some(9), Some(0), 2, 2)
        );
    }
}
