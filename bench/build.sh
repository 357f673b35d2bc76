#!/usr/bin/env bash
# Image build: `berth build` against `buildah bud --layers`, in the same run, on the same
# multi-stage Dockerfile and ~200 MB context (fixtures/make-build-context): a cold build, a
# no-change rebuild, a one-file-changed rebuild, and a cold build of a context twice as big.
# Elapsed time and peak RSS of the builder (/usr/bin/time). Prints one table; see
# bench/README.md.
#
#   bench/build.sh
#
# Environment: BENCH_DIR (default /var/tmp/berth-bench) holds the two contexts, made once and
# reused, and the run directory; RUNS (default 2) builds each scenario that many times per tool
# and reports the fastest; BENCH_ONLY=berth or BENCH_ONLY=buildah measures one tool only;
# BUILDAH_X2=1 also builds the doubled context with buildah; BUILDAH_JOBS (default 1) is
# buildah's --jobs (stages built in parallel); BERTH (default target/release/berth) is the binary
# under test; KEEP_RUN=1 keeps the run directory (build logs, both tools' storage).
# Needs root: buildah runs its RUN steps with runc, berth in its own containers.
set -euo pipefail
cd "$(dirname "$0")/.."

PROG=build.sh
BENCH_DIR=${BENCH_DIR:-/var/tmp/berth-bench}
RUNS=${RUNS:-2}
BERTH=${BERTH:-target/release/berth}
BENCH_ONLY=${BENCH_ONLY:-}
BUILDAH_X2=${BUILDAH_X2:-0}
BUILDAH_JOBS=${BUILDAH_JOBS:-1}
CTX_VERSION="berth build bench context v1" # change it whenever fixtures/make-build-context changes
EDIT=a/part01/file00000.txt                 # the file the one-file-changed rebuild edits
EPOCH=1700000000                            # the context's mtimes (make-build-context)
TAG=bench-app:latest
. bench/lib.sh

[ $# -eq 0 ] || die "usage: bench/build.sh (no arguments; see the environment in its header)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
[[ $BUILDAH_JOBS =~ ^[1-9][0-9]*$ ]] || die "BUILDAH_JOBS must be a positive integer"
case $BENCH_ONLY in
  "") tools=(berth buildah) ;;
  berth | buildah) tools=("$BENCH_ONLY") ;;
  *) die "BENCH_ONLY must be berth or buildah (or unset, for both)" ;;
esac
measure() { [[ " ${tools[*]} " == *" $1 "* ]]; }
[ "$(id -u)" -eq 0 ] || die "run it as root: both builders run containers for the RUN steps"
# berth makes the base image (fixtures/make-busybox-image) even when only buildah is measured.
[ -x "$BERTH" ] || die "$BERTH is missing: run ./setup (or set BERTH)"
BERTH=$(realpath "$BERTH")
if measure berth && ! "$BERTH" build --help >/dev/null 2>&1; then
  die "$BERTH has no build command yet ('berth build --help' fails): rebuild it, or measure buildah alone with BENCH_ONLY=buildah"
fi
for tool in buildah runc /usr/bin/time /bin/busybox unshare python3; do
  command -v "$tool" >/dev/null || die "$tool is missing: run ./setup --deps"
done

# The contexts: SCALE 1 (~200 MB) and 2 (~400 MB), made once under $BENCH_DIR and reused. The
# marker beside each one holds the generator's version and the sha256 of the file the bench
# edits, so that a context left edited by an interrupted run is made again.
edit_sum() { if [ -f "$1/$EDIT" ]; then sha256sum <"$1/$EDIT" | cut -d' ' -f1; fi; }
ensure_context() {
  local dir=$BENCH_DIR/build-context-$1x
  if [ "$(cat "$dir.complete" 2>/dev/null)" != "$CTX_VERSION $(edit_sum "$dir")" ]; then
    say "making the build context $dir (once)"
    rm -rf "$dir" "$dir.complete"
    mkdir -p "$BENCH_DIR"
    fixtures/make-build-context "$dir" "$1" || die "fixtures/make-build-context failed"
    sync # so that writeback does not run during the first measurement
    echo "$CTX_VERSION $(edit_sum "$dir")" >"$dir.complete"
  fi
}
# ctx_size DIR: "N files, X MB" that the build copies (without the ignored a/cache).
ctx_size() {
  (cd "$1" && find a b -path a/cache -prune -o -type f -printf '%s\n') |
    awk '{ n++; s += $1 } END { printf "%d files, %.0f MB", n, s / 1e6 }'
}
# expected DIR: what the built image prints (its CMD: a.count, a.sum, b.count, b.sum),
# computed on the host with the busybox the image has. The .dockerignore'd a/cache is not
# counted; the globs do not reach it anyway.
expected() {
  local bb=/bin/busybox
  (cd "$1/a" && LC_ALL=C $bb sh -c "$bb find . -path ./cache -prune -o -type f -print | $bb wc -l; $bb cat part*/file* | $bb md5sum")
  (cd "$1/b" && LC_ALL=C $bb sh -c "$bb find . -type f | $bb wc -l; $bb cat part*/file* | $bb md5sum")
}
ensure_context 1
CTX1=$BENCH_DIR/build-context-1x
if measure berth || [ "$BUILDAH_X2" = 1 ]; then
  ensure_context 2
  CTX2=$BENCH_DIR/build-context-2x
