# shellcheck shell=bash
# Shell shared by the bench scripts that move the ~1 GiB registry test image (registry.sh,
# client.sh): messages, timing arithmetic, free ports, background servers and the image itself.
# run.sh uses only the messages (die, say).
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
