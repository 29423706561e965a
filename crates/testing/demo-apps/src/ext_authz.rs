//! An Envoy external authorization service (`envoy.service.auth.v3.Authorization/Check`, gRPC over
//! h2c, with the envoy-types protos and tonic): the peer of the mesh's `ext_authz` filter in tests.
//!
//! It denies a request carrying the `--deny-header` header or whose path starts with a
//! `--deny-path-prefix` (403 from the sidecar, body [`DENIED_BODY`]), allows the rest, and can answer
//! after `--delay-ms` (to exercise the filter's timeout). Each check is printed on stdout as one
//! [`CheckRecord`] line (`check: {json}`) — the path, and the caller's mesh identity as the sidecar saw
//! it on the mTLS connection — which tests read back with [`CheckRecord::parse_all`].

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{Authorization, AuthorizationServer};
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response,
};
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// Prefix of a check's line on stdout.
pub const RECORD_PREFIX: &str = "check: ";
/// Body of a denied request's 403.
pub const DENIED_BODY: &str = "denied by ext-authz\n";
/// Header the service adds to an allowed request on its way to the app.
pub const CHECKED_HEADER: &str = "x-ext-authz-checked";

/// gRPC status codes of a check's answer (`google.rpc.Code`).
const RPC_OK: i32 = 0;
const RPC_PERMISSION_DENIED: i32 = 7;

/// What the service refuses, and how long it takes to answer.
#[derive(Clone, Debug, Default)]
pub struct AuthzPolicy {
    /// A request with this header (any value) is denied. Lower case, as Envoy sends header names.
    pub deny_header: Option<String>,
    /// A request whose path starts with one of these is denied.
    pub deny_path_prefixes: Vec<String>,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl AuthzPolicy {
    /// Whether a request with this path and these header names is allowed.
    pub fn allows<'a>(&self, path: &str, mut header_names: impl Iterator<Item = &'a str>) -> bool {
        let denied_header = self
            .deny_header
            .as_deref()
            .is_some_and(|deny| header_names.any(|h| h.eq_ignore_ascii_case(deny)));
        let denied_path = self
            .deny_path_prefixes
            .iter()
            .any(|p| path.starts_with(p.as_str()));
        !(denied_header || denied_path)
    }
}

/// One check as the service saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRecord {
    pub method: String,
    /// The request's path, query string included.
    pub path: String,
    /// The caller's principal (`source.principal`: its certificate's URI or DNS SAN); empty without
    /// a client certificate.
    pub principal: String,
    /// Whether the caller's certificate itself was sent along (`include_peer_certificate`).
    pub peer_certificate: bool,
    pub allowed: bool,
}

impl CheckRecord {
    fn from_request(request: &CheckRequest) -> CheckRecord {
        let attributes = request.attributes.as_ref();
        let http = attributes
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let source = attributes.and_then(|a| a.source.as_ref());
        CheckRecord {
            method: http.map(|h| h.method.clone()).unwrap_or_default(),
            path: http.map(|h| h.path.clone()).unwrap_or_default(),
            principal: source.map(|s| s.principal.clone()).unwrap_or_default(),
            peer_certificate: source.is_some_and(|s| !s.certificate.is_empty()),
            allowed: false,
        }
    }

    /// Every record in a server's stdout, in order.
    pub fn parse_all(stdout: &str) -> Vec<CheckRecord> {
        stdout
            .lines()
            .filter_map(|l| l.strip_prefix(RECORD_PREFIX))
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect()
    }
}

/// The gRPC service.
pub struct AuthzService {
    name: String,
    policy: AuthzPolicy,
}

impl AuthzService {
    pub fn new(name: impl Into<String>, policy: AuthzPolicy) -> Self {
        AuthzService {
            name: name.into(),
            policy,
        }
    }

