#!/usr/bin/env bash
# Registry web UI: how fast berth's server-rendered pages answer with 10,000 repositories, some
# of 1,000 tags (issue 19 item 5: every page in at most 50 ms at p99 on this VM). wrk on each
# page; beside them, the registry API requests that JavaScript registry UIs (Joxit's
# docker-registry-ui) build their pages from, on berth and on CNCF distribution 2.8 (Debian's
# docker-registry) serving the same root read-only. See bench/README.md.
#
#   bench/ui.sh
#
# Environment: BENCH_DIR (default /var/tmp/berth-bench) holds the seeded root ui-root, made
# once by registry/examples/ui_seed.rs and reused; REPOS, BIG_REPOS, TAGS (defaults 10000, 5,
# 1000) are the seeder's sizes (other sizes need the old root removed first); DURATION (default
# 10s) is each wrk run's length; BUILD=0 skips the cargo build (the binaries must exist);
# BERTH (default target/release/berth) is the binary under test, copied into the run directory
# first; PEER=0 skips distribution; KEEP_RUN=1 keeps the run directory (server logs, wrk
# output) instead of removing it.
set -euo pipefail
cd "$(dirname "$0")/.."

PROG=ui.sh
BENCH_DIR=${BENCH_DIR:-/var/tmp/berth-bench}
REPOS=${REPOS:-10000}
BIG_REPOS=${BIG_REPOS:-5}
TAGS=${TAGS:-1000}
DURATION=${DURATION:-10s}
BUILD=${BUILD:-1}
BERTH=${BERTH:-target/release/berth}
SEED=target/release/examples/ui_seed
PEER=${PEER:-1}
DISTRIBUTION=/usr/bin/docker-registry
MANIFEST_TYPE=application/vnd.oci.image.manifest.v1+json
TARGET_MS=50 # the issue's p99 target for a page
. bench/lib.sh

[ $# -eq 0 ] || die "usage: bench/ui.sh (no arguments; see the environment in its header)"
for n in REPOS BIG_REPOS TAGS; do
  [[ ${!n} =~ ^[0-9]+$ ]] || die "$n must be a number"
done
[[ $DURATION =~ ^[1-9][0-9]*[smh]?$ ]] || die "DURATION must be a wrk duration such as 10s"
[[ $BUILD =~ ^[01]$ ]] || die "BUILD must be 0 or 1"
[[ $PEER =~ ^[01]$ ]] || die "PEER must be 0 or 1"
tools=(wrk curl python3)
[ "$PEER" = 0 ] || tools+=("$DISTRIBUTION")
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || die "$tool is missing: run ./setup --deps"
done
mkdir -p "$BENCH_DIR"

if [ "$BUILD" = 1 ]; then
  command -v cargo >/dev/null || die "cargo is missing (or set BUILD=0)"
  say "building berth and the seeder (cargo build --release)"
  { cargo build --release -p berth && cargo build --release -p registry --example ui_seed; } \
    >"$BENCH_DIR/ui-build.log" 2>&1 || die "cargo build failed (see $BENCH_DIR/ui-build.log)"
fi
[ -x "$BERTH" ] || die "$BERTH is missing: run cargo build --release -p berth (or set BERTH)"
[ -x "$SEED" ] || die "$SEED is missing: run cargo build --release -p registry --example ui_seed"

# The data: seeded once, reused while its marker (.ui-seed) names the same sizes.
ROOT=$BENCH_DIR/ui-root
say "seeding $ROOT ($REPOS repositories, $BIG_REPOS of $TAGS tags; once)"
"$SEED" "$ROOT" "$REPOS" "$BIG_REPOS" "$TAGS" >&2 || die "seeding $ROOT failed"
sync # so that writeback of the seeding does not run during the measurements

RUN=$(mktemp -d "$BENCH_DIR/run-XXXXXX")
pid="" # the server running now, if any
cleanup() {
  [ -z "$pid" ] || halt "$pid"
  if [ "${KEEP_RUN:-}" = 1 ]; then say "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
# A copy, so that a rebuild of target/release/berth during the run changes nothing.
cp "$BERTH" "$RUN/berth"

# to_ms VALUE: a wrk duration (850.00us, 1.20ms, 2.00s, 1.00m) in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
    if (f < 0) { print "ui.sh: unknown wrk unit in " v > "/dev/stderr"; exit 1 }
    printf "%.3f", n * f
  }'
}

