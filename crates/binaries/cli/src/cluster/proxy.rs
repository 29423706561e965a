//! `osm proxy get QUERY POD -n NS [--file F]`: a sidecar's Envoy admin interface (`config_dump`,
//! `clusters`, `stats`, `listeners`, `ready`, `certs`, ...). Upstream port-forwards to port 15000;
//! this goes through the API server's pod proxy subresource
//! (`/api/v1/namespaces/NS/pods/POD:15000/proxy/QUERY`), which needs no local port.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};

use super::{envoy_admin, get_pod, has_envoy, with_client};
use osm_api::contract::ENVOY_CONTAINER_NAME;

#[derive(clap::Subcommand, Debug)]
pub enum ProxyCommand {
    /// Send a GET query to a pod's Envoy admin interface and print the answer.
    Get {
        /// The admin query, passed as is: config_dump, clusters, stats, listeners, ready, certs,
        /// server_info, `stats?filter=...` ...
        query: String,
        /// The pod.
        pod: String,
        /// Namespace of the pod.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Write the answer to this file instead of stdout.
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
    },
}

pub fn run(global: &crate::Global, command: ProxyCommand) -> Result<std::process::ExitCode> {
    let ProxyCommand::Get {
        query,
        pod,
        namespace,
        file,
    } = command;
    with_client(global, |client| async move {
        let p = get_pod(&client, &namespace, &pod).await?;
        if !has_envoy(&p) {
            bail!(
                "pod {namespace}/{pod} has no {ENVOY_CONTAINER_NAME} container: it is not part of a mesh (no \
                 sidecar was injected), so there is no Envoy admin interface to query"
            );
        }
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Unknown");
        if phase != "Running" {
            bail!("pod {namespace}/{pod} is not running (phase {phase})");
        }
        let answer = envoy_admin(&client, &namespace, &pod, &query).await?;
        match file {
            Some(path) => {
                std::fs::write(&path, answer).with_context(|| format!("writing {}", path.display()))?
            }
            None => print!("{answer}"),
        }
        Ok(std::process::ExitCode::SUCCESS)
    })
}
