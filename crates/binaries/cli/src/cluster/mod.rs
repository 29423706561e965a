//! Cluster verbs that read or label what is already installed: `namespace`, `metrics`, `proxy`,
//! `policy`, `verify`, `support`. Shared here: the upstream label/annotation names, `ns/name`
//! parsing, one-line API errors, and reading a sidecar's Envoy admin through the API server's pod
//! proxy subresource.

use osm_api::contract::{self, ADMIN_PORT, ENVOY_CONTAINER_NAME, MONITORED_BY_LABEL, PROXY_UUID_LABEL};
pub mod metrics;
pub mod namespace;
pub mod policy;
pub mod proxy;
pub mod support;
pub mod verify;

use std::future::Future;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use k8s_openapi::api::core::v1::{Namespace, Pod};

/// How long one request through the API server's pod/service proxy may take.
pub const PROXY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs one async cluster command on a fresh current-thread runtime with a client for `global`.
pub fn with_client<T, F, Fut>(global: &crate::Global, f: F) -> Result<T>
where
    F: FnOnce(kube::Client) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    crate::kube_client::runtime()?.block_on(async {
        let client = crate::kube_client::client(global.kubeconfig.as_deref()).await?;
        f(client).await
    })
}

/// `ns/name`, or `name` in namespace `default` (upstream's form for pod arguments).
pub fn parse_namespaced(text: &str, what: &str) -> Result<(String, String)> {
    let parts: Vec<&str> = text.split('/').collect();
    match parts.as_slice() {
        [name] if !name.is_empty() => Ok(("default".into(), (*name).into())),
        [ns, name] if !ns.is_empty() && !name.is_empty() => Ok(((*ns).into(), (*name).into())),
        _ => Err(anyhow!(
            "{what} must be <namespace>/<name> (or <name> in namespace default), got {text:?}"
        )),
    }
}

/// The API server's message for a refused request (`namespaces "x" not found`), without the
/// status object's debug dump; other errors as they are.
pub fn api_error(e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(status) if !status.message.is_empty() => {
            anyhow!("{} ({})", status.message, status.code)
        }
        other => anyhow!(other),
    }
}

/// True when `e` is the API server's 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// A namespace that must exist.
pub async fn get_namespace(client: &kube::Client, name: &str) -> Result<Namespace> {
    kube::Api::<Namespace>::all(client.clone())
        .get(name)
        .await
        .map_err(|e| match e {
            e if is_not_found(&e) => anyhow!("namespace {name} not found"),
            e => api_error(e).context(format!("reading namespace {name}")),
        })
}

/// A pod that must exist.
pub async fn get_pod(client: &kube::Client, namespace: &str, name: &str) -> Result<Pod> {
    kube::Api::<Pod>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| match e {
            e if is_not_found(&e) => anyhow!("pod {namespace}/{name} not found"),
            e => api_error(e).context(format!("reading pod {namespace}/{name}")),
        })
}

/// The mesh monitoring `ns` (its `openservicemesh.io/monitored-by` label), unless it is ignored.
pub fn monitored_by(ns: &Namespace) -> Option<&str> {
    let labels = ns.metadata.labels.as_ref();
    if contract::is_ignored(labels) {
        return None;
    }
    labels?
        .get(MONITORED_BY_LABEL)
        .map(String::as_str)
        .filter(|m| !m.is_empty())
}

/// True when the pod has an `envoy` container.
pub fn has_envoy(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .is_some_and(|s| s.containers.iter().any(|c| c.name == ENVOY_CONTAINER_NAME))
}

/// The pod's `osm-proxy-uuid` label (set by the injector).
pub fn proxy_uuid(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(PROXY_UUID_LABEL)
        .map(String::as_str)
}

/// `GET` through the API server's proxy subresource, e.g.
/// `/api/v1/namespaces/NS/pods/POD:15000/proxy/clusters`; at most [`PROXY_TIMEOUT`].
pub async fn proxy_get(client: &kube::Client, path: &str) -> Result<String> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .with_context(|| format!("building the request GET {path}"))?;
    match tokio::time::timeout(PROXY_TIMEOUT, client.request_text(request)).await {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(e)) => Err(api_error(e)),
        Err(_) => Err(anyhow!("no answer within {PROXY_TIMEOUT:?}")),
    }
}

/// The path of Envoy admin `query` (e.g. `config_dump`, `stats?filter=x`) of a pod's sidecar,
/// through the pod proxy subresource.
pub fn envoy_admin_path(namespace: &str, pod: &str, query: &str) -> String {
    format!(
        "/api/v1/namespaces/{namespace}/pods/{pod}:{ADMIN_PORT}/proxy/{}",
        query.trim_start_matches('/')
    )
}

/// Envoy admin `query` of a pod's sidecar, through the API server.
pub async fn envoy_admin(client: &kube::Client, namespace: &str, pod: &str, query: &str) -> Result<String> {
    proxy_get(client, &envoy_admin_path(namespace, pod, query))
        .await
        .with_context(|| {
            format!("reading Envoy admin /{query} of pod {namespace}/{pod} through the API server")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_names() {
        assert_eq!(
            parse_namespaced("bookbuyer/bb-1", "source pod").unwrap(),
            ("bookbuyer".into(), "bb-1".into())
        );
        assert_eq!(
            parse_namespaced("bb-1", "source pod").unwrap(),
            ("default".into(), "bb-1".into())
        );
        let err = parse_namespaced("a/b/c", "source pod").unwrap_err().to_string();
        assert!(err.starts_with("source pod must be <namespace>/<name>"), "{err}");
        assert!(parse_namespaced("/x", "p").is_err());
    }

    #[test]
    fn admin_path() {
        assert_eq!(
            envoy_admin_path("bookbuyer", "bb-1", "/config_dump"),
            "/api/v1/namespaces/bookbuyer/pods/bb-1:15000/proxy/config_dump"
        );
    }
}
