#!/usr/bin/env bash
# Mirror: berth's pull-through mirror (`berth registry serve --mirror URL`) beside CNCF
# distribution 2.8 in proxy mode (Debian's docker-registry, `proxy: remoteurl:`), in the same
# run, both in front of one upstream: a plain `berth registry serve` holding the ~1 GiB bench
# image of registry.sh, in a network namespace of its own behind a veth pair whose upstream
# side sends at UPSTREAM_RATE (tc tbf), as an upstream across a WAN link does. Through each
# mirror: a cold pull with skopeo (fresh mirror root), a warm pull (the same again, from the
# filled mirror; WARM times), warm pulls with curl (manifest, then each blob in turn, bodies discarded,
# which leaves the 2 cores to the server), CLIENTS (16) cold skopeo pulls at once through
# another fresh mirror, then CLIENTS cold curl pulls at once through another. Counts the blob
# bytes the upstream served in each phase (its /metrics,
# berth_registry_bytes_sent_total{route="blob"}) as copies of the image. Prints one table with
# the ratios and the targets of issue 18 (item 9); see bench/README.md.
#
#   bench/mirror.sh
#
# Environment: BENCH_DIR (default /var/tmp/berth-bench) holds the test image, made once and
# reused; RUNS (default 3) rounds, each on fresh mirrors, the mirrors taking turns; the fastest
# round of each phase counts (upstream copies: the most any round took). BERTH (default
# target/release/berth) is the binary under test, for the upstream and the mirror; CLIENTS
# (default 16) pulls at once in the concurrent phases; MANY (default "skopeo curl") the clients
# of the concurrent phases, one phase each, or none; WARM (default 3) warm pulls of each
# client per round (the fastest counts); UPSTREAM_RATE (default 1gbit, a tc rate) the
# bandwidth from the upstream to the mirrors, or "none" for an upstream on 127.0.0.1 at
# loopback speed; KEEP_RUN=1 keeps the run directory (server logs, roots, client output).
set -euo pipefail
cd "$(dirname "$0")/.."

PROG=mirror.sh
BENCH_DIR=${BENCH_DIR:-/var/tmp/berth-bench}
RUNS=${RUNS:-3}
CLIENTS=${CLIENTS:-16}
MANY=${MANY:-skopeo curl}
UPSTREAM_RATE=${UPSTREAM_RATE:-1gbit}
WARM=${WARM:-3}
BERTH=${BERTH:-target/release/berth}
DISTRIBUTION=/usr/bin/docker-registry
REPO=bench/image
TAG=1
MANIFEST_TYPE=application/vnd.oci.image.manifest.v1+json
. bench/lib.sh

