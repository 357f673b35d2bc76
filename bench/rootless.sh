#!/usr/bin/env bash
# Rootless builds: the synthetic 3-stage build of bench/build.sh (fixtures/make-build-context,
# ~200 MB) built cold and again with no change by root's berth, by berth as a plain user
# (rootless: its own user namespace, overlay with userxattr) and by buildah 1.28 as the same
# user (rootless `buildah bud --layers`, overlay storage, runc), in the same run, each on a
# fresh store holding only busybox:latest. A second table times the fallbacks the same way:
# rootless on fuse-overlayfs (berth with BERTH_SNAPSHOTTER=fuse-overlayfs, buildah with
# fuse-overlayfs as its overlay mount program) and `--isolation chroot` as root (berth on copy
# snapshots, buildah on its overlay storage). `--isolation none` is not timed: it replaces the
# root filesystem, so it runs only in a build container, and kaniko, its peer, is not packaged.
# See bench/README.md.
#
#   bench/rootless.sh
#
# Environment: BENCH_DIR (default /var/tmp/berth-bench) holds the context (made once) and the
# run directory; RUNS (default 2) builds each case that many times and reports the fastest;
# BENCH_USER (default berth-bench) is the plain user, made with a subordinate range if missing;
# BERTH (default target/release/berth) is the binary under test. Needs root (to make the user
# and run root's berth).
set -euo pipefail
cd "$(dirname "$0")/.."

PROG=rootless.sh
BENCH_DIR=${BENCH_DIR:-/var/tmp/berth-bench}
RUNS=${RUNS:-2}
BERTH=${BERTH:-target/release/berth}
BENCH_USER=${BENCH_USER:-berth-bench}
TAG=bench-app:latest
. bench/lib.sh

[ "$(id -u)" -eq 0 ] || die "run it as root: it makes the plain user and builds as root too"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
[ -x "$BERTH" ] || die "$BERTH is missing: run ./setup (or set BERTH)"
for tool in buildah runc newuidmap useradd runuser fuse-overlayfs /bin/busybox; do
  command -v "$tool" >/dev/null || die "$tool is missing: run ./setup --deps"
done

id "$BENCH_USER" >/dev/null 2>&1 || useradd -m -s /bin/sh "$BENCH_USER"
grep -q "^$BENCH_USER:" /etc/subuid || usermod --add-subuids 500000-565535 --add-subgids 500000-565535 "$BENCH_USER"
uid=$(id -u "$BENCH_USER")

