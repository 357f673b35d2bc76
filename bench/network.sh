#!/usr/bin/env bash
# Services on a user-defined network, the CI pattern: a network is made, a service (busybox
# httpd) started detached on it, a client container on the same network finds it by name and
# fetches a page, another client looks its name up 20 times, then the service and the network
# are removed. berth (`network create`, `run -d --network`, its resolver at 127.0.0.11) beside
# Debian's docker.io 20.10 (a private dockerd, its embedded DNS) and podman 4.3 (CNI with the
# dnsname plugin, a dnsmasq per network), the same steps on the same image, rounds interleaved.
# Prints one table; see bench/README.md.
#
#   bench/network.sh
#
# Environment: ROUNDS (default 10) timed rounds, each running every tool once (the order
# rotates), after one untimed check round per tool; BENCH_DIR (default /var/tmp/berth-bench)
# holds the run directory; BERTH (default target/release/berth) is the binary under test (it
# also makes the image); BENCH_ONLY: a space-separated subset of "berth docker podman" (default
# all three; podman is left out, with a note, when the CNI dnsname plugin is missing);
# DOCKER_IPTABLES=0 runs dockerd as bench/lib.sh's dockerd_start does (--iptables=false
# --ip-masq=false) instead of with docker's default iptables rules (see "docker" below);
# KEEP_RUN=1 keeps the run directory (roots, logs, times.tsv).
# Needs root. The script runs itself in a private mount and network namespace, with a tmpfs on
# /run: bridges, veths, nftables/iptables rules, dockerd, its containerd, podman's dnsmasq, and
# every tool's state under /run go when it ends; nothing of the host's network changes.
set -euo pipefail
cd "$(dirname "$0")/.."

PROG=network.sh
BENCH_DIR=${BENCH_DIR:-/var/tmp/berth-bench}
ROUNDS=${ROUNDS:-10}
BERTH=${BERTH:-target/release/berth}
DOCKER_IPTABLES=${DOCKER_IPTABLES:-1}
IMAGE=busybox:latest
NET=benchnet
LOOKUPS=20     # name lookups in step 4's client
POLL=0.05      # seconds between two attempts of the first fetch
FETCH_MAX=30   # seconds the first fetch may take, attempts included
PAGE_LINE='root:x:0:0:root:/root:/bin/sh' # the first line of the page: the image's /etc/passwd
. bench/lib.sh

