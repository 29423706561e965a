//! The bookwarehouse: `POST /restock-books` with `{"name":TITLE,"quantity":N}` adds N (or, negative,
//! removes) copies of TITLE in a SQLite store and answers 200 with
//! `{"name":TITLE,"stock":S,"stock_total":T,"restocked":R}` (the title's new stock, all titles' stock, and
//! the restock requests this process has applied). A request that would take a title below zero is
//! 409, a malformed one 400, another method 405, another path 404; every answer carries
//! `x-served-by`.
//!
//! The store ([`Warehouse`]) keeps table `books(name, stock)` and a log `restocks(id, name, quantity,
//! restocked_by, unix_ms)` (`restocked_by` is the caller's `client-app` header), created when missing.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use rusqlite::{Connection, OptionalExtension as _, params};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::http::{self, SERVED_BY};
use crate::stats::{AppStats, SharedStats, unix_ms};

/// Path that restocks books.
pub const RESTOCK_PATH: &str = "/restock-books";

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

/// The body of `POST /restock-books`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestockRequest {
    /// Book title.
    pub name: String,
    /// Copies to add (negative: to remove).
    pub quantity: i64,
}

/// The result of a restock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restocked {
    /// The title's stock now.
    pub stock: i64,
    /// The sum of all titles' stock now.
    pub stock_total: i64,
}

/// Why a restock was not applied.
#[derive(Debug)]
pub enum RestockError {
    /// The change would leave the stock negative or out of range.
    Refused(String),
    /// The store was closed (the app is stopping).
    Closed,
    /// The database failed.
    Db(rusqlite::Error),
}

impl fmt::Display for RestockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestockError::Refused(why) => f.write_str(why),
            RestockError::Closed => f.write_str("the warehouse is closed"),
            RestockError::Db(_) => f.write_str("database error"),
        }
    }
}

impl std::error::Error for RestockError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RestockError::Refused(_) | RestockError::Closed => None,
            RestockError::Db(err) => Some(err),
        }
    }
}

impl From<rusqlite::Error> for RestockError {
    fn from(err: rusqlite::Error) -> Self {
        RestockError::Db(err)
    }
}

/// The stock, in a SQLite file. Calls block (briefly): run them off the async threads. Clones share the
/// connection, which [`Warehouse::close`] closes for all of them.
#[derive(Debug, Clone)]
pub struct Warehouse {
    db: Arc<Mutex<Option<Connection>>>,
}

impl Warehouse {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> rusqlite::Result<Warehouse> {
        let db = Connection::open(path)?;
        // Another process (a test, an operator's sqlite3) may read the file meanwhile.
        db.busy_timeout(Duration::from_secs(5))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS books (
                 name TEXT PRIMARY KEY NOT NULL,
                 stock INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS restocks (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 name TEXT NOT NULL,
                 quantity INTEGER NOT NULL,
                 restocked_by TEXT,
                 unix_ms INTEGER NOT NULL
             );",
        )?;
        Ok(Warehouse {
            db: Arc::new(Mutex::new(Some(db))),
        })
    }

    /// Adds `quantity` copies of `name` (negative: removes them, never below zero) and logs the change,
    /// in one transaction; then calls `committed` with the result while the store is still locked, so
    /// whatever it records is in place before a [`Warehouse::close`] returns.
    pub fn restock<R>(
        &self,
        name: &str,
        quantity: i64,
        by: Option<&str>,
        committed: impl FnOnce(Restocked) -> R,
    ) -> Result<R, RestockError> {
        let mut guard = self.db.lock().unwrap_or_else(PoisonError::into_inner);
        let db = guard.as_mut().ok_or(RestockError::Closed)?;
        let tx = db.transaction()?;
        let current: i64 = tx
            .query_row("SELECT stock FROM books WHERE name = ?1", [name], |row| {
                row.get(0)
            })
            .optional()?
            .unwrap_or(0);
        let stock = current
            .checked_add(quantity)
            .filter(|stock| *stock >= 0)
            .ok_or_else(|| {
                RestockError::Refused(format!("{name:?}: stock {current} cannot change by {quantity}"))
            })?;
        tx.execute(
            "INSERT INTO books (name, stock) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET stock = excluded.stock",
            params![name, stock],
        )?;
        let now = i64::try_from(unix_ms()).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO restocks (name, quantity, restocked_by, unix_ms) VALUES (?1, ?2, ?3, ?4)",
            params![name, quantity, by, now],
        )?;
        let stock_total = total(&tx)?;
        tx.commit()?;
        Ok(committed(Restocked { stock, stock_total }))
    }

    /// The sum of all titles' stock.
    pub fn stock_total(&self) -> Result<i64, RestockError> {
        let guard = self.db.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(total(guard.as_ref().ok_or(RestockError::Closed)?)?)
    }

    /// Waits for a restock in progress, then closes the database; later restocks fail with
    /// [`RestockError::Closed`].
    pub fn close(&self) {
        let db = self.db.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(Err((_, err))) = db.map(Connection::close) {
            eprintln!("close the warehouse database: {err}");
        }
    }
}