[ $# -eq 0 ] || die "usage: bench/mirror.sh (no arguments; see the environment in its header)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
[[ $CLIENTS =~ ^[1-9][0-9]*$ ]] && [ "$CLIENTS" -le 32 ] || die "CLIENTS must be an integer from 1 to 32"
[ "$MANY" != none ] || MANY=""
for m in $MANY; do [ "$m" = skopeo ] || [ "$m" = curl ] || die "MANY must list skopeo, curl or both, or be none"; done
[[ $WARM =~ ^[1-9][0-9]?$ ]] || die "WARM must be an integer from 1 to 99"
[ -x "$BERTH" ] || die "$BERTH is missing: run ./setup (or set BERTH)"
[ "$UPSTREAM_RATE" = none ] || [[ $UPSTREAM_RATE =~ ^[1-9][0-9]*(k|m|g)?bit$ ]] ||
  die "UPSTREAM_RATE must be none or a tc rate such as 1gbit or 500mbit"
[ "$UPSTREAM_RATE" = none ] || [ "$(id -u)" = 0 ] || die "a throttled upstream needs root (or UPSTREAM_RATE=none)"
for tool in "$DISTRIBUTION" skopeo curl python3 jq du ip tc; do
  command -v "$tool" >/dev/null || die "$tool is missing: run ./setup --deps"
done

ensure_image

RUN=$(mktemp -d "$BENCH_DIR/run-XXXXXX")
up_pid="" # the upstream
pid=""    # the mirror running now, if any
NS=""     # the upstream's network namespace, if throttled
cleanup() {
  [ -z "$pid" ] || halt "$pid"
  [ -z "$up_pid" ] || halt "$up_pid"
  [ -z "$NS" ] || ip netns delete "$NS" 2>/dev/null || true # takes the veth pair with it
  if [ "${KEEP_RUN:-}" = 1 ]; then say "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT

# A copy of the binary: a rebuild during the run does not change what is measured.
cp "$BERTH" "$RUN/berth"
BERTH=$RUN/berth

# The upstream: berth's registry with the image pushed from the layout (as registry.sh does);
# throttled, it runs in a namespace of its own at 10.213.N.2, reached over a veth pair.
if [ "$UPSTREAM_RATE" = none ]; then
  up_ip=127.0.0.1
  up_port=$(free_port)
  in_ns=()
else
  NS=berth-bench-$$
  net=10.213.$(($$ % 250)).
  up_ip=${net}2
  up_port=5000
  in_ns=(ip netns exec "$NS")
  ip netns add "$NS"
  ip link add "bbh$$" type veth peer name "bbn$$"
  ip link set "bbn$$" netns "$NS"
  ip addr add "${net}1/30" dev "bbh$$"
  ip link set "bbh$$" up
  ip -n "$NS" addr add "${net}2/30" dev "bbn$$"
  ip -n "$NS" link set "bbn$$" up
  ip -n "$NS" link set lo up
fi
UP=http://$up_ip:$up_port
mkdir -p "$RUN/upstream"
"${in_ns[@]}" "$BERTH" registry serve --addr "$up_ip:$up_port" --root "$RUN/upstream" \
  >"$RUN/upstream.out" 2>"$RUN/upstream.err" &
up_pid=$!
await upstream "$up_pid" "$UP/v2/" "$RUN/upstream.err"
skopeo copy -q --dest-tls-verify=false "oci:$IMG:bench" "docker://$up_ip:$up_port/$REPO:$TAG" \
  >"$RUN/upstream-push.log" 2>&1 || die "pushing the image to the upstream failed: $(tail -n 1 "$RUN/upstream-push.log")"
got=$(curl -fsS --max-time 10 -H "Accept: $MANIFEST_TYPE" "$UP/v2/$REPO/manifests/$TAG" | sha256sum | cut -d' ' -f1)
[ "sha256:$got" = "$manifest_digest" ] || die "upstream: manifest GET returned sha256:$got"
if [ -n "$NS" ]; then
  # From here on the upstream sends at UPSTREAM_RATE (the push above went at full speed).
  tc -n "$NS" qdisc add dev "bbn$$" root tbf rate "$UPSTREAM_RATE" burst 512kb latency 100ms
fi
say "upstream $UP holds $REPO:$TAG ($bytes blob bytes), sending at $UPSTREAM_RATE; $CLIENTS clients at once; $RUNS round(s)"

# up_bytes: the blob bytes the upstream has served so far (response bodies of the blob route:
# berth counts a response's Content-Length when it answers, HEADs as 0).
up_bytes() {
  curl -fsS --max-time 10 "$UP/metrics" |
    awk '$1 == "berth_registry_bytes_sent_total{route=\"blob\"}" { n = $2 } END { printf "%.0f\n", n }'
}

# start NAME KEY: starts mirror NAME (berth or distribution) of the upstream at the root, on a
# fresh root named after KEY and a free port; sets pid, port and root, and waits until /v2/
# answers. berth's spool files (fills in progress) go to a directory of the run, beside it.
start() {
  local name=$1 key=$2 log=$RUN/$1-$2
  port=$(free_port)
  root=$RUN/root-$1-$2
  mkdir -p "$root" "$root.tmp"
  case $name in
    berth)
      TMPDIR=$root.tmp "$BERTH" registry serve --addr "127.0.0.1:$port" --root "$root" --mirror "$UP" \
        >"$log.out" 2>"$log.err" &
      ;;
    distribution)
      # The config of registry.sh (filesystem driver, in-memory blob descriptor cache) plus
      # proxy mode; 2.8 has no ttl key (cached content stays 7 days).
      printf '%s\n' "version: 0.1" "storage:" "  filesystem:" "    rootdirectory: $root" \
        "  cache:" "    blobdescriptor: inmemory" "http:" "  addr: 127.0.0.1:$port" \
        "proxy:" "  remoteurl: $UP" >"$log.conf"
      "$DISTRIBUTION" serve "$log.conf" >"$log.out" 2>"$log.err" &
      ;;
  esac
  pid=$!
  await "$name" "$pid" "http://127.0.0.1:$port/v2/" "$log.err"
}

stop() {
  halt "$pid"
  pid=""
  rm -rf "$root" "$root.tmp"
}

