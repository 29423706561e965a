#!/usr/bin/env bash
# Provide a real kube-apiserver + etcd for tests (controller-runtime "envtest" convention).
#
# Prints, as the last (and only) line on stdout, a directory holding working `kube-apiserver` and
# `etcd` binaries: use it as KUBEBUILDER_ASSETS. All progress goes to stderr. Exit 0 only when both
# binaries answer `--version`.
#
# Order:
#   1. $KUBEBUILDER_ASSETS, if it already holds both binaries;
#   2. the cache dir ($OSM_ENVTEST_CACHE, default /var/cache/osm-envtest/bin), if it holds both;
#   3. otherwise build them from Debian packages and install them into the cache dir:
#      - kube-apiserver v1.20.2 from bullseye's `kubernetes` source package (upstream tree with
#        vendored Go deps), compiled with bullseye's Go 1.15 (`golang-1.15-go`, newer Go refuses
#        that tree), after `make gen_openapi`;
#      - etcd from Debian's `etcd-server` (newest of bullseye and this machine's own release).
#      Everything is fetched with a private apt configuration under $OSM_ENVTEST_ROOT/apt (its own
#      sources list, state, lists and cache), so this machine's apt sources and state stay untouched,
#      and the .debs are unpacked into a private prefix (nothing is installed system-wide except
#      missing build tools from the machine's normal apt sources: rsync, make, gcc, ...).
#      The Debian mirror is the one this machine's apt already uses (read at run time).
#      Only the source package's upstream tarball (*.orig.tar.gz, checked against the SHA-256 in the
#      signed Sources index) is needed; the Debian packaging files are not used.
#
# Usage: scripts/envtest-assets.sh [--smoke-test]
#   --smoke-test  also start etcd + kube-apiserver from the chosen dir on 127.0.0.1 with the flags of
#                 docs/envtest.md, wait for /readyz, list namespaces as admin, then stop and clean up
#
# Environment:
#   KUBEBUILDER_ASSETS        use this dir if it holds both binaries
#   OSM_ENVTEST_ROOT          work root            (default /var/cache/osm-envtest)
#   OSM_ENVTEST_CACHE         installed binaries   (default $OSM_ENVTEST_ROOT/bin)
#   OSM_ENVTEST_JOBS          build parallelism    (default 2)
#   OSM_ENVTEST_DEBIAN_MIRROR Debian archive base URL (default: the one in this machine's apt sources)
#   OSM_ENVTEST_KEEP_BUILD=1  keep the kubernetes build tree (~1.6 GB) after a successful build
#   OSM_ENVTEST_FORCE=1       ignore KUBEBUILDER_ASSETS and the cache, rebuild
#
# Building takes about 8 minutes on 2 cores (~250 MB of downloads, ~2 GB of disk while building);
# later runs return at once from the cache.
set -euo pipefail

readonly K8S_SRC_PKG=kubernetes
readonly K8S_SUITE=bullseye
readonly GO_PKGS=(golang-1.15-go golang-1.15-src)
readonly GO_DIR_NAME=go-1.15
readonly ETCD_PKG=etcd-server

ROOT="${OSM_ENVTEST_ROOT:-/var/cache/osm-envtest}"
CACHE_BIN="${OSM_ENVTEST_CACHE:-$ROOT/bin}"
JOBS="${OSM_ENVTEST_JOBS:-2}"

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
  exit "${1:-0}"
}

SMOKE=0
for arg in "$@"; do
  case "$arg" in
    --smoke-test) SMOKE=1 ;;
    -h | --help) usage 0 ;;
    *) printf '[envtest-assets] ERROR: unknown argument %s\n' "$arg" >&2; usage 2 ;;
  esac
done

