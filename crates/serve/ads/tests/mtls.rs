//! The ADS server over real mTLS on 127.0.0.1: who may open a stream (TLS handshake against the mesh
//! root, then the CN checked with the `ProxyRegistry`, then the node id), and that an accepted stream
//! carries config, ACKs and updates, and ends on shutdown or when its proxy leaves the cache.

#![forbid(unsafe_code)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use osm_ads::{AdsError, AdsEvent, AdsService, AdsTls, ProxyRegistry, SnapshotCache};
use osm_ca::{CertificateAuthority, ServiceIdentity, TrustDomain, XdsClientIdentity};
use osm_xds::TypeKind;
use support::{CDS, cluster, cluster_tag, config, name_of, sorted};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Streaming};

const SERVER_NAME: &str = "osm-controller.osm-system.svc.cluster.local";
/// Generous: a bound on waiting for something that must happen, never a pause.
const TIMEOUT: Duration = Duration::from_secs(10);
const VALIDITY: Duration = Duration::from_secs(3600);

type Client = AggregatedDiscoveryServiceClient<Channel>;

/// The pods the test registry knows: (proxy uuid, service account, namespace).
struct Pods(Vec<(&'static str, &'static str, &'static str)>);

impl ProxyRegistry for Pods {
    fn check(&self, id: &XdsClientIdentity) -> Result<(), String> {
        let Some((_, sa, ns)) = self.0.iter().find(|(uuid, ..)| *uuid == id.proxy_uuid) else {
            return Err(format!("no pod has proxy uuid {:?}", id.proxy_uuid));
        };
        let claimed = &id.identity;
        if claimed.service_account != *sa || claimed.namespace != *ns {
            return Err(format!(
                "pod with proxy uuid {:?} runs as {ns}/{sa}, the certificate claims {}/{}",
                id.proxy_uuid, claimed.namespace, claimed.service_account
            ));
        }
        Ok(())
    }
}

fn xds_id(uuid: &str, sa: &str, ns: &str) -> XdsClientIdentity {
    XdsClientIdentity {
        proxy_uuid: uuid.to_string(),
        identity: ServiceIdentity::new(sa, ns),
        trust_domain: TrustDomain::default(),
    }
}

/// The one proxy the registry knows.
fn bookbuyer() -> XdsClientIdentity {
    xds_id("u1", "bookbuyer", "bookbuyer")
}

/// A client certificate for `id` from `ca`.
fn client_identity(ca: &CertificateAuthority, id: &XdsClientIdentity) -> Identity {
    let cert = ca
        .issue_xds_client_cert(id, VALIDITY)
        .expect("issuing a client cert");
    Identity::from_pem(cert.cert_pem, cert.private_key.expose_pem())
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A running ADS server with a test CA, the registry above and a config for bookbuyer.
struct Mesh {
    addr: SocketAddr,
    ca: CertificateAuthority,
    cache: SnapshotCache,
    events: broadcast::Receiver<AdsEvent>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<Result<(), AdsError>>,
}

impl Mesh {
    async fn start() -> Self {
        let ca = CertificateAuthority::generate(TrustDomain::default(), VALIDITY).expect("a test CA");
        let server_cert = ca
            .issue_server_cert(&[SERVER_NAME.to_string()], VALIDITY)
            .expect("a server cert");
        let tls = AdsTls {
            cert_pem: server_cert.cert_pem.clone(),
            key_pem: server_cert.private_key.expose_pem().to_string(),
            client_ca_pem: ca.root_cert_pem().to_string(),
        };
        let cache = SnapshotCache::new();
        cache.set(
            &bookbuyer().common_name(),
            config([cluster("a", "1"), cluster("b", "1")]),
        );
        let events = cache.events();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let registry = Arc::new(Pods(vec![("u1", "bookbuyer", "bookbuyer")]));
        let service = AdsService::new(
            cache.clone(),
            registry,
            TrustDomain::default(),
            shutdown_rx.clone(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding loopback");
        let addr = listener.local_addr().expect("a bound address");
        let mut stop = shutdown_rx;
        let server = tokio::spawn(osm_ads::serve(listener, tls, service, async move {
            let _ = stop.wait_for(|down| *down).await;
        }));
        Self {
            addr,
            ca,
            cache,
            events,
            shutdown,
            server,
        }
    }

    /// A TLS channel trusting the mesh root, presenting `identity` (if any). Depending on the TLS
    /// version a refused client certificate fails here or on the first RPC.
    async fn connect(&self, identity: Option<Identity>) -> Result<Client, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .domain_name(SERVER_NAME)
            .ca_certificate(Certificate::from_pem(self.ca.root_cert_pem()));
        if let Some(identity) = identity {
            tls = tls.identity(identity);
        }
        let channel = Channel::from_shared(format!("https://{}", self.addr))
            .expect("a valid URI")
            .tls_config(tls)?
            .connect()
            .await?;
        Ok(AggregatedDiscoveryServiceClient::new(channel))
    }

    async fn connect_as(&self, id: &XdsClientIdentity) -> Client {
        within("connecting", self.connect(Some(client_identity(&self.ca, id))))
            .await
            .expect("a mesh certificate is accepted")
    }

    /// The next event matching `pred`, skipping others.
    async fn event(&mut self, what: &str, pred: impl Fn(&AdsEvent) -> bool) -> AdsEvent {
        within(what, async {
            loop {
                let event = self.events.recv().await.expect("the cache outlives the test");
                if pred(&event) {
                    return event;
                }
            }
        })
        .await
    }

    /// Nothing was recorded: the server's handler never ran.
    fn no_events(&mut self) {
        match self.events.try_recv() {
            Err(broadcast::error::TryRecvError::Empty) => {}
            other => panic!("expected no ADS events, got {other:?}"),
        }
    }
}

fn node(id: &str) -> Option<Node> {
    Some(Node {
        id: id.to_string(),
        cluster: "bookbuyer".to_string(),
        ..Default::default()
    })
}

fn cds_request(node_id: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        node: node(node_id),
        type_url: CDS.to_string(),
        ..Default::default()
    }
}

fn delta_cds_request(node_id: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: node(node_id),
        type_url: CDS.to_string(),
        ..Default::default()
    }
}

/// An open ADS stream (SotW or delta): the request sender (the proxy's side) and the responses.
struct AdsStream<Req, Resp> {
    requests: mpsc::Sender<Req>,
    responses: Streaming<Resp>,
}

type Sotw = AdsStream<DiscoveryRequest, DiscoveryResponse>;
type Delta = AdsStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

impl<Req, Resp> AdsStream<Req, Resp> {
    /// Sends `first`, then opens the stream with `call` (the client's RPC method).
    async fn open_with<F, Fut>(first: Req, call: F) -> Result<Self, tonic::Status>
    where
        F: FnOnce(ReceiverStream<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Streaming<Resp>>, tonic::Status>>,
    {
        let (requests, rx) = mpsc::channel(8);
        requests
            .send(first)
            .await
            .map_err(|_| ())
            .expect("the channel is open");
        let responses = within("the stream to open", call(ReceiverStream::new(rx)))
            .await?
            .into_inner();
        Ok(Self { requests, responses })
    }

    async fn next(&mut self) -> Result<Option<Resp>, tonic::Status> {
        within("a response", self.responses.message()).await
    }

    async fn send(&self, req: Req) {
        self.requests
            .send(req)
            .await
            .map_err(|_| ())
            .expect("the stream is open");
    }
}

impl Sotw {
    async fn open(client: &mut Client, first: DiscoveryRequest) -> Result<Self, tonic::Status> {
        Self::open_with(first, |rx| client.stream_aggregated_resources(rx)).await
    }
}

impl Delta {
    async fn open(client: &mut Client, first: DeltaDiscoveryRequest) -> Result<Self, tonic::Status> {
        Self::open_with(first, |rx| client.delta_aggregated_resources(rx)).await
    }
}

fn names(resp: &DiscoveryResponse) -> Vec<String> {
    let mut v: Vec<String> = resp.resources.iter().map(name_of).collect();
    v.sort();
    v
}

fn ack(resp: &DiscoveryResponse) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: resp.type_url.clone(),
        version_info: resp.version_info.clone(),
        response_nonce: resp.nonce.clone(),
        ..Default::default()
    }
}

/// Opens a SotW stream that TLS must refuse, and returns the error the client saw.
async fn tls_refusal(mesh: &Mesh, identity: Option<Identity>) -> String {
    let attempt = async {
        let mut client = mesh
            .connect(identity)
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        let mut stream = Sotw::open(&mut client, cds_request(&bookbuyer().common_name()))
            .await
            .map_err(|s| format!("open: {s:?}"))?;
        stream.next().await.map_err(|s| format!("first message: {s:?}"))
    };
    match within("the TLS refusal", attempt).await {
        Err(e) => e,
        Ok(msg) => panic!("a stream without a mesh client certificate got {msg:?}"),
    }
}

/// (a) A client without a certificate fails the TLS handshake; the service never sees it.
#[tokio::test]
async fn client_without_certificate_is_refused_by_tls() {
    let mut mesh = Mesh::start().await;
    let error = tls_refusal(&mesh, None).await;
    assert!(
        error.contains("alert: CertificateRequired"),
        "refused by TLS: {error}"
    );
    mesh.no_events();
}

/// (b) A client certificate from another CA, even with a valid proxy CN, fails the TLS handshake.
#[tokio::test]
async fn client_certificate_from_another_ca_is_refused_by_tls() {
    let mut mesh = Mesh::start().await;
    let other = CertificateAuthority::generate(TrustDomain::default(), VALIDITY).expect("another CA");
    let error = tls_refusal(&mesh, Some(client_identity(&other, &bookbuyer()))).await;
    // Both roots have the same subject: rustls takes the mesh root as issuer and the signature fails.
    assert!(error.contains("received fatal alert"), "refused by TLS: {error}");
    mesh.no_events();
}

/// (c) A mesh certificate whose proxy uuid no pod has: Unauthenticated, and a Refused event.
#[tokio::test]
async fn unknown_proxy_uuid_is_unauthenticated() {
    let mut mesh = Mesh::start().await;
    let stranger = xds_id("u2", "bookbuyer", "bookbuyer");
    let mut client = mesh.connect_as(&stranger).await;
    let status = Sotw::open(&mut client, cds_request(&stranger.common_name()))
        .await
        .err()
        .expect("refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("\"u2\""), "{status:?}");
    let event = mesh
        .event("the refusal", |e| matches!(e, AdsEvent::Refused { .. }))
        .await;
    assert!(
        matches!(&event, AdsEvent::Refused { reason } if reason.contains("\"u2\"")),
        "{event:?}"
    );
    assert!(mesh.cache.status(&stranger.common_name()).is_none());
}

