#!/usr/bin/env bash
# Layer creation: berth against tar piped into gzip, pigz, zstd and sha256sum, in the same run
# on the same ~1 GiB tree. Prints one table; see bench/README.md.
#
#   bench/layer.sh               peers, then berth (cargo bench -p oci --bench layer)
#   bench/layer.sh --peers-only  peers only
#
# Environment: BENCH_DIR (default /var/tmp/berth-bench) holds the tree, made once and reused;
# RUNS (default 1) runs each command that many times and reports the fastest.
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_DIR=${BENCH_DIR:-/var/tmp/berth-bench}
RUNS=${RUNS:-1}
TREE=$BENCH_DIR/tree
TREE_VERSION="berth layer bench tree v1" # change it whenever the generator changes

die() {
  echo "layer.sh: $*" >&2
  exit 1
}

peers_only=false
case "${1:-}" in
  "") ;;
  --peers-only) peers_only=true ;;
  *) die "usage: bench/layer.sh [--peers-only]" ;;
esac
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
for tool in /usr/bin/time gzip pigz zstd sha256sum python3; do
  command -v "$tool" >/dev/null || die "$tool is missing: run ./setup --deps"
done

# The tree: 20000 small files (0.5-16 KiB, ~150 MB) in 400 directories, and 8 large files
# (~850 MB). Contents come from a seeded RNG, so every machine gets the same bytes: pseudo-text
# (~3.5x with gzip), pseudo-machine-code (~2.5x) and one tenth random bytes (incompressible).
make_tree() {
  echo "layer.sh: making the ~1 GiB tree under $TREE (once)" >&2
  rm -rf "$TREE"
  mkdir -p "$TREE"
  python3 - "$TREE" <<'PY'
import os, random, sys
from itertools import accumulate

root = sys.argv[1]
rng = random.Random(20240601)
MiB = 1 << 20

# Pseudo-text: Zipf-weighted words make lines, Zipf-weighted lines make 32 MiB of text.
def word():
    letters = "etaoinshrdlcumwfgypbvkjxqz_"
    freq = [12, 9, 8, 7.5, 7, 6.3, 6, 6, 4.3, 4, 2.8, 2.8, 2.4, 2.4, 2.2, 2, 2, 2, 1.9, 1.5, 1, 0.8, 0.2, 0.2, 0.1, 0.1, 1]
    return "".join(rng.choices(letters, weights=freq, k=min(1 + int(rng.expovariate(0.25)), 16)))

punct = list(',.=(){};:01"#') + ["->"]
words = [word() for _ in range(5000)] + punct
word_cum = list(accumulate([1 / (i + 1) for i in range(5000)] + [0.05] * len(punct)))

def line():
    indent = " " * (4 * min(int(rng.expovariate(1.0)), 4))
    n = 1 + int(rng.expovariate(0.12))
    return indent + " ".join(rng.choices(words, cum_weights=word_cum, k=n)) + "\n"

lines = [line() for _ in range(60000)]
line_cum = list(accumulate(1 / (i + 1) ** 0.9 for i in range(len(lines))))
text = "".join(rng.choices(lines, cum_weights=line_cum, k=700_000)).encode()[: 32 * MiB]

# Pseudo-machine-code: byte-mapped text (like code), skewed random bytes (like data), zero runs.
skew = bytes(min(int(rng.expovariate(0.05)), 255) for _ in range(256))
perm = bytes(rng.sample(range(256), 256))
parts, size = [], 0
while size < 32 * MiB:
    o = rng.randrange(len(text) - 4096)
    parts += [
        text[o : o + rng.randrange(64, 4096)].translate(perm),
        rng.randbytes(rng.randrange(32, 1024)).translate(skew),
        bytes(rng.randrange(64) if rng.random() < 0.8 else rng.randrange(64, 1024)),
    ]
    size += sum(map(len, parts[-3:]))
binary = b"".join(parts)

def content(kind, n):
    """n bytes of the given kind, from a random place in its pool."""
    if kind == "random":
        return rng.randbytes(n)
    if kind == "mixed":
        kind = rng.choice(("text", "binary"))
    pool = text if kind == "text" else binary
    o = rng.randrange(len(pool) - n)
    return memoryview(pool)[o : o + n]

# Small files: 20 x 20 directories, 50 files each on average.
kinds = {"text": (".txt", ".py", ".json", ".h"), "binary": (".so", ".o", ".pyc"), "random": (".gz", ".png")}
for i in range(20000):
    kind = rng.choices(("text", "binary", "random"), weights=(70, 25, 5))[0]
    d = os.path.join(root, "small", f"d{rng.randrange(20):02}", f"d{rng.randrange(20):02}")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"f{i:05}{rng.choice(kinds[kind])}")
    with open(path, "wb") as f:
        f.write(content(kind, 512 + int(15872 * rng.random() ** 1.2)))
    if kind == "binary" and rng.random() < 0.2:
        os.chmod(path, 0o755)

