#!/usr/bin/env bash
# Registry: berth's registry against CNCF distribution 2.8 (Debian's docker-registry), in the
# same run on the same ~1 GiB image, first both on the filesystem driver, then both on the S3
# driver against one local S3 server (s3s-fs plus ListMultipartUploads, registry/examples/
# s3_server.rs). Push and pull with skopeo, manifest GETs with wrk,
# peak RSS from /proc. Prints one table per storage driver; see bench/README.md.
#
#   bench/registry.sh
#
# Environment: BENCH_DIR (default /var/tmp/berth-bench) holds the test image, made once and
# reused; RUNS (default 3) pushes and pulls that many times per registry and reports the
# fastest; BERTH (default target/release/berth) is the binary under test; S3=0 skips the S3
# part; S3FS (default target/release/examples/s3_server, built with cargo when missing) is the
# S3 server; KEEP_RUN=1 keeps the run directory (server logs, roots) instead of
# removing it; CLIENT=berth pushes and pulls with `berth push`/`berth pull` instead of skopeo
# (the same client for both registries: skopeo's own speed otherwise bounds the figures).
set -euo pipefail
cd "$(dirname "$0")/.."

PROG=registry.sh
BENCH_DIR=${BENCH_DIR:-/var/tmp/berth-bench}
RUNS=${RUNS:-3}
BERTH=${BERTH:-target/release/berth}
S3=${S3:-1}
S3FS=${S3FS:-target/release/examples/s3_server}
DISTRIBUTION=/usr/bin/docker-registry
REPO=bench/image
TAG=1
MANIFEST_TYPE=application/vnd.oci.image.manifest.v1+json
# Credentials of the local S3 server: it listens on 127.0.0.1 only and lives for one run.
S3_ACCESS_KEY=berthbench
S3_SECRET_KEY=berthbench-secret
. bench/lib.sh

[ $# -eq 0 ] || die "usage: bench/registry.sh (no arguments; see the environment in its header)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
[[ $S3 =~ ^[01]$ ]] || die "S3 must be 0 or 1"
[ -x "$BERTH" ] || die "$BERTH is missing: run ./setup (or set BERTH)"
for tool in "$DISTRIBUTION" skopeo wrk curl python3 jq; do
  command -v "$tool" >/dev/null || die "$tool is missing: run ./setup --deps"
done

# The S3 server: s3s-fs (buckets are directories, objects files, signatures checked) with the
# ListMultipartUploads call that distribution's s3 driver needs and s3s-fs lacks.
if [ "$S3" = 1 ] && [ ! -x "$S3FS" ]; then
  command -v cargo >/dev/null || die "cargo is missing: it builds the S3 server (or set S3=0)"
  say "building the S3 server (cargo build --release -p registry --example s3_server)"
  cargo build --release -p registry --example s3_server >"$BENCH_DIR/s3-server-build.log" 2>&1 ||
    die "building the S3 server failed (see $BENCH_DIR/s3-server-build.log)"
  [ -x "$S3FS" ] || die "$S3FS is missing after the build"
fi

ensure_image

RUN=$(mktemp -d "$BENCH_DIR/run-XXXXXX")
pid=""    # the registry server running now, if any
s3_pid="" # the S3 server, if any
cleanup() {
  [ -z "$pid" ] || halt "$pid"
  [ -z "$s3_pid" ] || halt "$s3_pid"
  if [ "${KEEP_RUN:-}" = 1 ]; then say "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT

say "$IMG: $bytes blob bytes, best of $RUNS run(s)"

# data DRIVER KEY: where the content of one registry run lives: a directory (fs), or the
# directory s3s-fs keeps the bucket KEY in (s3).
data() {
  case $1 in
    fs) echo "$RUN/root-$2" ;;
    s3) echo "$RUN/s3/$2" ;;
  esac
}

