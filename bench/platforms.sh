#!/usr/bin/env bash
# Multi-platform build: `berth build --platform HOST,linux/arm64` beside `buildah bud --layers
# --platform HOST,linux/arm64 --manifest`, in the same run, on the same Dockerfile of a few RUN
# steps (the arm64 ones through QEMU user emulation, binfmt_misc): a cold build and a no-change
# rebuild. Elapsed time and peak RSS (/usr/bin/time). Prints one table; see bench/README.md.
#
#   bench/platforms.sh
#
# Environment: BENCH_DIR (default /var/tmp/berth-bench) holds the run directory; RUNS (default
# 2) builds each scenario that many times per tool and reports the fastest; BERTH (default
# target/release/berth) is copied into the run directory first; KEEP_RUN=1 keeps the run
# directory; LOOP (default 20000) is how many rounds of shell arithmetic one RUN step does (about
# 0.1 s natively per 20000 and ten times that emulated: a larger LOOP measures QEMU more and the
# builders less). Needs root, qemu-user-static with its binfmt_misc handlers, and the arm64
# busybox-static package that `./setup --deps` downloads.
set -euo pipefail
cd "$(dirname "$0")/.."

PROG=platforms.sh
BENCH_DIR=${BENCH_DIR:-/var/tmp/berth-bench}
RUNS=${RUNS:-2}
LOOP=${LOOP:-20000}
BERTH=${BERTH:-target/release/berth}
. bench/lib.sh

