#!/usr/bin/env bash
# The whole test suite: setup (as scripts/setup.sh), then every crate's tests, including the real-Envoy,
# network-namespace and iptables end-to-end tests (these need root; outside CI they skip loudly without
# it, under CI=true a missing prerequisite fails).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# A real kube-apiserver + etcd for the Kubernetes tests (envtest convention). Built once from Debian's
# packages (about 8 minutes) and cached outside the repo; an existing KUBEBUILDER_ASSETS is used as is.
if [ -z "${KUBEBUILDER_ASSETS:-}" ]; then
  KUBEBUILDER_ASSETS="$(./scripts/envtest-assets.sh | tail -n1)"
  export KUBEBUILDER_ASSETS
fi
# A one-off build gains nothing from incremental state, which would double target/'s size.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Style first: it fails fast, and the same rules hold on every machine.
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# Build every binary first: the e2e tests run osm-demo-app inside the pods.
cargo build --workspace --bins
cargo test --workspace "$@"
