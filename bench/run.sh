#!/usr/bin/env bash
# Container start-to-exit latency: `berth run --network none busybox /bin/true` (the bundle's
# network: its own namespace, loopback only; the bridge is measured by bench/service.sh) beside `runc run` and
# `crun run` on an OCI runtime bundle of the same busybox image, in the same run, timed by
# hyperfine without a shell. Prints one table; see bench/README.md.
#
#   bench/run.sh
#
# Environment: BENCH_DIR (default /var/tmp/berth-bench) holds the run directory; RUNS (default
# 60) timed runs per tool, taken in ROUNDS (default 6) rounds that each time all three tools in
# turn, after 5 warm-up runs each, so that a slow spell of the machine falls on every tool
# alike; BERTH (default target/release/berth) is the binary under test; KEEP_RUN=1 keeps the
# run directory (berth's root, the bundle, the JSON).
# Needs root (runc and crun run rootful; so does berth run).
set -euo pipefail
cd "$(dirname "$0")/.."

PROG=run.sh
BENCH_DIR=${BENCH_DIR:-/var/tmp/berth-bench}
RUNS=${RUNS:-60}
ROUNDS=${ROUNDS:-6}
BERTH=${BERTH:-target/release/berth}
WARMUP=5
. bench/lib.sh

[ $# -eq 0 ] || die "usage: bench/run.sh (no arguments; see the environment in its header)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
[ "$RUNS" -ge "$ROUNDS" ] || die "RUNS ($RUNS) must be at least ROUNDS ($ROUNDS)"
[ "$(id -u)" -eq 0 ] || die "run it as root: runc, crun and berth run start real containers"
[ -x "$BERTH" ] || die "$BERTH is missing: run ./setup (or set BERTH)"
BERTH=$(realpath "$BERTH")
for tool in hyperfine runc crun umoci unshare python3; do
  command -v "$tool" >/dev/null || die "$tool is missing: run ./setup --deps"
done

mkdir -p "$BENCH_DIR"
RUN=$(mktemp -d "$BENCH_DIR/run-XXXXXX")
cleanup() {
  runc delete -f bench-runc >/dev/null 2>&1 || true
  crun delete -f bench-crun >/dev/null 2>&1 || true
  crun delete -f bench-crun-sc >/dev/null 2>&1 || true
  if [ "${KEEP_RUN:-}" = 1 ]; then say "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT

# The image, in a fresh berth root; then the same image as an OCI runtime bundle for runc and
# crun: berth's OCI archive, unpacked by umoci (rootfs/ plus its default config.json).
export BERTH_ROOT=$RUN/root
BUNDLE=$RUN/bundle
say "making the busybox image in $BERTH_ROOT and the bundle $BUNDLE"
BERTH=$BERTH fixtures/make-busybox-image >"$RUN/image.log" 2>&1 ||
  die "fixtures/make-busybox-image failed (see $RUN/image.log)"
"$BERTH" save --format oci -o "$RUN/busybox.tar" busybox >>"$RUN/image.log" 2>&1 ||
  die "berth save failed (see $RUN/image.log)"
mkdir "$RUN/layout"
tar -xf "$RUN/busybox.tar" -C "$RUN/layout"
umoci unpack --image "$RUN/layout:latest" "$BUNDLE" >>"$RUN/image.log" 2>&1 ||
  die "umoci unpack failed (see $RUN/image.log)"

# set_args ARG...: the bundle's process becomes ARG... with no terminal. The rest of umoci's
# config stays: PID, network, IPC, UTS and mount namespaces (berth makes the same five),
# /proc, /dev, /sys and the usual masked and read-only paths, three capabilities,
# no_new_privs, no seccomp filter.
set_args() {
  python3 - "$BUNDLE/config.json" "$@" <<'PY'
import json, sys

path, args = sys.argv[1], sys.argv[2:]
with open(path) as f:
    config = json.load(f)
config["process"]["args"] = args
config["process"]["terminal"] = False
with open(path, "w") as f:
    json.dump(config, f, indent=2)
PY
}

# crun 1.8 refuses every container on hybrid cgroups (v1 plus a cgroup2 mount at
# /sys/fs/cgroup/unified) as soon as that cgroup2 tree has a controller, before it looks at
# --cgroup-manager; on this VM it has hugetlb. So when that is the case, every measured command
# (berth's and runc's too, for equal conditions) runs in a private mount namespace in which an
# empty file is bound over /sys/fs/cgroup/unified/cgroup.controllers. Nothing outside changes.
CONTROLLERS=/sys/fs/cgroup/unified/cgroup.controllers
in_ns=()
if [ -n "$(cat "$CONTROLLERS" 2>/dev/null)" ]; then
  say "hybrid cgroups with controllers on cgroup2 ($(paste -sd' ' "$CONTROLLERS")): hiding them from crun"
  : >"$RUN/no-controllers"
  # shellcheck disable=SC2016 # expanded by the inner sh, not here
  in_ns=(unshare --mount --propagation private --
    sh -c 'mount --bind "$0" "$1" && shift && exec "$@"' "$RUN/no-controllers" "$CONTROLLERS")
fi

# A second bundle, the same plus docker's default seccomp profile (berth's default.json) as
# docker hands it to a runtime: resolved for the bundle's capabilities, this machine's
# architectures and kernel, into the runtime spec's `linux.seccomp`. crun and runc compile it
# with libseccomp on every start; berth keeps its compiled filter. Issue 16 item 6 compares
# berth (whose filter is always on) with crun loading one too; crun without one is shown beside.
BUNDLE_SC=$RUN/bundle-seccomp
add_seccomp() {
  python3 - "$1/config.json" runner/src/security/default.json "$(uname -r)" <<'PY'
import json, sys

path, profile_path, release = sys.argv[1:4]
config = json.load(open(path))
profile = json.load(open(profile_path))
caps = set(config["process"]["capabilities"]["bounding"])
arch = "amd64"
kernel = tuple(int(x) for x in release.split("-")[0].split(".")[:2])
archs = next(a for a in profile["archMap"] if a["architecture"] == "SCMP_ARCH_X86_64")


def applies(rule):
    inc, exc = rule.get("includes", {}), rule.get("excludes", {})
    if inc.get("caps") and not set(inc["caps"]) <= caps:
        return False
    if inc.get("arches") and arch not in inc["arches"]:
        return False
    if inc.get("minKernel") and kernel < tuple(int(x) for x in inc["minKernel"].split(".")[:2]):
        return False
    if set(exc.get("caps", [])) & caps or arch in exc.get("arches", []):
        return False
    return True


rules = []
for r in profile["syscalls"]:
    if applies(r):
        rule = {k: r[k] for k in ("names", "action", "args", "errnoRet") if k in r}
        rules.append(rule)
config["linux"]["seccomp"] = {
    "defaultAction": profile["defaultAction"],
    "defaultErrnoRet": profile.get("defaultErrnoRet", 1),
    "architectures": [archs["architecture"]] + archs["subArchitectures"],
    "syscalls": rules,
}
json.dump(config, open(path, "w"), indent=2)
PY
}

# Checks: each tool must really run the process in the container: /bin/false exits 1.
set_args /bin/false
check() {
  local name=$1 rc=0
  shift
  "${in_ns[@]}" "$@" >"$RUN/check-$name.log" 2>&1 || rc=$?
  [ "$rc" = 1 ] || die "$name: $* exited $rc, expected 1 (see $RUN/check-$name.log)"
}
check berth "$BERTH" run --network none busybox /bin/false
check runc runc run -b "$BUNDLE" bench-runc
check crun crun --cgroup-manager=disabled run -b "$BUNDLE" bench-crun
set_args /bin/true
cp -a "$BUNDLE" "$BUNDLE_SC"
add_seccomp "$BUNDLE_SC" || die "could not add the seccomp profile to $BUNDLE_SC/config.json"
# The filter must really be on: crun's process reports seccomp mode 2.
(cd "$BUNDLE_SC" && python3 -c '
import json; c = json.load(open("config.json")); c["process"]["args"] = ["grep", "Seccomp:", "/proc/self/status"]
json.dump(c, open("config.json", "w"))')
sc=$("${in_ns[@]}" crun --cgroup-manager=disabled run -b "$BUNDLE_SC" bench-crun-sc 2>&1 || true)
[[ $sc == *2* ]] || die "crun with the seccomp bundle did not report a filter: $sc"
(cd "$BUNDLE_SC" && python3 -c '
import json; c = json.load(open("config.json")); c["process"]["args"] = ["/bin/true"]
json.dump(c, open("config.json", "w"))')

# Warm berth's snapshot cache (the first run unpacks the layer), then time all three in one
# hyperfine run. runc and crun delete a container when `run` returns; the --prepare step (not
# timed) removes one left over anyway, so the fixed IDs never clash. berth's is a no-op, for
# the same rhythm.
say "warming berth's snapshot cache"
"${in_ns[@]}" "$BERTH" run --network none busybox /bin/true >"$RUN/warm.log" 2>&1 ||
  die "berth run busybox /bin/true failed (see $RUN/warm.log)"

say "hyperfine: $ROUNDS rounds of $WARMUP warm-up and $((RUNS / ROUNDS)) timed runs per tool"
for round in $(seq "$ROUNDS"); do
  "${in_ns[@]}" hyperfine -N --style none --warmup "$WARMUP" --runs "$((RUNS / ROUNDS))" \
    --export-json "$RUN/hyperfine-$round.json" \
    --command-name berth --prepare true "$BERTH run --network none busybox /bin/true" \
    --command-name runc --prepare "runc delete -f bench-runc" "runc run -b $BUNDLE_SC bench-runc" \
    --command-name crun --prepare "crun delete -f bench-crun" \
    "crun --cgroup-manager=disabled run -b $BUNDLE_SC bench-crun" \
    --command-name crun-nofilter --prepare "crun delete -f bench-crun" \
    "crun --cgroup-manager=disabled run -b $BUNDLE bench-crun" >&2 ||
    die "hyperfine failed (run it again with KEEP_RUN=1 and see $RUN)"
done

runc_v=$(runc --version | awk 'NR == 1 { sub(/\+.*/, "", $3); print $3 }')
crun_v=$(crun --version | awk 'NR == 1 { print $3 }')
echo
python3 - "runc $runc_v" "crun $crun_v" "$RUN"/hyperfine-*.json <<'PY'
import json, statistics, sys

results = {}
for path in sys.argv[3:]:
    for r in json.load(open(path))["results"]:
        results.setdefault(r["command"], []).extend(r["times"])
labels = {"berth": "berth", "runc": sys.argv[1] + " (filter)", "crun": sys.argv[2] + " (filter)",
          "crun-nofilter": sys.argv[2] + " (no filter)"}


def p95(times):
    """The 95th percentile, interpolated between the two nearest ranks."""
    s = sorted(times)
    k = (len(s) - 1) * 0.95
    i = int(k)
    return s[i] if i + 1 == len(s) else s[i] + (s[i + 1] - s[i]) * (k - i)


print(f"{'start-to-exit /bin/true':<24}{'median ms':>10}{'mean ms':>9}{'min ms':>8}{'p95 ms':>8}")
median = {}
for name, label in labels.items():
    t = results[name]
    median[name] = statistics.median(t) * 1e3
    print(f"{label:<24}{median[name]:>10.2f}{statistics.mean(t) * 1e3:>9.2f}"
          f"{min(t) * 1e3:>8.2f}{p95(t) * 1e3:>8.2f}")
print(f"berth/crun: median {median['berth'] / median['crun']:.2f}x "
      f"(berth/runc {median['berth'] / median['runc']:.2f}x; berth/crun without a filter "
      f"{median['berth'] / median['crun-nofilter']:.2f}x), {len(results['berth'])} runs each "
      f"in {len(sys.argv) - 3} rounds; every tool but the last loads docker's default filter")
ok = median["berth"] <= median["crun"]
print(f"targets: berth's median at most crun's, both with the filter: {'yes' if ok else 'NO'}; "
      f"under 15 ms with a warm snapshot cache: {'yes' if median['berth'] < 15 else 'NO'}")
PY