[ $# -eq 0 ] || die "usage: bench/network.sh (no arguments; see the environment in its header)"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
[[ $DOCKER_IPTABLES =~ ^[01]$ ]] || die "DOCKER_IPTABLES must be 0 or 1"
[ "$(id -u)" -eq 0 ] || die "run it as root: every tool runs rootful containers and bridges"
only_set=${BENCH_ONLY+set}
BENCH_ONLY=${BENCH_ONLY:-berth docker podman}
read -r -a tools <<<"$BENCH_ONLY"
[ ${#tools[@]} -gt 0 ] || die "BENCH_ONLY is empty"
for tool in "${tools[@]}"; do
  case $tool in berth | docker | podman) ;; *) die "BENCH_ONLY: unknown tool '$tool'" ;; esac
done
measure() { [[ " ${tools[*]} " == *" $1 "* ]]; }
# podman 4.3 with CNI resolves container names only with the dnsname plugin (Debian's
# golang-github-containernetworking-plugin-dnsname, with dnsmasq-base); without it, every
# lookup of `db` fails.
if measure podman && [ ! -x /usr/lib/cni/dnsname ]; then
  msg="/usr/lib/cni/dnsname is missing: podman cannot resolve names on a user network"
  msg+=" (apt-get install golang-github-containernetworking-plugin-dnsname)"
  [ -z "$only_set" ] || die "$msg"
  say "note: $msg; leaving podman out"
  read -r -a tools <<<"${BENCH_ONLY/podman/}"
fi
[ -x "$BERTH" ] || die "$BERTH is missing: run ./setup (or set BERTH)"
BERTH=$(realpath "$BERTH")
"$BERTH" network create --help >/dev/null 2>&1 && [[ $("$BERTH" run --help 2>/dev/null) == *--network-alias* ]] ||
  die "$BERTH has no user-defined networks (network create, run --network NAME): rebuild it"
for t in python3 unshare ip \
  $(measure docker && echo dockerd iptables) \
  $(measure podman && echo podman /usr/sbin/runc conmon iptables dnsmasq); do
  command -v "$t" >/dev/null || die "$t is missing: run ./setup --deps"
done
! measure docker || [ -x /usr/bin/docker ] || die "/usr/bin/docker is missing: run ./setup --deps (docker.io)"
[ -x /usr/lib/cni/bridge ] || ! measure podman ||
  die "/usr/lib/cni/bridge is missing: apt-get install containernetworking-plugins (podman's network)"

# --- The namespaces ----------------------------------------------------------------------------
# Everything from here on, for all tools alike, runs in a private mount and network namespace:
# its own loopback, and whatever bridges, veths and nftables/iptables rules the tools make, gone
# with the namespace. A tmpfs on /run takes what the tools keep there whatever their roots say:
# berth's network leases and locks (/run/berth/ipam-*, one directory per network namespace),
# dockerd's /run/docker, podman's named network namespaces (/run/netns), runc's state
# (/run/runc), the dnsname plugin's dnsmasq configuration and pid file
# (/run/containers/cni/dnsname), iptables' lock; and it hides a system containerd's socket, so
# dockerd starts its own. For podman, empty directories of the run are mounted over
# /var/lib/containers (c/image's blob-info cache, written by `podman load`) and /var/lib/cni (the
# CNI plugins' IPAM leases), and a tmpfs on /dev/shm (libpod's lock segment); both directories
# are made on the host (empty) if they are missing, to be mount points. Its network
# configurations go to a directory of the run (--network-config-dir), not /etc/cni/net.d.
if [ "${BERTH_NETWORK_SH_NS:-}" != 1 ]; then
  mkdir -p "$BENCH_DIR"
  ! measure podman || mkdir -p /var/lib/containers /var/lib/cni
  export BERTH BENCH_DIR ROUNDS DOCKER_IPTABLES BENCH_ONLY="${tools[*]}" BERTH_NETWORK_SH_NS=1
  exec unshare --mount --net --propagation private -- bash bench/network.sh
fi
ip link set lo up
mount -t tmpfs -o mode=0755,size=64m tmpfs /run

RUN=$(mktemp -d "$BENCH_DIR/run-XXXXXX")
export BERTH_ROOT=$RUN/root
ready=() # the tools set up, for cleanup

# The options of `run` and of `rm -f`: podman's rlimits within this VM's hard limits (its
# defaults are above them and its runs fail, see bench/service.sh), and `rm -f -t 0`: podman
# 4.3's `rm -f` sends the stop signal first and waits 10 s before SIGKILL (httpd as PID 1
# ignores SIGTERM), where docker's and berth's `rm -f` kill at once.
run_opts() { RO=(); [ "$1" != podman ] || RO=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024); }
rm_opts() { RMO=(); [ "$1" != podman ] || RMO=(-t 0); }

