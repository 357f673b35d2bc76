#!/usr/bin/env bash
# Image build: `berth build` against `buildah bud --layers` and BuildKit (Debian's docker.io
# 20.10, DOCKER_BUILDKIT=1, on a private dockerd), in the same run, on the same multi-stage
# Dockerfile and ~200 MB context (fixtures/make-build-context): a cold build, a no-change
# rebuild, a one-file-changed rebuild, and a cold build of a context twice as big. Elapsed time
# and peak RSS of the builder (/usr/bin/time; for BuildKit, dockerd's VmHWM during the build).
# Prints one table; see bench/README.md. bench/build-real.sh is the same on real Dockerfiles.
#
#   bench/build.sh
#
# Environment: BENCH_DIR (default /var/tmp/berth-bench) holds the two contexts, made once and
# reused, and the run directory; RUNS (default 2) builds each scenario that many times per tool
# and reports the fastest; BENCH_ONLY: a space-separated subset of "berth buildah buildkit"
# (default all three); BUILDAH_X2=1 also builds the doubled context with buildah and BuildKit;
# BUILDAH_JOBS (default 1) is buildah's --jobs (stages built in parallel); BERTH (default
# target/release/berth) is the binary under test, copied into the run directory first;
# KEEP_RUN=1 keeps the run directory (build logs, every tool's storage); ENV_LINES (default
# 20000; 0 skips it) is the size of the ENV scenario, a Dockerfile of that many ENV lines, built
# cold once by berth; ENV_PEERS=1 builds it with the measured peers too (slow: BuildKit 20.10
# takes about two minutes for 2,000 lines, and did not finish 20,000 in 27 minutes).
# Needs root: buildah runs its RUN steps with runc, BuildKit in dockerd with runc, berth in its
# own containers.
set -euo pipefail
cd "$(dirname "$0")/.."

PROG=build.sh
BENCH_DIR=${BENCH_DIR:-/var/tmp/berth-bench}
RUNS=${RUNS:-2}
BERTH=${BERTH:-target/release/berth}
BENCH_ONLY=${BENCH_ONLY:-berth buildah buildkit}
BUILDAH_X2=${BUILDAH_X2:-0}
BUILDAH_JOBS=${BUILDAH_JOBS:-1}
ENV_LINES=${ENV_LINES:-20000}
ENV_PEERS=${ENV_PEERS:-0}
CTX_VERSION="berth build bench context v1" # change it whenever fixtures/make-build-context changes
EDIT=a/part01/file00000.txt                 # the file the one-file-changed rebuild edits
EPOCH=1700000000                            # the context's mtimes (make-build-context)
TAG=bench-app:latest
. bench/lib.sh

[ $# -eq 0 ] || die "usage: bench/build.sh (no arguments; see the environment in its header)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
[[ $BUILDAH_JOBS =~ ^[1-9][0-9]*$ ]] || die "BUILDAH_JOBS must be a positive integer"
[[ $ENV_LINES =~ ^[0-9]+$ ]] || die "ENV_LINES must be a number"
read -r -a tools <<<"$BENCH_ONLY"
for tool in "${tools[@]}"; do
  case $tool in berth | buildah | buildkit) ;; *) die "BENCH_ONLY: unknown tool '$tool'" ;; esac
done
measure() { [[ " ${tools[*]} " == *" $1 "* ]]; }
[ "$(id -u)" -eq 0 ] || die "run it as root: both builders run containers for the RUN steps"
# berth makes the base image (fixtures/make-busybox-image) even when only buildah is measured.
[ -x "$BERTH" ] || die "$BERTH is missing: run ./setup (or set BERTH)"
BERTH=$(realpath "$BERTH")
if measure berth && ! "$BERTH" build --help >/dev/null 2>&1; then
  die "$BERTH has no build command yet ('berth build --help' fails): rebuild it, or measure buildah alone with BENCH_ONLY=buildah"
