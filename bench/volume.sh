#!/usr/bin/env bash
# Volumes, the CI pattern: a database-like image whose VOLUME holds seed data (2,000 files,
# 40 MB) is run with a named volume, which each tool fills from the image on first use; a
# second container, of the plain base image, reads the volume whole (cat | md5sum); the first
# is run again on the now full volume (nothing to fill); then the containers and the volume
# are removed. berth beside Debian's docker.io 20.10 (a private dockerd) and podman 4.3, the
# same steps on the same images (berth builds them, the others load berth's save), every
# container on network none, rounds interleaved. Prints one table; see bench/README.md.
#
#   bench/volume.sh
#
# Environment: ROUNDS (default 5) timed rounds, each running every tool once (the order
# rotates), after one untimed check round per tool; BENCH_DIR (default /var/tmp/berth-bench)
# holds the run directory; BERTH (default target/release/berth) is the binary under test;
# BENCH_ONLY: a space-separated subset of "berth docker podman" (default all three);
# ON_DISK=1 keeps the tools' roots in the run directory on disk instead of a tmpfs (see below);
# KEEP_RUN=1 keeps the run directory (roots, logs, times.tsv; on disk only).
#
# The roots are on a tmpfs by default: on this VM's ext4, mounted without a journal, creating
# files within a minute of deleting as many is slow (the inode allocator skips each recently
# deleted inode: `recently_deleted` took 35% of a fill's samples), so every round's fill would
# mostly measure the previous round's `volume rm`, whichever tool made it.
# Needs root. The script runs itself in a private mount namespace with a tmpfs on /run, as
# network.sh does: dockerd, its containerd, podman's and runc's state under /run go when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

PROG=volume.sh
BENCH_DIR=${BENCH_DIR:-/var/tmp/berth-bench}
ROUNDS=${ROUNDS:-5}
BERTH=${BERTH:-target/release/berth}
BASE=busybox:latest
SEEDED=bench-seeded:latest
FILES=2000     # seed files in the image's VOLUME
FILE_KB=20     # KiB each (pseudo-random, the same every run)
. bench/lib.sh

[ $# -eq 0 ] || die "usage: bench/volume.sh (no arguments; see the environment in its header)"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
[ "$(id -u)" -eq 0 ] || die "run it as root: every tool runs rootful containers"
BENCH_ONLY=${BENCH_ONLY:-berth docker podman}
read -r -a tools <<<"$BENCH_ONLY"
[ ${#tools[@]} -gt 0 ] || die "BENCH_ONLY is empty"
for tool in "${tools[@]}"; do
  case $tool in berth | docker | podman) ;; *) die "BENCH_ONLY: unknown tool '$tool'" ;; esac
done
measure() { [[ " ${tools[*]} " == *" $1 "* ]]; }
[ -x "$BERTH" ] || die "$BERTH is missing: run ./setup (or set BERTH)"
BERTH=$(realpath "$BERTH")
"$BERTH" volume --help >/dev/null 2>&1 || die "$BERTH has no volumes (berth volume): rebuild it"
for t in python3 unshare $(measure docker && echo dockerd) $(measure podman && echo podman /usr/sbin/runc conmon); do
  command -v "$t" >/dev/null || die "$t is missing: run ./setup --deps"
done

# The private mount namespace (see network.sh for what each mount is for).
if [ "${BERTH_VOLUME_SH_NS:-}" != 1 ]; then
  mkdir -p "$BENCH_DIR"
  ! measure podman || mkdir -p /var/lib/containers /var/lib/cni
  export BERTH BENCH_DIR ROUNDS BENCH_ONLY="${tools[*]}" ON_DISK="${ON_DISK:-}" BERTH_VOLUME_SH_NS=1
  exec unshare --mount --propagation private -- bash bench/volume.sh
fi
mount -t tmpfs -o mode=0755,size=64m tmpfs /run

RUN=$(mktemp -d "$BENCH_DIR/run-XXXXXX")
[ "${ON_DISK:-}" = 1 ] || mount -t tmpfs -o mode=0700,size=4g tmpfs "$RUN"
export BERTH_ROOT=$RUN/root
ready=()

# podman's rlimits within this VM's hard limits (see bench/service.sh).
run_opts() { RO=(--network none); [ "$1" != podman ] || RO+=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024); }