# start NAME: starts berth (its defaults: filesystem driver, UI on, auth off) or distribution
# (read-only, over the same root) on a free port; sets pid and port, waits until /v2/ answers.
start() {
  local name=$1 log=$RUN/$1
  port=$(free_port)
  case $name in
    berth)
      "$RUN/berth" registry serve --addr "127.0.0.1:$port" --root "$ROOT" >"$log.out" 2>"$log.err" &
      ;;
    distribution)
      # distribution keeps the layout berth keeps (registry/src/paths.rs) under
      # <rootdirectory>/docker/registry/v2, berth under <root>/v2: a symlink gives it berth's
      # root as is. The config of registry.sh (minimal, plus the in-memory blob descriptor
      # cache of Debian's default config), read-only, without the upload purger.
      mkdir -p "$RUN/distribution-root/docker"
      ln -s "$ROOT" "$RUN/distribution-root/docker/registry"
      cat >"$log.conf" <<EOF
version: 0.1
storage:
  filesystem:
    rootdirectory: $RUN/distribution-root
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
    readonly:
      enabled: true
http:
  addr: 127.0.0.1:$port
EOF
      "$DISTRIBUTION" serve "$log.conf" >"$log.out" 2>"$log.err" &
      ;;
  esac
  pid=$!
  await "$name" "$pid" "http://127.0.0.1:$port/v2/" "$log.err"
}

stop() {
  halt "$pid"
  pid=""
}

# settle: waits (at most 30 s) until the server has used no CPU for 200 ms, so that requests
# still in flight when wrk stopped (berth's /v2/_catalog takes seconds) or a background walk
# of the UI's list of repositories do not land in the next measurement.
settle() {
  local i a b
  b=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
  for ((i = 0; i < 150; i++)); do
    sleep 0.2
    a=$b
    b=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    [ "$b" != "$a" ] || return 0
  done
  say "$1: the server was still busy 30 s after the last run"
}

# measure SERVER PATH [HEADER]: one GET of PATH first (it must answer 200; it fills the
# server's caches, its time is logged and its body left in $RUN/body), then wrk on it; appends
# "PATH<TAB>SERVER<TAB>bytes rps p50 p99" (n/a figures when wrk saw errors) to $RUN/rows.
measure() {
  local server=$1 path=$2 header=${3:-} url code bytes first out rps p50 p99 args=()
  url="http://127.0.0.1:$port$path"
  [ -z "$header" ] || args=(-H "$header")
  code=$(curl -sS --max-time 60 "${args[@]}" -o "$RUN/body" -w '%{http_code} %{size_download} %{time_total}' "$url") ||
    die "$server: GET $path failed"
  read -r code bytes first <<<"$code"
  [ "$code" = 200 ] || die "$server: GET $path answered $code: $(head -c 300 "$RUN/body")"
  settle "$server"
  # wrk's own timeout (2 s) would count a slower answer as an error and leave it out of the
  # latencies; 30 s keeps every answer in them.
  out=$(timeout 300 wrk -t2 -c8 -d"$DURATION" --timeout 30s --latency "${args[@]}" "$url") ||
    die "$server: wrk on $path failed"
  echo "$out" >"$RUN/wrk-$server-$(tr -c 'a-zA-Z0-9\n' _ <<<"$path").log"
  if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
    say "$server $path: wrk saw errors: $(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr '\n' ' ')"
    printf '%s\t%s\t%s n/a n/a n/a\n' "$path" "$server" "$bytes" >>"$RUN/rows"
    return
  fi
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  p50=$(to_ms "$(awk '/Latency Distribution/ { d = 1 } d && $1 == "50%" { print $2; exit }' <<<"$out")")
  p99=$(to_ms "$(awk '/Latency Distribution/ { d = 1 } d && $1 == "99%" { print $2; exit }' <<<"$out")")
  say "$server $path: first GET $(awk -v s="$first" 'BEGIN { printf "%.1f", s * 1000 }') ms; wrk: $rps req/s, p50 $p50 ms, p99 $p99 ms"
  printf '%s\t%s\t%s %s %s %s\n' "$path" "$server" "$bytes" "$rps" "$p50" "$p99" >>"$RUN/rows"
}

