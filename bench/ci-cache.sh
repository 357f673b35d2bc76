#!/usr/bin/env bash
# CI build cache: three ephemeral CI runners in a row, each with empty builder state, sharing
# only a registry on 127.0.0.1 (`berth registry serve`). Runner A builds cold and exports the
# cache; runner B builds the same commit with the cache imported and pushes the image; runner C
# does the same with one source file changed. berth (`--cache-to/--cache-from
# type=registry,mode=max`, `--push`) beside `buildah bud --layers --cache-to/--cache-from` (1.28)
# and BuildKit in Debian's docker.io 20.10 (inline cache: BUILDKIT_INLINE_CACHE=1,
# `--cache-from`, `docker push`), in the same run, on the context of bench/build.sh. A cold
# build without export (A0) gives the export's cost. Prints wall seconds and the bytes each
# runner downloaded and uploaded, from the registry's /metrics and its request log, in one
# table; see bench/README.md.
#
#   bench/ci-cache.sh
#
# Environment: BENCH_DIR (default /var/tmp/berth-bench) holds the context (made once, shared
# with bench/build.sh) and the run directory; RUNS (default 2) repeats every runner that many
# times per tool, each round on a fresh registry, and reports the fastest; BENCH_ONLY: a
# space-separated subset of "berth berthzstd berthmin buildah buildkit" (default all five;
# berth exports with mode=max, berthzstd with mode=max and zstd level 1, berthmin with
# mode=min, buildx's default); BERTH (default
# target/release/berth) is the binary under test (builder and registry), copied into the run
# directory first; KEEP_RUN=1 keeps the run directory (build logs, registry logs and roots).
# Needs root: the builders run their RUN steps in containers.
set -euo pipefail
cd "$(dirname "$0")/.."

PROG=ci-cache.sh
BENCH_DIR=${BENCH_DIR:-/var/tmp/berth-bench}
RUNS=${RUNS:-2}
BERTH=${BERTH:-target/release/berth}
BENCH_ONLY=${BENCH_ONLY:-berth berthzstd berthmin buildah buildkit}
CTX_VERSION="berth build bench context v1" # as bench/build.sh: the same context and marker
EDIT=a/part01/file00000.txt                 # the file runner C's commit changes
EPOCH=1700000000                            # the context's mtimes (make-build-context)
. bench/lib.sh

[ $# -eq 0 ] || die "usage: bench/ci-cache.sh (no arguments; see the environment in its header)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
read -r -a tools <<<"$BENCH_ONLY"
for tool in "${tools[@]}"; do
  case $tool in berth | berthzstd | berthmin | buildah | buildkit) ;; *) die "BENCH_ONLY: unknown tool '$tool'" ;; esac
done
measure() { [[ " ${tools[*]} " == *" $1 "* ]]; }
[ "$(id -u)" -eq 0 ] || die "run it as root: the builders run containers for the RUN steps"
[ -x "$BERTH" ] || die "$BERTH is missing: run ./setup (or set BERTH)"
BERTH=$(realpath "$BERTH")
"$BERTH" build --help 2>/dev/null | grep -q -- --cache-to ||
  die "$BERTH build has no --cache-to: rebuild it"
for t in curl python3 /bin/busybox $(measure buildah && echo buildah runc unshare) \
  $(measure buildkit && echo dockerd); do
  command -v "$t" >/dev/null || die "$t is missing: run ./setup --deps"
done

# The context of bench/build.sh (fixtures/make-build-context, scale 1), made once and shared
# with it: the marker holds the generator's version and the sha256 of the file C edits, so a
# context left edited by an interrupted run is made again.
CTX=$BENCH_DIR/build-context-1x
edit_sum() { if [ -f "$CTX/$EDIT" ]; then sha256sum <"$CTX/$EDIT" | cut -d' ' -f1; fi; }
if [ "$(cat "$CTX.complete" 2>/dev/null)" != "$CTX_VERSION $(edit_sum)" ]; then
  say "making the build context $CTX (once)"
  rm -rf "$CTX" "$CTX.complete"
  mkdir -p "$BENCH_DIR"
  fixtures/make-build-context "$CTX" 1 || die "fixtures/make-build-context failed"
  sync
  echo "$CTX_VERSION $(edit_sum)" >"$CTX.complete"
fi
# expected: what the built image prints (its CMD), computed on the host with busybox.
expected() {
  local bb=/bin/busybox
  (cd "$CTX/a" && LC_ALL=C $bb sh -c "$bb find . -path ./cache -prune -o -type f -print | $bb wc -l; $bb cat part*/file* | $bb md5sum")
  (cd "$CTX/b" && LC_ALL=C $bb sh -c "$bb find . -type f | $bb wc -l; $bb cat part*/file* | $bb md5sum")
}