log() { printf '[envtest-assets %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf '[envtest-assets] ERROR: %s\n' "$*" >&2; exit 1; }

# assets_ok DIR: both binaries present, executable, and answering --version.
assets_ok() {
  local d="$1"
  [[ -n "$d" && -x "$d/kube-apiserver" && -x "$d/etcd" ]] || return 1
  "$d/kube-apiserver" --version >/dev/null 2>&1 || return 1
  "$d/etcd" --version >/dev/null 2>&1 || return 1
}

versions_of() {
  local d="$1"
  printf '%s; %s\n' "$("$d/kube-apiserver" --version 2>&1 | sed -n 1p)" \
    "$("$d/etcd" --version 2>&1 | sed -n 1p)"
}

# ---------------------------------------------------------------------------------------------
# --smoke-test: start etcd and kube-apiserver from DIR on 127.0.0.1 exactly as docs/envtest.md
# describes, wait for /readyz, list namespaces as the admin user, stop both, clean up.
free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
    return
  fi
  local p
  while :; do
    p=$((20000 + RANDOM % 12000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

smoke_test() (
  local dir="$1" t etcd_port peer_port api_port token etcd_pid="" api_pid="" i started
  local t0=$SECONDS
  for tool in curl openssl; do
    command -v "$tool" >/dev/null || die "--smoke-test needs $tool"
  done
  t=$(mktemp -d "${TMPDIR:-/tmp}/osm-envtest-smoke.XXXXXX")
  # shellcheck disable=SC2329 # called by the EXIT trap
  cleanup() {
    if [[ -n "$api_pid" ]]; then kill "$api_pid" 2>/dev/null || true; wait "$api_pid" 2>/dev/null || true; fi
    if [[ -n "$etcd_pid" ]]; then kill "$etcd_pid" 2>/dev/null || true; wait "$etcd_pid" 2>/dev/null || true; fi
    rm -rf "$t"
  }
  trap cleanup EXIT
  etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
  log "smoke test: etcd on 127.0.0.1:$etcd_port, kube-apiserver on 127.0.0.1:$api_port (files in $t)"

  "$dir/etcd" --name=envtest --data-dir="$t/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="envtest=http://127.0.0.1:$peer_port" \
    --logger=zap --log-level=warn >"$t/etcd.log" 2>&1 &
  etcd_pid=$!

  openssl genrsa -out "$t/sa.key" 2048 2>/dev/null
  openssl rsa -in "$t/sa.key" -pubout -out "$t/sa.pub" 2>/dev/null
  token=$(openssl rand -hex 24)
  printf '%s,admin,admin,system:masters\n' "$token" >"$t/tokens.csv"

  for ((i = 0; i < 100; i++)); do
    curl -sf "http://127.0.0.1:$etcd_port/health" >/dev/null 2>&1 && break
    kill -0 "$etcd_pid" 2>/dev/null || { cat "$t/etcd.log" >&2; die "smoke test: etcd exited"; }
    sleep 0.1
  done
  ((i < 100)) || { cat "$t/etcd.log" >&2; die "smoke test: etcd not healthy after 10 s"; }

  started=$SECONDS
  "$dir/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
    --secure-port="$api_port" --insecure-port=0 \
    --cert-dir="$t/certs" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$t/sa.pub" \
    --service-account-signing-key-file="$t/sa.key" \
    --authorization-mode=RBAC \
    --token-auth-file="$t/tokens.csv" \
    --disable-admission-plugins=ServiceAccount \
    --allow-privileged=true \
    >"$t/apiserver.log" 2>&1 &
  api_pid=$!

  local api="https://127.0.0.1:$api_port"
  local auth=(--cacert "$t/certs/apiserver.crt" -H "Authorization: Bearer $token")
  for ((i = 0; i < 600; i++)); do
    [[ -f "$t/certs/apiserver.crt" ]] && curl -sf "${auth[@]}" "$api/readyz" >/dev/null 2>&1 && break
    kill -0 "$api_pid" 2>/dev/null || { tail -n 40 "$t/apiserver.log" >&2; die "smoke test: kube-apiserver exited"; }
    sleep 0.1
  done
  ((i < 600)) || { tail -n 40 "$t/apiserver.log" >&2; die "smoke test: /readyz not ok after 60 s"; }
  log "smoke test: /readyz ok $((SECONDS - started)) s after starting kube-apiserver"

  local body
  body=$(curl -sf "${auth[@]}" "$api/api/v1/namespaces") || die "smoke test: GET /api/v1/namespaces failed"
  grep -q '"kube-system"' <<<"$body" || die "smoke test: kube-system missing from GET /api/v1/namespaces"
  log "smoke test: GET /api/v1/namespaces as admin ok: $(grep -o '"name": *"[^"]*"' <<<"$body" | cut -d'"' -f4 | tr '\n' ' ')"
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$t/certs/apiserver.crt" "$api/api/v1/namespaces") || true
  [[ "$code" == 403 ]] || die "smoke test: anonymous GET /api/v1/namespaces gave HTTP $code, expected 403 (RBAC)"
  log "smoke test: anonymous GET /api/v1/namespaces -> 403 (RBAC on)"
  log "smoke test passed in $((SECONDS - t0)) s"
)

# finish DIR: optionally smoke-test DIR, then print it (the only line on stdout) and exit 0.
finish() {
  if [[ "$SMOKE" == 1 ]]; then smoke_test "$1" >&2; fi
  printf '%s\n' "$1"
  exit 0
}

# ---------------------------------------------------------------------------------------------
# 1. and 2.: already available?
if [[ "${OSM_ENVTEST_FORCE:-0}" != 1 ]]; then
  if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
    if assets_ok "$KUBEBUILDER_ASSETS"; then
      log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS ($(versions_of "$KUBEBUILDER_ASSETS"))"
      finish "$KUBEBUILDER_ASSETS"
    fi
    log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks a working kube-apiserver and etcd; ignoring it"
  fi
  if assets_ok "$CACHE_BIN"; then
    log "using cached assets in $CACHE_BIN ($(versions_of "$CACHE_BIN"))"
    finish "$CACHE_BIN"
  fi
fi

# ---------------------------------------------------------------------------------------------
# 3. build. Everything below writes to stderr only; stdout gets the final directory.

[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "OSM_ENVTEST_JOBS must be a positive integer (got '$JOBS')"
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
  die "apt-get and dpkg-deb are required: building the envtest assets needs a Debian machine (or set KUBEBUILDER_ASSETS to a dir with kube-apiserver and etcd)"
fi

mkdir -p "$ROOT" "$CACHE_BIN" 2>/dev/null ||
  die "cannot create $ROOT or $CACHE_BIN (run as root, or set OSM_ENVTEST_ROOT / OSM_ENVTEST_CACHE to writable paths)"
[[ -w "$ROOT" ]] || die "$ROOT is not writable (run as root, or set OSM_ENVTEST_ROOT)"

# One build at a time (parallel test runs may call this script together).
exec 9>"$ROOT/.lock"
if ! flock -n 9; then
  log "another envtest-assets build holds $ROOT/.lock; waiting for it"
  flock 9
fi
# The other run may have finished the job meanwhile.
if [[ "${OSM_ENVTEST_FORCE:-0}" != 1 ]] && assets_ok "$CACHE_BIN"; then
  log "using cached assets in $CACHE_BIN ($(versions_of "$CACHE_BIN"))"
  finish "$CACHE_BIN"
fi

build_started=$SECONDS

ensure_host_tools() {
  # tool:package pairs, installed from the machine's normal apt sources if missing.
  local want=(rsync:rsync make:make gcc:gcc tar:tar gzip:gzip sha256sum:coreutils flock:util-linux
    dpkg-source:dpkg-dev)
  local missing=() t
  for t in "${want[@]}"; do
    command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
  done
  ((${#missing[@]} == 0)) && return 0
  [[ $(id -u) == 0 ]] || die "missing build tools (${missing[*]}); install them or run as root"
  log "installing build tools from this machine's apt sources: ${missing[*]}"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2; then
    apt-get update >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
      die "could not install ${missing[*]}"
  fi
}

# This machine's Debian codename (e.g. bookworm), or empty.
os_codename() {
  # shellcheck disable=SC1091 # read at run time
  (. /etc/os-release 2>/dev/null && printf '%s' "${VERSION_CODENAME:-}") || true
}

# The base URL of the Debian archive this machine's apt already uses (e.g. ".../debian/").
debian_mirror() {
  if [[ -n "${OSM_ENVTEST_DEBIAN_MIRROR:-}" ]]; then
    printf '%s\n' "${OSM_ENVTEST_DEBIAN_MIRROR%/}"
    return
  fi
  local codename="" targets uri
  codename=$(os_codename)
  # `apt-get indextargets` reads every configured source (one-line .list and deb822 .sources alike).
  # shellcheck disable=SC2016 # $(...) are apt's format fields, not shell
  targets=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(TARGET_OF)' 2>/dev/null |
    awk '$3 == "deb" {print $1, $2}' | sort -u) || true
  uri=""
  if [[ -n "$codename" ]]; then
    uri=$(awk -v c="$codename" '$2 == c {print $1; exit}' <<<"$targets")
  fi
  if [[ -z "$uri" ]]; then
    # Any plain release suite (no "-updates"/"-security") of a non-security archive.
    uri=$(awk '$2 !~ /-/ && $1 !~ /security/ {print $1; exit}' <<<"$targets")
  fi
  [[ -n "$uri" ]] ||
    die "could not find the Debian archive in this machine's apt sources (apt-get indextargets); set OSM_ENVTEST_DEBIAN_MIRROR to the archive base URL"
  printf '%s\n' "${uri%/}"
}

APT_DIR="$ROOT/apt"
APT_OPTS=()
setup_private_apt() {
  local mirror="$1" host_codename keyring=/usr/share/keyrings/debian-archive-keyring.gpg signed=""
  host_codename=$(os_codename)
  mkdir -p "$APT_DIR/etc/preferences.d" "$APT_DIR/state/lists/partial" "$APT_DIR/cache/archives/partial"
  [[ -e "$APT_DIR/state/status" ]] || : >"$APT_DIR/state/status"
  [[ -r "$keyring" ]] && signed="[signed-by=$keyring] "
  {
    echo "# private apt sources for scripts/envtest-assets.sh (the machine's own apt config is not used)"
    echo "deb ${signed}$mirror $K8S_SUITE main"
    echo "deb-src ${signed}$mirror $K8S_SUITE main"
    # etcd-server from this machine's own release too, if it is a Debian release other than bullseye
    # (apt picks the newest etcd-server of the two).
    if [[ -n "$host_codename" && "$host_codename" != "$K8S_SUITE" ]]; then
      echo "deb ${signed}$mirror $host_codename main"
    fi
  } >"$APT_DIR/etc/sources.list.new"
  mv "$APT_DIR/etc/sources.list.new" "$APT_DIR/etc/sources.list"
  APT_OPTS=(
    -o "Dir::Etc::SourceList=$APT_DIR/etc/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::Etc::Preferences=/dev/null"
    -o "Dir::Etc::PreferencesParts=$APT_DIR/etc/preferences.d"
    -o "Dir::State=$APT_DIR/state"
    -o "Dir::State::Lists=$APT_DIR/state/lists"
    -o "Dir::State::status=$APT_DIR/state/status"
    -o "Dir::Cache=$APT_DIR/cache"
    -o "Dir::Cache::Archives=$APT_DIR/cache/archives"
    -o "APT::Get::List-Cleanup=0"
    -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
    -o "Acquire::IndexTargets::deb::CNF::DefaultEnabled=false"
    -o "Acquire::Languages=none"
    -o "APT::Sandbox::User=root"
    -o "Acquire::Retries=3"
  )
}

papt_get() { apt-get "${APT_OPTS[@]}" "$@"; }

# Download DEBS... into DIR (private apt) and unpack them into PREFIX.
fetch_and_unpack() {
  local dir="$1" prefix="$2"; shift 2
  mkdir -p "$dir" "$prefix"
  (cd "$dir" && papt_get download "$@" >&2) || die "apt-get download $* failed (private apt config in $APT_DIR)"
  local p f
  for p in "$@"; do
    # shellcheck disable=SC2012 # Debian package file names are plain
    f=$(ls -t "$dir/${p}_"*.deb 2>/dev/null | sed -n 1p) || true
    [[ -n "$f" ]] || die "downloaded package $p not found in $dir"
    log "unpacking $(basename "$f")"
    dpkg-deb -x "$f" "$prefix"
  done
}

# Fetch the kubernetes source package's upstream tarball (the upstream tree with vendor/) and
# check its SHA-256 against the signed Sources index. Sets K8S_ORIG to its path.
K8S_ORIG=""
fetch_k8s_source() {
  local dir="$1" line uri name sha
  mkdir -p "$dir"
  # Lines: 'URI' NAME SIZE SHA256:HASH  (one per file of the source package)
  line=$(papt_get source --print-uris "$K8S_SRC_PKG" 2>/dev/null | grep -E "\.orig\.tar\.[a-z0-9]+' " | sed -n 1p) ||
    die "bullseye's '$K8S_SRC_PKG' source package is not in the private apt index (deb-src line in $APT_DIR/etc/sources.list)"
  uri=$(awk '{print $1}' <<<"$line" | tr -d "'")
  name=$(awk '{print $2}' <<<"$line")
  sha=$(grep -oE 'SHA256:[0-9a-f]{64}' <<<"$line" | cut -d: -f2) ||
    die "no SHA256 for $name in the Sources index"
  K8S_ORIG="$dir/$name"
  if [[ -f "$K8S_ORIG" ]] && sha256sum -c --status <(printf '%s  %s\n' "$sha" "$K8S_ORIG"); then
    log "source tarball already downloaded: $name"
    return
  fi
  log "downloading $name (~35 MB)"
  # apt fetches and verifies each file; the .dsc/.debian.tar.xz are not needed (only the upstream tree
  # is built), so a failure to get those is tolerated as long as the tarball arrived intact.
  (cd "$dir" && papt_get source --download-only "$K8S_SRC_PKG" >&2) ||
    log "apt-get source --download-only reported errors; checking the upstream tarball anyway"
  if [[ ! -f "$K8S_ORIG" ]] && command -v curl >/dev/null; then
    log "fetching $name directly from the archive"
    curl -fsSL --retry 3 -o "$K8S_ORIG.part" "$uri" >&2 && mv "$K8S_ORIG.part" "$K8S_ORIG" || true
  fi
  [[ -f "$K8S_ORIG" ]] || die "could not download $name ($uri)"
  sha256sum -c --status <(printf '%s  %s\n' "$sha" "$K8S_ORIG") ||
    { rm -f "$K8S_ORIG"; die "$name does not match the SHA-256 in the Sources index"; }
}

build_kube_apiserver() {
  local src="$1" goroot="$2"
  (
    cd "$src"
    export GOROOT="$goroot" PATH="$goroot/bin:$PATH"
    # GOFLAGS=-p=N caps go's parallel compile jobs (kube's build scripts also copy it into -tags,
    # where "-p=N" is an inert tag). GOPROXY=off: the tree builds from vendor/ in GOPATH mode.
    export GOMAXPROCS="$JOBS" GOFLAGS="-p=$JOBS" GOPROXY=off GOSUMDB=off
    unset GOPATH GOBIN GOCACHE GO111MODULE GOTOOLCHAIN GOOS GOARCH CGO_ENABLED KUBE_GIT_VERSION_FILE || true
    log "go: $(go version)"
    log "make gen_openapi"
    make -j1 gen_openapi KUBE_VERBOSE=1 >&2 || die "make gen_openapi failed in $src"
    log "make WHAT=cmd/kube-apiserver (the slow part: ~6-10 min on 2 cores)"
    make -j1 WHAT=cmd/kube-apiserver KUBE_VERBOSE=1 >&2 || die "make WHAT=cmd/kube-apiserver failed in $src"
  )
}

ensure_host_tools
MIRROR=$(debian_mirror)
log "Debian archive (from this machine's apt sources): $MIRROR"
setup_private_apt "$MIRROR"
log "updating the private apt index in $APT_DIR ($K8S_SUITE main + deb-src)"
papt_get update >&2 || die "apt-get update with the private config ($APT_DIR/etc/sources.list) failed"

DL="$ROOT/downloads"
# Go 1.15, unpacked privately.
GO_PREFIX="$ROOT/go1.15"
GOROOT_DIR="$GO_PREFIX/usr/lib/$GO_DIR_NAME"
if [[ ! -x "$GOROOT_DIR/bin/go" ]] || ! GOROOT="$GOROOT_DIR" "$GOROOT_DIR/bin/go" version >/dev/null 2>&1; then
  log "fetching ${GO_PKGS[*]} from $K8S_SUITE"
  rm -rf "$GO_PREFIX"
  fetch_and_unpack "$DL" "$GO_PREFIX" "${GO_PKGS[@]}"
fi
GOROOT="$GOROOT_DIR" "$GOROOT_DIR/bin/go" version 2>/dev/null | grep -q 'go1\.15' ||
  die "the unpacked Go toolchain in $GOROOT_DIR does not run or is not Go 1.15"

# etcd, unpacked privately.
ETCD_PREFIX="$ROOT/etcd"
log "fetching $ETCD_PKG"
rm -rf "$ETCD_PREFIX"
rm -f "$DL/${ETCD_PKG}_"*.deb
fetch_and_unpack "$DL" "$ETCD_PREFIX" "$ETCD_PKG"
ETCD_BIN="$ETCD_PREFIX/usr/bin/etcd"
"$ETCD_BIN" --version >/dev/null 2>&1 || die "$ETCD_BIN from $ETCD_PKG does not run"

# kubernetes source.
fetch_k8s_source "$DL"
BUILD_DIR="$ROOT/build"
tree_name=$(tar -tzf "$K8S_ORIG" | sed -n 1p | cut -d/ -f1)
[[ -n "$tree_name" ]] || die "cannot read $K8S_ORIG"
SRC="$BUILD_DIR/$tree_name"
if [[ ! -f "$SRC/.envtest-unpacked" ]]; then
  log "unpacking $(basename "$K8S_ORIG") into $BUILD_DIR"
  rm -rf "$SRC"
  mkdir -p "$BUILD_DIR"
  tar -xzf "$K8S_ORIG" -C "$BUILD_DIR"
  [[ -f "$SRC/Makefile" && -d "$SRC/vendor" ]] || die "$SRC does not look like a kubernetes tree with vendor/"
  touch "$SRC/.envtest-unpacked"
else
  log "reusing the unpacked tree $SRC (make is incremental)"
fi

build_kube_apiserver "$SRC" "$GOROOT_DIR"
APISERVER_BIN="$SRC/_output/local/bin/linux/amd64/kube-apiserver"
[[ -x "$APISERVER_BIN" ]] || APISERVER_BIN=$(find "$SRC/_output" -type f -name kube-apiserver -perm -u+x | sed -n 1p)
[[ -n "$APISERVER_BIN" && -x "$APISERVER_BIN" ]] || die "build finished but no kube-apiserver binary under $SRC/_output"

# Install: stage next to the cache dir, verify, then swap in.
STAGE="$CACHE_BIN.new.$$"
rm -rf "$STAGE"
mkdir -p "$STAGE"
install -m 0755 "$APISERVER_BIN" "$STAGE/kube-apiserver"
install -m 0755 "$ETCD_BIN" "$STAGE/etcd"
assets_ok "$STAGE" || { rm -rf "$STAGE"; die "the built binaries do not answer --version"; }
# shellcheck disable=SC2012 # Debian package file names are plain
{
  echo "kube-apiserver: $("$STAGE/kube-apiserver" --version 2>&1 | sed -n 1p) (built from $(basename "$K8S_ORIG") with $(GOROOT="$GOROOT_DIR" "$GOROOT_DIR/bin/go" version))"
  echo "etcd: $("$STAGE/etcd" --version 2>&1 | tr '\n' ' ')(from $(basename "$(ls -t "$DL/${ETCD_PKG}_"*.deb | sed -n 1p)"))"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - build_started)) s"
} >"$STAGE/VERSIONS"
rm -rf "$CACHE_BIN.old"
if [[ -d "$CACHE_BIN" ]]; then mv "$CACHE_BIN" "$CACHE_BIN.old"; fi
mv "$STAGE" "$CACHE_BIN"
rm -rf "$CACHE_BIN.old"

if [[ "${OSM_ENVTEST_KEEP_BUILD:-0}" != 1 ]]; then
  log "removing the build tree $SRC (set OSM_ENVTEST_KEEP_BUILD=1 to keep it)"
  rm -rf "$SRC"
fi

assets_ok "$CACHE_BIN" || die "installed assets in $CACHE_BIN do not work"
log "done in $((SECONDS - build_started)) s: $(versions_of "$CACHE_BIN")"
finish "$CACHE_BIN"
