#!/usr/bin/env bash
# The bookstore demo on this machine: setup (as scripts/setup.sh), build, run.
# Extra arguments go to `osm demo run`, e.g. `--duration 60`, `--mode permissive`, `--split 80:20`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --bins
exec ./target/debug/osm demo run "$@"