# The pages, and the API requests a JavaScript UI makes for the same views.
PAGES=(
  "/"
  "/?page=150"
  "/?q=app-99"
  "/r/big/app-1"
  "/r/big/app-1?sort=date"
  "/r/big/app-1?sort=date&page=10"
  "/r/team-07/app-0700/manifests/latest"
)
API=(
  "/v2/_catalog?n=50"
  "/v2/big/app-1/tags/list"
  "/v2/team-07/app-0700/manifests/latest"
)
api_header() { case $1 in */manifests/*) echo "Accept: $MANIFEST_TYPE" ;; esac; }

: >"$RUN/rows"
# wrk shares the 2 cores with the server: anything else running shows in the figures.
say "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg)"
start berth
say "berth: $(head -n 1 "$RUN/berth.out")"
for p in "${PAGES[@]}"; do measure berth "$p"; done
for p in "${API[@]}"; do
  measure berth "$p" "$(api_header "$p")"
  [[ $p != */manifests/* ]] || manifest_sum=$(sha256sum <"$RUN/body")
done
stop

if [ "$PEER" = 1 ]; then
  start distribution
  for p in "${API[@]}"; do
    measure "distribution 2.8" "$p" "$(api_header "$p")"
    # The same files must give the same manifest, byte for byte.
    [[ $p != */manifests/* ]] || [ "$(sha256sum <"$RUN/body")" = "$manifest_sum" ] ||
      die "distribution served another manifest than berth for $p"
  done
  stop
fi

# The tables: berth's pages against the target, then each API request on both servers.
echo
echo "berth web UI: $REPOS repositories + $BIG_REPOS of $TAGS tags, wrk -t2 -c8 -d$DURATION, page rendered server-side"
printf '%-40s%9s%10s%10s%10s  %s\n' "page" "KB" "req/s" "p50 ms" "p99 ms" "p99 <= $TARGET_MS ms"
awk -F'\t' -v t="$TARGET_MS" '$2 == "berth" && $1 !~ /^\/v2\// {
  split($3, f, " ")
  verdict = (f[4] == "n/a") ? "FAIL (errors)" : (f[4] + 0 <= t) ? "PASS" : "FAIL"
  printf "%-40s%9.1f%10s%10s%10s  %s\n", $1, f[1] / 1024, f[2], f[3], f[4], verdict
}' "$RUN/rows"
echo
echo "registry API requests of a JavaScript UI (Joxit's docker-registry-ui), same data"
printf '%-40s%-18s%9s%10s%10s%10s\n' "request" "server" "KB" "req/s" "p50 ms" "p99 ms"
for p in "${API[@]}"; do
  awk -F'\t' -v p="$p" '$1 == p {
    split($3, f, " ")
    printf "%-40s%-18s%9.1f%10s%10s%10s\n", $1, $2, f[1] / 1024, f[2], f[3], f[4]
  }' "$RUN/rows"
done
[ "$PEER" = 1 ] || echo "(distribution skipped: PEER=0)"
fails=$(awk -F'\t' -v t="$TARGET_MS" '$2 == "berth" && $1 !~ /^\/v2\// {
  split($3, f, " "); if (f[4] == "n/a" || f[4] + 0 > t) n++ } END { print n + 0 }' "$RUN/rows")
echo
echo "target: every page p99 <= $TARGET_MS ms; $fails of ${#PAGES[@]} pages miss it"
