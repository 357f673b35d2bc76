#!/usr/bin/env bash
# Image build on real Dockerfiles and a real base: `berth build` beside `buildah bud --layers`
# and BuildKit (Debian's docker.io 20.10, DOCKER_BUILDKIT=1, on a private dockerd), in the same
# run, on a Debian bookworm base made with debootstrap and on two Dockerfiles under bench/real/:
# "apt" (apt-get install python3-minimal curl ca-certificates from Debian's mirror, COPY of a
# small app, RUN) and "gcc" (gcc and libc6-dev in a build stage, COPY of a C file, compile; the
# binary copied into a final stage FROM the same base). Each case: a cold build (empty stores,
# base preloaded), a no-change rebuild, a one-file-changed rebuild (the app file / the C file
# edited). Elapsed time and peak RSS; one table per case. See bench/README.md.
#
#   bench/build-real.sh
#
# Environment: BENCH_DIR (default /var/tmp/berth-bench) caches the debootstrap tarball under
# debian/ and holds the run directory; RUNS (default 1) builds each scenario that many times per
# tool and reports the fastest; CASES (default "apt gcc"); BENCH_ONLY: a space-separated subset
# of "berth buildah buildkit"; BERTH (default target/release/berth) is copied into the run
# directory first, so that a rebuild of it during the run changes nothing; KEEP_RUN=1 keeps the
# run directory (build logs, every tool's storage). Needs root, and deb.debian.org (apt in the
# RUN steps uses the host's network: berth's default, buildah and docker with --network host).
set -euo pipefail
cd "$(dirname "$0")/.."

PROG=build-real.sh
BENCH_DIR=${BENCH_DIR:-/var/tmp/berth-bench}
RUNS=${RUNS:-1}
CASES=${CASES:-apt gcc}
BENCH_ONLY=${BENCH_ONLY:-berth buildah buildkit}
BASE=debian:bookworm
TAG=bench-real:latest
. bench/lib.sh

[ $# -eq 0 ] || die "usage: bench/build-real.sh (no arguments; see the environment in its header)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
read -r -a tools <<<"$BENCH_ONLY"
for tool in "${tools[@]}"; do
  case $tool in berth | buildah | buildkit) ;; *) die "BENCH_ONLY: unknown tool '$tool'" ;; esac
done
read -r -a cases <<<"$CASES"
for c in "${cases[@]}"; do [ -f "bench/real/$c/Dockerfile" ] || die "CASES: no bench/real/$c"; done
[ "$(id -u)" -eq 0 ] || die "run it as root: the builders run containers for the RUN steps"
SRC_BERTH=${BERTH:-target/release/berth}
[ -x "$SRC_BERTH" ] || die "$SRC_BERTH is missing: run ./setup (or set BERTH)"
for tool in buildah /usr/sbin/runc dockerd /usr/bin/time unshare curl; do
  command -v "$tool" >/dev/null || die "$tool is missing: run ./setup --deps"
done

RUN=$(mktemp -d "$BENCH_DIR/run-real-XXXXXX")
BERTH=$RUN/berth
cp "$SRC_BERTH" "$BERTH"
say "berth: copy of $SRC_BERTH ($(stat -c %y "$SRC_BERTH" | cut -d. -f1)) in $BERTH"
BROOT=$RUN/berth-root
RETIRED=$RUN/retired # old roots (bench/lib.sh's retire), removed with $RUN at the end
buildah_init "$RUN/buildah"

