//! The clients' result: one JSON line printed at the end, e.g.
//! `{"sent":10,"ok":8,"status":{"200":8,"403":2},"errors":0,"served_by":{"bookstore-v1":5,"bookstore-v2":3}}`.
//! The gRPC client labels its statuses instead (`{"grpc-0":8,"grpc-7":1,"http-403":1}`).
//! Tests parse it back with [`Summary::from_output`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Counts of a client run. `sent` counts finished attempts (a request cut short by the stop signal is
/// not counted at all); `ok` the 2xx responses (HTTP), correct echoes (TCP) or correct answers with
/// `grpc-status: 0` (gRPC); `errors` the attempts without a (valid) response (connect/IO failure, reset,
/// timeout, wrong echo or answer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Finished attempts.
    pub sent: u64,
    /// Successful attempts.
    pub ok: u64,
    /// HTTP status code → count (every response, 2xx included); for gRPC `grpc-<code>` (`grpc-0` included)
    /// or `http-<code>` when the HTTP status was not 200. Empty for TCP.
    #[serde(default)]
    pub status: BTreeMap<String, u64>,
    /// Attempts that got no response.
    pub errors: u64,
    /// `x-served-by` response header value → count (gRPC: an ok answer without it counts the name its
    /// messages start with). Empty for TCP.
    #[serde(default)]
    pub served_by: BTreeMap<String, u64>,
    /// The most recent error, for diagnosis; absent when there were none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Summary {
    /// Records an HTTP response.
    pub fn record_response(&mut self, status: u16, served_by: Option<&str>) {
        self.record_status(&status.to_string(), (200..300).contains(&status), served_by);
    }

    /// Records a response under a status label (gRPC: `grpc-0`, `grpc-14`, `http-403`), `ok` or not.
    pub fn record_status(&mut self, status: &str, ok: bool, served_by: Option<&str>) {
        self.sent += 1;
        if ok {
            self.ok += 1;
        }
        *self.status.entry(status.to_owned()).or_default() += 1;
        if let Some(name) = served_by {
            *self.served_by.entry(name.to_owned()).or_default() += 1;
        }
    }

    /// Records a successful non-HTTP attempt (a correct TCP echo).
    pub fn record_ok(&mut self) {
        self.sent += 1;
        self.ok += 1;
    }

    /// Records an attempt that failed without a response.
    pub fn record_error(&mut self, error: impl Into<String>) {
        self.sent += 1;
        self.errors += 1;
        self.last_error = Some(error.into());
    }

    /// Records the outcome of one attempt.
    pub fn record(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Response { status, served_by } => self.record_response(status, served_by.as_deref()),
            Outcome::Labelled {
                status,
                ok,
                served_by,
            } => self.record_status(&status, ok, served_by.as_deref()),
            Outcome::Ok => self.record_ok(),
            Outcome::Error(e) => self.record_error(e),
        }
    }

    /// The summary as one JSON line (no trailing newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("a Summary always serializes")
    }

    /// Finds the summary in a client's stdout: the last line that parses as one.
    pub fn from_output(stdout: &str) -> Option<Summary> {
        stdout
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str(line.trim()).ok())
    }
}

/// What one client attempt produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP response.
    Response {
        /// Its status code.
        status: u16,
        /// Its `x-served-by` header.
        served_by: Option<String>,
    },
    /// A response with a status label rather than an HTTP code (gRPC).
    Labelled {
        /// `grpc-<code>`, or `http-<code>` when the HTTP status was not 200.
        status: String,
        /// Whether it counts as `ok`.
        ok: bool,
        /// The name of the server that answered.
        served_by: Option<String>,
    },
    /// A successful attempt without a status (TCP echo).
    Ok,
    /// No (valid) response.
    Error(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON line has exactly the agreed shape, with maps in a stable order.
    #[test]
    fn json_shape() {
        let mut s = Summary::default();
        s.record_response(200, Some("bookstore-v2"));
        s.record_response(200, Some("bookstore-v1"));
        s.record_response(403, None);
        s.record(Outcome::Response {
            status: 503,
            served_by: None,
        });
        assert_eq!(
            s.to_json_line(),
            r#"{"sent":4,"ok":2,"status":{"200":2,"403":1,"503":1},"errors":0,"served_by":{"bookstore-v1":1,"bookstore-v2":1}}"#
        );
    }

    /// gRPC statuses are labels; only the `ok` ones count as ok.
    #[test]
    fn labelled_statuses() {
        let mut s = Summary::default();
        s.record(Outcome::Labelled {
            status: "grpc-0".into(),
            ok: true,
            served_by: Some("echo-v1".into()),
        });
        s.record_status("grpc-7", false, None);
        s.record_status("http-403", false, None);
        assert_eq!(
            s.to_json_line(),
            r#"{"sent":3,"ok":1,"status":{"grpc-0":1,"grpc-7":1,"http-403":1},"errors":0,"served_by":{"echo-v1":1}}"#
        );
    }

    /// Errors count as sent and keep the last message.
    #[test]
    fn errors_and_tcp() {
        let mut s = Summary::default();
        s.record(Outcome::Ok);
        s.record_error("connect: refused");
        s.record(Outcome::Error("timeout".into()));
        assert_eq!(
            s.to_json_line(),
            r#"{"sent":3,"ok":1,"status":{},"errors":2,"served_by":{},"last_error":"timeout"}"#
        );
    }

    /// The summary is found after other output, and round-trips.
    #[test]
    fn parse_back() {
        let mut s = Summary::default();
        s.record_response(201, Some("x"));
        let out = format!("some log\n{}\n", s.to_json_line());
        assert_eq!(Summary::from_output(&out), Some(s));
        assert_eq!(Summary::from_output("nothing here"), None);
    }
}