fi
for tool in buildah runc /usr/bin/time /bin/busybox unshare python3 $(measure buildkit && echo dockerd); do
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
# A copy of the binary, so that a rebuild of it during the run changes nothing.
say "berth: copy of $BERTH ($(stat -c %y "$BERTH" | cut -d. -f1)) in $RUN/berth"
cp "$BERTH" "$RUN/berth"
BERTH=$RUN/berth
buildah_init "$RUN/buildah" # buildah's storage and state (bench/lib.sh), afresh for every cold build
BROOT=$RUN/berth-root       # berth's, likewise
RETIRED=$RUN/retired # old roots (bench/lib.sh's retire), removed with $RUN at the end
edited=""                   # the context whose $EDIT is edited now, if any

cleanup() {
  [ -z "$edited" ] || restore_edit
  dockerd_stop
  [ ! -d "$BAH/root" ] || bah rm -a >/dev/null 2>&1 || true
  umount_under "$RUN"
  if [ "${KEEP_RUN:-}" = 1 ]; then say "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT # so that the EXIT trap runs on Ctrl-C and kill too
trap 'exit 143' TERM

# The base image: busybox:latest made once by fixtures/make-busybox-image (reproducible: the same
# image ID every time), and saved as an OCI archive for buildah and a docker archive for docker.
say "making the busybox base image"
BERTH_ROOT=$RUN/base BERTH=$BERTH fixtures/make-busybox-image busybox:latest >"$RUN/base.log" 2>&1 ||
  die "fixtures/make-busybox-image failed (see $RUN/base.log)"
base_id=$(BERTH_ROOT=$RUN/base "$BERTH" images -q --no-trunc busybox:latest)
BERTH_ROOT=$RUN/base "$BERTH" save --format oci -o "$RUN/busybox-oci.tar" busybox:latest >>"$RUN/base.log" 2>&1 ||
  die "berth save failed (see $RUN/base.log)"
BERTH_ROOT=$RUN/base "$BERTH" save --format docker -o "$RUN/busybox-docker.tar" busybox:latest >>"$RUN/base.log" 2>&1 ||
  die "berth save --format docker failed (see $RUN/base.log)"

# --- buildah ---------------------------------------------------------------------------------
# buildah_init (bench/lib.sh) isolates buildah's storage, state and mounts under $BAH. The RUN
# steps: OCI isolation with runc, no network but loopback; never a pull: busybox:latest must
# resolve to the local image.
BAH_RUN=("${BAH_RUNTIME[@]}" --network none)
fresh_buildah() { buildah_fresh "$RUN/busybox-oci.tar" docker.io/library/busybox:latest "$base_id"; }
reset_buildah() { buildah_reset; }
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
  retire "$BROOT"
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

# --- BuildKit --------------------------------------------------------------------------------
# One private dockerd for the whole run (bench/lib.sh), started at the first fresh_buildkit, with
# busybox:latest loaded from berth's docker archive. A cold build empties BuildKit's cache
# (`docker builder prune -af`) and removes the image, keeping the base. RUN steps get the host's
# network (berth's default; no bridge here). The builder runs inside dockerd: secs is the
# client's elapsed time, and kib becomes dockerd's peak RSS during the build (see one()).
fresh_buildkit() {
  if [ -z "$DOCKERD_PID" ]; then
    dockerd_start "$RUN/docker"
    dockerd_load "$RUN/busybox-docker.tar"
    local id
    id=$("${DOCKER[@]}" image inspect --format '{{.Id}}' busybox:latest)
    [ "$id" = "$base_id" ] || die "docker stored busybox:latest as '$id', expected $base_id"
  fi
  dockerd_reset_cache "$TAG"
}
reset_buildkit() { dockerd_reset_cache "$TAG"; }
build_buildkit() {
  cmd=("${DOCKER[@]}" build --progress plain --network host -f "$1/Dockerfile" -t "$TAG" "$1")
}
check_buildkit() {
  local got
  got=$("${DOCKER[@]}" run --rm --network none "$TAG")
  [ "$got" = "$1" ] || die "BuildKit's $TAG prints '$got', expected '$1'"
  "${DOCKER[@]}" image inspect "$TAG" >"$RUN/inspect.json"
  check_config BuildKit
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
# one TOOL LABEL CTX: one timed build of CTX with TOOL (timed: bench/lib.sh); for BuildKit, kib
# becomes dockerd's peak RSS during the build (VmHWM, reset before it).
one() {
  "build_$1" "$3"
  [ "$1" != buildkit ] || hwm_reset "$DOCKERD_PID"
  timed "$2" "${cmd[@]}"
  if [ "$1" = buildkit ]; then
    kib=$(hwm_kib "$DOCKERD_PID")
    say "$2: dockerd's peak RSS $(awk -v k="$kib" 'BEGIN { printf "%.1f", k * 1024 / 1e6 }') MB"
  fi
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
    one "$tool" "$tool-cold-$r" "$CTX1"
    record "${tool}_cold"
    "check_$tool" "$want1"
  done
  for ((r = 1; r <= RUNS; r++)); do
    one "$tool" "$tool-nochange-$r" "$CTX1"
    record "${tool}_nochange"
    "check_$tool" "$want1"
  done
  for ((r = 1; r <= RUNS; r++)); do
    edit "$CTX1" "$tool $r"
    want=$(expected "$CTX1")
    [ "$want" != "$want1" ] || die "editing $EDIT did not change the expected output"
    one "$tool" "$tool-edit-$r" "$CTX1"
    record "${tool}_edit"
    "check_$tool" "$want"
  done
  restore_edit
  "reset_$tool"
done

x2_tools=()
measure berth && x2_tools+=(berth)
measure buildah && [ "$BUILDAH_X2" = 1 ] && x2_tools+=(buildah)
measure buildkit && [ "$BUILDAH_X2" = 1 ] && x2_tools+=(buildkit)
if [ ${#x2_tools[@]} -gt 0 ]; then
  say "context $CTX2: $(ctx_size "$CTX2"); measuring ${x2_tools[*]}"
  want2=$(expected "$CTX2")
  for tool in "${x2_tools[@]}"; do
    for ((r = 1; r <= RUNS; r++)); do
      "fresh_$tool"
      one "$tool" "$tool-cold2x-$r" "$CTX2"
      record "${tool}_cold2x"
      "check_$tool" "$want2"
    done
    "reset_$tool"
  done
fi

# The ENV scenario: FROM busybox, ENV_LINES lines `ENV Vi=value-i`, and a CMD that prints the
# last one; one cold build per tool (the cost is in the builder's variable scope, not in I/O).
env_tools=()
measure berth && env_tools+=(berth)
measure buildah && [ "$ENV_PEERS" = 1 ] && env_tools+=(buildah)
measure buildkit && [ "$ENV_PEERS" = 1 ] && env_tools+=(buildkit)
if [ "$ENV_LINES" -gt 0 ] && [ ${#env_tools[@]} -gt 0 ]; then
  ENVCTX=$RUN/env-context
  mkdir -p "$ENVCTX"
  {
    echo "FROM busybox:latest"
    awk -v n="$ENV_LINES" 'BEGIN { for (i = 1; i <= n; i++) printf "ENV V%d=value-%d\n", i, i }'
    echo "CMD [\"sh\", \"-c\", \"echo \$V$ENV_LINES\"]"
  } >"$ENVCTX/Dockerfile"
  say "ENV scenario: $ENV_LINES ENV lines; measuring ${env_tools[*]}"
  for tool in "${env_tools[@]}"; do
    "fresh_$tool"
    one "$tool" "$tool-env" "$ENVCTX"
    record "${tool}_env"
    case $tool in
      berth) got=$(BERTH_ROOT=$BROOT "$BERTH" run --rm "$TAG") ;;
      buildah)
        bah from -q --pull=never --name bench-check "localhost/$TAG" >/dev/null
        got=$(bah run "${BAH_RUN[@]}" bench-check -- sh -c "echo \$V$ENV_LINES")
        bah rm bench-check >/dev/null
        ;;
      buildkit) got=$("${DOCKER[@]}" run --rm --network none "$TAG") ;;
    esac
    [ "$got" = "value-$ENV_LINES" ] || die "$tool's ENV image prints '$got', expected 'value-$ENV_LINES'"
    "reset_$tool"
  done
fi

# The table: seconds (best of RUNS) and peak RSS (largest over RUNS, 1 MB = 10^6 bytes) per
# tool; n/a for what was not measured. The ratios are berth's time over buildah's and over
# BuildKit's.
buildah_v=$(buildah --version | awk '{ print $3 }')
docker_v=$(/usr/bin/docker --version | awk '{ print $3 }' | tr -d ,)
cell() { # cell KEY: "seconds MB" or "n/a n/a"
  if [ -n "${best[$1]:-}" ]; then
    awk -v s="${best[$1]}" -v k="${peak[$1]}" 'BEGIN { printf "%.3f %.1f", s, k * 1024 / 1e6 }'
  else
    echo "n/a n/a"
  fi
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "n/a" || b == "n/a") ? "n/a" : sprintf("%.2fx", a / b) }'; }
fmt='%-30s%9s%9s%11s%11s%12s%11s%10s%11s\n'
row() { # row LABEL SCENARIO
  local b h k
  read -r -a b <<<"$(cell "berth_$2")"
  read -r -a h <<<"$(cell "buildah_$2")"
  read -r -a k <<<"$(cell "buildkit_$2")"
  # shellcheck disable=SC2059 # the format is ours
  printf "$fmt" "$1" "${b[0]}" "${b[1]}" "${h[0]}" "${h[1]}" "${k[0]}" "${k[1]}" \
    "$(ratio "${b[0]}" "${h[0]}")" "$(ratio "${b[0]}" "${k[0]}")"
}
echo
if [ -n "${CTX2:-}" ]; then
  echo "context: $(ctx_size "$CTX1"); doubled: $(ctx_size "$CTX2")"
else
  echo "context: $(ctx_size "$CTX1")"
fi
# shellcheck disable=SC2059
printf "$fmt" "build (best of $RUNS)" "berth s" "berth MB" "buildah s" "buildah MB" "BuildKit s" \
  "dockerd MB" "/buildah" "/BuildKit"
row "cold (base image preloaded)" cold
row "no-change rebuild" nochange
row "one file changed (stage a)" edit
row "cold, context doubled" cold2x
[ "$ENV_LINES" -eq 0 ] || row "$ENV_LINES ENV lines, cold (1 run)" env
echo "ratios: berth's seconds / the peer's (buildah $buildah_v bud --layers, runc, --jobs $BUILDAH_JOBS;"
echo "  BuildKit in docker.io $docker_v, --network host, the client's seconds)"
echo "MB: peak RSS of the builder and its children; dockerd MB: the daemon's VmHWM during the build"
for tool in berth buildah buildkit; do
  if [ -n "${peak[${tool}_cold2x]:-}" ]; then
    awk -v t="$tool" -v a="${peak[${tool}_cold]}" -v b="${peak[${tool}_cold2x]}" \
      'BEGIN { printf "%s peak RSS, doubled context / first context: %.2fx\n", t, b / a }'
  fi
done
echo "targets: cold <= 0.5x buildah; no-change rebuild < 150 ms; one-file-changed <= 1/3 of buildah; peak RSS flat as the context grows"
echo "targets: cold, no-change rebuild and one-file-changed <= 0.5x BuildKit"
[ "$ENV_LINES" -eq 0 ] || echo "targets: $ENV_LINES ENV lines in seconds (linear in the number of variables)"