RUN=$(mktemp -d "$BENCH_DIR/run-XXXXXX")
say "berth: copy of $BERTH ($(stat -c %y "$BERTH" | cut -d. -f1)) in $RUN/berth"
cp "$BERTH" "$RUN/berth"
BERTH=$RUN/berth
BROOT=$RUN/berth-root # a berth runner's root, afresh for every runner
RETIRED=$RUN/retired  # the runners' old states (bench/lib.sh's retire), removed at the end
buildah_init "$RUN/buildah"
REG_PID=""
edited=0

cleanup() {
  [ "$edited" = 0 ] || restore_edit
  dockerd_stop
  [ -z "$REG_PID" ] || halt "$REG_PID"
  [ ! -d "$BAH/root" ] || bah rm -a >/dev/null 2>&1 || true
  umount_under "$RUN"
  if [ "${KEEP_RUN:-}" = 1 ]; then say "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# edit: runner C's commit, a new last line in $EDIT (rewritten in place, so no directory
# changes); restore_edit puts the original back, mtime included.
edit() {
  cp -p "$CTX/$EDIT" "$RUN/edit.orig"
  edited=1
  { cat "$RUN/edit.orig" && echo "runner C's change"; } >"$CTX/$EDIT"
}
restore_edit() {
  cat "$RUN/edit.orig" >"$CTX/$EDIT"
  touch -d "@$EPOCH" "$CTX/$EDIT"
  edited=0
}
want_same=$(expected)
edit
want_edit=$(expected)
restore_edit
[ "$want_edit" != "$want_same" ] || die "editing $EDIT did not change the expected output"

# The base image, busybox:latest from fixtures/make-busybox-image, saved once as an OCI archive
# (berth, buildah) and a docker archive (docker): every runner loads it from that local file
# before its build, untimed and outside the registry.
say "making the busybox base image"
BERTH_ROOT=$RUN/base BERTH=$BERTH fixtures/make-busybox-image busybox:latest >"$RUN/base.log" 2>&1 ||
  die "fixtures/make-busybox-image failed (see $RUN/base.log)"
base_id=$(BERTH_ROOT=$RUN/base "$BERTH" images -q --no-trunc busybox:latest)
for f in oci docker; do
  BERTH_ROOT=$RUN/base "$BERTH" save --format $f -o "$RUN/busybox-$f.tar" busybox:latest >>"$RUN/base.log" 2>&1 ||
    die "berth save --format $f failed (see $RUN/base.log)"
done

# --- the registry ------------------------------------------------------------------------------
# reg_start NAME: a berth registry on a fresh root under $RUN/NAME and a free port; sets REG
# (HOST:PORT), REG_DIR, REG_PID.
reg_start() {
  REG_DIR=$RUN/$1
  mkdir -p "$REG_DIR"
  REG=127.0.0.1:$(free_port)
  "$BERTH" registry serve --addr "$REG" --root "$REG_DIR/root" >"$REG_DIR/log" 2>&1 &
  REG_PID=$!
  await registry "$REG_PID" "http://$REG/v2/" "$REG_DIR/log"
}
reg_stop() {
  halt "$REG_PID"
  REG_PID=""
}
# mark: the registry's counters and log length now, for traffic.
mark() {
  curl -fsS "http://$REG/metrics" >"$REG_DIR/metrics.0"
  wc -l <"$REG_DIR/log" >"$REG_DIR/log.0"
}
# traffic: what the runner moved since mark, as "DOWN_BLOB DOWN_LAYER DOWN_MANIFEST UP_BLOB
# UP_MANIFEST" (bytes). Downloads and manifest uploads are the differences of /metrics'
# berth_registry_bytes_sent_total{route="blob"|"manifest"} and bytes_received_total{route=
# "manifest"}; DOWN_LAYER is DOWN_BLOB less the JSON blobs (image and cache configs) the log
# shows fetched whole. Blob uploads are the sizes of the blobs whose upload the log shows
# completed (201 to a PUT, or to a POST with a digest): the registry's bytes_received counter
# adds up Content-Length headers, and buildah's and docker's chunked PATCHes have none.
traffic() {
  curl -fsS "http://$REG/metrics" >"$REG_DIR/metrics.1"
  python3 - "$REG_DIR" <<'PY'
import os, re, sys, urllib.parse

d = sys.argv[1]


def counters(name):
    out = {}
    for line in open(os.path.join(d, name)):
        m = re.match(r'berth_registry_bytes_(sent|received)_total\{route="(\w+)"\} (\d+)', line)
        if m:
            out[(m[1], m[2])] = int(m[3])
    return out


a, b = counters("metrics.0"), counters("metrics.1")
delta = lambda k: b.get(k, 0) - a.get(k, 0)


def blob(digest):
    algo, hex_ = digest.split(":", 1)
    return os.path.join(d, "root", "v2", "blobs", algo, hex_[:2], hex_, "data")


start = int(open(os.path.join(d, "log.0")).read())
configs = uploaded = 0
with open(os.path.join(d, "log")) as log:
    for i, line in enumerate(log):
        if i < start or "registry::api: request " not in line:
            continue
        method = re.search(r" method=(\S+)", line)[1]
        uri = urllib.parse.unquote(re.search(r" uri=(\S+)", line)[1])
        status = re.search(r" status=(\d+)", line)[1]
        got = re.search(r"/blobs/(sha256:[0-9a-f]{64})$", uri)
        if method == "GET" and status == "200" and got:
            with open(blob(got[1]), "rb") as f:
                if f.read(1) == b"{":
                    configs += os.path.getsize(blob(got[1]))
        put = re.search(r"/blobs/uploads/.*[?&]digest=(sha256:[0-9a-f]{64})", uri)
        if put and status == "201" and method in ("PUT", "POST"):
            uploaded += os.path.getsize(blob(put[1]))
down = delta(("sent", "blob"))
print(down, down - configs, delta(("sent", "manifest")), uploaded, delta(("received", "manifest")))
PY
}
# check_pushed TOOL RUNNER WANT: the image the runner pushed, pulled by berth into a fresh root
# (after the runner's traffic is counted), prints WANT. (berth's runner B keeps an image whose
# layers it never fetched: its own store cannot run it.)
check_pushed() {
  local root=$RUN/check-root got
  umount_under "$root"
  retire "$root"
  BERTH_ROOT=$root "$BERTH" pull --progress quiet "$REG/bench/app:latest" >>"$RUN/check.log" 2>&1 ||
    die "$1's runner $2: berth pull $REG/bench/app:latest failed (see $RUN/check.log)"
  got=$(BERTH_ROOT=$root "$BERTH" run --rm "$REG/bench/app:latest")
  [ "$got" = "$3" ] || die "$1's runner $2 pushed an image that prints '$got', expected '$3'"
}

# --- the tools -----------------------------------------------------------------------------------
# For each TOOL: fresh_TOOL, a runner's empty state with busybox:latest loaded; run_TOOL RUNNER,
# the runner's build (A0: cold, no export; A: cold with export; B and C: import and push);
# check_TOOL RUNNER WANT: runner A0's or A's image, in the runner's store, prints WANT.
# tag_of [buildkit] RUNNER: the image's name; BuildKit's runner A pushes its image (the inline
# cache travels in it), the others only B and C.
tag_of() {
  case $* in A0 | A | buildkit\ A0) echo bench-app:latest ;; *) echo "$REG/bench/app:latest" ;; esac
}

