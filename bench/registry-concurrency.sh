#!/usr/bin/env bash
# Registry under concurrency: berth's registry beside CNCF distribution 2.8 (Debian's
# docker-registry), both on the filesystem driver, in the same run. 16 clients at once each
# pull the same 256 MiB blob; then 16 clients at once each push a 64 MiB blob of their own
# monolithically (POST, then one PUT with the whole body and the digest), and then do so again
# with 16 other blobs: the first push is a fresh process's first concurrent uploads, the
# second a server in service. Prints the aggregate MB/s of each phase and the server's CPU
# seconds per GB moved (utime + stime of the server process from /proc/PID/stat, read just
# before and just after the phase). See bench/README.md.
#
#   bench/registry-concurrency.sh
#
# Environment: BENCH_DIR (default /var/tmp/berth-bench) holds the blobs, made once and reused;
# RUNS (default 3) rounds, each on a freshly started server per registry, the registries taking
# turns; the fastest round of each phase counts. BERTH (default target/release/berth) is the
# binary under test; CLIENTS (default 16) clients per phase; KEEP_RUN=1 keeps the run directory
# (server logs, roots, curl output).
set -euo pipefail
cd "$(dirname "$0")/.."

PROG=registry-concurrency.sh
BENCH_DIR=${BENCH_DIR:-/var/tmp/berth-bench}
RUNS=${RUNS:-3}
CLIENTS=${CLIENTS:-16}
BERTH=${BERTH:-target/release/berth}
DISTRIBUTION=/usr/bin/docker-registry
MiB=$((1 << 20))
PULL_MIB=256
PUSH_MIB=64
. bench/lib.sh