/// (c, delta) The same over the delta RPC.
#[tokio::test]
async fn unknown_proxy_uuid_is_unauthenticated_over_delta() {
    let mut mesh = Mesh::start().await;
    let stranger = xds_id("u2", "bookbuyer", "bookbuyer");
    let mut client = mesh.connect_as(&stranger).await;
    let status = Delta::open(&mut client, delta_cds_request(&stranger.common_name()))
        .await
        .err()
        .expect("refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    mesh.event("the refusal", |e| matches!(e, AdsEvent::Refused { .. }))
        .await;
}

/// (d) The right uuid with another ServiceAccount: refused, naming both identities.
#[tokio::test]
async fn wrong_service_account_is_refused_naming_the_mismatch() {
    let mut mesh = Mesh::start().await;
    let thief = xds_id("u1", "bookthief", "bookbuyer");
    let mut client = mesh.connect_as(&thief).await;
    let status = Sotw::open(&mut client, cds_request(&thief.common_name()))
        .await
        .err()
        .expect("refused");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let message = status.message();
    assert!(
        message.contains("bookbuyer/bookthief") && message.contains("bookbuyer/bookbuyer"),
        "{message}"
    );
    mesh.event("the refusal", |e| matches!(e, AdsEvent::Refused { .. }))
        .await;
}

/// (e) A valid certificate whose first request names another node: PermissionDenied.
#[tokio::test]
async fn node_id_other_than_the_certificate_is_permission_denied() {
    let mut mesh = Mesh::start().await;
    let mut client = mesh.connect_as(&bookbuyer()).await;
    let other = xds_id("u9", "bookstore", "bookstore").common_name();
    let mut stream = Sotw::open(&mut client, cds_request(&other))
        .await
        .expect("authenticated");
    let status = stream.next().await.expect_err("refused on the first request");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains(&other), "{status:?}");
    mesh.event("the refusal", |e| matches!(e, AdsEvent::Refused { .. }))
        .await;
    mesh.event("the stream to end", |e| {
        matches!(e, AdsEvent::Disconnected { .. })
    })
    .await;
}