# start NAME DRIVER KEY: starts registry NAME (berth or distribution) with DRIVER (fs or s3) on
# fresh storage (a root directory, or a bucket, named after KEY) and a free port; sets pid and
# port, and waits (at most 10 s) until /v2/ answers.
start() {
  local name=$1 driver=$2 key=$3 log=$RUN/$2-$3 conf=$RUN/$2-$3.conf
  port=$(free_port)
  mkdir -p "$(data "$driver" "$key")" # s3s-fs: a bucket is a directory of its root
  case $name/$driver in
    berth/fs)
      "$BERTH" registry serve --addr "127.0.0.1:$port" --root "$(data fs "$key")" \
        >"$log.out" 2>"$log.err" &
      ;;
    berth/s3)
      cat >"$conf" <<EOF
[storage]
driver = "s3"

[storage.s3]
bucket = "$key"
endpoint = "http://127.0.0.1:$s3_port"
path_style = true
region = "us-east-1"
access_key = "$S3_ACCESS_KEY"
secret_key = "$S3_SECRET_KEY"
EOF
      "$BERTH" registry serve -c "$conf" --addr "127.0.0.1:$port" >"$log.out" 2>"$log.err" &
      ;;
    distribution/*)
      # Minimal config, plus the in-memory blob descriptor cache that Debian's and the
      # registry:2 image's default configs turn on (the peer as people run it). On S3,
      # redirects are off: berth serves blobs itself, so both carry the bytes (distribution
      # would otherwise send clients to presigned S3 URLs). The s3 driver forces path-style
      # addressing whenever regionendpoint is set; chunksize stays at its default (10 MiB).
      {
        echo "version: 0.1"
        echo "storage:"
        if [ "$driver" = fs ]; then
          echo "  filesystem:"
          echo "    rootdirectory: $(data fs "$key")"
        else
          echo "  s3:"
          echo "    accesskey: $S3_ACCESS_KEY"
          echo "    secretkey: $S3_SECRET_KEY"
          echo "    region: us-east-1"
          echo "    regionendpoint: http://127.0.0.1:$s3_port"
          echo "    bucket: $key"
          echo "    secure: false"
          echo "    v4auth: true"
          echo "  redirect:"
          echo "    disable: true"
        fi
        echo "  cache:"
        echo "    blobdescriptor: inmemory"
        echo "http:"
        echo "  addr: 127.0.0.1:$port"
      } >"$conf"
      # AWS_CA_BUNDLE (set on some machines, this one included) makes its S3 client panic at
      # start-up ("LoadCustomCABundleError ... HTTPClient's transport unsupported type"); the
      # endpoint is plain HTTP, so the bundle is dropped for it.
      env -u AWS_CA_BUNDLE "$DISTRIBUTION" serve "$conf" >"$log.out" 2>"$log.err" &
      ;;
  esac
  pid=$!
  await "$name" "$pid" "http://127.0.0.1:$port/v2/" "$log.err"
}

# stop: reads the server's peak RSS (VmHWM, KiB) into hwm, then halts it.
stop() {
  hwm=$(hwm_kib "$pid")
  halt "$pid"
  pid=""
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

# skopeo_copy NAME DRIVER WHAT SRC DEST: one timed skopeo copy (at most 10 minutes) for registry
# NAME on DRIVER; sets secs. Dies with skopeo's last message when it fails.
skopeo_copy() {
  local t0 t1 log=$RUN/$2-$1-skopeo.log
  sync # so that writeback of the previous step does not land in this one
  t0=$(now)
  timeout 600 skopeo copy -q --src-tls-verify=false --dest-tls-verify=false "$4" "$5" \
    >>"$log" 2>&1 || die "$1 ($2): $3 failed: $(tail -n 1 "$log")"
  t1=$(now)
  secs=$(elapsed "$t0" "$t1")
}

CLIENT=${CLIENT:-skopeo}
[ "$CLIENT" = skopeo ] || [ "$CLIENT" = berth ] || die "CLIENT must be skopeo or berth"

# client_copy NAME DRIVER WHAT SRC DEST: skopeo_copy, or the same transfer with berth's client:
# a push from a store holding the image, a pull into a fresh store.
client_copy() {
  [ "$CLIENT" = berth ] || {
    skopeo_copy "$@"
    return
  }
  local t0 t1 log=$RUN/$2-$1-berth-client.log ref=${5#docker://}
  local src_root=$RUN/berth-client-src
  if [ "$3" = push ]; then
    if [ ! -d "$src_root" ]; then
      BERTH_ROOT=$src_root "$BERTH" load -q -i "$IMG" >>"$log" 2>&1 || die "berth load $IMG: $(tail -n 1 "$log")"
    fi
    # The layout's image loads untagged: name it by its ID for this server's port.
    BERTH_ROOT=$src_root "$BERTH" tag "$(BERTH_ROOT=$src_root "$BERTH" images -q | head -n 1)" "$ref" >>"$log" 2>&1 ||
      die "berth tag: $(tail -n 1 "$log")"
    sync
    t0=$(now)
    BERTH_ROOT=$src_root timeout 600 "$BERTH" push -q "$ref" >>"$log" 2>&1 || die "$1 ($2): berth push failed: $(tail -n 1 "$log")"
    t1=$(now)
  else
    ref=${4#docker://}
    rm -rf "$RUN/berth-client-dst"
    sync
    t0=$(now)
    BERTH_ROOT=$RUN/berth-client-dst timeout 600 "$BERTH" pull -q "$ref" >>"$log" 2>&1 ||
      die "$1 ($2): berth pull failed: $(tail -n 1 "$log")"
    t1=$(now)
    rm -rf "$RUN/berth-client-dst"
  fi
  secs=$(elapsed "$t0" "$t1")
}

# bench NAME LABEL DRIVER: RUNS pushes (each to a restarted server on fresh storage, so every
# blob is really uploaded), then RUNS pulls and the wrk run against the last one; appends one
# row to $RUN/rows-DRIVER.
bench() {
  local name=$1 label=$2 driver=$3 push="" pull="" peak="" r out rps p50 p99 got
  for ((r = 1; r <= RUNS; r++)); do
    if [ -n "$pid" ]; then
      stop
      peak=$(max "$hwm" "$peak")
      rm -rf "$(data "$driver" "$name-$((r - 1))")"
    fi
    start "$name" "$driver" "$name-$r"
    client_copy "$name" "$driver" push "oci:$IMG:bench" "docker://127.0.0.1:$port/$REPO:$TAG"
    push=$(min "$secs" "$push")
    say "$name ($driver): push $r: $secs s"
  done

  # The pushed manifest must come back byte for byte, under its own digest.
  got=$(curl -fsS --max-time 10 -H "Accept: $MANIFEST_TYPE" "http://127.0.0.1:$port/v2/$REPO/manifests/$TAG" |
    sha256sum | cut -d' ' -f1)
  [ "sha256:$got" = "$manifest_digest" ] || die "$name: manifest GET returned sha256:$got"

  for ((r = 1; r <= RUNS; r++)); do
    client_copy "$name" "$driver" pull "docker://127.0.0.1:$port/$REPO:$TAG" "oci:$RUN/pull-$r:x"
    rm -rf "$RUN/pull-$r"
    pull=$(min "$secs" "$pull")
    say "$name ($driver): pull $r: $secs s"
  done

  out=$(timeout 60 wrk -t4 -c64 -d10s --latency -H "Accept: $MANIFEST_TYPE" \
    "http://127.0.0.1:$port/v2/$REPO/manifests/$TAG")
  echo "$out" >"$RUN/$driver-$name-wrk.log"
  ! grep -qE 'Non-2xx|Socket errors' <<<"$out" || {
    echo "$out" >&2
    die "$name: wrk saw errors"
  }
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  p50=$(to_ms "$(awk '/Latency Distribution/ { d = 1 } d && $1 == "50%" { print $2; exit }' <<<"$out")")
  p99=$(to_ms "$(awk '/Latency Distribution/ { d = 1 } d && $1 == "99%" { print $2; exit }' <<<"$out")")
  say "$name ($driver): wrk: $rps req/s, p50 $p50 ms, p99 $p99 ms"

  stop
  peak=$(max "$hwm" "$peak")
  rm -rf "$(data "$driver" "$name-$RUNS")"
  # 1 MB = 10^6 bytes, for throughput and RSS alike.
  awk -v l="$label" -v b="$bytes" -v push="$push" -v pull="$pull" -v rps="$rps" \
    -v p50="$p50" -v p99="$p99" -v kib="$peak" 'BEGIN {
    printf "%-22s%11.1f%11.1f%11.0f%12.2f%12.2f%13.1f\n",
      l, b / 1e6 / push, b / 1e6 / pull, rps, p50, p99, kib * 1024 / 1e6
  }' >>"$RUN/rows-$driver"
}

# bench_or_na NAME LABEL DRIVER: bench in a subshell; if it fails, its error is reported and
# the row reads n/a instead of the script stopping there.
bench_or_na() {
  local status
  set +e
  (
    set -e
    trap '[ -z "$pid" ] || halt "$pid"' EXIT
    bench "$@"
  )
  status=$?
  set -e
  [ "$status" = 0 ] && return 0
  # The server's first error that is not a plain 404 (skopeo HEADs blobs before pushing).
  local why
  why=$(awk '!/blob unknown/ && /level=(error|fatal|panic)|^panic/ { print; exit }' \
    "$RUN/$3-$1"-*.err 2>/dev/null | sed 's/.*msg="\([^"]*\)".*/\1/; s/\\n.*//' | cut -c 1-300) || true
  say "$1 ($3): failed; its row reads n/a${why:+. Its log says: $why}"
  printf '%-22s%11s%11s%11s%12s%12s%13s\n' "$2" n/a n/a n/a n/a n/a n/a >>"$RUN/rows-$3"
}

