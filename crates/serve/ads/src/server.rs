//! The ADS gRPC methods: authenticates the proxy from its client certificate, then runs the stream,
//! feeding requests and config changes through the SotW or delta state machine and writing its
//! responses straight to the HTTP/2 stream (the connection's task polls it; see `conn`).

use std::sync::Arc;

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http_body::Body;
use osm_ca::{TrustDomain, XdsClientIdentity};
use osm_xds::ProxyConfig;
use rustls::pki_types::CertificateDer;
use tokio::sync::watch;
use tonic::Status;
use tracing::Instrument;

use crate::cache::{AdsEvent, SnapshotCache};
use crate::delta::DeltaStream;
use crate::sotw::{Output, SotwStream};
use crate::wire::{self, Encoded, H2Body, Requests};

pub(crate) const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
pub(crate) const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
/// Envoy's requests are small; a bound keeps a misbehaving client from making us buffer much.
const MAX_REQUEST: usize = 64 << 20;

/// Answers "is there a pod with this proxy uuid running as this ServiceAccount?".
pub trait ProxyRegistry: Send + Sync + 'static {
    fn check(&self, id: &XdsClientIdentity) -> Result<(), String>;
}

/// The ADS gRPC service, served by `crate::serve`. Written by hand rather than generated from the
/// proto: responses are sent as shared pre-encoded bytes (see `wire`), which a generated encoder would
/// copy into a per-stream buffer — at 2000 proxies that copy was gigabytes.
#[derive(Clone)]
pub struct AdsService {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
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
    fn authenticate(&self, peer: Option<&CertificateDer<'static>>) -> Result<XdsClientIdentity, Status> {
        let refuse = |reason: String| {
            tracing::warn!(%reason, "refusing ADS stream");
            self.cache.record(AdsEvent::Refused {
                reason: reason.clone(),
            });
            Status::unauthenticated(reason)
        };
        let leaf = peer.ok_or_else(|| refuse("no client certificate".to_string()))?;
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

/// Runs one stream: requests and config changes go through `state`, its responses out to the proxy.
/// Ends when the proxy closes the stream, its config is removed from the cache, or shutdown is
/// signalled; then the call ends with `grpc-status` (0, or why it was cut short).
async fn run_stream<P: Protocol, B>(
    proxy: String,
    mut requests: Requests<P::Req, B>,
    mut responses: SendStream<Bytes>,
    cache: SnapshotCache,
    mut shutdown: watch::Receiver<bool>,
    mut state: P,
) where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (mut config_rx, status) = cache.subscribe(&proxy);
    cache.record(AdsEvent::Connected { proxy: proxy.clone() });
    let _open = OpenStream {
        cache: cache.clone(),
        proxy: proxy.clone(),
    };
    let mut node_checked = false;
    let mut ended: Option<Status> = None;
    // Registered once: every stream waits on the same shutdown channel, and a `changed()` made anew
    // on each turn locked and relinked its shared waiter list twice per turn, from both cores.
    let mut stop = std::pin::pin!(async move {
        // A dropped sender means the server is gone: stop as well.
        let _ = shutdown.wait_for(|stop| *stop).await;
    });
    'stream: loop {
        let (out, generation) = tokio::select! {
            msg = requests.next() => match msg {
                Some(Ok(req)) => {
                    if !node_checked {
                        if let Some(node) = P::node_id(&req).filter(|n| *n != proxy) {
                            let reason = format!("node id {node:?} does not match certificate {proxy:?}");
                            cache.record(AdsEvent::Refused { reason: reason.clone() });
                            ended = Some(Status::permission_denied(reason));
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
                    ended = Some(status);
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
            () = &mut stop => break,
        };
        let latest = config_rx.borrow().as_ref().map(|v| v.generation);
        cache.record_turn(&proxy, &status, out.events, generation, latest);
        for resp in out.responses {
            if let Err(e) = wire::send_message(&mut responses, resp.into_chunks()).await {
                // The proxy reset the stream or the connection is gone: the call is over.
                tracing::debug!(%proxy, error = %e, "sending a response");
                break 'stream;
            }
        }
    }
    // A stream already reset refuses the trailers too; nobody is left to tell.
    let _ = responses.send_trailers(wire::trailers(ended));
}

/// Records a stream's end however it ends: also when its connection closes while the stream waits,
/// and the connection's task drops it.
struct OpenStream {
    cache: SnapshotCache,
    proxy: String,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let proxy = std::mem::take(&mut self.proxy);
        self.cache.record(AdsEvent::Disconnected { proxy });
    }
}

impl Inner {
    /// Serves one HTTP/2 stream (one gRPC call) opened by the proxy presenting `peer`.
    pub(crate) async fn call(
        self: Arc<Self>,
        req: http::Request<RecvStream>,
        respond: SendResponse<Bytes>,
        peer: Option<Arc<CertificateDer<'static>>>,
    ) {
        let peer = peer.as_deref();
        match req.uri().path() {
            SOTW_PATH => self.open(req, respond, peer, SotwStream::new).await,
            DELTA_PATH => self.open(req, respond, peer, DeltaStream::new).await,
            other => wire::refuse(respond, Status::unimplemented(format!("no method {other}"))),
        }
    }

    /// Authenticates the caller, then runs the stream with the protocol `make` builds for it.
    async fn open<P: Protocol>(
        &self,
        req: http::Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
        peer: Option<&CertificateDer<'static>>,
        make: impl FnOnce(String) -> P,
    ) {
        let proxy = match self.authenticate(peer) {
            Ok(id) => id.common_name(),
            Err(status) => return wire::refuse(respond, status),
        };
        let responses = match respond.send_response(wire::response_head(), false) {
            Ok(responses) => responses,
            Err(e) => return tracing::debug!(%proxy, error = %e, "answering a stream"),
        };
        let requests = Requests::new(H2Body::new(req.into_body()), MAX_REQUEST);
        let state = make(proxy.clone());
        let span = tracing::info_span!("ads", %proxy);
        let stream = run_stream(
            proxy,
            requests,
            responses,
            self.cache.clone(),
            self.shutdown.clone(),
            state,
        );
        stream.instrument(span).await
    }
}
