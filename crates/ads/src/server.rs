//! The gRPC service: authenticates the proxy from its client certificate, then runs one task per
//! stream that feeds requests and config changes through the SotW or delta state machine.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use osm_ca::{TrustDomain, XdsClientIdentity};
use osm_xds::ProxyConfig;
use tokio::sync::{mpsc, watch};
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;
use tonic::{Request, Status};
use tracing::Instrument;

use crate::cache::{AdsEvent, SnapshotCache};
use crate::delta::DeltaStream;
use crate::sotw::{Output, SotwStream};
use crate::wire::{Encoded, Requests, ResponseBody};

const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
/// Envoy's requests are small; a bound keeps a misbehaving client from making us buffer much.
const MAX_REQUEST: usize = 64 << 20;

/// Answers "is there a pod with this proxy uuid running as this ServiceAccount?".
pub trait ProxyRegistry: Send + Sync + 'static {
    fn check(&self, id: &XdsClientIdentity) -> Result<(), String>;
}

/// The ADS gRPC service. Written against tonic's building blocks rather than generated from the proto:
/// responses are sent as shared pre-encoded bytes (see `wire`), which tonic's generated encoder would
/// copy into a per-stream buffer — at 2000 proxies that copy was gigabytes.
#[derive(Clone)]
pub struct AdsService {
    inner: Arc<Inner>,
}

struct Inner {
    cache: SnapshotCache,
    registry: Arc<dyn ProxyRegistry>,
    trust_domain: TrustDomain,
    shutdown: watch::Receiver<bool>,
}

impl AdsService {
    pub fn new(
        cache: SnapshotCache,
        registry: Arc<dyn ProxyRegistry>,
        trust_domain: TrustDomain,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                cache,
                registry,
                trust_domain,
                shutdown,
            }),
        }
    }
}

impl Inner {
    /// The proxy behind a stream: the CN of its client certificate, which must name a known pod.
    fn authenticate<T>(&self, req: &Request<T>) -> Result<XdsClientIdentity, Status> {
        let refuse = |reason: String| {
            tracing::warn!(%reason, "refusing ADS stream");
            self.cache.record(AdsEvent::Refused {
                reason: reason.clone(),
            });
            Status::unauthenticated(reason)
        };
        let certs = req
            .peer_certs()
            .ok_or_else(|| refuse("no client certificate".to_string()))?;
        let leaf = certs
            .first()
            .ok_or_else(|| refuse("no client certificate".to_string()))?;
        let cn = osm_ca::peer_common_name(leaf.as_ref())
            .map_err(|e| refuse(format!("unreadable client certificate: {e}")))?;
        let id = XdsClientIdentity::parse(&cn, &self.trust_domain).map_err(|e| {
            refuse(format!(
                "client certificate CN {cn:?} is not a proxy identity: {e}"
            ))
        })?;
        self.registry
            .check(&id)
            .map_err(|e| refuse(format!("proxy {cn}: {e}")))?;
        Ok(id)
    }
}

/// What `run_stream` needs from a protocol's state machine (SotW or delta).
trait Protocol: Send + 'static {
    type Req: prost::Message + Default + Send + 'static;
    type Resp: Send + 'static;
    fn on_request(&mut self, req: &Self::Req, config: Option<&ProxyConfig>) -> Output<Encoded<Self::Resp>>;
    fn on_config(&mut self, config: &ProxyConfig) -> Output<Encoded<Self::Resp>>;
    /// The Envoy node id a request names, if it carries a node.
    fn node_id(req: &Self::Req) -> Option<&str>;
}

impl Protocol for SotwStream {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;
    fn on_request(
        &mut self,
        req: &DiscoveryRequest,
        config: Option<&ProxyConfig>,
    ) -> Output<Encoded<DiscoveryResponse>> {
        SotwStream::on_request(self, req, config)
    }
    fn on_config(&mut self, config: &ProxyConfig) -> Output<Encoded<DiscoveryResponse>> {
        SotwStream::on_config(self, config)
    }
    fn node_id(req: &DiscoveryRequest) -> Option<&str> {
        req.node.as_ref().map(|n| n.id.as_str())
    }
}

impl Protocol for DeltaStream {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;
    fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        config: Option<&ProxyConfig>,
    ) -> Output<Encoded<DeltaDiscoveryResponse>> {
        DeltaStream::on_request(self, req, config)
    }
    fn on_config(&mut self, config: &ProxyConfig) -> Output<Encoded<DeltaDiscoveryResponse>> {
        DeltaStream::on_config(self, config)
    }
    fn node_id(req: &DeltaDiscoveryRequest) -> Option<&str> {
        req.node.as_ref().map(|n| n.id.as_str())
    }
}

