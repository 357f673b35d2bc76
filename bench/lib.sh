# shellcheck shell=bash
# Shell shared by the bench scripts: messages, timing arithmetic, free ports, background servers,
# the ~1 GiB registry test image (registry.sh, client.sh), and for the build benchmarks
# (build.sh, build-real.sh) timed commands, unmounting, and a private dockerd for BuildKit.
# run.sh uses only the messages (die, say); network.sh and volume.sh share cli and podman_private.
#
# Source it from the repository root after setting PROG (the script's name, for messages) and
# BENCH_DIR. It defines functions and the image's paths only; it starts nothing by itself.

die() {
  echo "$PROG: $*" >&2
  exit 1
}
say() { echo "$PROG: $*" >&2; }

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# min A B, max A B: the smaller (larger) of two numbers; B may be empty (no value yet).
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (b == "" || a < b) ? a : b }'; }
max() { awk -v a="$1" -v b="$2" 'BEGIN { print (b == "" || a > b) ? a : b }'; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# alive PID: whether the process still runs (our own child stays a zombie, State: Z, until
# waited for).
alive() {
  [ -e "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null
}

# halt PID: stops a background child (SIGTERM, and SIGKILL if it is still there after 10 s).
halt() {
  local p=$1 i
  kill "$p" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    alive "$p" || break
    sleep 0.1
  done
  kill -9 "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}

# hwm_kib PID: the process's peak RSS so far (VmHWM), in KiB.
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
# hwm_reset PID: sets the process's VmHWM back to its current RSS (Linux >= 4.0), so that
# hwm_kib afterwards is the peak of what it did since.
hwm_reset() { echo 5 >"/proc/$1/clear_refs"; }

# await NAME PID URL LOG: waits (at most 10 s) until URL answers at all, as long as PID runs;
# dies with the tail of LOG if it does not.
await() {
  local name=$1 p=$2 url=$3 log=$4 i
  for ((i = 0; i < 100; i++)); do
    curl -sS --max-time 2 -o /dev/null "$url" 2>/dev/null && return 0
    alive "$p" || break
    sleep 0.1
  done
  tail -n 20 "$log" >&2 || true
  die "$name did not come up at $url (log: $log)"
}

# The registry test image: an OCI image layout whose index names it `bench`, with 8 layers of
# 300, 250, 200, 120, 80, 40, 20 and 10 MiB, each a gzip (level 1) tar of one file of seeded
# pseudo-random bytes (incompressible, the same on every machine), plus a config and an OCI
# manifest. Made once under $IMG and reused.
IMG=$BENCH_DIR/registry-image
IMG_VERSION="berth registry bench image v1" # change it whenever the generator changes

make_image() {
  say "making the ~1 GiB image under $IMG (once)"
  rm -rf "$IMG"
  mkdir -p "$IMG"
  python3 - "$IMG" <<'PY'
import gzip, hashlib, json, os, random, sys, tarfile

root = sys.argv[1]
blobs = os.path.join(root, "blobs", "sha256")
os.makedirs(blobs)
MiB = 1 << 20
EPOCH = 1700000000  # fixed mtimes and created dates: the same bytes on every run


class HashWriter:
    """Passes writes through to f, hashing and counting them."""

    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)

    def flush(self):
        self.f.flush()


class RandomReader:
    """n seeded pseudo-random bytes, read in chunks."""

    def __init__(self, seed, n):
        self.rng, self.left = random.Random(seed), n

    def read(self, size=-1):
        k = self.left if size < 0 else min(size, self.left)
        self.left -= k
        return self.rng.randbytes(k)


def put_blob(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


layers, diff_ids = [], []
for i, mib in enumerate([300, 250, 200, 120, 80, 40, 20, 10]):
    tmp = os.path.join(blobs, "tmp")
    with open(tmp, "wb") as f:
        gz_out = HashWriter(f)  # the blob: its digest and size
        with gzip.GzipFile(fileobj=gz_out, mode="wb", compresslevel=1, mtime=0) as gz:
            tar_out = HashWriter(gz)  # the uncompressed tar: its digest is the diff_id
            with tarfile.open(fileobj=tar_out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                info = tarfile.TarInfo(f"layer{i}.bin")
                info.size, info.mode, info.mtime = mib * MiB, 0o644, EPOCH
                tar.addfile(info, RandomReader(20261123 + i, info.size))
    digest = gz_out.h.hexdigest()
    os.rename(tmp, os.path.join(blobs, digest))
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                   "digest": "sha256:" + digest, "size": gz_out.n})
    diff_ids.append("sha256:" + tar_out.h.hexdigest())

created = "2023-11-14T22:13:20Z"
config = {
    "created": created, "architecture": "amd64", "os": "linux",
    "config": {"Cmd": ["/layer0.bin"]},
    "rootfs": {"type": "layers", "diff_ids": diff_ids},
    "history": [{"created": created, "created_by": f"berth bench layer {i}"} for i in range(len(layers))],
}
config_desc = put_blob(json.dumps(config, separators=(",", ":")).encode())
config_desc["mediaType"] = "application/vnd.oci.image.config.v1+json"
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc, "layers": layers}
manifest_desc = put_blob(json.dumps(manifest, indent=2).encode())
manifest_desc["mediaType"] = manifest["mediaType"]
manifest_desc["annotations"] = {"org.opencontainers.image.ref.name": "bench"}
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": [manifest_desc]}
with open(os.path.join(root, "index.json"), "w") as f:
    json.dump(index, f, indent=2)
with open(os.path.join(root, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
PY
  # An independent reader must accept it before it is used.
  local n
  n=$(skopeo inspect "oci:$IMG:bench" | jq '.Layers | length')
  [ "$n" = 8 ] || die "skopeo sees $n layers in $IMG, expected 8"
  sync # so that writeback does not run during the first measurement
  echo "$IMG_VERSION" >"$IMG/.complete"
}

# ensure_image: makes the image if it is missing or stale, then sets manifest_digest, the
# config's digest (config_digest, which is also the image ID) and bytes, the blob bytes a push
# or pull moves (the config and the layers).
# shellcheck disable=SC2034 # the variables are for the scripts that source this file
ensure_image() {
  [ "$(cat "$IMG/.complete" 2>/dev/null)" = "$IMG_VERSION" ] || make_image
  manifest_digest=$(jq -r '.manifests[0].digest' "$IMG/index.json")
  local manifest_file=$IMG/blobs/sha256/${manifest_digest#sha256:}
  config_digest=$(jq -r '.config.digest' "$manifest_file")
  bytes=$(jq '.config.size + ([.layers[].size] | add)' "$manifest_file")
}

# --- for the build benchmarks ------------------------------------------------------------------

# retire DIR: takes DIR out of the way without deleting it now: renamed into $RETIRED (when it
# is set; the run directory holding it is removed at the end) instead of removed. On this VM's
# ext4 (mounted without a journal), files created soon after thousands were deleted pay for
# them: the inode allocator skips every recently deleted inode (the kernel's
# recently_deleted(), 32% of the samples of a cold build), and a cold build's system time went
# from 1.1 to 3.5 s. A measured run must not follow the removal of the last runner's state.
retire() {
  [ -e "$1" ] || return 0
  if [ -n "${RETIRED:-}" ]; then
    mkdir -p "$RETIRED"
    mv "$1" "$RETIRED/$(date +%s%N)"
  else
    rm -rf "$1"
  fi
}

# umount_under DIR: unmounts whatever is mounted below DIR in this mount namespace, deepest
# first.
umount_under() {
  local m
  awk -v d="$1/" 'substr($5, 1, length(d)) == d { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" || true; done
}

# timed LABEL CMD...: runs CMD (at most 30 minutes) under /usr/bin/time after a sync; sets secs
# (elapsed seconds, from the clock around it: /usr/bin/time's own has 10 ms steps) and kib (peak
# RSS, KiB: the largest of CMD's process and of the children it waited for, such as runc, as
# /usr/bin/time -v's "Maximum resident set size"). Its output goes to $RUN/LABEL.log.
# (client.sh has its own, with a 10-minute cap.)
timed() {
  local label=$1 t0 t1
  shift
  sync # so that writeback of the previous step does not land in this one
  t0=$(now)
  timeout 1800 /usr/bin/time -o "$RUN/time" -f '%M' "$@" >>"$RUN/$label.log" 2>&1 ||
    die "$label failed: $* (see $RUN/$label.log)"
  t1=$(now)
  secs=$(elapsed "$t0" "$t1")
  kib=$(tail -n 1 "$RUN/time")
  say "$label: $secs s, $(awk -v k="$kib" 'BEGIN { printf "%.1f", k * 1024 / 1e6 }') MB"
}

# A private dockerd, for BuildKit: Debian's docker.io 20.10 runs BuildKit inside the daemon
# (DOCKER_BUILDKIT=1). dockerd_start DIR starts one with everything it keeps under DIR: its
# socket, data root (images, BuildKit's cache, overlay2), exec root (with the containerd that
# dockerd starts and manages itself, its state under DIR too, because no system containerd
# listens on /run/containerd/containerd.sock: if one did, dockerd would use it, and
# dockerd_start says so), pid file, trust key (deprecated-key-path, else /etc/docker/key.json)
# and an empty daemon.json of its own (the host's /etc/docker/daemon.json is not read). No iptables, no bridge: builds use --network host
# or none. The only thing outside DIR is /run/docker/plugins, an empty directory that dockerd
# always makes; dockerd_stop removes it if dockerd_start made it. Sets DOCKERD_PID and DOCKER
# (the client command: the 20.10 client by its path, since a newer one on PATH wants buildx,
# with a config directory of its own and BuildKit on).
DOCKERD_PID=""
DOCKERD_DIR=""
dockerd_made_run=0
dockerd_start() {
  dockerd_launch "$1" --iptables=false --ip6tables=false --ip-masq=false
}
# dockerd_launch DIR [FLAG...]: dockerd_start's daemon with FLAG... instead of its three
# iptables flags (network.sh runs it with docker's own rules, in a namespace of its own).
dockerd_launch() {
  local dir=$1 i
  shift
  command -v dockerd >/dev/null || die "dockerd is missing: run ./setup --deps (docker.io)"
  [ -x /usr/bin/docker ] || die "/usr/bin/docker is missing: run ./setup --deps (docker.io)"
  DOCKERD_DIR=$dir
  mkdir -p "$dir/client"
  printf '{ "deprecated-key-path": "%s" }\n' "$dir/key.json" >"$dir/daemon.json"
  [ -d /run/docker ] || dockerd_made_run=1
  [ ! -S /run/containerd/containerd.sock ] ||
    say "note: a system containerd runs; dockerd will use it (namespace moby) instead of its own"
  dockerd --config-file "$dir/daemon.json" "$@" \
    --bridge=none --host "unix://$dir/docker.sock" --data-root "$dir/data" \
    --exec-root "$dir/exec" --pidfile "$dir/docker.pid" --storage-driver overlay2 \
    >"$dir/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  DOCKER=(env "DOCKER_CONFIG=$dir/client" DOCKER_BUILDKIT=1 /usr/bin/docker -H "unix://$dir/docker.sock")
  for ((i = 0; i < 300; i++)); do
    "${DOCKER[@]}" version >/dev/null 2>&1 && return 0
    alive "$DOCKERD_PID" || break
    sleep 0.1
  done
  tail -n 20 "$dir/dockerd.log" >&2 || true
  die "dockerd did not come up on $dir/docker.sock (log: $dir/dockerd.log)"
}
# dockerd_stop: stops the dockerd of dockerd_start (SIGTERM, which stops its containerd too;
# SIGKILL after 30 s, and to its containerd if that is still there 10 s later), unmounts what is
# left under its directory. Safe to call twice.
dockerd_stop() {
  [ -n "$DOCKERD_PID" ] || return 0
  local i cpid
  cpid=$(pgrep -P "$DOCKERD_PID" -x containerd || true) # the containerd dockerd started
  kill "$DOCKERD_PID" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do
    alive "$DOCKERD_PID" || break
    sleep 0.1
  done
  kill -9 "$DOCKERD_PID" 2>/dev/null || true
  wait "$DOCKERD_PID" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    [ -n "$cpid" ] && alive "$cpid" || break
    sleep 0.1
  done
  if [ -n "$cpid" ] && alive "$cpid" && grep -qF "$DOCKERD_DIR" "/proc/$cpid/cmdline" 2>/dev/null; then
    kill -9 "$cpid" 2>/dev/null || true
  fi
  umount_under "$DOCKERD_DIR"
  if [ "$dockerd_made_run" = 1 ]; then
    rmdir /run/docker/plugins /run/docker 2>/dev/null || true
  fi
  DOCKERD_PID=""
}
# dockerd_load ARCHIVE: docker load of a docker-archive (as `berth save` writes it).
dockerd_load() {
  "${DOCKER[@]}" load -i "$1" >>"$DOCKERD_DIR/load.log" 2>&1 ||
    die "docker load $1 failed (see $DOCKERD_DIR/load.log)"
}
# dockerd_reset_cache IMAGE: BuildKit's cache emptied and IMAGE removed, for a cold build with
# the base images still loaded.
dockerd_reset_cache() {
  "${DOCKER[@]}" rmi -f "$1" >/dev/null 2>&1 || true
  "${DOCKER[@]}" builder prune -af >/dev/null ||
    die "docker builder prune failed"
}

# buildah, isolated: buildah_init DIR gives every buildah command its own storage (--root,
# --runroot, overlay driver), short-name alias cache, temporary directory under DIR, and runs it
# in a private mount namespace: its overlay mounts never outlive it, and the host's blob-info
# cache (/var/lib/containers/cache, which c/image writes on every commit and has no option for)
# is hidden behind an empty directory of DIR's. Sets BAH (DIR) and BAH_CMD; `bah ARGS` runs it.
# The RUN steps' runc keeps its state under DIR too (--runtime-flag root=DIR/runc, in
# BAH_RUNTIME).
buildah_init() {
  BAH=$1
  local ns=()
  if [ -d /var/lib/containers/cache ]; then
    # shellcheck disable=SC2016 # expanded by the inner sh, not here
    ns=(unshare --mount --propagation private --
      sh -c 'mount --bind "$0" /var/lib/containers/cache && exec "$@"' "$BAH/blob-info-cache")
  else
    say "note: buildah will create its blob-info cache in /var/lib/containers/cache"
  fi
  BAH_CMD=(env "TMPDIR=$BAH/tmp" "${ns[@]}" buildah --root "$BAH/root" --runroot "$BAH/runroot"
    --storage-driver overlay --short-name-alias-conf "$BAH/short-name-aliases.conf")
  BAH_RUNTIME=(--isolation oci --runtime /usr/sbin/runc --runtime-flag "root=$BAH/runc")
}
bah() { "${BAH_CMD[@]}" "$@"; }
# buildah_reset: removes buildah's containers, mounts and storage.
buildah_reset() {
  [ ! -d "$BAH/root" ] || bah rm -a >/dev/null
  umount_under "$BAH"
  retire "$BAH"
}
# buildah_fresh ARCHIVE NAME ID: empty storage with the OCI archive ARCHIVE pulled into it; NAME
# (as buildah names it, docker.io/library/...) must then have the image ID ID.
buildah_fresh() {
  buildah_reset
  mkdir -p "$BAH"/{tmp,blob-info-cache}
  bah pull -q "oci-archive:$1" >>"$BAH.setup.log" 2>&1 ||
    die "buildah pull oci-archive:$1 failed (see $BAH.setup.log)"
  local id
  id=$(bah images -q --no-trunc "$2")
  [ "$id" = "$3" ] || die "buildah stored $2 as '$id', expected $3"
}

# cli TOOL ARGS...: berth ($BERTH), docker (${DOCKER[@]}) or podman (${PODMAN[@]}) run with ARGS,
# each on the private root, socket or store its script set up (network.sh, volume.sh).
cli() {
  local tool=$1
  shift
  case $tool in
    berth) "$BERTH" "$@" ;;
    docker) "${DOCKER[@]}" "$@" ;;
    podman) "${PODMAN[@]}" "$@" ;;
  esac
}

# podman_private RUN [FLAG...]: sets PODMAN, a podman with its root and tmpdir under RUN, its
# runroot on the (private) /run, runc (crun 1.8 refuses this VM's hybrid cgroups, see run.sh),
# cgroupfs (no systemd) and file events, FLAG... added; and gives it, in the caller's private
# mount namespace, empty directories of RUN over /var/lib/containers (c/image's blob-info
# cache) and /var/lib/cni (the CNI plugins' leases), made on the host when missing, and a
# tmpfs on /dev/shm (libpod's lock segment). Its runroot is short: podman refuses one over 50
# characters. (service.sh sets up its own: it also hides /run/netns and /run/runc.)
podman_private() {
  local run=$1 p
  shift
  for p in /var/lib/containers /var/lib/cni; do
    mkdir -p "$p" "$run/ns/${p//\//_}"
    mount --bind "$run/ns/${p//\//_}" "$p"
  done
  mount -t tmpfs -o mode=1777,size=64m tmpfs /dev/shm
  mkdir -p "$run/podman/tmp" /run/bench-podman
  PODMAN=(podman --root "$run/podman/root" --runroot /run/bench-podman --tmpdir "$run/podman/tmp" "$@"
    --runtime /usr/sbin/runc --cgroup-manager cgroupfs --events-backend file --storage-driver overlay)
}