fresh_berth() {
  umount_under "$BROOT"
  retire "$BROOT"
  BERTH_ROOT=$BROOT "$BERTH" load -q -i "$RUN/busybox-oci.tar" >>"$RUN/setup.log" 2>&1 ||
    die "berth load failed (see $RUN/setup.log)"
  local id
  id=$(BERTH_ROOT=$BROOT "$BERTH" images -q --no-trunc busybox:latest)
  [ "$id" = "$base_id" ] || die "berth stored busybox:latest as '$id', expected $base_id"
}
run_berth() {
  local cache=type=registry,ref=$REG/bench/app:cache extra=()
  case $1 in
    A) extra=(--cache-to "$cache,mode=${BERTH_MODE:-max}${BERTH_CODEC:+,$BERTH_CODEC}") ;;
    B | C) extra=(--cache-from "$cache" --push) ;;
  esac
  BERTH_ROOT=$BROOT "$BERTH" build -t "$(tag_of "$1")" "${extra[@]}" --progress plain "$CTX"
}
check_berth() {
  local got
  got=$(BERTH_ROOT=$BROOT "$BERTH" run --rm "$(tag_of "$1")")
  [ "$got" = "$2" ] || die "berth's runner $1 image prints '$got', expected '$2'"
}
# berthzstd: berth with --cache-to mode=max,compression=zstd,compression-level=1, a codec that
# costs about a third of gzip's CPU here. berthmin: berth with --cache-to mode=min (buildx's
# default mode): runner A exports the final stage's steps only.
fresh_berthzstd() { fresh_berth; }
run_berthzstd() { BERTH_CODEC=compression=zstd,compression-level=1 run_berth "$@"; }
check_berthzstd() { check_berth "$@"; }
fresh_berthmin() { fresh_berth; }
run_berthmin() { BERTH_MODE=min run_berth "$@"; }
check_berthmin() { check_berth "$@"; }