/// Drives one stream in its own task: requests and config changes go through `state`, its responses
/// out to the proxy. Ends when the proxy closes the stream, its config is removed from the cache, or
/// shutdown is signalled.
fn run_stream<P: Protocol>(
    proxy: String,
    mut requests: Requests<P::Req>,
    cache: SnapshotCache,
    mut shutdown: watch::Receiver<bool>,
    mut state: P,
) -> ResponseBody {
    // Bounded: a proxy that does not read holds up only its own task (and at most this many responses).
    let (tx, rx) = mpsc::channel::<Result<Vec<Bytes>, Status>>(16);
    let (mut config_rx, status) = cache.subscribe(&proxy);
    let span = tracing::info_span!("ads", %proxy);
    let task = async move {
        cache.record(AdsEvent::Connected { proxy: proxy.clone() });
        let mut node_checked = false;
        'stream: loop {
            let (out, generation) = tokio::select! {
                msg = requests.next() => match msg {
                    Some(Ok(req)) => {
                        if !node_checked {
                            if let Some(node) = P::node_id(&req).filter(|n| *n != proxy) {
                                let reason = format!("node id {node:?} does not match certificate {proxy:?}");
                                cache.record(AdsEvent::Refused { reason: reason.clone() });
                                let _ = tx.send(Err(Status::permission_denied(reason))).await;
                                break;
                            }
                            node_checked = true;
                        }
                        let current = config_rx.borrow_and_update().clone();
                        let out = state.on_request(&req, current.as_ref().map(|v| &*v.config));
                        (out, current.map(|v| v.generation))
                    }
                    Some(Err(status)) => {
                        // An unreadable request (too large, compressed, undecodable) ends the call with
                        // its reason; a reset stream has nobody left to tell, and the send just fails.
                        tracing::debug!(%proxy, %status, "stream error");
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                    None => break,
                },
                changed = config_rx.changed() => {
                    if changed.is_err() {
                        // The proxy was removed from the cache: its pod is gone.
                        break;
                    }
                    let current = config_rx.borrow_and_update().clone();
                    match current {
                        Some(v) => (state.on_config(&v.config), Some(v.generation)),
                        None => continue,
                    }
                }
                _ = shutdown.changed() => break,
            };
            let latest = config_rx.borrow().as_ref().map(|v| v.generation);
            cache.record_turn(&proxy, &status, out.events, generation, latest);
            for resp in out.responses {
                if tx.send(Ok(resp.into_chunks())).await.is_err() {
                    // The response body was dropped: the RPC is over.
                    break 'stream;
                }
            }
        }
        cache.record(AdsEvent::Disconnected { proxy });
    };
    tokio::spawn(task.instrument(span));
    ResponseBody::new(rx)
}

impl Inner {
    /// Authenticates the caller, then runs the stream with the protocol `make` builds for it.
    fn open<P: Protocol>(
        &self,
        req: http::Request<Body>,
        make: impl FnOnce(String) -> P,
    ) -> http::Response<Body> {
        let req = Request::from_http(req);
        let proxy = match self.authenticate(&req) {
            Ok(id) => id.common_name(),
            Err(status) => return status.into_http(),
        };
        let requests = Requests::new(req.into_inner(), MAX_REQUEST);
        let state = make(proxy.clone());
        let body = run_stream(proxy, requests, self.cache.clone(), self.shutdown.clone(), state);
        http::Response::builder()
            .status(http::StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .body(Body::new(body))
            .expect("a valid static response head")
    }
}

impl NamedService for AdsService {
    const NAME: &'static str = SERVICE;
}

impl Service<http::Request<Body>> for AdsService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            Ok(match req.uri().path() {
                SOTW_PATH => inner.open(req, SotwStream::new),
                DELTA_PATH => inner.open(req, DeltaStream::new),
                other => Status::unimplemented(format!("no method {other}")).into_http(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    /// A request the stream cannot read ends the call with the reason, not with a silent OK.
    #[tokio::test]
    async fn unreadable_request_ends_the_call_with_its_status() {
        let mut frame = vec![0u8];
        frame.extend_from_slice(&1000u32.to_be_bytes());
        frame.extend_from_slice(&[0; 1000]);
        let body = Body::new(http_body_util::Full::new(Bytes::from(frame)));
        let (_stop, shutdown) = watch::channel(false);
        let proxy = "u1.sidecar.bookbuyer.bookbuyer.cluster.local".to_string();
        let response = run_stream(
            proxy.clone(),
            Requests::new(body, 100),
            SnapshotCache::new(),
            shutdown,
            SotwStream::new(proxy),
        );
        let collected = response.collect().await.expect("infallible");
        let trailers = collected.trailers().expect("trailers end the call");
        assert_eq!(trailers["grpc-status"], "8", "RESOURCE_EXHAUSTED: {trailers:?}");
    }
}