# table DRIVER TITLE: the table of one storage driver, with the ratios berth / distribution
# taken from its rows (columns from the right, as the labels hold spaces).
table() {
  echo
  printf '%-22s%11s%11s%11s%12s%12s%13s\n' "$2" "push MB/s" "pull MB/s" \
    "GET req/s" "GET p50 ms" "GET p99 ms" "peak RSS MB"
  cat "$RUN/rows-$1"
  awk 'NR == 1 { bpush = $(NF-5); bpull = $(NF-4); bp99 = $(NF-1) }
       NR == 2 && $NF == "n/a" { print "berth/distribution: n/a (distribution failed)" }
       NR == 2 && $NF != "n/a" {
         printf "berth/distribution: push %.2fx, pull %.2fx, GET p99 %.2fx\n",
                bpush / $(NF-5), bpull / $(NF-4), bp99 / $(NF-1) }' "$RUN/rows-$1"
  echo "targets: push and pull >= 1.5x distribution; GET p99 <= 0.5x; peak RSS <= distribution's"
}

bench berth berth fs
bench distribution "distribution 2.8" fs

if [ "$S3" = 1 ]; then
  # One S3 server for the whole part; every registry run gets a bucket of its own.
  s3_port=$(free_port)
  mkdir -p "$RUN/s3"
  "$S3FS" --host 127.0.0.1 --port "$s3_port" --access-key "$S3_ACCESS_KEY" \
    --secret-key "$S3_SECRET_KEY" "$RUN/s3" >"$RUN/s3s-fs.out" 2>"$RUN/s3s-fs.err" &
  s3_pid=$!
  await s3s-fs "$s3_pid" "http://127.0.0.1:$s3_port/" "$RUN/s3s-fs.err"
  bench berth berth s3
  bench_or_na distribution "distribution 2.8" s3
fi

table fs "registry (filesystem)"
[ "$S3" = 0 ] || table s3 "registry (s3)"