cleanup() {
  set +e
  local tool ids p
  for tool in "${ready[@]}"; do
    ids=$(cli "$tool" ps -aq 2>/dev/null)
    rm_opts "$tool"
    # shellcheck disable=SC2086 # one ID per word
    [ -z "$ids" ] || cli "$tool" rm -f "${RMO[@]}" $ids >/dev/null 2>&1
    cli "$tool" network rm "$NET" >/dev/null 2>&1
  done
  dockerd_stop
  # dnsmasq of the dnsname plugin, if a network of podman's was not removed.
  for p in /run/containers/cni/dnsname/*/pidfile; do
    [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null
  done
  # Whatever still runs in this network namespace was started by this run.
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" != $$ ] && [ "$p" != "$BASHPID" ] && [[ /proc/$p/ns/net -ef /proc/$$/ns/net ]] || continue
    say "cleanup: killing $p ($(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-80)), left in the namespace"
    kill -9 "$p" 2>/dev/null
  done
  umount_under "$RUN"
  if [ "${KEEP_RUN:-}" = 1 ]; then say "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- The image and the tools -------------------------------------------------------------------
# busybox (fixtures/make-busybox-image) in a fresh berth root; docker and podman load it from
# `berth save --format docker` and must report berth's image ID (the config's digest). The
# service is `httpd -f -p 8080 -h /etc` (the image's /etc/passwd is the page).
say "making the image $IMAGE in $BERTH_ROOT"
BERTH=$BERTH fixtures/make-busybox-image "$IMAGE" >"$RUN/image.log" 2>&1 ||
  die "fixtures/make-busybox-image failed (see $RUN/image.log)"
image_id=$("$BERTH" images -q --no-trunc "$IMAGE")
image_id=${image_id#sha256:}
[[ $image_id =~ ^[0-9a-f]{64}$ ]] || die "berth images -q gave '$image_id' for $IMAGE"
measure berth && ready+=(berth)
if measure docker || measure podman; then
  "$BERTH" save --format docker -o "$RUN/busybox-docker.tar" "$IMAGE" >>"$RUN/image.log" 2>&1 ||
    die "berth save failed (see $RUN/image.log)"
fi

# docker: a private dockerd (bench/lib.sh's dockerd_start: socket, data root, exec root with its
# own containerd, pid file and key all under the run directory). With DOCKER_IPTABLES=1 (the
# default) it keeps docker's default iptables and IP masquerading: `network create` then
# programs NAT and isolation rules for the network's bridge, as berth's programs an nftables
# table, and as dockerd does on a CI runner; the private network namespace makes that safe for
# the host. --bridge=none in both cases: the default bridge (docker0) is not used here, as
# berth's berth0 is not. The embedded DNS works either way: libnetwork listens on 127.0.0.11 at
# two random ports inside the container's network namespace and DNATs port 53 to them with
# iptables rules it adds in that namespace (chains DOCKER_OUTPUT and DOCKER_POSTROUTING), which
# --iptables=false does not turn off.
dockerd_start_net() {
  dockerd_launch "$1"
}
if measure docker; then
  say "starting a private dockerd (iptables: $([ "$DOCKER_IPTABLES" = 1 ] && echo on || echo off))"
  if [ "$DOCKER_IPTABLES" = 1 ]; then dockerd_start_net "$RUN/dockerd"; else dockerd_start "$RUN/dockerd"; fi
  ready+=(docker)
  dockerd_load "$RUN/busybox-docker.tar"
  docker_id=$("${DOCKER[@]}" image inspect --format '{{.Id}}' "$IMAGE")
  [ "$docker_id" = "sha256:$image_id" ] || die "docker stored $IMAGE as '$docker_id', berth has $image_id"
fi

# podman: a fresh store, runc (crun 1.8 refuses this VM's hybrid cgroups, see bench/run.sh),
# cgroupfs (no systemd), file events, networks configured in the run directory. Its runroot is
# short (podman refuses one longer than 50 characters), on the namespace's /run.
if measure podman; then
  mkdir -p "$RUN/podman/net.d"
  podman_private "$RUN" --network-config-dir "$RUN/podman/net.d"
  ready+=(podman)
  "${PODMAN[@]}" load -i "$RUN/busybox-docker.tar" >>"$RUN/image.log" 2>&1 ||
    die "podman load failed (see $RUN/image.log)"
  podman_id=$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMAGE")
  [ "$podman_id" = "$image_id" ] || die "podman stored $IMAGE as '$podman_id', berth has $image_id"
fi
say "${tools[*]}: image ID ${image_id:0:12}"

# --- One round ---------------------------------------------------------------------------------
# round TOOL N: the five steps, their output in $RUN/TOOL-N.log; sets the step times (seconds,
# from $EPOCHREALTIME: no fork) t_create, t_run, t_fetch (the first fetch, attempts included),
# t_lookups, t_rm, t_netrm, t_total (first command's start to last one's end), attempts, and
# per_lookup (ms, from the client's own clock: busybox ts stamps a line before and after the
# lookups). The checks of what the steps printed run after the last step, untimed. Then, also
# untimed, a baseline for the lookups: a client on network none runs /bin/busybox true as many
# times, and exec_ms is its ms per run, the cost of starting a process there, which each
# nslookup pays too.
LOOKUP_SH="{ echo start; for i in \$(seq $LOOKUPS); do nslookup db >/dev/null || echo FAIL; done; echo end; } | ts %.s"
EXEC_SH="{ echo start; for i in \$(seq $LOOKUPS); do /bin/busybox true; done; echo end; } | ts %.s"
# stamped_ms FILE N: milliseconds per iteration between the stamped lines start and end of FILE;
# fails if a line says FAIL or either is missing.
stamped_ms() {
  awk -v n="$2" '$2 == "start" { a = $1 } $2 == "end" { b = $1 } $2 == "FAIL" { bad = 1 }
    END { if (bad || a == "" || b == "") exit 1; printf "%.3f", (b - a) * 1000 / n }' "$1"
}
stamp() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }

round() {
  local tool=$1 n=$2 log=$RUN/$1-$2.log a b c d e f g line deadline
  run_opts "$tool"
  rm_opts "$tool"
  a=$EPOCHREALTIME
  cli "$tool" network create "$NET" >>"$log" 2>&1 || die "$tool network create failed in round $n (see $log)"
  b=$EPOCHREALTIME
  cli "$tool" run -d "${RO[@]}" --network "$NET" --name db "$IMAGE" httpd -f -p 8080 -h /etc >>"$log" 2>&1 ||
    die "$tool run -d db failed in round $n (see $log)"
  c=$EPOCHREALTIME
  deadline=$((${c%.*} + FETCH_MAX))
  attempts=0
  while :; do
    attempts=$((attempts + 1))
    cli "$tool" run --rm "${RO[@]}" --network "$NET" "$IMAGE" wget -q -O - http://db:8080/passwd \
      >"$RUN/page" 2>>"$log" && break
    [ "${EPOCHREALTIME%.*}" -lt "$deadline" ] ||
      die "$tool round $n: no page from http://db:8080/ after $attempts attempts in $FETCH_MAX s (see $log)"
    sleep "$POLL"
  done
  d=$EPOCHREALTIME
  cli "$tool" run --rm "${RO[@]}" --network "$NET" "$IMAGE" sh -c "$LOOKUP_SH" >"$RUN/lookups" 2>>"$log" ||
    die "$tool round $n: the lookup client failed (see $log)"
  e=$EPOCHREALTIME
  cli "$tool" rm -f "${RMO[@]}" db >>"$log" 2>&1 || die "$tool rm -f db failed in round $n (see $log)"
  f=$EPOCHREALTIME
  cli "$tool" network rm "$NET" >>"$log" 2>&1 || die "$tool network rm failed in round $n (see $log)"
  g=$EPOCHREALTIME
  line=""
  read -r line <"$RUN/page" || true
  [ "$line" = "$PAGE_LINE" ] || die "$tool round $n: the page began with '$line', expected '$PAGE_LINE'"
  per_lookup=$(stamped_ms "$RUN/lookups" "$LOOKUPS") || {
    cat "$RUN/lookups" >>"$log"
    die "$tool round $n: a lookup of db failed in the client (see $log)"
  }
  # The network's bridge must be gone (none other is made: docker runs with --bridge=none).
  [ -z "$(ip -o link show type bridge)" ] ||
    die "$tool round $n: a bridge is left after network rm: $(ip -o link show type bridge | cut -d: -f2 | paste -sd,)"
  cli "$tool" run --rm "${RO[@]}" --network none "$IMAGE" sh -c "$EXEC_SH" >"$RUN/execs" 2>>"$log" ||
    die "$tool round $n: the baseline client failed (see $log)"
  exec_ms=$(stamped_ms "$RUN/execs" "$LOOKUPS") || die "$tool round $n: the baseline client printed no stamps (see $log)"
  t_create=$(stamp "$a" "$b")
  t_run=$(stamp "$b" "$c")
  t_fetch=$(stamp "$c" "$d")
  t_lookups=$(stamp "$d" "$e")
  t_rm=$(stamp "$e" "$f")
  t_netrm=$(stamp "$f" "$g")
  t_total=$(stamp "$a" "$g")
}

# check TOOL: the check round's extra checks, on a network and service of their own: `db`
# resolves to the address the tool reports for it, and the network is gone after `network rm`.
check() {
  local tool=$1 log=$RUN/$1-check.log ip out
  run_opts "$tool"
  rm_opts "$tool"
  cli "$tool" network create "$NET" >>"$log" 2>&1 || die "$tool network create failed (see $log)"
  cli "$tool" run -d "${RO[@]}" --network "$NET" --name db "$IMAGE" httpd -f -p 8080 -h /etc >>"$log" 2>&1 ||
    die "$tool run -d db failed (see $log)"
  ip=$(cli "$tool" inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' db 2>>"$log")
  [[ $ip =~ ^[0-9.]+$ ]] || die "$tool inspect gave '$ip' as db's address (see $log)"
  out=$(cli "$tool" run --rm "${RO[@]}" --network "$NET" "$IMAGE" nslookup db 2>>"$log") ||
    die "$tool: nslookup db failed in a client (see $log): $out"
  [[ $out == *"Address: $ip"* ]] || die "$tool: nslookup db did not give db's address $ip: $out"
  cli "$tool" rm -f "${RMO[@]}" db >>"$log" 2>&1 || die "$tool rm -f db failed (see $log)"
  cli "$tool" network rm "$NET" >>"$log" 2>&1 || die "$tool network rm failed (see $log)"
  ! cli "$tool" network inspect "$NET" >>"$log" 2>&1 || die "$tool network inspect $NET still works after network rm"
}

# --- The rounds --------------------------------------------------------------------------------
# Round 0 (untimed) checks each tool and warms it (berth's snapshot, docker's and podman's
# storage); then ROUNDS rounds, every tool once in each, the order rotating by one tool a round.
started="$(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for tool in "${tools[@]}"; do
  check "$tool"
  round "$tool" 0
  say "$tool check round: total $t_total s (create $t_create, run -d $t_run, fetch $t_fetch in $attempts," \
    "lookups $t_lookups at $per_lookup ms each, rm $t_rm, network rm $t_netrm; exec $exec_ms ms)"
done

say "$ROUNDS rounds of ${tools[*]}"
printf 'tool\tround\tcreate\trun\tfetch\tattempts\tlookups\tper_lookup_ms\texec_ms\trm\tnetrm\ttotal\n' >"$RUN/times.tsv"
for ((r = 1; r <= ROUNDS; r++)); do
  k=$(((r - 1) % ${#tools[@]}))
  order=("${tools[@]:k}" "${tools[@]:0:k}")
  for tool in "${order[@]}"; do
    round "$tool" "$r"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$r" "$t_create" "$t_run" \
      "$t_fetch" "$attempts" "$t_lookups" "$per_lookup" "$exec_ms" "$t_rm" "$t_netrm" "$t_total" >>"$RUN/times.tsv"
  done
  say "round $r: $(awk -F'\t' -v r="$r" '$2 == r { printf "%s %.0f ms  ", $1, $12 * 1000 }' "$RUN/times.tsv")"
done

# --- The table ---------------------------------------------------------------------------------
versions=("berth $("$BERTH" --version | awk '{ print $2 }')")
measure docker && versions+=("docker $(dockerd --version | awk '{ sub(/\+.*/, "", $3); print $3 }')" \
  "iptables $([ "$DOCKER_IPTABLES" = 1 ] && echo on || echo off)")