[ $# -eq 0 ] || die "usage: bench/registry-concurrency.sh (no arguments; see the environment in its header)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
[[ $CLIENTS =~ ^[1-9][0-9]*$ ]] && [ "$CLIENTS" -le 64 ] || die "CLIENTS must be an integer from 1 to 64"
[ -x "$BERTH" ] || die "$BERTH is missing: run ./setup (or set BERTH)"
for tool in "$DISTRIBUTION" curl python3 sha256sum getconf; do
  command -v "$tool" >/dev/null || die "$tool is missing: run ./setup --deps"
done
TICKS=$(getconf CLK_TCK)

# The blobs: pull.bin (256 MiB), push-N.bin and again-N.bin (64 MiB each, one of each per
# client), seeded
# pseudo-random bytes (incompressible, the same on every machine), with their sha256 digests in
# digests.txt. Made once under $DATA and reused.
DATA=$BENCH_DIR/registry-concurrency
DATA_VERSION="berth registry concurrency blobs v2 ($CLIENTS)" # change it with the generator
make_blobs() {
  say "making the blobs under $DATA (once)"
  rm -rf "$DATA"
  mkdir -p "$DATA"
  python3 - "$DATA" "$CLIENTS" "$PULL_MIB" "$PUSH_MIB" <<'PY'
import os, random, sys

root, clients, pull_mib, push_mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
MiB = 1 << 20


def write(name, seed, mib):
    rng = random.Random(seed)
    with open(os.path.join(root, name), "wb") as f:
        for _ in range(mib // 8):
            f.write(rng.randbytes(8 * MiB))


write("pull.bin", 20261204, pull_mib)
for i in range(1, clients + 1):
    write(f"push-{i}.bin", 20261204 + i, push_mib)
    write(f"again-{i}.bin", 20261207 + 1000 * i, push_mib)
PY
  (cd "$DATA" && sha256sum pull.bin push-*.bin again-*.bin) >"$DATA/digests.txt"
  sync # so that writeback does not run during the first measurement
  echo "$DATA_VERSION" >"$DATA/.complete"
}
[ "$(cat "$DATA/.complete" 2>/dev/null)" = "$DATA_VERSION" ] || make_blobs
# digest FILE: the sha256 digest of one of the blobs, as sha256:HEX.
digest() { awk -v f="$1" '$2 == f { print "sha256:" $1 }' "$DATA/digests.txt"; }

RUN=$(mktemp -d "$BENCH_DIR/run-XXXXXX")
pid="" # the registry server running now, if any
cleanup() {
  [ -z "$pid" ] || halt "$pid"
  if [ "${KEEP_RUN:-}" = 1 ]; then say "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT

# start NAME ROUND: starts registry NAME (berth or distribution) on a fresh root and a free
# port; sets pid, port and base, and waits (at most 10 s) until /v2/ answers.
start() {
  local name=$1 root=$RUN/root-$1-$2 log=$RUN/$1-$2
  port=$(free_port)
  base=http://127.0.0.1:$port
  mkdir -p "$root"
  case $name in
    berth)
      "$BERTH" registry serve --addr "127.0.0.1:$port" --root "$root" >"$log.out" 2>"$log.err" &
      ;;
    distribution)
      # The config of registry.sh: the filesystem driver plus the in-memory blob descriptor
      # cache that Debian's and the registry:2 image's default configs turn on.
      printf '%s\n' "version: 0.1" "storage:" "  filesystem:" "    rootdirectory: $root" \
        "  cache:" "    blobdescriptor: inmemory" "http:" "  addr: 127.0.0.1:$port" >"$log.conf"
      "$DISTRIBUTION" serve "$log.conf" >"$log.out" 2>"$log.err" &
      ;;
  esac
  pid=$!
  await "$name" "$pid" "$base/v2/" "$log.err"
}

# cpu_ticks: the server's user + system CPU time so far, in clock ticks (all its threads, the
# ones that ended included). The command name in field 2 may hold spaces: fields are counted
# after its closing parenthesis (utime and stime are fields 14 and 15).
cpu_ticks() {
  local stat
  stat=$(<"/proc/$pid/stat")
  awk '{ print $12 + $13 }' <<<"${stat##*) }"
}

# push_one REPO FILE: one monolithic push: POST for a session, then PUT of the whole file with
# the digest; prints the PUT's status. Location is absolute (distribution) or a path (berth).
push_one() {
  local repo=$1 file=$2 loc sep
  loc=$(curl -fsS -X POST -D - -o /dev/null "$base/v2/$repo/blobs/uploads/" |
    awk 'tolower($1) == "location:" { sub(/\r$/, "", $2); print $2 }')
  [ -n "$loc" ] || return 1
  case $loc in /*) loc=$base$loc ;; esac
  case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
  curl -sS -o /dev/null -w '%{http_code}\n' -X PUT -H 'Expect:' \
    -H 'Content-Type: application/octet-stream' -T "$DATA/$file" "$loc${sep}digest=$(digest "$file")"
}

# phase NAME ROUND KIND: one timed phase against the running server: CLIENTS pulls of pull.bin
# (KIND pull), or CLIENTS pushes (KIND push: client i pushes push-i.bin to bench/push-i; KIND
# again: again-i.bin to bench/again-i), all started at once. Checks every result, then appends
# "KIND NAME MB/s CPU-s/GB" to $RUN/results.
phase() {
  local name=$1 round=$2 kind=$3 i c0 c1 t0 t1 bytes out=$RUN/$1-$2-$3 d
  local pids=()
  d=$(digest pull.bin)
  # The clients' files in the page cache, so that the clients do not read the disk the server
  # writes to: the phase measures the server, not the clients' reads.
  if [ "$kind" != pull ]; then cat "$DATA/$kind"-*.bin >/dev/null; fi
  sync # so that writeback of the previous step does not land in this one
  c0=$(cpu_ticks)
  t0=$(now)
  for ((i = 1; i <= CLIENTS; i++)); do
    if [ "$kind" = pull ]; then
      curl -fsS -o /dev/null -w '%{http_code} %{size_download}\n' "$base/v2/bench/pull/blobs/$d" \
        >"$out.$i" 2>&1 &
    else
      push_one "bench/$kind-$i" "$kind-$i.bin" >"$out.$i" 2>&1 &
    fi
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || die "$name: $kind client $((i + 1)) failed: $(tail -n 1 "$out.$((i + 1))")"
  done
  t1=$(now)
  c1=$(cpu_ticks)
  for ((i = 1; i <= CLIENTS; i++)); do
    if [ "$kind" = pull ]; then
      [ "$(cat "$out.$i")" = "200 $((PULL_MIB * MiB))" ] || die "$name: pull $i: $(cat "$out.$i")"
    else
      [ "$(cat "$out.$i")" = 201 ] || die "$name: push $i answered $(cat "$out.$i")"
      # The blob must be there, whole, in the client's repository.
      [ "$(curl -fsS -I "$base/v2/bench/$kind-$i/blobs/$(digest "$kind-$i.bin")" |
        awk 'tolower($1) == "content-length:" { print $2 + 0 }')" = $((PUSH_MIB * MiB)) ] ||
        die "$name: pushed blob $i is not served back at its size"
    fi
  done
  if [ "$kind" = pull ]; then bytes=$((CLIENTS * PULL_MIB * MiB)); else bytes=$((CLIENTS * PUSH_MIB * MiB)); fi
  # 1 MB = 10^6 bytes, 1 GB = 10^9 bytes.
  awk -v k="$kind" -v n="$name" -v b="$bytes" -v s="$(elapsed "$t0" "$t1")" -v c=$((c1 - c0)) \
    -v hz="$TICKS" 'BEGIN { printf "%s %s %.1f %.3f\n", k, n, b / 1e6 / s, c / hz / (b / 1e9) }' |
    tee -a "$RUN/results" | awk -v r="$round" '{ printf "round %s: %s %s: %s MB/s, %s CPU-s/GB\n", r, $2, $1, $3, $4 }' >&2
}

# round NAME ROUND: a fresh server; pull.bin pushed once (untimed) and pulled back whole once
# (untimed, its sha256 checked), then the pull phase, the push phase and the second push.
round() {
  local name=$1 r=$2 d got
  start "$name" "$r"
  d=$(digest pull.bin)
  [ "$(push_one bench/pull pull.bin)" = 201 ] || die "$name: seeding pull.bin failed"
  got=$(curl -fsS "$base/v2/bench/pull/blobs/$d" | sha256sum | cut -d' ' -f1)
  [ "sha256:$got" = "$d" ] || die "$name: GET of pull.bin returned sha256:$got"
  phase "$name" "$r" pull
  phase "$name" "$r" push
  phase "$name" "$r" again
  halt "$pid"
  pid=""
  rm -rf "$RUN/root-$name-$r"
}

say "$CLIENTS clients: pull ${PULL_MIB} MiB each (one blob), push ${PUSH_MIB} MiB each; $RUNS round(s)"
for ((r = 1; r <= RUNS; r++)); do
  round berth "$r"
  round distribution "$r"
done

# The fastest round of each phase and registry, with its CPU per GB, then the ratios.
echo
awk -v c="$CLIENTS" '
  { if (!(($1, $2) in best) || $3 > best[$1, $2]) { best[$1, $2] = $3; cpu[$1, $2] = $4 } }
  END {
    printf "%-26s%11s%10s%11s%10s%12s%10s\n", "registry, " c " clients", "pull MB/s", "CPU-s/GB",
      "push MB/s", "CPU-s/GB", "again MB/s", "CPU-s/GB"
    n = split("berth distribution", names, " ")
    for (i = 1; i <= n; i++) {
      label = names[i] == "berth" ? "berth" : "distribution 2.8"
      printf "%-26s%11.1f%10.3f%11.1f%10.3f%12.1f%10.3f\n", label, best["pull", names[i]],
        cpu["pull", names[i]], best["push", names[i]], cpu["push", names[i]], best["again", names[i]],
        cpu["again", names[i]]
    }
    split("pull push again", kinds, " ")
    printf "berth/distribution:"
    for (k = 1; k <= 3; k++) {
      printf "%s %s %.2fx at %.2fx CPU/GB", (k > 1 ? "," : ""), kinds[k], best[kinds[k], "berth"] / best[kinds[k], "distribution"],
        cpu[kinds[k], "berth"] / cpu[kinds[k], "distribution"]
    }
    printf "\n"
    print "targets: push >= 2x distribution at <= 0.3x its CPU/GB; pull >= 1.2x distribution or <= 0.5x its CPU/GB"
    print "(push: a fresh server'"'"'s first concurrent uploads; again: the same server'"'"'s next ones)"
  }' "$RUN/results"
