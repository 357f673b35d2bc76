#!/usr/bin/env bash
# Registry: berth's registry against CNCF distribution 2.8 (Debian's docker-registry), in the
# same run on the same ~1 GiB image, both on the filesystem driver. Push and pull with skopeo,
# manifest GETs with wrk, peak RSS from /proc. Prints one table; see bench/README.md.
#
#   bench/registry.sh
#
# Environment: BENCH_DIR (default /var/tmp/berth-bench) holds the test image, made once and
# reused; RUNS (default 3) pushes and pulls that many times per registry and reports the
# fastest; BERTH (default target/release/berth) is the binary under test; KEEP_RUN=1 keeps the
# run directory (server logs, roots) instead of removing it.
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_DIR=${BENCH_DIR:-/var/tmp/berth-bench}
RUNS=${RUNS:-3}
BERTH=${BERTH:-target/release/berth}
DISTRIBUTION=/usr/bin/docker-registry
IMG=$BENCH_DIR/registry-image
IMG_VERSION="berth registry bench image v1" # change it whenever the generator changes
REPO=bench/image
TAG=1
MANIFEST_TYPE=application/vnd.oci.image.manifest.v1+json

die() {
  echo "registry.sh: $*" >&2
  exit 1
}
say() { echo "registry.sh: $*" >&2; }

[ $# -eq 0 ] || die "usage: bench/registry.sh (no arguments; see the environment in its header)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
[ -x "$BERTH" ] || die "$BERTH is missing: run ./setup (or set BERTH)"
for tool in "$DISTRIBUTION" skopeo wrk curl python3 jq; do
  command -v "$tool" >/dev/null || die "$tool is missing: run ./setup --deps"
done

[ "$(cat "$IMG/.complete" 2>/dev/null)" = "$IMG_VERSION" ] || make_image

# The manifest's digest, and the bytes a push or pull moves: the config and the layers.
manifest_digest=$(jq -r '.manifests[0].digest' "$IMG/index.json")
manifest_file=$IMG/blobs/sha256/${manifest_digest#sha256:}
bytes=$(jq '.config.size + ([.layers[].size] | add)' "$manifest_file")

RUN=$(mktemp -d "$BENCH_DIR/run-XXXXXX")
pid="" # the registry server running now, if any
cleanup() {
  [ -z "$pid" ] || halt
  if [ "${KEEP_RUN:-}" = 1 ]; then say "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT

say "$IMG: $bytes blob bytes, best of $RUNS run(s)"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (b == "" || a < b) ? a : b }'; }
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (b == "" || a > b) ? a : b }'; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start NAME ROOT: starts registry NAME (berth or distribution) on a fresh root and a free port,
# sets pid and port, and waits (at most 10 s) until /v2/ answers.
start() {
  local name=$1 root=$2 log
  port=$(free_port)
  log=$RUN/$name-$(basename "$root")
  mkdir -p "$root"
  case $name in
    berth)
      "$BERTH" registry serve --addr "127.0.0.1:$port" --root "$root" >"$log.out" 2>"$log.err" &
      ;;
    distribution)
      # Minimal config, plus the in-memory blob descriptor cache that Debian's and the
      # registry:2 image's default configs turn on (the peer as people run it).
      cat >"$root.yml" <<EOF
version: 0.1
storage:
  filesystem:
    rootdirectory: $root
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$port
EOF
      "$DISTRIBUTION" serve "$root.yml" >"$log.out" 2>"$log.err" &
      ;;
  esac
  pid=$!
  for ((i = 0; i < 100; i++)); do
    curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null && return 0
    alive || break
    sleep 0.1
  done
  tail -n 20 "$log.err" >&2 || true
  die "$name did not come up on 127.0.0.1:$port (log: $log.err)"
}

# alive: whether the server still runs (our own child stays a zombie, State: Z, until waited for).
alive() {
  [ -e "/proc/$pid" ] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null
}

# halt: stops the server (SIGTERM, and SIGKILL if it is still there after 10 s).
halt() {
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    alive || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
}

# stop: reads the server's peak RSS (VmHWM, KiB) into hwm_kib, then halts it.
stop() {
  hwm_kib=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
  halt
}

# to_ms VALUE: a wrk duration (850.00us, 1.20ms, 2.00s, 1.00m) in milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
    if (f < 0) { print "registry.sh: unknown wrk unit in " v > "/dev/stderr"; exit 1 }
    printf "%.3f", n * f
  }'
}

