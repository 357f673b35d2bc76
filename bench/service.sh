#!/usr/bin/env bash
# Service smoke test: a tiny HTTP service (busybox httpd serving one file, with a HEALTHCHECK)
# started detached with a published port, waited for, fetched with curl, stopped and removed:
# berth (`run -d --wait -p`, `stop`, `rm`) beside podman 4.3 (Debian's; runc, the default CNI
# bridge, readiness by polling the port with curl every 50 ms) doing the same steps on the same
# image, in the same run, rounds interleaved. Prints one table; see bench/README.md.
#
#   bench/service.sh
#
# Environment: ROUNDS (default 20) timed rounds per tool, each round running both tools (the
# order alternates), after one untimed check round each; BENCH_DIR (default
# /var/tmp/berth-bench) holds the run directory; BERTH (default target/release/berth) is the
# binary under test (it also builds the image); BENCH_ONLY: a space-separated subset of
# "berth podman" (default both); KEEP_RUN=1 keeps the run directory (roots, logs, times.tsv).
# Needs root. The script runs itself in a private mount and network namespace (see "The
# namespaces" below): podman's bridge, iptables rules, IPAM and lock state, and berth's network
# too, go when it ends; nothing of the host's network or podman state changes.
set -euo pipefail
cd "$(dirname "$0")/.."

PROG=service.sh
BENCH_DIR=${BENCH_DIR:-/var/tmp/berth-bench}
ROUNDS=${ROUNDS:-20}
BERTH=${BERTH:-target/release/berth}
BENCH_ONLY=${BENCH_ONLY:-berth podman}
IMAGE=bench-svc:latest
POLL=0.05   # podman: seconds between two curl polls of the port
STOP_MAX=5  # the check round: a stop slower than this means SIGTERM did not stop the service
. bench/lib.sh