/// (f) The right proxy gets its clusters; its ACK makes it in sync; a config change reaches the
/// open stream as exactly one response; closing the request side ends the stream cleanly.
#[tokio::test]
async fn accepted_proxy_gets_config_acks_and_updates() {
    let mut mesh = Mesh::start().await;
    let proxy = bookbuyer().common_name();
    let mut client = mesh.connect_as(&bookbuyer()).await;
    let mut stream = Sotw::open(&mut client, cds_request(&proxy))
        .await
        .expect("authenticated");

    let first = stream.next().await.expect("no error").expect("a response");
    assert_eq!(first.type_url, CDS);
    assert_eq!(names(&first), sorted(["a", "b"]));
    assert!(!mesh.cache.in_sync(&proxy), "sent but not yet ACKed");

    stream.send(ack(&first)).await;
    mesh.event("the ACK", |e| matches!(e, AdsEvent::Acked { .. }))
        .await;
    let status = mesh.cache.status(&proxy).expect("a status");
    assert!(status.connected);
    assert_eq!(
        status.acked[TypeKind::Cluster].as_ref(),
        Some(&first.version_info)
    );
    assert!(mesh.cache.in_sync(&proxy));

    assert!(mesh.cache.set(&proxy, config([cluster("a", "2")])));
    let update = stream.next().await.expect("no error").expect("the update");
    assert_eq!(names(&update), vec!["a".to_string()]);
    assert_eq!(cluster_tag(&update.resources[0]), "2");
    assert_ne!(update.version_info, first.version_info);
    stream.send(ack(&update)).await;
    mesh.event("the second ACK", |e| matches!(e, AdsEvent::Acked { .. }))
        .await;
    assert!(mesh.cache.in_sync(&proxy));

    // Anything else the update had caused would arrive before the end of the stream.
    let Sotw {
        requests,
        mut responses,
    } = stream;
    drop(requests);
    let end = within("the end of the stream", responses.message()).await;
    assert!(
        matches!(end, Ok(None)),
        "exactly one update, then a clean end: {end:?}"
    );
    mesh.event("the disconnect", |e| matches!(e, AdsEvent::Disconnected { .. }))
        .await;
    assert!(!mesh.cache.status(&proxy).expect("a status").connected);
}