# bench NAME LABEL: RUNS pushes (each to a restarted server on a fresh root, so every blob is
# really uploaded), then RUNS pulls and the wrk run against the last one; prints one row.
bench() {
  local name=$1 label=$2 push="" pull="" peak="" t0 t1 r out rps p50 p99
  local src=oci:$IMG:bench
  for ((r = 1; r <= RUNS; r++)); do
    [ -z "$pid" ] || { stop; peak=$(max "$hwm_kib" "$peak"); rm -rf "$RUN/$name-root-$((r - 1))"; }
    start "$name" "$RUN/$name-root-$r"
    sync
    t0=$(now)
    timeout 600 skopeo copy -q --dest-tls-verify=false "$src" "docker://127.0.0.1:$port/$REPO:$TAG" \
      >>"$RUN/$name-skopeo.log" 2>&1 || die "$name: push failed (see $RUN/$name-skopeo.log)"
    t1=$(now)
    push=$(min "$(elapsed "$t0" "$t1")" "$push")
    say "$name: push $r: $(elapsed "$t0" "$t1") s"
  done

  # The pushed manifest must come back byte for byte, under its own digest.
  local got
  got=$(curl -fsS --max-time 10 -H "Accept: $MANIFEST_TYPE" "http://127.0.0.1:$port/v2/$REPO/manifests/$TAG" |
    sha256sum | cut -d' ' -f1)
  [ "sha256:$got" = "$manifest_digest" ] || die "$name: manifest GET returned sha256:$got"

  for ((r = 1; r <= RUNS; r++)); do
    sync
    t0=$(now)
    timeout 600 skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$port/$REPO:$TAG" \
      "oci:$RUN/pull-$r:x" >>"$RUN/$name-skopeo.log" 2>&1 ||
      die "$name: pull failed (see $RUN/$name-skopeo.log)"
    t1=$(now)
    rm -rf "$RUN/pull-$r"
    pull=$(min "$(elapsed "$t0" "$t1")" "$pull")
    say "$name: pull $r: $(elapsed "$t0" "$t1") s"
  done

  out=$(timeout 60 wrk -t4 -c64 -d10s --latency -H "Accept: $MANIFEST_TYPE" \
    "http://127.0.0.1:$port/v2/$REPO/manifests/$TAG")
  echo "$out" >"$RUN/$name-wrk.log"
  ! grep -qE 'Non-2xx|Socket errors' <<<"$out" || {
    echo "$out" >&2
    die "$name: wrk saw errors"
  }
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  p50=$(to_ms "$(awk '/Latency Distribution/ { d = 1 } d && $1 == "50%" { print $2; exit }' <<<"$out")")
  p99=$(to_ms "$(awk '/Latency Distribution/ { d = 1 } d && $1 == "99%" { print $2; exit }' <<<"$out")")
  say "$name: wrk: $rps req/s, p50 $p50 ms, p99 $p99 ms"

  stop
  peak=$(max "$hwm_kib" "$peak")
  rm -rf "$RUN/$name-root-$RUNS"
  # 1 MB = 10^6 bytes, for throughput and RSS alike.
  awk -v l="$label" -v b="$bytes" -v push="$push" -v pull="$pull" -v rps="$rps" \
    -v p50="$p50" -v p99="$p99" -v kib="$peak" 'BEGIN {
    printf "%-22s%11.1f%11.1f%11.0f%12.2f%12.2f%13.1f\n",
      l, b / 1e6 / push, b / 1e6 / pull, rps, p50, p99, kib * 1024 / 1e6
  }' >>"$RUN/rows"
}

# The S3 driver is being written. TODO: an S3 section that runs both registries against one
# local s3s-fs server on 127.0.0.1 (berth with --storage s3, distribution with its s3 driver
# and a regionendpoint pointing at it), with the same push, pull, wrk and RSS measurements and
# its own table, "registry (s3)".

bench berth berth
bench distribution "distribution 2.8"

echo
printf '%-22s%11s%11s%11s%12s%12s%13s\n' "registry (filesystem)" "push MB/s" "pull MB/s" \
  "GET req/s" "GET p50 ms" "GET p99 ms" "peak RSS MB"
cat "$RUN/rows"
# Ratios berth / distribution, from the table's rows (columns from the right, as the
# labels hold spaces).
awk 'NR == 1 { bpush = $(NF-5); bpull = $(NF-4); bp99 = $(NF-1) }
     NR == 2 { printf "berth/distribution: push %.2fx, pull %.2fx, GET p99 %.2fx\n",
               bpush / $(NF-5), bpull / $(NF-4), bp99 / $(NF-1) }' "$RUN/rows"
echo "targets: push and pull >= 1.5x distribution; GET p99 <= 0.5x; peak RSS <= distribution's"
