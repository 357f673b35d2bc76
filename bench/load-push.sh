#!/usr/bin/env bash
# Load and push: a CI job loads the `docker save` archive an earlier job made, then pushes the
# image. berth (`load`, then `push`, which compresses the plain layers) beside docker 20.10
# (`docker load`, then `docker push`, on a private dockerd) and skopeo 1.9 (`copy
# docker-archive: docker://`), in the same run, on the same archive, each to a fresh berth
# registry on 127.0.0.1. The image is one ~200 MB layer of bench/build.sh's context (text,
# machine-code-like and random bytes). Prints wall seconds and the bytes each tool uploaded
# (the registry's /metrics), and checks that each pushed image pulls back with its image ID.
#
#   bench/load-push.sh
#
# Environment: BENCH_DIR (default /var/tmp/berth-bench) holds the context (shared with
# bench/build.sh) and the run directory; RUNS (default 3) repeats each tool that many times
# and reports the fastest; BENCH_ONLY: a subset of "berth docker skopeo" (default all three);
# BERTH (default target/release/berth) is the binary under test, as client and as registry;
# KEEP_RUN=1 keeps the run directory. Needs root for dockerd.
set -euo pipefail
cd "$(dirname "$0")/.."

PROG=load-push.sh
BENCH_DIR=${BENCH_DIR:-/var/tmp/berth-bench}
RUNS=${RUNS:-3}
BERTH=${BERTH:-target/release/berth}
BENCH_ONLY=${BENCH_ONLY:-berth docker skopeo}
. bench/lib.sh

[ $# -eq 0 ] || die "usage: bench/load-push.sh (no arguments; see the environment in its header)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
read -r -a tools <<<"$BENCH_ONLY"
for tool in "${tools[@]}"; do
  case $tool in berth | docker | skopeo) ;; *) die "BENCH_ONLY: unknown tool '$tool'" ;; esac
done
measure() { [[ " ${tools[*]} " == *" $1 "* ]]; }
[ -x "$BERTH" ] || die "$BERTH is missing: run ./setup (or set BERTH)"
BERTH=$(realpath "$BERTH")
for t in curl /usr/bin/time $(measure skopeo && echo skopeo); do
  command -v "$t" >/dev/null || die "$t is missing: run ./setup --deps"
done
! measure docker || [ "$(id -u)" -eq 0 ] || die "run it as root: docker needs its daemon"

CTX=$BENCH_DIR/build-context-1x
[ -f "$CTX/Dockerfile" ] || fixtures/make-build-context "$CTX" 1 || die "fixtures/make-build-context failed"

RUN=$(mktemp -d "$BENCH_DIR/run-XXXXXX")
REG_PID=""
cleanup() {
  dockerd_stop
  [ -z "$REG_PID" ] || halt "$REG_PID"
  if [ "${KEEP_RUN:-}" = 1 ]; then say "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT

# The archive: the context's a/ and b/ imported as one layer, saved as `docker save` does.
say "making the archive"
SRC=$RUN/src
tar -C "$CTX" -cf - a b | BERTH_ROOT=$SRC "$BERTH" import - bench/app:1 >/dev/null
BERTH_ROOT=$SRC "$BERTH" save -o "$RUN/app.tar" bench/app:1
image_id=$(BERTH_ROOT=$SRC "$BERTH" images -q --no-trunc bench/app:1)
archive_mb=$(stat -c %s "$RUN/app.tar" | awk '{ printf "%.1f", $1 / 1e6 }')
say "archive: $archive_mb MB, image $image_id"

# serve NAME: a fresh berth registry under $RUN/NAME on a free port; sets REG (host:port).
serve() {
  [ -z "$REG_PID" ] || { halt "$REG_PID"; REG_PID=""; }
  local port
  port=$(free_port)
  "$BERTH" registry serve --addr "127.0.0.1:$port" --root "$RUN/$1" >"$RUN/$1.out" 2>"$RUN/$1.err" &
  REG_PID=$!
  REG=127.0.0.1:$port
  await "berth registry" "$REG_PID" "http://$REG/v2/" "$RUN/$1.err"
}
# received: the request body bytes the registry took, over every route.
received() {
  curl -fsS "http://$REG/metrics" | awk '/^berth_registry_bytes_received_total/ { n += $2 } END { print n + 0 }'
}
# check_pull: the image pushed to $REG pulls back into a fresh berth root with its image ID.
check_pull() {
  local root=$RUN/check got
  BERTH_ROOT=$root "$BERTH" pull -q "$REG/bench/app:1" >/dev/null || die "berth pull $REG/bench/app:1 failed"
  got=$(BERTH_ROOT=$root "$BERTH" images -q --no-trunc "$REG/bench/app:1")
  [ "$got" = "$image_id" ] || die "$1 pushed image '$got', expected $image_id"
  rm -rf "$root"
}

declare -A best up
! measure docker || dockerd_start "$RUN/dockerd"
for ((r = 1; r <= RUNS; r++)); do
  if measure berth; then
    serve "reg-berth-$r"
    timed "berth-$r" sh -c "BERTH_ROOT='$RUN/berth-$r' '$BERTH' load -q -i '$RUN/app.tar' &&
      BERTH_ROOT='$RUN/berth-$r' '$BERTH' tag bench/app:1 '$REG/bench/app:1' &&
      BERTH_ROOT='$RUN/berth-$r' '$BERTH' push --progress quiet '$REG/bench/app:1'"
    best[berth]=$(min "$secs" "${best[berth]:-}") up[berth]=$(received)
    check_pull berth
    rm -rf "$RUN/berth-$r"
  fi
  if measure skopeo; then
    serve "reg-skopeo-$r"
    timed "skopeo-$r" skopeo copy -q --dest-tls-verify=false "docker-archive:$RUN/app.tar" \
      "docker://$REG/bench/app:1"
    best[skopeo]=$(min "$secs" "${best[skopeo]:-}") up[skopeo]=$(received)
    check_pull skopeo
  fi
  if measure docker; then
    serve "reg-docker-$r"
    "${DOCKER[@]}" rmi -f bench/app:1 >/dev/null 2>&1 || true
    timed "docker-$r" sh -c "$(printf '%q ' "${DOCKER[@]}") load -q -i '$RUN/app.tar' &&
      $(printf '%q ' "${DOCKER[@]}") tag bench/app:1 '$REG/bench/app:1' &&
      $(printf '%q ' "${DOCKER[@]}") push -q '$REG/bench/app:1'"
    best[docker]=$(min "$secs" "${best[docker]:-}") up[docker]=$(received)
    check_pull docker
    "${DOCKER[@]}" rmi -f "$REG/bench/app:1" >/dev/null 2>&1 || true
  fi
done

echo
printf '%-28s%10s%12s%12s\n' "load + push ($archive_mb MB archive)" "s" "up MB" "berth/this"
for t in berth docker skopeo; do
  measure "$t" || continue
  awk -v t="$t" -v s="${best[$t]}" -v u="${up[$t]}" -v b="${best[berth]:-}" 'BEGIN {
    printf "%-28s%10.3f%12.1f%12s\n", t, s, u / 1e6, b == "" ? "n/a" : sprintf("%.2fx", b / s)
  }'
done
