//! The control plane's HTTP port (upstream: 9091): `/health/alive`, `/health/ready`, `/version` and
//! Prometheus `/metrics`. Metrics come from the ADS cache's running totals and the proxies' current
//! state, read at each scrape.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use osm_ads::AdsTotals;
use osm_xds::TypeKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::ControlPlane;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: String,
}

/// Counters brought up to the cache's totals at each scrape. (prometheus-client appends `_total` to
/// counter names.)
struct Metrics {
    registry: Registry,
    responses: Family<TypeLabel, Counter>,
    acks: Family<TypeLabel, Counter>,
    nacks: Family<TypeLabel, Counter>,
    refused: Counter,
    connected: Gauge,
    in_sync: Gauge,
    proxies: Gauge,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            registry: Registry::default(),
            responses: Family::default(),
            acks: Family::default(),
            nacks: Family::default(),
            refused: Counter::default(),
            connected: Gauge::default(),
            in_sync: Gauge::default(),
            proxies: Gauge::default(),
        };
        registry.register(
            "osm_proxy_response_send_success",
            "xDS responses sent, by type",
            m.responses.clone(),
        );
        registry.register(
            "osm_proxy_xds_ack",
            "xDS responses ACKed by proxies, by type",
            m.acks.clone(),
        );
        registry.register(
            "osm_proxy_xds_nack",
            "xDS responses rejected (NACKed) by proxies, by type",
            m.nacks.clone(),
        );
        registry.register(
            "osm_proxy_refused",
            "ADS streams refused (unknown or mismatched proxy identity)",
            m.refused.clone(),
        );
        registry.register(
            "osm_proxy_connect_count",
            "Proxies with an open ADS stream",
            m.connected.clone(),
        );
        registry.register(
            "osm_proxy_in_sync",
            "Proxies that ACKed their latest config",
            m.in_sync.clone(),
        );
        registry.register(
            "osm_proxies",
            "Proxies the control plane has a config for",
            m.proxies.clone(),
        );
        Self { registry, ..m }
    }

    /// Raises the counters to `totals` (they only ever grow). A series appears once its count is
    /// above zero.
    fn catch_up(&self, totals: &AdsTotals) {
        let raise = |counter: &Counter, total: u64| {
            let seen = counter.get();
            if total > seen {
                counter.inc_by(total - seen);
            }
        };
        let by_type = |family: &Family<TypeLabel, Counter>, kind: TypeKind, total: u64| {
            if total > 0 {
                let label = TypeLabel {
                    r#type: kind.short().to_string(),
                };
                raise(&family.get_or_create(&label), total);
            }
        };
        for kind in TypeKind::ALL {
            by_type(&self.responses, kind, totals.sent[kind]);
            by_type(&self.acks, kind, totals.acked[kind]);
            by_type(&self.nacks, kind, totals.nacked[kind]);
        }
        raise(&self.refused, totals.refused);
    }
}

struct HttpState {
    cp: Arc<ControlPlane>,
    /// Behind a lock so that two concurrent scrapes cannot both raise a counter by the same amount.
    metrics: Mutex<Metrics>,
    ads_serving: Arc<AtomicBool>,
}

/// Serves the HTTP port on `listener` until `shutdown` turns true. `ads_serving` tells readiness
/// whether the ADS server is up.
pub async fn serve_http(
    cp: Arc<ControlPlane>,
    listener: tokio::net::TcpListener,
    ads_serving: Arc<AtomicBool>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let state = Arc::new(HttpState {
        metrics: Mutex::new(Metrics::new()),
        cp,
        ads_serving,
    });
    let app = Router::new()
        .route("/health/alive", get(|| async { "alive" }))
        .route("/health/ready", get(ready))
        .route("/version", get(version))
        .route("/metrics", get(metrics))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await
}

async fn ready(State(s): State<Arc<HttpState>>) -> impl IntoResponse {
    if s.ads_serving.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "ADS server not serving")
    }
}

async fn version() -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "envoy_api": "v3",
    }))
}

async fn metrics(State(s): State<Arc<HttpState>>) -> impl IntoResponse {
    let proxies = s.cp.cache().proxies();
    let connected = proxies
        .iter()
        .filter(|p| s.cp.cache().status(p).is_some_and(|st| st.connected))
        .count();
    let in_sync = proxies.iter().filter(|p| s.cp.cache().in_sync(p)).count();
    let metrics = s.metrics.lock().unwrap_or_else(|e| e.into_inner());
    metrics.catch_up(&s.cp.cache().totals());
    metrics.proxies.set(proxies.len() as i64);
    metrics.connected.set(connected as i64);
    metrics.in_sync.set(in_sync as i64);
    let mut body = String::new();
    let encoded = prometheus_client::encoding::text::encode(&mut body, &metrics.registry);
    drop(metrics);
    if encoded.is_err() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            String::new(),
        );
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
}