fi

RUN=$(mktemp -d "$BENCH_DIR/run-XXXXXX")
BAH=$RUN/buildah         # buildah's storage and state, made afresh for every cold build
BROOT=$RUN/berth-root    # berth's, likewise
edited=""                # the context whose $EDIT is edited now, if any

# umount_under DIR: unmounts whatever is mounted below DIR in this mount namespace, deepest
# first.
umount_under() {
  local m
  awk -v d="$1/" 'substr($5, 1, length(d)) == d { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" || true; done
}
cleanup() {
  [ -z "$edited" ] || restore_edit
  [ ! -d "$BAH/root" ] || bah rm -a >/dev/null 2>&1 || true
  umount_under "$RUN"
  if [ "${KEEP_RUN:-}" = 1 ]; then say "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT # so that the EXIT trap runs on Ctrl-C and kill too
trap 'exit 143' TERM

# The base image: busybox:latest made once by fixtures/make-busybox-image (reproducible: the same
# image ID every time), and saved as an OCI archive for buildah.
say "making the busybox base image"
BERTH_ROOT=$RUN/base BERTH=$BERTH fixtures/make-busybox-image busybox:latest >"$RUN/base.log" 2>&1 ||
  die "fixtures/make-busybox-image failed (see $RUN/base.log)"
base_id=$(BERTH_ROOT=$RUN/base "$BERTH" images -q --no-trunc busybox:latest)
BERTH_ROOT=$RUN/base "$BERTH" save --format oci -o "$RUN/busybox-oci.tar" busybox:latest >>"$RUN/base.log" 2>&1 ||
  die "berth save failed (see $RUN/base.log)"

# --- buildah ---------------------------------------------------------------------------------
# Every buildah command gets its own storage (--root, --runroot, overlay driver), short-name
# alias cache, temporary directory and runc state directory (--runtime-flag root=...) under
# $BAH, and runs in a private mount namespace: its overlay mounts never outlive it, and the
# host's blob-info cache (/var/lib/containers/cache, which c/image writes on every commit and
# has no option for) is hidden behind an empty directory of the run's.
bah_ns=()
if [ -d /var/lib/containers/cache ]; then
  # shellcheck disable=SC2016 # expanded by the inner sh, not here
  bah_ns=(unshare --mount --propagation private --
    sh -c 'mount --bind "$0" /var/lib/containers/cache && exec "$@"' "$BAH/blob-info-cache")
else
  say "note: buildah will create its blob-info cache in /var/lib/containers/cache"
fi
BAH_CMD=(env "TMPDIR=$BAH/tmp" "${bah_ns[@]}" buildah --root "$BAH/root" --runroot "$BAH/runroot"
  --storage-driver overlay --short-name-alias-conf "$BAH/short-name-aliases.conf")
bah() { "${BAH_CMD[@]}" "$@"; }
# The RUN steps: OCI isolation with runc (no network but loopback, as berth's default), never
# a pull: busybox:latest must resolve to the local image.
BAH_RUN=(--isolation oci --runtime runc --runtime-flag "root=$BAH/runc" --network none)
fresh_buildah() {
  reset_buildah
  mkdir -p "$BAH"/{tmp,blob-info-cache}
  bah pull -q "oci-archive:$RUN/busybox-oci.tar" >>"$RUN/buildah-setup.log" 2>&1 ||
    die "buildah pull oci-archive: failed (see $RUN/buildah-setup.log)"
  local id
  id=$(bah images -q --no-trunc docker.io/library/busybox:latest)
  [ "$id" = "$base_id" ] || die "buildah stored busybox:latest as '$id', expected $base_id"
}
reset_buildah() {
  [ ! -d "$BAH/root" ] || bah rm -a >/dev/null
  umount_under "$BAH"
  rm -rf "$BAH"
}
# build_buildah CTX: sets cmd, the build command (an executable, for /usr/bin/time).
build_buildah() {
  cmd=("${BAH_CMD[@]}" bud --layers --pull=never "${BAH_RUN[@]}" --jobs "$BUILDAH_JOBS"
    -f "$1/Dockerfile" -t "$TAG" "$1")
}
# check_buildah WANT: the image runs (buildah run, its CMD's command) and prints WANT.
check_buildah() {
  local got
  bah from -q --pull=never --name bench-check "localhost/$TAG" >/dev/null
  got=$(bah run "${BAH_RUN[@]}" bench-check -- cat /app/a.count /app/a.sum /app/b.count /app/b.sum)
  bah rm bench-check >/dev/null
  [ "$got" = "$1" ] || die "buildah's $TAG prints '$got', expected '$1'"
  bah inspect --type image "localhost/$TAG" >"$RUN/inspect.json"
  check_config buildah
}

# --- berth -----------------------------------------------------------------------------------
fresh_berth() {
  reset_berth
  BERTH_ROOT=$BROOT BERTH=$BERTH fixtures/make-busybox-image busybox:latest >>"$RUN/berth-setup.log" 2>&1 ||
    die "fixtures/make-busybox-image failed (see $RUN/berth-setup.log)"
  local id
  id=$(BERTH_ROOT=$BROOT "$BERTH" images -q --no-trunc busybox:latest)
  [ "$id" = "$base_id" ] || die "berth stored busybox:latest as '$id', expected $base_id"
}
reset_berth() {
  umount_under "$BROOT"
  rm -rf "$BROOT"
}
# build_berth CTX: sets cmd, likewise.
build_berth() {
  cmd=(env "BERTH_ROOT=$BROOT" "$BERTH" build -f "$1/Dockerfile" -t "$TAG" --progress plain "$1")
}
check_berth() {
  local got
  got=$(BERTH_ROOT=$BROOT "$BERTH" run --rm "$TAG")
  [ "$got" = "$1" ] || die "berth's $TAG prints '$got', expected '$1'"
  BERTH_ROOT=$BROOT "$BERTH" inspect "$TAG" >"$RUN/inspect.json"
  check_config berth
}

# check_config TOOL: the ENV and LABEL of the final stage are in the image's config.
check_config() {
  if ! grep -qF 'APP_MODE=bench' "$RUN/inspect.json" ||
    ! grep -qE '"org\.opencontainers\.image\.title": ?"berth build bench"' "$RUN/inspect.json"; then
    die "$1's $TAG lacks the ENV or LABEL of the Dockerfile (see $RUN/inspect.json)"
  fi
}

# --- the edit --------------------------------------------------------------------------------
# edit CTX N: rewrites $EDIT in place (its directory does not change) with its original
# content plus a line naming N, so that every edit differs from the one before.
edit() {
  [ -n "$edited" ] || cp -p "$1/$EDIT" "$RUN/edit.orig"
  edited=$1
  { cat "$RUN/edit.orig" && echo "edit $2"; } >"$1/$EDIT"
}
restore_edit() {
  cat "$RUN/edit.orig" >"$edited/$EDIT"
  touch -d "@$EPOCH" "$edited/$EDIT"
  edited=""
}

# --- the measurements ------------------------------------------------------------------------
# timed LABEL CMD...: runs CMD (at most 30 minutes) under /usr/bin/time after a sync; sets secs
# (elapsed seconds, from the clock around it: /usr/bin/time's own has 10 ms steps) and kib (peak
# RSS, KiB: the largest of CMD's process and of the children it waited for, such as runc, as
# /usr/bin/time -v's "Maximum resident set size"). Its output goes to $RUN/LABEL.log.
timed() {
  local label=$1 t0 t1
  shift
  sync # so that writeback of the previous step does not land in this one
  t0=$(now)
  timeout 1800 /usr/bin/time -o "$RUN/time" -f '%M' "$@" >>"$RUN/$label.log" 2>&1 ||
    die "$label failed: $* (see $RUN/$label.log)"
  t1=$(now)
  secs=$(elapsed "$t0" "$t1")
  kib=$(tail -n 1 "$RUN/time")
  say "$label: $secs s, $(awk -v k="$kib" 'BEGIN { printf "%.1f", k * 1024 / 1e6 }') MB"
}

# Best (smallest) seconds per tool and scenario, and the largest peak RSS over its runs.
declare -A best peak
record() {
  best[$1]=$(min "$secs" "${best[$1]:-}")
  peak[$1]=$(max "$kib" "${peak[$1]:-}")
}

say "context $CTX1: $(ctx_size "$CTX1"); best of $RUNS run(s); measuring ${tools[*]}"
want1=$(expected "$CTX1")
for tool in "${tools[@]}"; do
  for ((r = 1; r <= RUNS; r++)); do
    "fresh_$tool"
    "build_$tool" "$CTX1"
    timed "$tool-cold-$r" "${cmd[@]}"
    record "${tool}_cold"
    "check_$tool" "$want1"
  done
  for ((r = 1; r <= RUNS; r++)); do
    "build_$tool" "$CTX1"
    timed "$tool-nochange-$r" "${cmd[@]}"
    record "${tool}_nochange"
    "check_$tool" "$want1"
  done
  for ((r = 1; r <= RUNS; r++)); do
    edit "$CTX1" "$tool $r"
    want=$(expected "$CTX1")
    [ "$want" != "$want1" ] || die "editing $EDIT did not change the expected output"
    "build_$tool" "$CTX1"
    timed "$tool-edit-$r" "${cmd[@]}"
    record "${tool}_edit"
    "check_$tool" "$want"
  done
  restore_edit
  "reset_$tool"
done

x2_tools=()
measure berth && x2_tools+=(berth)
measure buildah && [ "$BUILDAH_X2" = 1 ] && x2_tools+=(buildah)
if [ ${#x2_tools[@]} -gt 0 ]; then
  say "context $CTX2: $(ctx_size "$CTX2"); measuring ${x2_tools[*]}"
  want2=$(expected "$CTX2")
  for tool in "${x2_tools[@]}"; do
    for ((r = 1; r <= RUNS; r++)); do
      "fresh_$tool"
      "build_$tool" "$CTX2"
      timed "$tool-cold2x-$r" "${cmd[@]}"
      record "${tool}_cold2x"
      "check_$tool" "$want2"
    done
    "reset_$tool"
  done
fi

# The table: seconds (best of RUNS) and peak RSS (largest over RUNS, 1 MB = 10^6 bytes) per
# tool; n/a for what was not measured. The ratio is berth's time over buildah's.
buildah_v=$(buildah --version | awk '{ print $3 }')
cell() { # cell KEY: "seconds MB" or "n/a n/a"
  if [ -n "${best[$1]:-}" ]; then
    awk -v s="${best[$1]}" -v k="${peak[$1]}" 'BEGIN { printf "%.3f %.1f", s, k * 1024 / 1e6 }'
  else
    echo "n/a n/a"
  fi
}
row() {
  local b h
  b=$(cell "berth_$2")
  h=$(cell "buildah_$2")
  awk -v l="$1" -v b="$b" -v h="$h" 'BEGIN {
    split(b, x, " "); split(h, y, " ")
    ratio = (x[1] == "n/a" || y[1] == "n/a") ? "n/a" : sprintf("%.2fx", x[1] / y[1])
    printf "%-34s%9s%10s%11s%12s%8s\n", l, x[1], x[2], y[1], y[2], ratio
  }'
}
echo
if [ -n "${CTX2:-}" ]; then
  echo "context: $(ctx_size "$CTX1"); doubled: $(ctx_size "$CTX2")"
else
  echo "context: $(ctx_size "$CTX1")"
fi
printf '%-34s%9s%10s%11s%12s%8s\n' "build (best of $RUNS)" "berth s" "berth MB" "buildah s" "buildah MB" ratio
row "cold (base image preloaded)" cold
row "no-change rebuild" nochange
row "one file changed (stage a)" edit
row "cold, context doubled" cold2x
echo "ratio: berth's seconds / buildah's (buildah $buildah_v bud --layers, runc, --jobs $BUILDAH_JOBS); MB: peak RSS"
for tool in berth buildah; do
  if [ -n "${peak[${tool}_cold2x]:-}" ]; then
    awk -v t="$tool" -v a="${peak[${tool}_cold]}" -v b="${peak[${tool}_cold2x]}" \
      'BEGIN { printf "%s peak RSS, doubled context / first context: %.2fx\n", t, b / a }'
  fi
done
echo "targets: cold <= 0.5x buildah; no-change rebuild < 150 ms; one-file-changed <= 1/3 of buildah; peak RSS flat as the context grows"
