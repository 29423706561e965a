//! bookbuyer and bookthief: buy a book, ask how many were bought, pause, repeat — each request on its
//! own connection so the sidecar routes every one independently. Both send the same requests; only
//! `client-app` (and so the mesh's verdict) differs.

use std::time::Duration;

use hyper::Method;
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue, USER_AGENT};

use crate::http;
use crate::stats::SharedStats;
use crate::url::HttpUrl;

/// The `user-agent` the upstream Go demo clients send; route policies may match on it.
pub const USER_AGENT_VALUE: &str = "Go-http-client/1.1";

/// Path that buys a book.
pub const BUY_PATH: &str = "/buy-a-book/new";
/// Path that tells how many books were bought.
pub const BOOKS_BOUGHT_PATH: &str = "/books-bought";

/// Which client, and how it talks.
#[derive(Debug, Clone)]
pub struct BuyerConfig {
    /// `bookbuyer` or `bookthief`: the `client-app` header and the stats' `app`.
    pub app: String,
    /// The bookstore, e.g. `http://bookstore.bookstore:14001`; paths are appended to it.
    pub bookstore: HttpUrl,
    /// Pause after each buy + books-bought pair.
    pub interval: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl BuyerConfig {
    /// The headers every request carries.
    pub fn headers(&self) -> std::io::Result<Vec<(HeaderName, HeaderValue)>> {
        Ok(vec![
            (
                HeaderName::from_static("client-app"),
                http::header_value(&self.app)?,
            ),
            (USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE)),
        ])
    }
}

/// Loops forever, recording every request in `stats`; stopping is the caller's job (drop the future).
pub async fn run(config: &BuyerConfig, stats: &SharedStats) -> std::io::Result<()> {
    let headers = config.headers()?;
    let urls = [BUY_PATH, BOOKS_BOUGHT_PATH].map(|path| config.bookstore.join(path));
    loop {
        for url in &urls {
            let result = http::call(url, &Method::GET, &headers, Bytes::new(), config.timeout).await;
            stats.update(|s| match result {
                Ok(reply) => s.record_response(reply.status, reply.served_by.as_deref()),
                Err(err) => s.record_conn_error(format!("GET {url}: {err}")),
            });
        }
        tokio::time::sleep(config.interval).await;
    }
}
