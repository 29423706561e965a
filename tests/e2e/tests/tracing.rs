//! Distributed tracing with real Envoy sidecars, as upstream OSM's tracing demo shows it: with MeshConfig
//! `observability.tracing` naming a Zipkin collector, one request from bookbuyer to bookstore-v1 gives
//! two spans with one trace id — the client span from bookbuyer's sidecar, the server span from
//! bookstore-v1's — posted as Zipkin JSON v2 to the collector's endpoint through
//! `envoy-tracing-cluster`. No collector is installable here: the test plays it on its HTTP API, in a
//! pod of its own. Turned off live, the tracer and its cluster leave every sidecar.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use osm_e2e::{Mesh, require_or_skip};
use osm_xds::bootstrap::AdsApi;
use serde_json::Value;

const COLLECTOR_PORT: u16 = 9411;
const ENDPOINT: &str = "/api/v2/spans";

/// A Zipkin collector's HTTP API in `netns`: every span posted to [`ENDPOINT`] is kept.
fn start_collector(netns: &str) -> Arc<Mutex<Vec<Value>>> {
    let listener = osm_harness::in_netns(netns, || std::net::TcpListener::bind(("0.0.0.0", COLLECTOR_PORT)))
        .expect("entering the collector's namespace")
        .expect("the collector's port");
    listener.set_nonblocking(true).expect("non-blocking");
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
            let _ = osm_demo_apps::http::serve_with(listener, move |req: Request<Incoming>| {
                let kept = kept.clone();
                async move {
                    let path = req.uri().path().to_string();
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let status = match serde_json::from_slice::<Vec<Value>>(&body) {
                        Ok(posted) if path == ENDPOINT => {
                            kept.lock().unwrap().extend(posted);
                            StatusCode::ACCEPTED
                        }
                        _ => StatusCode::BAD_REQUEST,
                    };
                    let mut resp = Response::new(Full::new(Bytes::new()));
                    *resp.status_mut() = status;
                    resp
                }
            })
            .await;
        });
    });
    spans
}

fn tracing_spans(prefix: &str, api: AdsApi) {
    if require_or_skip(prefix).is_none() {
        return;
    }
    let (mesh, ips) = Mesh::bookstore(prefix, api, true, None, &[("zipkin", None)], |input, ips| {
        input.mesh_config.observability.tracing = osm_api::config::TracingSpec {
            enable: true,
            address: Some(ips["zipkin"].to_string()),
            port: COLLECTOR_PORT,
            endpoint: ENDPOINT.into(),
        };
    })
    .expect("mesh starts");
    let spans = start_collector(mesh.pod("zipkin").pod.netns());
    let collector = SocketAddr::new(ips["zipkin"], COLLECTOR_PORT);

    let s = mesh
        .http_get(
            "bookbuyer",
            "http://bookstore-v1.bookstore:14001/books-bought",
            1,
            &[],
        )
        .expect("the client runs");
    assert_eq!(s.ok, 1, "{s:?}");
    // Envoy's Zipkin tracer flushes every 5 s (or every 5 spans): wait for both spans of one trace.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (client, server) = loop {
        let found = {
            let spans = spans.lock().unwrap();
            spans.iter().find_map(|c| {
                let server = spans.iter().find(|s| {
                    c["kind"] == "CLIENT" && s["kind"] == "SERVER" && s["traceId"] == c["traceId"]
                })?;
                Some((c.clone(), server.clone()))
            })
        };
        if let Some(pair) = found {
            break pair;
        }
        assert!(
            Instant::now() < deadline,
            "no client and server span of one trace reached the collector at {collector}: {:?}",
            spans.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let service = |span: &Value| {
        span["localEndpoint"]["serviceName"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_ne!(service(&client), service(&server), "{client} / {server}");
    assert!(
        client["tags"]["upstream_cluster"]
            .as_str()
            .is_some_and(|c| c.starts_with("bookstore/bookstore-v1|14001")),
        "{client}"
    );

    // Off, live: the tracer and its cluster leave every sidecar.
    mesh.update(|i| i.mesh_config.observability.tracing.enable = false)
        .expect("the change is ACKed");
    for pod in ["bookbuyer", "bookstore-v1"] {
        // Active listeners only: the replaced ones drain for a while, tracer and all.
        let dump: Value = serde_json::from_str(
            &mesh
                .envoy(pod)
                .admin_get("/config_dump?resource=dynamic_listeners")
                .unwrap(),
        )
        .expect("a JSON config dump");
        let active: Vec<String> = dump["configs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| l["active_state"].to_string())
            .collect();
        assert!(!active.is_empty(), "{pod} has listeners");
        assert!(
            active.iter().all(|l| !l.contains("envoy.tracers.zipkin")),
            "{pod} still traces"
        );
        let clusters = mesh.envoy(pod).admin_get("/clusters").unwrap();
        assert!(
            !clusters.contains("envoy-tracing-cluster::"),
            "{pod} keeps the cluster"
        );
    }
    assert!(mesh.nacks().is_empty(), "NACKs: {:?}", mesh.nacks());
}

#[test]
fn tracing_spans_sotw() {
    tracing_spans("e2trs", AdsApi::StateOfTheWorld);
}

#[test]
fn tracing_spans_delta() {
    tracing_spans("e2trd", AdsApi::Delta);
}