fn total(db: &Connection) -> rusqlite::Result<i64> {
    db.query_row("SELECT COALESCE(SUM(stock), 0) FROM books", [], |row| row.get(0))
}

/// A bookwarehouse's zeroed counters, with its own fields present.
pub fn new_stats(name: &str, stock_total: i64) -> AppStats {
    AppStats {
        name: Some(name.to_owned()),
        requests: Some(0),
        restocked: Some(0),
        stock_total: Some(stock_total),
        ..AppStats::new("bookwarehouse")
    }
}

/// The HTTP front of a [`Warehouse`]; clones share the store and counters.
#[derive(Debug, Clone)]
pub struct WarehouseServer {
    store: Warehouse,
    served_by: HeaderValue,
    stats: SharedStats,
}

impl WarehouseServer {
    /// Serves `store` as `name`, counting in `stats` (see [`new_stats`]).
    pub fn new(store: Warehouse, name: &str, stats: SharedStats) -> std::io::Result<WarehouseServer> {
        Ok(WarehouseServer {
            store,
            served_by: http::header_value(name)?,
            stats,
        })
    }

    /// Serves HTTP on `listener` forever.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        http::serve_with(listener, move |req| {
            let server = self.clone();
            async move { server.handle(req).await }
        })
        .await
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        self.stats.update(|s| *s.requests.get_or_insert(0) += 1);
        let mut resp = self.answer(req).await;
        resp.headers_mut()
            .insert(HeaderName::from_static(SERVED_BY), self.served_by.clone());
        resp
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = Limited::new(body, MAX_BODY).collect().await.map(|b| b.to_bytes());
        if parts.uri.path() != RESTOCK_PATH {
            return text(StatusCode::NOT_FOUND, "not found".into());
        }
        if parts.method != Method::POST {
            let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into());
            resp.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
            return resp;
        }
        let request = match body
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<RestockRequest>(&b).map_err(|e| e.to_string()))
        {
            Ok(request) if !request.name.is_empty() => request,
            Ok(_) => return text(StatusCode::BAD_REQUEST, "empty book name".into()),
            Err(err) => return text(StatusCode::BAD_REQUEST, format!("bad restock request: {err}")),
        };
        let by = parts
            .headers
            .get("client-app")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (store, stats) = (self.store.clone(), self.stats.clone());
        let (name, quantity) = (request.name.clone(), request.quantity);
        let applied = tokio::task::spawn_blocking(move || {
            store.restock(&name, quantity, by.as_deref(), |done| {
                let restocked = stats.update(|s| {
                    s.stock_total = Some(done.stock_total);
                    let restocked = s.restocked.get_or_insert(0);
                    *restocked += 1;
                    *restocked
                });
                (done, restocked)
            })
        })
        .await;
        match applied {
            Ok(Ok((done, restocked))) => {
                let body = serde_json::json!({
                    "name": request.name,
                    "stock": done.stock,
                    "stock_total": done.stock_total,
                    "restocked": restocked,
                });
                let mut resp = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
                resp.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                resp
            }
            Ok(Err(RestockError::Refused(why))) => text(StatusCode::CONFLICT, why),
            Ok(Err(RestockError::Closed)) => text(StatusCode::SERVICE_UNAVAILABLE, "closing".into()),
            Ok(Err(RestockError::Db(err))) => {
                eprintln!("restock {:?}: {err}", request.name);
                text(StatusCode::INTERNAL_SERVER_ERROR, "database error".into())
            }
            Err(err) => {
                eprintln!("restock {:?}: {err}", request.name);
                text(StatusCode::INTERNAL_SERVER_ERROR, "restock task failed".into())
            }
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body + "\n")));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::url::HttpUrl;

    /// Stock goes up and down, never below zero, every change is logged, and it survives a reopen.
    #[test]
    fn store_keeps_stock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warehouse.db");
        let store = Warehouse::open(&path).unwrap();
        assert_eq!(store.stock_total().unwrap(), 0);
        let r = store.restock("Dune", 3, Some("bookstore-v1"), |r| r).unwrap();
        assert_eq!(
            r,
            Restocked {
                stock: 3,
                stock_total: 3
            }
        );
        let r = store.restock("Emma", 1, None, |r| r).unwrap();
        assert_eq!(
            r,
            Restocked {
                stock: 1,
                stock_total: 4
            }
        );
        let r = store.restock("Dune", -2, None, |r| r).unwrap();
        assert_eq!(
            r,
            Restocked {
                stock: 1,
                stock_total: 2
            }
        );
        assert!(matches!(
            store.restock("Dune", -2, None, drop),
            Err(RestockError::Refused(_))
        ));
        assert!(matches!(
            store.restock("Dune", i64::MAX, None, drop),
            Err(RestockError::Refused(_))
        ));
        store.close();
        assert!(matches!(
            store.restock("Dune", 1, None, drop),
            Err(RestockError::Closed)
        ));

        let store = Warehouse::open(&path).unwrap();
        assert_eq!(store.stock_total().unwrap(), 2);
        let db = Connection::open(&path).unwrap();
        let log: Vec<(String, i64, Option<String>)> = db
            .prepare("SELECT name, quantity, restocked_by FROM restocks ORDER BY id")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            log,
            [
                ("Dune".into(), 3, Some("bookstore-v1".into())),
                ("Emma".into(), 1, None),
                ("Dune".into(), -2, None),
            ]
        );
    }

    /// The HTTP front: restocks, refuses bad requests, and names itself on every answer.
    #[tokio::test]
    async fn http_answers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Warehouse::open(&dir.path().join("w.db")).unwrap();
        let stats = SharedStats::new(new_stats("bookwarehouse", 0));
        let server = WarehouseServer::new(store, "bookwarehouse", stats.clone()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base: HttpUrl = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        tokio::spawn(server.serve(listener));
        let json = [(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
        for (method, path, body, status) in [
            (Method::POST, RESTOCK_PATH, r#"{"name":"Dune","quantity":1}"#, 200),
            (Method::POST, RESTOCK_PATH, r#"{"name":"Dune","quantity":2}"#, 200),
            (
                Method::POST,
                RESTOCK_PATH,
                r#"{"name":"Dune","quantity":-9}"#,
                409,
            ),
            (Method::POST, RESTOCK_PATH, r#"{"name":"","quantity":1}"#, 400),
            (Method::POST, RESTOCK_PATH, "{", 400),
            (Method::GET, RESTOCK_PATH, "", 405),
            (Method::POST, "/restock", "", 404),
        ] {
            let reply = http::call(
                &base.join(path),
                &method,
                &json,
                Bytes::from_static(body.as_bytes()),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
            assert_eq!(reply.status, status, "{method} {path} {body}");
            assert_eq!(reply.served_by.as_deref(), Some("bookwarehouse"));
        }
        let s = stats.snapshot();
        assert_eq!(
            (s.requests, s.restocked, s.stock_total),
            (Some(7), Some(2), Some(3))
        );
        let reply = http::call(
            &base.join(RESTOCK_PATH),
            &Method::POST,
            &json,
            Bytes::from_static(br#"{"name":"Emma","quantity":1}"#),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(
            answer,
            serde_json::json!({"name": "Emma", "stock": 1, "stock_total": 4, "restocked": 3})
        );
    }
}