[ $# -eq 0 ] || die "usage: bench/service.sh (no arguments; see the environment in its header)"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
read -r -a tools <<<"$BENCH_ONLY"
[ ${#tools[@]} -gt 0 ] || die "BENCH_ONLY is empty"
for tool in "${tools[@]}"; do
  case $tool in berth | podman) ;; *) die "BENCH_ONLY: unknown tool '$tool'" ;; esac
done
measure() { [[ " ${tools[*]} " == *" $1 "* ]]; }
[ "$(id -u)" -eq 0 ] || die "run it as root: both tools run rootful containers"
[ -x "$BERTH" ] || die "$BERTH is missing: run ./setup (or set BERTH)"
BERTH=$(realpath "$BERTH")
if measure berth; then
  help=$("$BERTH" run --help 2>/dev/null || true)
  [[ $help == *--detach* && $help == *--wait* ]] && "$BERTH" stop --help >/dev/null 2>&1 ||
    die "berth has no run -d --wait: rebuild it (or BENCH_ONLY=podman)"
fi
for t in curl python3 unshare ip $(measure podman && echo podman /usr/sbin/runc conmon iptables); do
  command -v "$t" >/dev/null || die "$t is missing: run ./setup --deps (podman: apt-get install podman)"
done
[ -x /usr/lib/cni/bridge ] || ! measure podman ||
  die "/usr/lib/cni/bridge is missing: apt-get install containernetworking-plugins (podman's network)"

# --- The namespaces ----------------------------------------------------------------------------
# Everything from here on, for both tools alike, runs in a private mount and network namespace:
# its own loopback (127.0.0.1 for the published ports and curl) and whatever bridge, veths and
# iptables/nftables rules the tools make, gone with the namespace. Over the paths where rootful
# podman keeps state whatever --root says, the namespace mounts empty directories of the run:
# /var/lib/containers (c/image's blob-info cache, written by `podman load`), /var/lib/cni (the
# CNI plugins' IPAM leases and results), /run/netns (podman's named network namespaces),
# /run/runc (runc's container state), and a tmpfs on /dev/shm (libpod's lock segment,
# /dev/shm/libpod_lock, which podman shares between all its roots). /var/lib/cni and /run/netns
# are made on the host (empty) if they are missing, to be mount points.
if [ "${BERTH_SERVICE_SH_NS:-}" != 1 ]; then
  mkdir -p "$BENCH_DIR" /var/lib/containers /var/lib/cni /run/netns /run/runc
  export BERTH BENCH_DIR ROUNDS BENCH_ONLY BERTH_SERVICE_SH_NS=1
  exec unshare --mount --net --propagation private -- bash bench/service.sh
fi
ip link set lo up

RUN=$(mktemp -d "$BENCH_DIR/run-XXXXXX")
# podman refuses a runroot longer than 50 characters: a short one under /run (tmpfs-like, as
# podman's default /run/containers/storage), removed at the end.
RUNROOT=$(mktemp -d /run/berth-svc-XXXXXX)
for p in /var/lib/containers /var/lib/cni /run/netns /run/runc; do
  mkdir -p "$RUN/ns/${p//\//_}"
  mount --bind "$RUN/ns/${p//\//_}" "$p"
done
mount -t tmpfs -o mode=1777,size=64m tmpfs /dev/shm

PODMAN=(podman --root "$RUN/podman/root" --runroot "$RUNROOT" --tmpdir "$RUN/podman/tmp"
  --runtime /usr/sbin/runc --cgroup-manager cgroupfs --events-backend file
  --storage-driver overlay)
# podman run's options on this VM: runc (crun 1.8 refuses hybrid cgroups with a cgroup2
# controller, see bench/run.sh), cgroupfs (no systemd), and rlimits within the hard limits here
# (podman's default nofile and nproc are above them and its runs fail).
PODMAN_RUN=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
export BERTH_ROOT=$RUN/root
live_berth=""  # the container a round has started and not yet removed, for cleanup
live_podman=""

cleanup() {
  set +e
  [ -z "$live_berth" ] || "$BERTH" rm -f "$live_berth" >/dev/null 2>&1
  [ -z "$live_podman" ] || "${PODMAN[@]}" rm -f "$live_podman" >/dev/null 2>&1
  umount_under "$RUN"
  umount_under "$RUNROOT"
  rm -rf "$RUNROOT"
  if [ "${KEEP_RUN:-}" = 1 ]; then say "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- The image ---------------------------------------------------------------------------------
# busybox (fixtures/make-busybox-image) in a fresh berth root, and on it, built by berth, httpd
# serving /www/index.html ("hello") on port 8080. busybox httpd as PID 1 would ignore SIGTERM
# (PID 1 of a namespace gets no default signal actions), and `stop` would measure its 10 s
# timeout; so a shell that traps TERM runs it and exits on the signal (the kernel then kills
# httpd with the namespace). The HEALTHCHECK is written as services write it since docker 25:
# a slow interval (30 s) once up, and probes every 50 ms (podman's poll interval below) during
# the start period (--start-interval); the first probe runs one start interval after the start.
say "making the image $IMAGE in $BERTH_ROOT"
BERTH=$BERTH fixtures/make-busybox-image >"$RUN/image.log" 2>&1 ||
  die "fixtures/make-busybox-image failed (see $RUN/image.log)"
mkdir "$RUN/ctx"
cat >"$RUN/ctx/Dockerfile" <<'EOF'
FROM busybox
RUN mkdir -p /www && echo hello > /www/index.html
EXPOSE 8080
HEALTHCHECK --interval=30s --start-period=30s --start-interval=50ms --timeout=1s CMD wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1
CMD ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"]
EOF
"$BERTH" build -t "$IMAGE" --progress plain "$RUN/ctx" >>"$RUN/image.log" 2>&1 ||
  die "berth build failed (see $RUN/image.log)"
image_id=$("$BERTH" images -q --no-trunc "$IMAGE")
image_id=${image_id#sha256:}
[[ $image_id =~ ^[0-9a-f]{64}$ ]] || die "berth images -q gave '$image_id' for $IMAGE"
berth_made=1

# The same image for podman: `berth save` as a docker archive, `podman load -i`; the image IDs
# (the config's digest) must match.
if measure podman; then
  "$BERTH" save --format docker -o "$RUN/svc-docker.tar" "$IMAGE" >>"$RUN/image.log" 2>&1 ||
    die "berth save failed (see $RUN/image.log)"
  mkdir -p "$RUN/podman/tmp"
  "${PODMAN[@]}" load -i "$RUN/svc-docker.tar" >>"$RUN/image.log" 2>&1 ||
    die "podman load failed (see $RUN/image.log)"
  podman_id=$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMAGE")
  [ "$podman_id" = "$image_id" ] || die "podman stored $IMAGE as '$podman_id', berth has $image_id"
  say "podman loaded $IMAGE with berth's image ID ${image_id:0:12}"
fi

# --- One round ---------------------------------------------------------------------------------
# round_TOOL N PORT: the whole sequence, its output in $RUN/TOOL-N.log; sets the phase times
# (seconds): t_ready (run -d until ready), t_curl, t_stop, t_rm, and t_total (from the first
# command's start to the last one's end). Stamps come from $EPOCHREALTIME (no fork).
stamp() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }
fetch() {
  local got
  got=$(curl -fsS --max-time 5 "http://127.0.0.1:$1/") || return 1
  [ "$got" = hello ] || { echo "curl printed '$got', expected hello"; return 1; }
}
phases() {
  t_ready=$(stamp "$1" "$2")
  t_curl=$(stamp "$2" "$3")
  t_stop=$(stamp "$3" "$4")
  t_rm=$(stamp "$4" "$5")
  t_total=$(stamp "$1" "$5")
}

round_berth() {
  local n=$1 port=$2 log=$RUN/berth-$1.log a b c d e
  live_berth=svc-$n
  a=$EPOCHREALTIME
  "$BERTH" run -d --wait -p "127.0.0.1:$port:8080" --name "svc-$n" "$IMAGE" >>"$log" 2>&1 ||
    die "berth run -d --wait failed in round $n (see $log)"
  b=$EPOCHREALTIME
  fetch "$port" >>"$log" 2>&1 || die "berth round $n: curl 127.0.0.1:$port failed (see $log)"
  c=$EPOCHREALTIME
  "$BERTH" stop "svc-$n" >>"$log" 2>&1 || die "berth stop failed in round $n (see $log)"
  d=$EPOCHREALTIME
  "$BERTH" rm "svc-$n" >>"$log" 2>&1 || die "berth rm failed in round $n (see $log)"
  e=$EPOCHREALTIME
  live_berth=""
  phases "$a" "$b" "$c" "$d" "$e"
}

# podman 4.3 runs HEALTHCHECKs from systemd timers only; with no systemd (this VM, most CI
# containers) the status stays "starting", so readiness is what CI scripts do with it: curl the
# published port every 50 ms until it answers (at most 30 s).
round_podman() {
  local n=$1 port=$2 log=$RUN/podman-$1.log a b c d e i
  live_podman=svc-$n
  a=$EPOCHREALTIME
  "${PODMAN[@]}" run -d "${PODMAN_RUN[@]}" -p "127.0.0.1:$port:8080" --name "svc-$n" "$IMAGE" \
    >>"$log" 2>&1 || die "podman run -d failed in round $n (see $log)"
  for ((i = 0; ; i++)); do
    curl -fsS --max-time 1 -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break
    [ "$i" -lt 600 ] || die "podman round $n: 127.0.0.1:$port not ready after 30 s (see $log)"
    sleep "$POLL"
  done
  b=$EPOCHREALTIME
  fetch "$port" >>"$log" 2>&1 || die "podman round $n: curl 127.0.0.1:$port failed (see $log)"
  c=$EPOCHREALTIME
  "${PODMAN[@]}" stop "svc-$n" >>"$log" 2>&1 || die "podman stop failed in round $n (see $log)"
  d=$EPOCHREALTIME
  "${PODMAN[@]}" rm "svc-$n" >>"$log" 2>&1 || die "podman rm failed in round $n (see $log)"
  e=$EPOCHREALTIME
  live_podman=""
  phases "$a" "$b" "$c" "$d" "$e"
}

# --- The rounds --------------------------------------------------------------------------------
# Round 0 (untimed) checks each tool once and warms it (berth's snapshot, podman's storage): the
# service answers and `stop` returns well within its 10 s timeout, so SIGTERM stopped it. Then
# ROUNDS rounds of both tools, in turn, berth first in odd rounds and podman first in even ones,
# each on a free port of its own.
started="$(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for tool in "${tools[@]}"; do
  "round_$tool" 0 "$(free_port)"
  awk -v s="$t_stop" -v m="$STOP_MAX" 'BEGIN { exit !(s < m) }' ||
    die "$tool stop took $t_stop s: the service did not exit on SIGTERM (see $RUN/$tool-0.log)"
  say "$tool check round: total $t_total s (ready $t_ready, curl $t_curl, stop $t_stop, rm $t_rm)"
done

say "$ROUNDS rounds of ${tools[*]}"
printf 'tool\tround\tready\tcurl\tstop\trm\ttotal\n' >"$RUN/times.tsv"
for ((r = 1; r <= ROUNDS; r++)); do
  order=("${tools[@]}")
  if ((r % 2 == 0)) && [ ${#tools[@]} = 2 ]; then order=("${tools[1]}" "${tools[0]}"); fi
  for tool in "${order[@]}"; do
    "round_$tool" "$r" "$(free_port)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$r" "$t_ready" "$t_curl" "$t_stop" "$t_rm" \
      "$t_total" >>"$RUN/times.tsv"
  done
  say "round $r: $(awk -F'\t' -v r="$r" '$2 == r { printf "%s %.0f ms  ", $1, $7 * 1000 }' "$RUN/times.tsv")"
done

# --- The table ---------------------------------------------------------------------------------
podman_v=$(podman --version | awk '{ print $3 }')
runc_v=$(/usr/sbin/runc --version | awk 'NR == 1 { sub(/\+.*/, "", $3); print $3 }')
echo
python3 - "$RUN/times.tsv" "podman $podman_v" "runc $runc_v" "$started" "$ROUNDS" <<'PY'
import csv, statistics, sys

path, podman, runc, started, rounds = sys.argv[1:]
rows = {}
for r in csv.DictReader(open(path), delimiter="\t"):
    rows.setdefault(r["tool"], []).append({k: float(v) for k, v in r.items() if k not in ("tool", "round")})
labels = {"berth": "berth", "podman": f"{podman} ({runc})"}
ms = lambda xs: statistics.median(xs) * 1e3

print(f"service round, {rounds} rounds ({started})")
print(f"{'':<26}{'ready':>8}{'curl':>7}{'stop':>7}{'rm':>7}{'total':>8}{'total':>8}")
print(f"{'(ms)':<26}{'median':>8}{'median':>7}{'median':>7}{'median':>7}{'median':>8}{'min':>8}")
median = {}
for tool in ("berth", "podman"):
    if tool not in rows:
        continue
    t = rows[tool]
    col = lambda k: [x[k] for x in t]
    median[tool] = ms(col("total"))
    print(f"{labels[tool]:<26}{ms(col('ready')):>8.1f}{ms(col('curl')):>7.1f}{ms(col('stop')):>7.1f}"
          f"{ms(col('rm')):>7.1f}{median[tool]:>8.1f}{min(col('total')) * 1e3:>8.1f}")
print("ready: run -d until ready (berth: --wait on the HEALTHCHECK; podman: curl polls every 50 ms)")
if len(median) == 2:
    ratio = median["berth"] / median["podman"]
    print(f"berth/podman: median total {ratio:.2f}x")
    print(f"target: berth total <= 0.5x podman's: {'yes' if ratio <= 0.5 else 'NO'}")
else:
    print("berth/podman: n/a (one tool measured)")
PY