# settle: waits (at most 5 minutes) until the mirror has stopped filling: the upstream's blob
# bytes and the size of the mirror's root (and spool directory) unchanged over 2 s. Both
# mirrors may still be storing blobs after the last client is done (distribution fetches its
# own copy in the background), and that traffic belongs to the cold phase, not the next one.
settle() {
  local i prev="" cur
  for ((i = 0; i < 150; i++)); do
    cur="$(up_bytes) $(du -sb "$root" "$root.tmp" | awk '{ n += $1 } END { printf "%.0f", n }')"
    [ "$cur" = "$prev" ] && return 0
    prev=$cur
    sleep 2
  done
  say "$1: still filling after 5 minutes ($cur)"
}

# pull NAME LABEL DEST: one skopeo copy (at most 10 minutes) of the image through the running
# mirror into a fresh OCI layout DEST, whose manifest must be the image's; returns skopeo's
# status (its output in DEST.log).
pull() {
  rm -rf "$3"
  timeout 600 skopeo copy -q --src-tls-verify=false "docker://127.0.0.1:$port/$REPO:$TAG" "oci:$3:x" \
    >"$3.log" 2>&1 || return 1
  [ "$(jq -r '.manifests[0].digest' "$3/index.json")" = "$manifest_digest" ] || {
    echo "pulled manifest $(jq -r '.manifests[0].digest' "$3/index.json"), expected $manifest_digest" >>"$3.log"
    return 1
  }
}

# pull_curl NAME LABEL LOG: one pull with curl through the running mirror: the manifest by tag
# (its sha256 checked), then each blob it names, in turn, the body discarded, its status and
# size checked (the mirrors check digests themselves); returns 1 on the first failure, with a
# note in LOG.
pull_curl() {
  local v2=http://127.0.0.1:$port/v2/$REPO m d s got
  m=$(curl -fsS --max-time 600 -H "Accept: $MANIFEST_TYPE" "$v2/manifests/$TAG" 2>>"$3") || return 1
  [ "sha256:$(printf '%s' "$m" | sha256sum | cut -d' ' -f1)" = "$manifest_digest" ] || {
    echo "manifest GET returned other bytes" >>"$3"
    return 1
  }
  while read -r d s; do
    got=$(curl -fsS --max-time 600 -o /dev/null -w '%{size_download}' "$v2/blobs/$d" 2>>"$3") || return 1
    [ "$got" = "$s" ] || {
      echo "blob $d: $got bytes, expected $s" >>"$3"
      return 1
    }
  done < <(jq -r '(.config, .layers[]) | "\(.digest) \(.size)"' <<<"$m")
}

# failed NAME WHAT LOG: dies with the client's last message and the mirror's first error.
failed() {
  local why
  why=$(grep -m 3 -iE '"level":"(error|warn)"|level=(error|fatal|panic)| (ERROR|WARN) |panic' \
    "$RUN/$1"-*.err 2>/dev/null | cut -c 1-400) || true
  die "$1: $2 failed: $(tail -n 2 "$3" | tr '\n' ' ')${why:+; its log says: $why}"
}

# record PHASE NAME SECS N U0 U1: appends "PHASE NAME MB/s copies bytes" to $RUN/results, for N
# pulls of the image in SECS, the upstream having served U1 - U0 blob bytes meanwhile.
record() {
  # 1 MB = 10^6 bytes.
  awk -v p="$1" -v n="$2" -v s="$3" -v c="$4" -v b="$bytes" -v u0="$5" -v u1="$6" \
    'BEGIN { u = u1 - u0; printf "%s %s %.1f %.2f %.0f\n", p, n, c * b / 1e6 / s, u / b, u }' |
    tee -a "$RUN/results" |
    awk -v r="$r" -v s="$3" '{ printf "round %s: %s %s: %s s, %s MB/s, upstream %s copies\n", r, $2, $1, s, $3, $4 }' >&2
  [ "$2" != berth ] || say "  berth_mirror_upstream_bytes_total: $(curl -fsS "http://127.0.0.1:$port/metrics" |
    awk '/^berth_mirror_upstream_bytes_total/ { print $2 }')"
}

# single NAME: a fresh mirror; a cold pull with skopeo, then (once it has settled) WARM warm
# pulls with skopeo and WARM with curl (pull_curl, which leaves the cores to the server).
single() {
  local name=$1 u0 u1 t0 t1 i dest=$RUN/pull-$1
  local phases=(cold)
  for ((i = 0; i < WARM; i++)); do phases+=(warm); done
  for ((i = 0; i < WARM; i++)); do phases+=(warm-curl); done
  start "$name" "single-$r"
  for phase in "${phases[@]}"; do
    sync # so that writeback of the previous step does not land in this one
    u0=$(up_bytes)
    t0=$(now)
    if [ "$phase" = warm-curl ]; then
      pull_curl "$name" "$phase" "$dest.log" || failed "$name" "$phase pull" "$dest.log"
    else
      pull "$name" "$phase" "$dest" || failed "$name" "$phase pull" "$dest.log"
    fi
    t1=$(now)
    settle "$name"
    u1=$(up_bytes)
    rm -rf "$dest"
    record "$phase" "$name" "$(elapsed "$t0" "$t1")" 1 "$u0" "$u1"
  done
  stop
}

