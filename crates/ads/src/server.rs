//! The gRPC service: authenticates the proxy from its client certificate, then runs one task per
//! stream that feeds requests and config changes through the SotW or delta state machine.

use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::Stream;
use osm_ca::{TrustDomain, XdsClientIdentity};
use osm_xds::ProxyConfig;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::cache::{AdsEvent, SnapshotCache};
use crate::delta::DeltaStream;
use crate::sotw::{Output, SotwStream};

/// Answers "is there a pod with this proxy uuid running as this ServiceAccount?".
pub trait ProxyRegistry: Send + Sync + 'static {
    fn check(&self, id: &XdsClientIdentity) -> Result<(), String>;
}

pub struct AdsService {
    cache: SnapshotCache,
    registry: Arc<dyn ProxyRegistry>,
    trust_domain: TrustDomain,
    shutdown: watch::Receiver<bool>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl AdsService {
    pub fn new(
        cache: SnapshotCache,
        registry: Arc<dyn ProxyRegistry>,
        trust_domain: TrustDomain,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            cache,
            registry,
            trust_domain,
            shutdown,
        }
    }

    pub fn into_server(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(256 << 20)
    }

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
    type Req: Send + 'static;
    type Resp: Send + 'static;
    fn on_request(&mut self, req: &Self::Req, config: Option<&ProxyConfig>) -> Output<Self::Resp>;
    fn on_config(&mut self, config: &ProxyConfig) -> Output<Self::Resp>;
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
    ) -> Output<DiscoveryResponse> {
        SotwStream::on_request(self, req, config)
    }
    fn on_config(&mut self, config: &ProxyConfig) -> Output<DiscoveryResponse> {
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
    ) -> Output<DeltaDiscoveryResponse> {
        DeltaStream::on_request(self, req, config)
    }
    fn on_config(&mut self, config: &ProxyConfig) -> Output<DeltaDiscoveryResponse> {
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
    mut requests: Streaming<P::Req>,
    cache: SnapshotCache,
    mut shutdown: watch::Receiver<bool>,
    mut state: P,
) -> BoxStream<P::Resp> {
    let (tx, rx) = mpsc::channel::<Result<P::Resp, Status>>(16);
    let mut config_rx = cache.subscribe(&proxy);
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
                        tracing::debug!(%proxy, %status, "stream error");
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
            // Events first: `in_sync` must never see the generation handled before what it sent.
            for event in out.events {
                cache.record(event);
            }
            if let Some(generation) = generation {
                cache.handled(&proxy, generation);
            }
            for resp in out.responses {
                if tx.send(Ok(resp)).await.is_err() {
                    // tonic dropped the response stream: the RPC is over.
                    break 'stream;
                }
            }
        }
        cache.record(AdsEvent::Disconnected { proxy });
    };
    tokio::spawn(task.instrument(span));
    Box::pin(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = BoxStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = BoxStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let id = self.authenticate(&request)?;
        let proxy = id.common_name();
        let stream = run_stream(
            proxy.clone(),
            request.into_inner(),
            self.cache.clone(),
            self.shutdown.clone(),
            SotwStream::new(proxy),
        );
        Ok(Response::new(stream))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let id = self.authenticate(&request)?;
        let proxy = id.common_name();
        let stream = run_stream(
            proxy.clone(),
            request.into_inner(),
            self.cache.clone(),
            self.shutdown.clone(),
            DeltaStream::new(proxy),
        );
        Ok(Response::new(stream))
    }
}