[ $# -eq 0 ] || die "usage: bench/platforms.sh (no arguments; see the environment in its header)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
[[ $LOOP =~ ^[0-9]+$ ]] || die "LOOP must be a number"
[ "$(id -u)" -eq 0 ] || die "run it as root: both builders run containers for the RUN steps"
[ -x "$BERTH" ] || die "$BERTH is missing: run ./setup (or set BERTH)"
for tool in buildah /usr/sbin/runc /usr/bin/time unshare qemu-aarch64-static; do
  command -v "$tool" >/dev/null || die "$tool is missing: run ./setup --deps"
done
HOST_ARCH=$(dpkg --print-architecture)
[ "$HOST_ARCH" != arm64 ] || die "the host is arm64: this bench builds the host's platform and arm64"
PLATFORMS=linux/$HOST_ARCH,linux/arm64

mkdir -p "$BENCH_DIR"
RUN=$(mktemp -d "$BENCH_DIR/run-XXXXXX")
say "berth: copy of $BERTH ($(stat -c %y "$BERTH" | cut -d. -f1)) in $RUN/berth"
cp "$BERTH" "$RUN/berth"
BERTH=$RUN/berth
buildah_init "$RUN/buildah"
BROOT=$RUN/berth-root
cleanup() {
  [ ! -d "$BAH/root" ] || bah rm -a >/dev/null 2>&1 || true
  umount_under "$RUN"
  if [ "${KEEP_RUN:-}" = 1 ]; then say "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The bases: busybox of the host's architecture and of arm64 (fixtures/make-busybox-image, from
# Debian's busybox-static), as busybox:ARCH; saved as OCI archives for buildah.
say "making the busybox base images"
for arch in "$HOST_ARCH" arm64; do
  flags=()
  [ "$arch" = "$HOST_ARCH" ] || flags=(--arch "$arch")
  BERTH_ROOT=$RUN/base BERTH=$BERTH fixtures/make-busybox-image "${flags[@]}" "busybox:$arch" >>"$RUN/base.log" 2>&1 ||
    die "fixtures/make-busybox-image ${flags[*]} failed (see $RUN/base.log)"
  BERTH_ROOT=$RUN/base "$BERTH" save --format oci -o "$RUN/busybox-$arch.tar" "busybox:$arch" >>"$RUN/base.log" 2>&1 ||
    die "berth save busybox:$arch failed (see $RUN/base.log)"
done

# The Dockerfile: per platform, four RUN steps (one of them LOOP rounds of shell arithmetic)
# and a COPY of a small context.
CTX=$RUN/ctx
mkdir -p "$CTX/src"
for i in $(seq 1 200); do printf 'file %d\n' "$i" >"$CTX/src/f$i.txt"; done
cat >"$CTX/Dockerfile" <<EOF
ARG TARGETARCH
FROM busybox:\$TARGETARCH
RUN uname -m > /arch
RUN i=0; s=0; while [ \$i -lt $LOOP ]; do s=\$((s + i % 7)); i=\$((i + 1)); done; echo \$s > /sum
COPY src /src
RUN cat /src/* | sha256sum > /src.sum
RUN sha256sum /bin/busybox > /busybox.sum
CMD ["cat", "/arch"]
EOF
EXPECT_HOST=$(uname -m)

fresh_berth() {
  umount_under "$BROOT"
  rm -rf "$BROOT"
  for arch in "$HOST_ARCH" arm64; do
    BERTH_ROOT=$BROOT "$BERTH" load -q -i "$RUN/busybox-$arch.tar" >>"$RUN/berth-setup.log" 2>&1 ||
      die "berth load busybox:$arch failed (see $RUN/berth-setup.log)"
  done
}
build_berth() { cmd=(env "BERTH_ROOT=$BROOT" "$BERTH" build --progress plain --platform "$PLATFORMS" -t app "$CTX"); }
check_berth() {
  [ "$(BERTH_ROOT=$BROOT "$BERTH" run --rm --platform "linux/$HOST_ARCH" app)" = "$EXPECT_HOST" ] &&
    [ "$(BERTH_ROOT=$BROOT "$BERTH" run --rm --platform linux/arm64 app)" = aarch64 ] ||
    die "berth's app does not print each platform's machine"
}

BAH_RUN=("${BAH_RUNTIME[@]}" --network none)
fresh_buildah() {
  buildah_reset
  mkdir -p "$BAH"/{tmp,blob-info-cache}
  for arch in "$HOST_ARCH" arm64; do
    bah pull -q "oci-archive:$RUN/busybox-$arch.tar" >>"$BAH.setup.log" 2>&1 ||
      die "buildah pull busybox:$arch failed (see $BAH.setup.log)"
  done
}
build_buildah() {
  cmd=("${BAH_CMD[@]}" bud --layers --pull=never "${BAH_RUN[@]}" --platform "$PLATFORMS" --manifest app "$CTX")
}
check_buildah() {
  local n
  n=$(bah manifest inspect app | grep -c '"architecture"')
  [ "$n" -ge 2 ] || die "buildah's manifest list app has $n images, expected 2"
}

declare -A best peak
record() {
  best[$1]=$(min "$secs" "${best[$1]:-}")
  peak[$1]=$(max "$kib" "${peak[$1]:-}")
}
say "platforms $PLATFORMS; best of $RUNS run(s)"
for tool in berth buildah; do
  for ((r = 1; r <= RUNS; r++)); do
    "fresh_$tool"
    "build_$tool"
    timed "$tool-cold-$r" "${cmd[@]}"
    record "${tool}_cold"
    "check_$tool"
  done
  for ((r = 1; r <= RUNS; r++)); do
    "build_$tool"
    timed "$tool-nochange-$r" "${cmd[@]}"
    record "${tool}_nochange"
    "check_$tool"
  done
done

buildah_v=$(buildah --version | awk '{ print $3 }')
{
  echo
  echo "two-platform build ($PLATFORMS; arm64 through qemu-user-static; LOOP=$LOOP), best of $RUNS"
  printf '%-12s%10s%10s%12s%12s%9s\n' build "berth s" "berth MB" "buildah s" "buildah MB" ratio
  for s in cold nochange; do
    awk -v s="$s" -v a="${best[berth_$s]}" -v am="${peak[berth_$s]}" -v b="${best[buildah_$s]}" -v bm="${peak[buildah_$s]}" \
      'BEGIN { printf "%-12s%10.2f%10.1f%12.2f%12.1f%8.2fx\n", s, a, am * 1024 / 1e6, b, bm * 1024 / 1e6, a / b }'
  done
  echo "ratio: berth's seconds / buildah's ($buildah_v bud --layers --manifest, runc)"
  awk -v c="${best[berth_cold]}" -v cb="${best[buildah_cold]}" -v n="${best[berth_nochange]}" -v nb="${best[buildah_nochange]}" \
    'BEGIN { printf "target: cold <= 0.5x buildah: %.2fx %s\n", c / cb, (c <= 0.5 * cb ? "PASS" : "FAIL");
             printf "target: no-change <= 0.1x buildah: %.2fx %s\n", n / nb, (n <= 0.1 * nb ? "PASS" : "FAIL") }'
}