BAH_RUN=("${BAH_RUNTIME[@]}" --network none)
fresh_buildah() { buildah_fresh "$RUN/busybox-oci.tar" docker.io/library/busybox:latest "$base_id"; }
run_buildah() {
  local extra=()
  case $1 in
    A) extra=(--cache-to "$REG/bench/app-cache" --tls-verify=false) ;;
    B | C) extra=(--cache-from "$REG/bench/app-cache" --tls-verify=false) ;;
  esac
  bah bud --layers --pull=never "${BAH_RUN[@]}" --jobs 1 -t "$(tag_of "$1")" "${extra[@]}" \
    -f "$CTX/Dockerfile" "$CTX"
  case $1 in B | C) bah push --tls-verify=false "$(tag_of "$1")" ;; esac
}
check_buildah() {
  local got
  bah from -q --pull=never --name bench-check "$(tag_of "$1" | sed 's,^bench-app,localhost/bench-app,')" >/dev/null
  got=$(bah run "${BAH_RUN[@]}" bench-check -- cat /app/a.count /app/a.sum /app/b.count /app/b.sum)
  bah rm bench-check >/dev/null
  [ "$got" = "$2" ] || die "buildah's runner $1 image prints '$got', expected '$2'"
}

# BuildKit: a runner is a private dockerd (bench/lib.sh) on a fresh directory: data root,
# BuildKit's state and the client's config.
fresh_buildkit() {
  dockerd_stop
  retire "$RUN/docker"
  dockerd_start "$RUN/docker"
  dockerd_load "$RUN/busybox-docker.tar"
  local id
  id=$("${DOCKER[@]}" image inspect --format '{{.Id}}' busybox:latest)
  [ "$id" = "$base_id" ] || die "docker stored busybox:latest as '$id', expected $base_id"
}
run_buildkit() {
  local extra=()
  case $1 in
    A) extra=(--build-arg BUILDKIT_INLINE_CACHE=1) ;;
    B | C) extra=(--build-arg BUILDKIT_INLINE_CACHE=1 --cache-from "$REG/bench/app:latest") ;;
  esac
  "${DOCKER[@]}" build --progress plain --network host -t "$(tag_of buildkit "$1")" "${extra[@]}" "$CTX"
  [ "$1" = A0 ] || "${DOCKER[@]}" push "$(tag_of buildkit "$1")"
}
check_buildkit() {
  local got
  got=$("${DOCKER[@]}" run --rm --network none "$(tag_of buildkit "$1")")
  [ "$got" = "$2" ] || die "BuildKit's runner $1 image prints '$got', expected '$2'"
}

# --- the measurements ----------------------------------------------------------------------------
# clock LABEL CMD...: runs CMD (a shell function too) after a sync, its output in $RUN/LABEL.log;
# sets secs, the elapsed seconds.
clock() {
  local label=$1 t0 t1
  shift
  sync
  t0=$(now)
  "$@" >>"$RUN/$label.log" 2>&1 || die "$label failed (see $RUN/$label.log)"
  t1=$(now)
  secs=$(elapsed "$t0" "$t1")
}

# Per tool and runner: the fastest seconds, and the bytes of that round.
declare -A best moved
runners=(A0 A B C)
started="$(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
say "context $CTX; best of $RUNS round(s); measuring ${tools[*]}"
for ((r = 1; r <= RUNS; r++)); do
  for tool in "${tools[@]}"; do
    reg_start "registry-$tool-$r"
    for R in "${runners[@]}"; do
      "fresh_$tool"
      want=$want_same
      if [ "$R" = C ]; then edit && want=$want_edit; fi
      mark
      clock "$tool-$R-$r" "run_$tool" "$R"
      bytes=$(traffic)
      [ "$R" != C ] || restore_edit
      case $R in
        A0 | A) "check_$tool" "$R" "$want" ;;
        B | C) check_pushed "$tool" "$R" "$want" ;;
      esac
      say "$tool $R (round $r): $secs s; bytes down blob/layer/manifest, up blob/manifest: $bytes"
      if awk -v a="$secs" -v b="${best[${tool}_$R]:-}" 'BEGIN { exit !(b == "" || a < b) }'; then
        best[${tool}_$R]=$secs
        moved[${tool}_$R]=$bytes
      fi
    done
    reg_stop
    [ "$tool" != buildkit ] || dockerd_stop
  done
