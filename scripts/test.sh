#!/usr/bin/env bash
# The whole test suite: setup (as scripts/setup.sh), then every crate's tests, including the real-Envoy,
# network-namespace and iptables end-to-end tests (these need root; outside CI they skip loudly without
# it, under CI=true a missing prerequisite fails).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Build every binary first: the e2e tests run osm-demo-app inside the pods.
cargo build --workspace --bins
cargo test --workspace "$@"