    /// The answer to one check, and its record.
    pub fn decide(&self, request: &CheckRequest) -> (CheckResponse, CheckRecord) {
        let mut record = CheckRecord::from_request(request);
        let headers = request
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .map(|h| &h.headers);
        record.allowed = self.policy.allows(
            &record.path,
            headers.into_iter().flatten().map(|(k, _)| k.as_str()),
        );
        let header = |key: &str, value: &str| HeaderValueOption {
            header: Some(HeaderValue {
                key: key.to_string(),
                value: value.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let response = if record.allowed {
            CheckResponse {
                status: Some(RpcStatus {
                    code: RPC_OK,
                    ..Default::default()
                }),
                http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse {
                    headers: vec![header(CHECKED_HEADER, &self.name)],
                    ..Default::default()
                })),
                ..Default::default()
            }
        } else {
            CheckResponse {
                status: Some(RpcStatus {
                    code: RPC_PERMISSION_DENIED,
                    message: format!("denied by {}", self.name),
                    ..Default::default()
                }),
                http_response: Some(check_response::HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus {
                        code: StatusCode::Forbidden as i32,
                    }),
                    body: DENIED_BODY.to_string(),
                    ..Default::default()
                })),
                ..Default::default()
            }
        };
        (response, record)
    }
}

#[tonic::async_trait]
impl Authorization for AuthzService {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let (response, record) = self.decide(request.get_ref());
        // Printed before any delay: a caller that gives up cancels this call.
        match serde_json::to_string(&record) {
            Ok(json) => println!("{RECORD_PREFIX}{json}"),
            Err(e) => eprintln!("ext-authz-server: cannot print a check record: {e}"),
        }
        if !self.policy.delay.is_zero() {
            tokio::time::sleep(self.policy.delay).await;
        }
        Ok(tonic::Response::new(response))
    }
}

/// Serves checks on `listener` until the process is stopped.
pub async fn serve(listener: TcpListener, service: AuthzService) -> std::io::Result<()> {
    tonic::transport::Server::builder()
        .add_service(AuthorizationServer::new(service))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
        .await
        .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};

    use super::*;

    fn request(path: &str, headers: &[(&str, &str)]) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    principal: "bookbuyer.bookbuyer.cluster.local".into(),
                    certificate: "-----BEGIN%20CERTIFICATE-----".into(),
                    ..Default::default()
                }),
                request: Some(Request {
                    http: Some(HttpRequest {
                        method: "GET".into(),
                        path: path.into(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    /// A denying header or path prefix gets PERMISSION_DENIED with a 403; anything else OK with the
    /// checked header; each record carries the path and the caller's principal.
    #[test]
    fn ext_authz_server_allows_and_denies_by_header_or_path() {
        let service = AuthzService::new(
            "authz",
            AuthzPolicy {
                deny_header: Some("x-deny".into()),
                deny_path_prefixes: vec!["/admin".into()],
                delay: Duration::ZERO,
            },
        );
        let (ok, record) = service.decide(&request("/books?x=1", &[("user-agent", "t")]));
        assert_eq!(ok.status.map(|s| s.code), Some(RPC_OK));
        assert!(matches!(
            ok.http_response,
            Some(check_response::HttpResponse::OkResponse(_))
        ));
        assert_eq!(
            record,
            CheckRecord {
                method: "GET".into(),
                path: "/books?x=1".into(),
                principal: "bookbuyer.bookbuyer.cluster.local".into(),
                peer_certificate: true,
                allowed: true,
            }
        );
        for denied in [request("/books", &[("x-deny", "1")]), request("/admin/x", &[])] {
            let (no, record) = service.decide(&denied);
            assert!(!record.allowed);
            assert_eq!(no.status.map(|s| s.code), Some(RPC_PERMISSION_DENIED));
            let Some(check_response::HttpResponse::DeniedResponse(d)) = no.http_response else {
                panic!("no denied response");
            };
            assert_eq!(d.status.map(|s| s.code), Some(StatusCode::Forbidden as i32));
        }
    }

    #[test]
    fn ext_authz_records_parse_back() {
        let record = CheckRecord {
            method: "GET".into(),
            path: "/p".into(),
            principal: "a.b.cluster.local".into(),
            peer_certificate: false,
            allowed: true,
        };
        let out = format!(
            "listening on 0.0.0.0:1\n{RECORD_PREFIX}{}\nnoise\n",
            serde_json::to_string(&record).unwrap()
        );
        assert_eq!(CheckRecord::parse_all(&out), vec![record]);
    }
}