cleanup() {
  set +e
  local tool ids
  for tool in "${ready[@]}"; do
    ids=$(cli "$tool" ps -aq 2>/dev/null)
    # shellcheck disable=SC2086 # one ID per word
    [ -z "$ids" ] || cli "$tool" rm -f $ids >/dev/null 2>&1
    cli "$tool" volume rm -f benchvol >/dev/null 2>&1
  done
  dockerd_stop
  umount_under "$RUN"
  if [ "${KEEP_RUN:-}" = 1 ] && [ "${ON_DISK:-}" = 1 ]; then say "kept $RUN"; else
    umount "$RUN" 2>/dev/null
    rm -rf "$RUN"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- The images --------------------------------------------------------------------------------
# busybox, and bench-seeded built on it by berth: /var/lib/seed holds FILES files of FILE_KB KiB
# of seeded pseudo-random bytes, owned by 999:999 under a 0700 directory (as a database's data
# directory is), declared a VOLUME. docker and podman load both from one `berth save --format
# docker` and must report berth's image IDs.
say "making the images in $BERTH_ROOT"
BERTH=$BERTH fixtures/make-busybox-image "$BASE" >"$RUN/image.log" 2>&1 ||
  die "fixtures/make-busybox-image failed (see $RUN/image.log)"
mkdir -p "$RUN/ctx/seed"
python3 - "$RUN/ctx/seed" "$FILES" "$FILE_KB" <<'PY'
import random, sys
d, n, kb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(20261206)
for i in range(n):
    with open(f"{d}/f{i:05d}", "wb") as f:
        f.write(r.randbytes(kb * 1024))
PY
cat >"$RUN/ctx/Dockerfile" <<EOF
FROM $BASE
COPY --chown=999:999 seed /var/lib/seed
RUN chmod 700 /var/lib/seed
VOLUME /var/lib/seed
EOF
"$BERTH" build -q -t "$SEEDED" "$RUN/ctx" >>"$RUN/image.log" 2>&1 || die "berth build failed (see $RUN/image.log)"
id_of() { "$BERTH" images -q --no-trunc "$1" | sed 's/^sha256://'; }
base_id=$(id_of "$BASE")
seeded_id=$(id_of "$SEEDED")
measure berth && ready+=(berth)
if measure docker || measure podman; then
  "$BERTH" save --format docker -o "$RUN/images.tar" "$BASE" "$SEEDED" >>"$RUN/image.log" 2>&1 ||
    die "berth save failed (see $RUN/image.log)"
fi
if measure docker; then
  say "starting a private dockerd"
  dockerd_start "$RUN/dockerd"
  ready+=(docker)
  dockerd_load "$RUN/images.tar"
  [ "$("${DOCKER[@]}" image inspect --format '{{.Id}}' "$SEEDED")" = "sha256:$seeded_id" ] ||
    die "docker stored $SEEDED under another ID than berth's $seeded_id"
fi
if measure podman; then
  podman_private "$RUN"
  ready+=(podman)
  "${PODMAN[@]}" load -i "$RUN/images.tar" >>"$RUN/image.log" 2>&1 || die "podman load failed (see $RUN/image.log)"
  [ "$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$SEEDED")" = "$seeded_id" ] ||
    die "podman stored $SEEDED under another ID than berth's $seeded_id"
fi
say "${tools[*]}: $BASE ${base_id:0:12}, $SEEDED ${seeded_id:0:12}"
expected_md5=$(cd "$RUN/ctx" && cat seed/* | md5sum | cut -d' ' -f1)

# --- One round ---------------------------------------------------------------------------------
# round TOOL N: the steps, their output in $RUN/TOOL-N.log; sets t_create (volume create),
# t_fill (the seeded image's first container on the empty volume: the volume filled, then `ls`
# of it), t_read (busybox reading every file of the volume: cat | md5sum), t_again (the seeded image on
# the full volume: nothing to fill), t_rm (rm of the three containers), t_volrm and t_total.
# Checks, untimed: the fill gave FILES files owned by 999 under a 0700 root, and the reader's
# md5 of all the files, in name order, is the host's of the same files.
FILL_SH="ls /var/lib/seed | wc -l; stat -c '%u %a' /var/lib/seed"
READ_SH="cd /data && cat seed/* | md5sum | cut -d' ' -f1"
round() {
  local tool=$1 n=$2 log=$RUN/$1-$2.log a b c d e f g out
  run_opts "$tool"
  a=$EPOCHREALTIME
  cli "$tool" volume create benchvol >>"$log" 2>&1 || die "$tool volume create failed in round $n (see $log)"
  b=$EPOCHREALTIME
  out=$(cli "$tool" run "${RO[@]}" --name fill -v benchvol:/var/lib/seed "$SEEDED" sh -c "$FILL_SH" 2>>"$log") ||
    die "$tool: the filling container failed in round $n (see $log)"
  c=$EPOCHREALTIME
  [ "$out" = "$FILES"$'\n'"999 700" ] || die "$tool round $n: the volume after the fill: '$out'"
  out=$(cli "$tool" run "${RO[@]}" --name read -v benchvol:/data/seed:ro "$BASE" sh -c "$READ_SH" 2>>"$log") ||
    die "$tool: the reading container failed in round $n (see $log)"
  d=$EPOCHREALTIME
  [ "$out" = "$expected_md5" ] || die "$tool round $n: the reader's md5 of the files is $out, the host's $expected_md5"
  cli "$tool" run "${RO[@]}" --name again -v benchvol:/var/lib/seed "$SEEDED" true >>"$log" 2>&1 ||
    die "$tool: the second container failed in round $n (see $log)"
  e=$EPOCHREALTIME
  cli "$tool" rm -v fill read again >>"$log" 2>&1 || die "$tool rm failed in round $n (see $log)"
  f=$EPOCHREALTIME
  cli "$tool" volume rm benchvol >>"$log" 2>&1 || die "$tool volume rm failed in round $n (see $log)"
  g=$EPOCHREALTIME
  t_create=$(elapsed "$a" "$b")
  t_fill=$(elapsed "$b" "$c")
  t_read=$(elapsed "$c" "$d")
  t_again=$(elapsed "$d" "$e")
  t_rm=$(elapsed "$e" "$f")
  t_volrm=$(elapsed "$f" "$g")
  t_total=$(elapsed "$a" "$g")
}

started="$(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for tool in "${tools[@]}"; do
  round "$tool" 0
  say "$tool check round: total $t_total s (create $t_create, fill $t_fill, read $t_read, again $t_again, rm $t_rm, volume rm $t_volrm)"
done
say "$ROUNDS rounds of ${tools[*]}"
printf 'tool\tround\tcreate\tfill\tread\tagain\trm\tvolrm\ttotal\n' >"$RUN/times.tsv"
for ((r = 1; r <= ROUNDS; r++)); do
  k=$(((r - 1) % ${#tools[@]}))
  order=("${tools[@]:k}" "${tools[@]:0:k}")
  for tool in "${order[@]}"; do
    sync
    round "$tool" "$r"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$r" "$t_create" "$t_fill" "$t_read" "$t_again" \
      "$t_rm" "$t_volrm" "$t_total" >>"$RUN/times.tsv"
  done
  say "round $r: $(awk -F'\t' -v r="$r" '$2 == r { printf "%s %.0f ms  ", $1, $9 * 1000 }' "$RUN/times.tsv")"
done

# --- The table ---------------------------------------------------------------------------------
versions=("berth $("$BERTH" --version | awk '{ print $2 }')")
measure docker && versions+=("docker $(dockerd --version | awk '{ sub(/\+.*/, "", $3); print $3 }')")
measure podman && versions+=("podman $(podman --version | awk '{ print $3 }')" \
  "runc $(/usr/sbin/runc --version | awk 'NR == 1 { sub(/\+.*/, "", $3); print $3 }')")