measure podman && versions+=("podman $(podman --version | awk '{ print $3 }')" \
  "runc $(/usr/sbin/runc --version | awk 'NR == 1 { sub(/\+.*/, "", $3); print $3 }')" \
  "dnsname $(dpkg-query -W -f '${Version}' golang-github-containernetworking-plugin-dnsname 2>/dev/null | sed 's/+.*//')")
echo
python3 - "$RUN/times.tsv" "$started" "$ROUNDS" "$LOOKUPS" "${versions[*]}" <<'PY'
import csv, statistics, sys

times, started, rounds, lookups, versions = sys.argv[1:]
rows = {}
for r in csv.DictReader(open(times), delimiter="\t"):
    rows.setdefault(r["tool"], []).append(r)
tools = [t for t in ("berth", "docker", "podman") if t in rows]

steps = [
    ("create", 1e3, "1 network create benchnet"),
    ("run", 1e3, "2 run -d --name db (httpd)"),
    ("fetch", 1e3, "3 first fetch http://db:8080/"),
    ("lookups", 1e3, f"4 client with {lookups} lookups of db"),
    ("per_lookup_ms", 1, "  per lookup, in the client"),
    ("exec_ms", 1, "  per busybox true (baseline, untimed)"),
    ("rm", 1e3, "5 rm -f db"),
    ("netrm", 1e3, "  network rm benchnet"),
    ("total", 1e3, "total"),
]
med = {t: {k: statistics.median(float(r[k]) for r in rows[t]) * f for k, f, _ in steps} for t in tools}

print(f"services on a user-defined network, {rounds} rounds ({started})")
print(f"{versions}")
head = f"{'median ms':<38}" + "".join(f"{t:>9}" for t in ("berth", "docker", "podman"))
head += f"{'berth/docker':>14}{'berth/podman':>14}"
print(head)
for k, _, label in steps:
    line = f"{label:<38}"
    for t in ("berth", "docker", "podman"):
        line += f"{med[t][k]:>9.1f}" if t in med else f"{'n/a':>9}"
    for peer in ("docker", "podman"):
        if "berth" in med and peer in med and med[peer][k] > 0:
            line += f"{med['berth'][k] / med[peer][k]:>13.2f}x"
        else:
            line += f"{'n/a':>14}"
    print(line)
print("total min: " + ", ".join(f"{t} {min(float(r['total']) for r in rows[t]) * 1e3:.1f}" for t in tools)
      + "; first fetch attempts, most in a round: "
      + ", ".join(f"{t} {max(int(r['attempts']) for r in rows[t])}" for t in tools))
if "podman" not in rows:
    print("podman: n/a (not measured)")
PY