done

# --- the table -----------------------------------------------------------------------------------
# One row per tool and runner: seconds (best of RUNS); blob MB downloaded, of which layers (the
# rest are configs); blob MB uploaded; manifest KB down and up. 1 MB = 10^6 bytes, 1 KB = 10^3.
buildah_v=$(buildah --version | awk '{ print $3 }')
docker_v=$(/usr/bin/docker --version | awk '{ print $3 }' | tr -d , | sed 's/+.*//')
declare -A label=([A0]="A  cold, no export" [A]="A  cold + export" [B]="B  import + push"
  [C]="C  1 file changed, import + push")
declare -A name=([berth]="berth max" [berthzstd]="berth max zstd" [berthmin]="berth min" [buildah]="buildah $buildah_v" [buildkit]="BuildKit $docker_v")
fmt='%-18s%-34s%8s%10s%10s%10s%14s\n'
echo
echo "started $started; berth $(stat -c %y "$BERTH" | cut -d. -f1)"
echo "context: $CTX; every runner starts empty with busybox:latest loaded from a local file"
# shellcheck disable=SC2059 # the format is ours
printf "$fmt" "tool" "runner (best of $RUNS)" "s" "down MB" "layers MB" "up MB" "manif. KB d/u"
for tool in "${tools[@]}"; do
  for R in "${runners[@]}"; do
    read -r dn dl dm un um <<<"${moved[${tool}_$R]}"
    # shellcheck disable=SC2059
    printf "$fmt" "${name[$tool]}" "${label[$R]}" "${best[${tool}_$R]}" \
      "$(awk -v b="$dn" 'BEGIN { printf "%.3f", b / 1e6 }')" \
      "$(awk -v b="$dl" 'BEGIN { printf "%.3f", b / 1e6 }')" \
      "$(awk -v b="$un" 'BEGIN { printf "%.3f", b / 1e6 }')" \
      "$(awk -v a="$dm" -v b="$um" 'BEGIN { printf "%.1f/%.1f", a / 1e3, b / 1e3 }')"
  done
done
s() { echo "${best[$1]:-n/a}"; }
# verdict A B LIMIT: "0.42x (target <= 0.5x: yes)" for A/B, or n/a.
verdict() {
  awk -v a="$1" -v b="$2" -v l="$3" 'BEGIN {
    if (a == "n/a" || b == "n/a") { print "n/a"; exit }
    r = a / b; printf "%.2fx (target <= %sx: %s)", r, l, (r <= l) ? "yes" : "NO" }'
}
# overhead TOOL: (A - A0) / A0 in percent.
overhead() {
  awk -v a="$(s "${1}_A")" -v z="$(s "${1}_A0")" 'BEGIN {
    if (a == "n/a" || z == "n/a") { print "n/a"; exit }
    printf "%.0f%%", (a - z) / z * 100 }'
}
echo "down/up: blob bytes the registry served/received (layers: downloads less the configs);"
echo "  manif.: manifest bytes down/up. Peers: buildah bud --layers --jobs 1, runc, --cache-to/--cache-from"
echo "  a repository and buildah push; BuildKit in dockerd, --network host, inline cache and docker push"
echo "export overhead, (A - A0) / A0: berth mode=max $(overhead berth), max zstd $(overhead berthzstd), min $(overhead berthmin), buildah $(overhead buildah), BuildKit $(overhead buildkit)"
echo "targets:"
for b in berth berthzstd berthmin; do
  measure "$b" || continue
  case $b in berth) m=max ;; berthzstd) m=max,compression=zstd,compression-level=1 ;; *) m=min ;; esac
  read -r _ dl _ <<<"${moved[${b}_B]}"
  echo "  berth, --cache-to mode=$m:"
  echo "    B, berth / buildah:  $(verdict "$(s "${b}_B")" "$(s buildah_B)" 0.25)"
  echo "    B, berth / BuildKit: $(verdict "$(s "${b}_B")" "$(s buildkit_B)" 0.5)"
  echo "    B, berth's layer bytes downloaded: $dl (target 0: $([ "$dl" = 0 ] && echo yes || echo NO))"
  echo "    A, berth's export overhead: $(overhead "$b") of A0 (target <= 20%: $(awk -v a="$(s "${b}_A")" \
    -v z="$(s "${b}_A0")" 'BEGIN { print ((a - z) / z <= 0.2) ? "yes" : "NO" }'))"
  echo "    C, berth / buildah:  $(verdict "$(s "${b}_C")" "$(s buildah_C)" 0.5)"
done