/// (f, delta) The same over delta: everything first, then only the changed resource and the removal.
#[tokio::test]
async fn accepted_proxy_gets_config_acks_and_updates_over_delta() {
    let mut mesh = Mesh::start().await;
    let proxy = bookbuyer().common_name();
    let mut client = mesh.connect_as(&bookbuyer()).await;
    let mut stream = Delta::open(&mut client, delta_cds_request(&proxy))
        .await
        .expect("authenticated");

    let first = stream.next().await.expect("no error").expect("a response");
    let mut got: Vec<String> = first.resources.iter().map(|r| r.name.clone()).collect();
    got.sort();
    assert_eq!(got, sorted(["a", "b"]));
    stream
        .send(DeltaDiscoveryRequest {
            type_url: first.type_url.clone(),
            response_nonce: first.nonce.clone(),
            ..Default::default()
        })
        .await;
    mesh.event("the ACK", |e| matches!(e, AdsEvent::Acked { .. }))
        .await;
    assert!(mesh.cache.in_sync(&proxy));

    assert!(mesh.cache.set(&proxy, config([cluster("a", "2")])));
    let update = stream.next().await.expect("no error").expect("the update");
    let changed: Vec<&str> = update.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(changed, vec!["a"]);
    assert_eq!(update.removed_resources, vec!["b".to_string()]);
    assert!(!mesh.cache.in_sync(&proxy));
    stream
        .send(DeltaDiscoveryRequest {
            type_url: update.type_url.clone(),
            response_nonce: update.nonce.clone(),
            ..Default::default()
        })
        .await;
    mesh.event("the second ACK", |e| matches!(e, AdsEvent::Acked { .. }))
        .await;
    assert!(mesh.cache.in_sync(&proxy));

    let Delta {
        requests,
        mut responses,
    } = stream;
    drop(requests);
    let end = within("the end of the stream", responses.message()).await;
    assert!(
        matches!(end, Ok(None)),
        "exactly one update, then a clean end: {end:?}"
    );
}