RUN=$(mktemp -d "$BENCH_DIR/rootless-XXXXXX")
chmod 755 "$RUN"
cleanup() {
  pkill -f "fuse-overlayfs.*$RUN" 2>/dev/null || true
  umount_under "$RUN"
  rm -rf "$RUN" "/run/user/$uid/berth-bench"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cp "$BERTH" "$RUN/berth"
chmod 755 "$RUN/berth"
BERTH=$RUN/berth
CTX=$RUN/ctx # the user's own copy of the context
mkdir -p "$BENCH_DIR"
[ -f "$BENCH_DIR/build-context-1x/Dockerfile" ] || fixtures/make-build-context "$BENCH_DIR/build-context-1x" 1
cp -a "$BENCH_DIR/build-context-1x" "$CTX"
chown -R "$BENCH_USER:" "$CTX"
find "$CTX" -type f -exec cat {} + >/dev/null # every builder reads it from the page cache

say "making the busybox base image"
BERTH_ROOT=$RUN/base BERTH=$BERTH fixtures/make-busybox-image busybox:latest >"$RUN/base.log" 2>&1 ||
  die "fixtures/make-busybox-image failed (see $RUN/base.log)"
BERTH_ROOT=$RUN/base "$BERTH" save --format oci -o "$RUN/busybox.tar" busybox:latest >>"$RUN/base.log" 2>&1
chmod 644 "$RUN/busybox.tar"

XDG=/run/user/$uid/berth-bench # buildah's runroot wants a directory of the user's on tmpfs
mkdir -p "$XDG"
chown "$BENCH_USER:" "/run/user/$uid" "$XDG"
as_user() {
  runuser -u "$BENCH_USER" -- env -i HOME="/home/$BENCH_USER" USER="$BENCH_USER" PATH=/usr/bin:/bin:/usr/sbin:/sbin \
    XDG_RUNTIME_DIR="/run/user/$uid" "$@"
}
# Root's berth starts through runuser too, so that both pay the same start-up.
as_root() { runuser -u root -- env -i HOME=/root PATH=/usr/bin:/bin:/usr/sbin:/sbin "$@"; }
BAH=(buildah --root "$RUN/buildah/root" --runroot "$XDG/runroot" --storage-driver overlay)
BAH_FUSE=(buildah --root "$RUN/buildah-fuse/root" --runroot "$XDG/runroot-fuse" --storage-driver overlay
  --storage-opt overlay.mount_program=/usr/bin/fuse-overlayfs)
BAH_ROOT=(buildah --root "$RUN/buildah-root/root" --runroot "$RUN/buildah-root/runroot" --storage-driver overlay)
BAH_BUD=(bud -q --layers --pull=never --runtime /usr/sbin/runc -t "$TAG")

# fresh_berth STORE USER|root: an empty berth store with busybox:latest in it.
fresh_berth() {
  if [ "$2" = root ]; then
    rm -rf "$1"
    BERTH_ROOT=$1 "$BERTH" load -q -i "$RUN/busybox.tar" >/dev/null
    return
  fi
  as_user "$BERTH" --root "$1" system prune -af >/dev/null 2>&1 || true
  rm -rf "$1"
  install -d -o "$BENCH_USER" "$1"
  as_user env BERTH_ROOT="$1" "$BERTH" load -q -i "$RUN/busybox.tar" >/dev/null
}
# fresh_buildah DIR CMD...: an empty rootless buildah store under DIR with busybox:latest.
fresh_buildah() {
  local dir=$1
  shift
  [ ! -d "$dir" ] || as_user "$@" rm -a >/dev/null 2>&1 || true
  as_user buildah unshare rm -rf "$dir/root" 2>/dev/null || true
  rm -rf "$dir" "$XDG/runroot" "$XDG/runroot-fuse"
  install -d -o "$BENCH_USER" "$dir"
  as_user "$@" pull -q "oci-archive:$RUN/busybox.tar" >/dev/null
}

# fresh TOOL: an empty store of TOOL's with busybox:latest in it.
fresh() {
  case $1 in
  root) fresh_berth "$RUN/root-store" root ;;
  chroot) fresh_berth "$RUN/chroot-store" root ;;
  rootless | rootless-fuse) fresh_berth "$RUN/user-store" user ;;
  buildah) fresh_buildah "$RUN/buildah" "${BAH[@]}" ;;
  buildah-fuse) fresh_buildah "$RUN/buildah-fuse" "${BAH_FUSE[@]}" ;;
  buildah-chroot)
    rm -rf "$RUN/buildah-root"
    "${BAH_ROOT[@]}" pull -q "oci-archive:$RUN/busybox.tar" >/dev/null
    ;;
  esac
}
# build TOOL: one build of the context, timed; prints the seconds.
build() {
  local t0 t1
  t0=$(now)
  case $1 in
  root) as_root env BERTH_ROOT="$RUN/root-store" "$BERTH" build -q -t "$TAG" "$CTX" >/dev/null ;;
  chroot) as_root env BERTH_ROOT="$RUN/chroot-store" "$BERTH" build -q --isolation chroot -t "$TAG" "$CTX" >/dev/null ;;
  rootless) as_user env BERTH_ROOT="$RUN/user-store" "$BERTH" build -q -t "$TAG" "$CTX" >/dev/null ;;
  rootless-fuse)
    as_user env BERTH_ROOT="$RUN/user-store" BERTH_SNAPSHOTTER=fuse-overlayfs "$BERTH" build -q -t "$TAG" "$CTX" >/dev/null
    ;;
  buildah) as_user "${BAH[@]}" "${BAH_BUD[@]}" --isolation oci --network none "$CTX" >/dev/null ;;
  buildah-fuse) as_user "${BAH_FUSE[@]}" "${BAH_BUD[@]}" --isolation oci --network none "$CTX" >/dev/null ;;
  # chroot isolation has only the host's network.
  buildah-chroot) as_root "${BAH_ROOT[@]}" "${BAH_BUD[@]}" --isolation chroot --network host "$CTX" >/dev/null ;;
  esac || die "$1: the build failed"
  t1=$(now)
  elapsed "$t0" "$t1"
}

declare -A cold warm
for tool in root rootless buildah rootless-fuse buildah-fuse chroot buildah-chroot; do
  for _ in $(seq "$RUNS"); do
    fresh "$tool"
    cold[$tool]=$(min "$(build "$tool")" "${cold[$tool]:-}")
    warm[$tool]=$(min "$(build "$tool")" "${warm[$tool]:-}")
  done
  say "$tool: cold ${cold[$tool]} s, no-change ${warm[$tool]} s"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }
printf '\n%-10s %12s %12s %14s %18s\n' build "root berth" "rootless" "rootless/root" "rootless/buildah"
for case in cold warm; do
  declare -n t=$case
  printf '%-10s %11ss %11ss %14s %18s\n' "$([ $case = cold ] && echo cold || echo no-change)" \
    "${t[root]}" "${t[rootless]}" "$(ratio "${t[rootless]}" "${t[root]}")" "$(ratio "${t[rootless]}" "${t[buildah]}")"
  printf '%-10s %12s %12s   (buildah rootless: %ss)\n' "" "" "" "${t[buildah]}"
done
echo "targets: rootless berth <= 1.2x root berth and <= 0.5x rootless buildah"

printf '\n%-10s %-30s %12s %12s %10s\n' build fallback berth buildah /buildah
for case in cold warm; do
  declare -n t=$case
  name=$([ $case = cold ] && echo cold || echo no-change)
  printf '%-10s %-30s %11ss %11ss %10s\n' "$name" "rootless on fuse-overlayfs" "${t[rootless-fuse]}" "${t[buildah-fuse]}" \
    "$(ratio "${t[rootless-fuse]}" "${t[buildah-fuse]}")"
  printf '%-10s %-30s %11ss %11ss %10s\n' "$name" "--isolation chroot (root)" "${t[chroot]}" "${t[buildah-chroot]}" \
    "$(ratio "${t[chroot]}" "${t[buildah-chroot]}")"
done
