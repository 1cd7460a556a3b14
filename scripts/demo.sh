#!/usr/bin/env bash
# The main job: installs missing Debian packages, builds, then
#   1. starts a local 6-node k=4 m=2 fern-ec cluster (daemons talking UCX/TCP),
#   2. writes a checkpoint into it (fern-ec put),
#   3. SIGKILLs two nodes,
#   4. restores the checkpoint from the survivors and checks it bit-exact,
#   5. shows that losing a third node is a clear EIO, never wrong bytes,
# and finally the erasure-coding throughput run (ec_bench encode) with its
# same-run baselines. The legacy-program (LD_PRELOAD) version of this demo
# comes with the preload library.
#   FERN_DEMO_SIZE=256MiB scripts/demo.sh   checkpoint size (default 64MiB)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --with-legacy
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"${FERN_JOBS:-2}"

size=${FERN_DEMO_SIZE:-64MiB}
root=$(mktemp -d /dev/shm/fern-ec-demo.XXXXXX)
work=$(mktemp -d)
cli=build/bin/fern-ec
cleanup() { "$cli" local stop --root "$root" >/dev/null 2>&1 || true; rm -rf "$root" "$work"; }
trap cleanup EXIT

echo "== starting a local 6-node k=4 m=2 cluster in $root"
"$cli" local start --root "$root" --nodes 6 --k 4 --m 2 --shard-size 1MiB \
  --data-capacity 512MiB --parity-capacity 512MiB

echo "== writing a $size checkpoint"
head -c "$(numfmt --from=iec "${size%B}" 2>/dev/null || echo $((64 << 20)))" /dev/urandom > "$work/ckpt.bin"
sha_in=$(sha256sum "$work/ckpt.bin" | cut -d' ' -f1)
/usr/bin/time -f "   put took %e s" "$cli" put "$work/ckpt.bin" /ckpt/rank0.bin --root "$root" --node 0

echo "== SIGKILL nodes 1 and 4"
"$cli" local kill 1 --root "$root"
"$cli" local kill 4 --root "$root"

echo "== restoring from the 4 survivors"
/usr/bin/time -f "   get took %e s" "$cli" get /ckpt/rank0.bin "$work/restored.bin" --root "$root" --node 2
sha_out=$(sha256sum "$work/restored.bin" | cut -d' ' -f1)
echo "   written  sha256 $sha_in"
echo "   restored sha256 $sha_out"
if [[ "$sha_in" != "$sha_out" ]]; then
  echo "DEMO FAILED: restored checkpoint differs" >&2
  exit 1
fi
echo "   bit-exact after losing 2 of 6 nodes"

echo "== SIGKILL node 5 too (3 lost > m=2): the read must fail cleanly"
"$cli" local kill 5 --root "$root"
if "$cli" get /ckpt/rank0.bin "$work/should-not-exist.bin" --root "$root" --node 2; then
  echo "DEMO FAILED: a read succeeded with 3 of 6 nodes lost" >&2
  exit 1
fi
[[ ! -e "$work/should-not-exist.bin" ]] && echo "   refused with an error; no bytes written"

echo "== erasure-coding throughput (same-run baselines)"
build/bin/ec_bench encode --backend isal --k 4 --m 2 --shard-size 1MiB
build/bin/ec_bench encode --backend jerasure --technique cauchy_good --k 4 --m 2 --shard-size 1MiB
echo "DEMO OK"