# many NAME CLIENT: a fresh mirror; CLIENTS cold pulls at once with CLIENT: skopeo, each into a
# layout of its own, or curl (pull_curl).
many() {
  local name=$1 client=$2 u0 u1 t0 t1 i out=$RUN/pull-$1-$2
  local pids=()
  start "$name" "many-$client-$r"
  sync
  u0=$(up_bytes)
  t0=$(now)
  for ((i = 1; i <= CLIENTS; i++)); do
    if [ "$client" = skopeo ]; then
      pull "$name" cold "$out-$i" &
    else
      pull_curl "$name" cold "$out-$i.log" &
    fi
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || failed "$name" "concurrent pull $((i + 1)) ($client)" "$out-$((i + 1)).log"
  done
  t1=$(now)
  settle "$name"
  u1=$(up_bytes)
  for ((i = 1; i <= CLIENTS; i++)); do rm -rf "$out-$i"; done
  record "cold$CLIENTS-$client" "$name" "$(elapsed "$t0" "$t1")" "$CLIENTS" "$u0" "$u1"
  stop
}

for ((r = 1; r <= RUNS; r++)); do
  for name in berth distribution; do
    single "$name"
    for client in $MANY; do many "$name" "$client"; done
  done
done

# The fastest round of each phase and mirror; upstream copies: the most of any round.
echo
where="at $UPSTREAM_RATE (tc tbf on a veth pair)"
[ "$UPSTREAM_RATE" != none ] || where="on 127.0.0.1"
awk -v c="$CLIENTS" -v b="$bytes" -v many="$MANY" -v where="$where" '
  { k = $1 SUBSEP $2
    if (!(k in best) || $3 > best[k]) best[k] = $3
    if (!(k in copies) || $5 > raw[k]) { copies[k] = $4; raw[k] = $5 } }
  END {
    printf "mirror of a berth upstream %s, %.2f GB image; skopeo copy unless named\n", where, b / 1e9
    printf "%-26s%12s%12s%8s%16s%16s\n", "phase", "berth MB/s", "distr. MB/s", "ratio",
      "berth upstream", "distr. upstream"
    n = split("cold warm warm-curl", phases, " ")
    m = split(many, clients, " ")
    for (i = 1; i <= m; i++) phases[++n] = "cold" c "-" clients[i]
    for (i = 1; i <= n; i++) {
      p = phases[i]
      label = p == "cold" ? "cold pull" : p == "warm" ? "warm pull" : p == "warm-curl" ? "warm pull, curl" : \
        c " cold at once, " substr(p, length("cold" c) + 2)
      printf "%-26s%12.1f%12.1f%7.2fx%15.2fx%15.2fx\n", label, best[p, "berth"], best[p, "distribution"],
        best[p, "berth"] / best[p, "distribution"], copies[p, "berth"], copies[p, "distribution"]
    }
    print "(MB/s: image bytes x pulls / wall time, 1 MB = 10^6 bytes; upstream: blob bytes the upstream served, in copies of the image)"
    w = best["warm", "berth"] / best["warm", "distribution"]
    printf "target: warm pull (skopeo) >= distribution'"'"'s: %.2fx  %s\n", w, (w >= 1 ? "PASS" : "FAIL")
    w = best["warm-curl", "berth"] / best["warm-curl", "distribution"]
    printf "target: warm pull (curl) >= distribution'"'"'s: %.2fx  %s\n", w, (w >= 1 ? "PASS" : "FAIL")
    for (i = 1; i <= m; i++) {
      p = "cold" c "-" clients[i]
      r = best[p, "berth"] / best[p, "distribution"]
      u = raw[p, "berth"]
      printf "target: %d cold pulls at once (%s) >= 2x distribution'"'"'s aggregate: %.2fx  %s\n", c, clients[i], r,
        (r >= 2 ? "PASS" : "FAIL")
      printf "target: berth upstream bytes = one copy (%d cold pulls, %s): %.0f of %.0f bytes  %s\n", c, clients[i],
        u, b, (u == b ? "PASS" : "FAIL")
    }
  }' "$RUN/results"