cleanup() {
  dockerd_stop
  [ ! -d "$BAH/root" ] || bah rm -a >/dev/null 2>&1 || true
  umount_under "$RUN"
  if [ "${KEEP_RUN:-}" = 1 ]; then say "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT # so that the EXIT trap runs on Ctrl-C and kill too
trap 'exit 143' TERM

# --- the base --------------------------------------------------------------------------------
# The debootstrap tarball, made once (minutes) and cached in $BENCH_DIR/debian; imported with a
# fixed SOURCE_DATE_EPOCH (the tarball's mtime), so that every import gives the same image ID.
say "the Debian bookworm base (debootstrap, cached in $BENCH_DIR/debian)"
TARBALL=$(BERTH_DEBIAN_CACHE=$BENCH_DIR/debian fixtures/make-debian-image --tar-only) ||
  die "fixtures/make-debian-image --tar-only failed"
EPOCH=$(stat -c %Y "$TARBALL")
import_base() { # import_base BERTH_ROOT
  SOURCE_DATE_EPOCH=$EPOCH BERTH_ROOT=$1 BERTH=$BERTH BERTH_DEBIAN_CACHE=$BENCH_DIR/debian \
    fixtures/make-debian-image "$BASE" >>"$RUN/base.log" 2>&1 ||
    die "fixtures/make-debian-image $BASE failed (see $RUN/base.log)"
}
import_base "$RUN/base"
base_id=$(BERTH_ROOT=$RUN/base "$BERTH" images -q --no-trunc "$BASE")
BERTH_ROOT=$RUN/base "$BERTH" save --format oci -o "$RUN/base-oci.tar" "$BASE" >>"$RUN/base.log" 2>&1 ||
  die "berth save --format oci failed (see $RUN/base.log)"
BERTH_ROOT=$RUN/base "$BERTH" save --format docker -o "$RUN/base-docker.tar" "$BASE" >>"$RUN/base.log" 2>&1 ||
  die "berth save --format docker failed (see $RUN/base.log)"
rm -rf "$RUN/base"
curl -fsS --max-time 15 -o /dev/null http://deb.debian.org/debian/dists/bookworm/Release ||
  die "deb.debian.org cannot be reached: the RUN steps need it"

# --- the contexts and the edit ---------------------------------------------------------------
# Each tool builds its own copy of bench/real/CASE, under $RUN/ctx/TOOL/CASE. The edit rewrites
# the line that defines EDIT in the app file (apt: app/main.py) or the C file (gcc: hello.c),
# which the image's command (its CMD, image_cmd) prints.
edit_file() { case $1 in apt) echo app/main.py ;; gcc) echo hello.c ;; esac; }
fresh_ctx() { # fresh_ctx TOOL CASE
  rm -rf "$RUN/ctx/$1/$2"
  mkdir -p "$RUN/ctx/$1"
  cp -r "bench/real/$2" "$RUN/ctx/$1/$2"
}
edit() { # edit CASE N: in $ctx
  local f
  f=$ctx/$(edit_file "$1")
  case $1 in
    apt) sed -i "s/^EDIT = .*/EDIT = \" (edit $2)\"/" "$f" ;;
    gcc) sed -i "s/^#define EDIT .*/#define EDIT \" (edit $2)\"/" "$f" ;;
  esac
  grep -q "(edit $2)" "$f" || die "the edit of $f did not apply"
}
image_cmd() { case $1 in apt) echo python3 /app/main.py ;; gcc) echo /usr/local/bin/hello ;; esac; }
expected() { # expected CASE [N]: what the image prints after edit N (none: unedited)
  local e=""
  [ -z "${2:-}" ] || e=" (edit $2)"
  case $1 in
    apt) echo "berth bench app$e python 3" ;;
    gcc) echo "berth bench hello$e" ;;
  esac
}