echo
python3 - "$RUN/times.tsv" "$started" "$ROUNDS" "$FILES" "$FILE_KB" "${versions[*]}" \
  "$([ "${ON_DISK:-}" = 1 ] && echo "disk ($(findmnt -no FSTYPE -T "$RUN"))" || echo tmpfs)" <<'PY'
import csv, statistics, sys

times, started, rounds, files, kb, versions, where = sys.argv[1:]
rows = {}
for r in csv.DictReader(open(times), delimiter="\t"):
    rows.setdefault(r["tool"], []).append(r)
tools = [t for t in ("berth", "docker", "podman") if t in rows]
mb = int(files) * int(kb) * 1024 / 1e6
steps = [
    ("create", "1 volume create"),
    ("fill", f"2 run, empty volume filled ({files} files, {mb:.0f} MB)"),
    ("read", "3 run busybox, cat of the volume | md5sum"),
    ("again", "4 run on the full volume (no fill)"),
    ("rm", "5 rm -v of the 3 containers"),
    ("volrm", "6 volume rm"),
    ("total", "total"),
]
med = {t: {k: statistics.median(float(r[k]) for r in rows[t]) * 1e3 for k, _ in steps} for t in tools}
print(f"volumes, {rounds} rounds ({started}), roots on {where}")
print(versions)
head = f"{'median ms':<46}" + "".join(f"{t:>9}" for t in ("berth", "docker", "podman"))
print(head + f"{'berth/docker':>14}{'berth/podman':>14}")
for k, label in steps:
    line = f"{label:<46}"
    for t in ("berth", "docker", "podman"):
        line += f"{med[t][k]:>9.1f}" if t in med else f"{'n/a':>9}"
    for peer in ("docker", "podman"):
        ok = "berth" in med and peer in med and med[peer][k] > 0
        line += f"{med['berth'][k] / med[peer][k]:>13.2f}x" if ok else f"{'n/a':>14}"
    print(line)
PY