/// A reconnected delta stream is not in sync until it ACKs: its nonces restart, and the previous
/// stream's ACK of "1" must not count for the new stream's "1".
#[tokio::test]
async fn reconnected_delta_stream_is_not_in_sync_until_it_acks() {
    let mut mesh = Mesh::start().await;
    let proxy = bookbuyer().common_name();
    let mut client = mesh.connect_as(&bookbuyer()).await;
    let ack = |resp: &DeltaDiscoveryResponse| DeltaDiscoveryRequest {
        type_url: resp.type_url.clone(),
        response_nonce: resp.nonce.clone(),
        ..Default::default()
    };

    let mut old = Delta::open(&mut client, delta_cds_request(&proxy))
        .await
        .expect("authenticated");
    let first = old.next().await.expect("no error").expect("a response");
    old.send(ack(&first)).await;
    mesh.event("the ACK", |e| matches!(e, AdsEvent::Acked { .. }))
        .await;
    assert!(mesh.cache.in_sync(&proxy));
    drop(old);
    mesh.event("the disconnect", |e| matches!(e, AdsEvent::Disconnected { .. }))
        .await;

    let mut new = Delta::open(&mut client, delta_cds_request(&proxy))
        .await
        .expect("authenticated");
    let again = new.next().await.expect("no error").expect("a response");
    assert_eq!(again.nonce, first.nonce, "nonces are per stream");
    assert!(!mesh.cache.in_sync(&proxy), "the new stream has not ACKed");
    new.send(ack(&again)).await;
    mesh.event("the ACK", |e| matches!(e, AdsEvent::Acked { .. }))
        .await;
    assert!(mesh.cache.in_sync(&proxy));
}

/// Shutdown ends open streams cleanly and the server returns.
#[tokio::test]
async fn shutdown_ends_streams_and_the_server() {
    let mut mesh = Mesh::start().await;
    let proxy = bookbuyer().common_name();
    let mut client = mesh.connect_as(&bookbuyer()).await;
    let mut stream = Sotw::open(&mut client, cds_request(&proxy))
        .await
        .expect("authenticated");
    stream.next().await.expect("no error").expect("a response");

    mesh.shutdown.send(true).expect("the server is listening");
    let end = stream.next().await;
    assert!(matches!(end, Ok(None)), "a clean end: {end:?}");
    mesh.event("the disconnect", |e| matches!(e, AdsEvent::Disconnected { .. }))
        .await;
    let served = within("the server to return", &mut mesh.server).await;
    served
        .expect("the server task did not panic")
        .expect("the server ended without error");
}

/// Removing the proxy from the cache (its pod is gone) ends its stream; a reconnect with the proxy
/// still registered waits for a config instead of failing.
#[tokio::test]
async fn removing_the_proxy_ends_its_stream() {
    let mut mesh = Mesh::start().await;
    let proxy = bookbuyer().common_name();
    let mut client = mesh.connect_as(&bookbuyer()).await;
    let mut stream = Sotw::open(&mut client, cds_request(&proxy))
        .await
        .expect("authenticated");
    stream.next().await.expect("no error").expect("a response");

    mesh.cache.remove(&proxy);
    let end = stream.next().await;
    assert!(matches!(end, Ok(None)), "a clean end: {end:?}");
    mesh.event("the disconnect", |e| matches!(e, AdsEvent::Disconnected { .. }))
        .await;
    assert!(!mesh.cache.in_sync(&proxy));

    let mut again = Sotw::open(&mut client, cds_request(&proxy))
        .await
        .expect("still registered");
    mesh.event("the reconnect", |e| matches!(e, AdsEvent::Connected { .. }))
        .await;
    assert!(mesh.cache.set(&proxy, config([cluster("c", "1")])));
    let resp = again.next().await.expect("no error").expect("the new config");
    assert_eq!(names(&resp), vec!["c".to_string()]);
}