# --- the tools -------------------------------------------------------------------------------
# fresh_TOOL: empty stores with the base loaded (not timed). build_TOOL: sets cmd, the build of
# the context $ctx (an executable, for /usr/bin/time). check_TOOL WANT: the built image's command prints WANT.
# berth keeps an imported image's layers packed and unpacks them into a snapshot on first use,
# where docker load and buildah pull unpack while loading: fresh_berth unpacks the base too (a
# `berth run` of it), untimed like theirs, and the unpack's own time goes into the table's notes.
fresh_berth() {
  umount_under "$BROOT"
  retire "$BROOT"
  import_base "$BROOT"
  local id t0
  id=$(BERTH_ROOT=$BROOT "$BERTH" images -q --no-trunc "$BASE")
  [ "$id" = "$base_id" ] || die "berth stored $BASE as '$id', expected $base_id"
  sync
  t0=$(now)
  BERTH_ROOT=$BROOT "$BERTH" run --rm --network none "$BASE" true >>"$RUN/base.log" 2>&1 ||
    die "berth run $BASE true failed (see $RUN/base.log)"
  unpack=$(min "$(elapsed "$t0" "$(now)")" "${unpack:-}")
}
build_berth() {
  cmd=(env "BERTH_ROOT=$BROOT" "$BERTH" build -f "$ctx/Dockerfile" -t "$TAG" --progress plain "$ctx")
}
check_berth() {
  local got
  got=$(BERTH_ROOT=$BROOT "$BERTH" run --rm "$TAG")
  [ "$got" = "$1" ] || die "berth's $TAG prints '$got', expected '$1'"
}
reset_berth() {
  umount_under "$BROOT"
  retire "$BROOT"
}

fresh_buildah() { buildah_fresh "$RUN/base-oci.tar" "docker.io/library/$BASE" "$base_id"; }
build_buildah() {
  cmd=("${BAH_CMD[@]}" bud --layers --pull=never "${BAH_RUNTIME[@]}" --network host
    -f "$ctx/Dockerfile" -t "$TAG" "$ctx")
}
check_buildah() {
  local got
  bah from -q --pull=never --name bench-check "localhost/$TAG" >/dev/null
  # shellcheck disable=SC2046 # the image's CMD, split into words
  got=$(bah run "${BAH_RUNTIME[@]}" --network none bench-check -- $(image_cmd "$c"))
  bah rm bench-check >/dev/null
  [ "$got" = "$1" ] || die "buildah's $TAG prints '$got', expected '$1'"
}
reset_buildah() { buildah_reset; }

# BuildKit: one dockerd for the whole run, started at the first fresh_buildkit; a cold build
# empties BuildKit's cache (`docker builder prune -af`) and removes the image, keeping the base.
# The builder runs inside dockerd: secs is the client's elapsed time, and the MB column is
# dockerd's peak RSS during the build (VmHWM, reset before it), not the client's.
fresh_buildkit() {
  if [ -z "$DOCKERD_PID" ]; then
    dockerd_start "$RUN/docker"
    dockerd_load "$RUN/base-docker.tar"
    local id
    id=$("${DOCKER[@]}" image inspect --format '{{.Id}}' "$BASE")
    [ "$id" = "$base_id" ] || die "docker stored $BASE as '$id', expected $base_id"
  fi
  dockerd_reset_cache "$TAG"
}
build_buildkit() {
  cmd=("${DOCKER[@]}" build --progress plain --network host -f "$ctx/Dockerfile" -t "$TAG" "$ctx")
}
check_buildkit() {
  local got
  got=$("${DOCKER[@]}" run --rm --network none "$TAG")
  [ "$got" = "$1" ] || die "BuildKit's $TAG prints '$got', expected '$1'"
}
reset_buildkit() { dockerd_reset_cache "$TAG"; }

# --- the measurements ------------------------------------------------------------------------
declare -A best peak
record() { # record KEY: the fastest secs and the largest RSS (kib, or dockerd's) per KEY
  best[$1]=$(min "$secs" "${best[$1]:-}")
  peak[$1]=$(max "$kib" "${peak[$1]:-}")
}
# one TOOL LABEL: one timed build of $ctx with TOOL (for BuildKit, kib becomes dockerd's peak).
one() {
  "build_$1"
  [ "$1" != buildkit ] || hwm_reset "$DOCKERD_PID"
  timed "$2" "${cmd[@]}"
  if [ "$1" = buildkit ]; then
    kib=$(hwm_kib "$DOCKERD_PID")
    say "$2: dockerd's peak RSS $(awk -v k="$kib" 'BEGIN { printf "%.1f", k * 1024 / 1e6 }') MB"
  fi
}

