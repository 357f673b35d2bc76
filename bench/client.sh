#!/usr/bin/env bash
# Distribution client: `berth push` and `berth pull` against `skopeo copy`, in the same run,
# on the same ~1 GiB image, against the same registry (berth's own, on a fresh root for every
# push). Elapsed time and peak RSS of the client from /usr/bin/time. Prints one table; see
# bench/README.md.
#
#   bench/client.sh
#
# Environment: BENCH_DIR (default /var/tmp/berth-bench) holds the test image (shared with
# registry.sh), made once and reused; RUNS (default 3) pushes and pulls that many times per
# client and reports the fastest; BERTH (default target/release/berth) is the binary under
# test, as client and as registry; KEEP_RUN=1 keeps the run directory (logs, timings).
set -euo pipefail
cd "$(dirname "$0")/.."

PROG=client.sh
BENCH_DIR=${BENCH_DIR:-/var/tmp/berth-bench}
RUNS=${RUNS:-3}
BERTH=${BERTH:-target/release/berth}
MANIFEST_TYPE=application/vnd.oci.image.manifest.v1+json
. bench/lib.sh

[ $# -eq 0 ] || die "usage: bench/client.sh (no arguments; see the environment in its header)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
[ -x "$BERTH" ] || die "$BERTH is missing: run ./setup (or set BERTH)"
BERTH=$(realpath "$BERTH") # the client runs from other directories too
for tool in skopeo /usr/bin/time curl python3 jq; do
  command -v "$tool" >/dev/null || die "$tool is missing: run ./setup --deps"
done

ensure_image

RUN=$(mktemp -d "$BENCH_DIR/run-XXXXXX")
pid="" # the registry server running now, if any
cleanup() {
  [ -z "$pid" ] || halt "$pid"
  if [ "${KEEP_RUN:-}" = 1 ]; then say "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT

say "$IMG: $bytes blob bytes, best of $RUNS run(s)"

# serve ROOT: starts berth's registry on a fresh ROOT and a free port (after stopping the one
# before, if any), sets pid and port.
serve() {
  local root=$1 log
  [ -z "$pid" ] || { halt "$pid"; pid=""; }
  port=$(free_port)
  log=$RUN/registry-$(basename "$root")
  "$BERTH" registry serve --addr "127.0.0.1:$port" --root "$root" >"$log.out" 2>"$log.err" &
  pid=$!
  await "berth registry" "$pid" "http://127.0.0.1:$port/v2/" "$log.err"
}

# timed LABEL CMD...: runs CMD (at most 10 minutes) under /usr/bin/time after a sync; sets
# secs (elapsed seconds) and kib (peak RSS, KiB). Its output goes to $RUN/LABEL.log.
timed() {
  local label=$1
  shift
  sync # so that writeback of the previous step does not land in this one
  timeout 600 /usr/bin/time -o "$RUN/time" -f '%e %M' "$@" >>"$RUN/$label.log" 2>&1 ||
    die "$label failed: $* (see $RUN/$label.log)"
  read -r secs kib <"$RUN/time"
  say "$label: $secs s, $(awk -v k="$kib" 'BEGIN { printf "%.1f", k * 1024 / 1e6 }') MB"
}

# check_manifest REPO: the registry must serve the image's manifest byte for byte under REPO:1.
check_manifest() {
  local got
  got=$(curl -fsS --max-time 10 -H "Accept: $MANIFEST_TYPE" \
    "http://127.0.0.1:$port/v2/$1/manifests/1" | sha256sum | cut -d' ' -f1)
  [ "sha256:$got" = "$manifest_digest" ] || die "$1:1 has manifest sha256:$got, expected $manifest_digest"
}

# berth's source: the image loaded once into a store of its own. The OCI layout names it only
# by the tag `bench`, so it loads untagged and is tagged by its ID (the config's digest).
STORE=$RUN/store
say "loading $IMG into a berth store"
BERTH_ROOT=$STORE "$BERTH" load -i "$IMG" >"$RUN/load.log" 2>&1 || die "berth load failed (see $RUN/load.log)"
grep -qF "$config_digest" "$RUN/load.log" || die "berth load did not report image $config_digest (see $RUN/load.log)"

# Best (smallest) seconds per client and direction, and the largest peak RSS over all runs.
declare -A best peak

for ((r = 1; r <= RUNS; r++)); do
  serve "$RUN/root-skopeo-$r"
  timed "skopeo-push-$r" skopeo copy -q --dest-tls-verify=false "oci:$IMG:bench" \
    "docker://127.0.0.1:$port/bench/skopeo:1"
  check_manifest bench/skopeo
  best[skopeo_push]=$(min "$secs" "${best[skopeo_push]:-}")
  peak[skopeo_push]=$(max "$kib" "${peak[skopeo_push]:-}")
  rm -rf "$RUN/root-skopeo-$r"

  serve "$RUN/root-berth-$r"
  BERTH_ROOT=$STORE "$BERTH" tag "$config_digest" "127.0.0.1:$port/bench/berth:1"
  timed "berth-push-$r" env BERTH_ROOT="$STORE" "$BERTH" push --progress quiet \
    "127.0.0.1:$port/bench/berth:1"
  check_manifest bench/berth
  best[berth_push]=$(min "$secs" "${best[berth_push]:-}")
  peak[berth_push]=$(max "$kib" "${peak[berth_push]:-}")
  [ "$r" = "$RUNS" ] || rm -rf "$RUN/root-berth-$r"
done

# Pulls, all from the last registry (the one berth pushed to), each into a fresh directory on
# the same disk, removed afterwards.
for ((r = 1; r <= RUNS; r++)); do
  timed "skopeo-pull-$r" skopeo copy -q --src-tls-verify=false \
    "docker://127.0.0.1:$port/bench/berth:1" "oci:$RUN/pull-skopeo-$r:x"
  rm -rf "$RUN/pull-skopeo-$r"
  best[skopeo_pull]=$(min "$secs" "${best[skopeo_pull]:-}")
  peak[skopeo_pull]=$(max "$kib" "${peak[skopeo_pull]:-}")

  timed "berth-pull-$r" env BERTH_ROOT="$RUN/pull-berth-$r" "$BERTH" pull --progress quiet \
    "127.0.0.1:$port/bench/berth:1"
  got=$(BERTH_ROOT=$RUN/pull-berth-$r "$BERTH" images -q --no-trunc "127.0.0.1:$port/bench/berth:1")
  [ "$got" = "$config_digest" ] || die "berth pull stored image '$got', expected $config_digest"
  rm -rf "$RUN/pull-berth-$r"
  best[berth_pull]=$(min "$secs" "${best[berth_pull]:-}")
  peak[berth_pull]=$(max "$kib" "${peak[berth_pull]:-}")
done

# 1 MB = 10^6 bytes, for throughput and RSS alike.
row() {
  awk -v l="$1" -v b="$bytes" -v push="${best[${2}_push]}" -v pushk="${peak[${2}_push]}" \
    -v pull="${best[${2}_pull]}" -v pullk="${peak[${2}_pull]}" 'BEGIN {
    printf "%-20s%11.1f%13.1f%11.1f%13.1f\n",
      l, b / 1e6 / push, pushk * 1024 / 1e6, b / 1e6 / pull, pullk * 1024 / 1e6
  }'
}
echo
printf '%-20s%11s%13s%11s%13s\n' client "push MB/s" "push RSS MB" "pull MB/s" "pull RSS MB"
row berth berth
row "skopeo $(skopeo --version | awk '{ print $3 }')" skopeo
awk -v bp="${best[berth_push]}" -v sp="${best[skopeo_push]}" -v bl="${best[berth_pull]}" \
  -v sl="${best[skopeo_pull]}" 'BEGIN {
  printf "berth/skopeo: push %.2fx, pull %.2fx\n", sp / bp, sl / bl
}'
echo "targets: push and pull >= 1.0x skopeo; berth's peak RSS < 100 MB"