# Large files, in MiB: logs, databases, libraries, disk images, and one incompressible blob.
large = [("app.log", "text", 120), ("data.db", "mixed", 130), ("libbig.so", "binary", 110),
         ("model.bin", "random", 90), ("bundle.js", "text", 95), ("disk.img", "binary", 100),
         ("archive.tar", "mixed", 85), ("index.dat", "binary", 80)]
os.makedirs(os.path.join(root, "large"))
for name, kind, mib in large:
    with open(os.path.join(root, "large", name), "wb") as f:
        for _ in range(mib):
            f.write(content(kind, MiB))
PY
  sync # so that writeback does not run during the first measurement
  echo "$TREE_VERSION" >"$TREE/.complete"
}

[ "$(cat "$TREE/.complete" 2>/dev/null)" = "$TREE_VERSION" ] || make_tree

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Reading the whole tar stream once gives its size and warms the page cache for everyone.
bytes=$(tar -C "$TREE" -cf - . | wc -c)
echo "layer.sh: $TREE, tar stream $bytes bytes, fastest of $RUNS run(s)" >&2

# peer LABEL PIPELINE: times PIPELINE (run in the tree, output discarded) and prints one row.
# /usr/bin/time measures the command it starts, here the `bash -c` running the whole pipeline:
# its peak RSS is that of the largest process in the pipeline, not their sum. Good enough.
peer() {
  local label=$1 pipeline=$2 best="" best_kib="" secs kib
  for ((run = 0; run < RUNS; run++)); do
    (cd "$TREE" && /usr/bin/time -f '%e %M' -o "$tmp/time" \
      bash -c "set -o pipefail; $pipeline >/dev/null")
    read -r secs kib <"$tmp/time"
    if [ -z "$best" ] || awk -v a="$secs" -v b="$best" 'BEGIN { exit !(a < b) }'; then
      best=$secs best_kib=$kib
    fi
  done
  # 1 MB = 10^6 bytes, for throughput and RSS alike.
  awk -v label="$label" -v s="$best" -v kib="$best_kib" -v bytes="$bytes" 'BEGIN {
    if (s < 0.01) s = 0.01
    printf "%-30s%7.2f%9.1f%13.1f\n", label, s, bytes / 1e6 / s, kib * 1024 / 1e6
  }'
}

printf '%-30s%7s%9s%13s\n' tool seconds MB/s "peak RSS MB"
# GNU tar reads no file content when it writes straight to /dev/null, hence the `| cat`.
peer "tar (no compression)" "tar -cf - . | cat"
peer "tar | sha256sum" "tar -cf - . | sha256sum"
peer "tar | gzip -6" "tar -cf - . | gzip -6"
peer "tar | pigz -6" "tar -cf - . | pigz -6"
peer "tar | zstd -3 -T0" "tar -cf - . | zstd -q -3 -T0"

# berth's rows, one per mode, in the same format.
$peers_only || cargo bench -p oci --bench layer -- "$TREE"