# The tools take turns within each scenario (berth, buildah, BuildKit, berth, ...), so that a
# slow spell of this shared VM falls on all of them rather than on one.
for c in "${cases[@]}"; do
  say "case $c: best of $RUNS run(s); measuring ${tools[*]}"
  for tool in "${tools[@]}"; do fresh_ctx "$tool" "$c"; done
  for ((r = 1; r <= RUNS; r++)); do
    for tool in "${tools[@]}"; do
      ctx=$RUN/ctx/$tool/$c
      "fresh_$tool"
      one "$tool" "$c-$tool-cold-$r"
      record "$c-${tool}_cold"
      "check_$tool" "$(expected "$c")"
    done
  done
  for ((r = 1; r <= RUNS; r++)); do
    for tool in "${tools[@]}"; do
      ctx=$RUN/ctx/$tool/$c
      one "$tool" "$c-$tool-nochange-$r"
      record "$c-${tool}_nochange"
      "check_$tool" "$(expected "$c")"
    done
  done
  for ((r = 1; r <= RUNS; r++)); do
    for tool in "${tools[@]}"; do
      ctx=$RUN/ctx/$tool/$c
      edit "$c" "$r"
      one "$tool" "$c-$tool-edit-$r"
      record "$c-${tool}_edit"
      "check_$tool" "$(expected "$c" "$r")"
    done
  done
  for tool in "${tools[@]}"; do "reset_$tool"; done
done

# --- the tables ------------------------------------------------------------------------------
cell() { # cell KEY: "seconds MB" or "n/a n/a"
  if [ -n "${best[$1]:-}" ]; then
    awk -v s="${best[$1]}" -v k="${peak[$1]}" 'BEGIN { printf "%.3f %.1f", s, k * 1024 / 1e6 }'
  else
    echo "n/a n/a"
  fi
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "n/a" || b == "n/a") ? "n/a" : sprintf("%.2fx", a / b) }'; }
row() { # row LABEL CASE SCENARIO
  local b h k
  read -r -a b <<<"$(cell "$2-berth_$3")"
  read -r -a h <<<"$(cell "$2-buildah_$3")"
  read -r -a k <<<"$(cell "$2-buildkit_$3")"
  printf '%-22s%9s%9s%11s%11s%12s%11s%10s%11s\n' "$1" "${b[0]}" "${b[1]}" "${h[0]}" "${h[1]}" \
    "${k[0]}" "${k[1]}" "$(ratio "${b[0]}" "${h[0]}")" "$(ratio "${b[0]}" "${k[0]}")"
}
buildah_v=$(buildah --version | awk '{ print $3 }')
docker_v=$(/usr/bin/docker --version | awk '{ print $3 }' | tr -d ,)
for c in "${cases[@]}"; do
  echo
  echo "case $c (bench/real/$c/Dockerfile), best of $RUNS"
  printf '%-22s%9s%9s%11s%11s%12s%11s%10s%11s\n' build "berth s" "berth MB" "buildah s" "buildah MB" \
    "BuildKit s" "dockerd MB" "/buildah" "/BuildKit"
  row "cold (base loaded)" "$c" cold
  row "no-change rebuild" "$c" nochange
  row "one file changed" "$c" edit
  echo "ratios: berth's seconds / the peer's (buildah $buildah_v bud --layers, runc; BuildKit in docker.io $docker_v)"
  echo "MB: peak RSS of the builder and its children; dockerd MB: the daemon's VmHWM during the build"
  echo "targets: cold <= 0.8x buildah and <= 1.0x BuildKit"
done
if [ -n "${unpack:-}" ]; then
  echo
  echo "berth's cold builds start with the base unpacked, as the peers' do; that unpack took $unpack s (fastest)"
fi
