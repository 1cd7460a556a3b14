#!/usr/bin/env bash
# The main job: installs missing Debian packages, builds, then
#   1. starts a local 6-node k=4 m=2 fern-ec cluster (daemons talking UCX/TCP),
#   2. runs an unmodified program (Debian's python3 + numpy) that writes a
#      checkpoint to /fern/ckpt/state.npy under LD_PRELOAD (fern-ec run), and
#      the same program writing the same array to plain tmpfs for reference,
#   3. SIGKILLs two nodes,
#   4. restarts the program from the checkpoint through the preload: it loads
#      the array and checks it, and the file's SHA-256 is compared with the
#      reference,
#   5. restarts one killed node with an empty tmpfs: it rebuilds its shards,
#   6. shows that losing more than m nodes is a clear EIO, never wrong bytes,
# and finally the erasure-coding throughput run with its same-run baselines.
#   FERN_DEMO_ELEMENTS=33554432 scripts/demo.sh   array length (default 2^23 int64 = 64 MiB)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --with-legacy
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"${FERN_JOBS:-2}"

n=${FERN_DEMO_ELEMENTS:-8388608}
root=$(mktemp -d /dev/shm/fern-ec-demo.XXXXXX)
work=$(mktemp -d /dev/shm/fern-ec-demo-work.XXXXXX)
cli=build/bin/fern-ec
cleanup() { "$cli" local stop --root "$root" >/dev/null 2>&1 || true; rm -rf "$root" "$work"; }
trap cleanup EXIT
run() { "$cli" run --root "$root" --node 0 -- "$@"; }
py=/usr/bin/python3
save="import numpy as np, sys; a = np.random.default_rng(42).integers(0, 1 << 62, $n); np.save(sys.argv[1], a)"
check="import numpy as np; a = np.load('/fern/ckpt/state.npy'); b = np.random.default_rng(42).integers(0, 1 << 62, $n); print('   numpy restart: array equal:', bool((a == b).all()), '- elements:', a.size)"

echo "== starting a local 6-node k=4 m=2 cluster in $root"
"$cli" local start --root "$root" --nodes 6 --k 4 --m 2 --shard-size 1MiB \
  --data-capacity 512MiB --parity-capacity 512MiB

echo "== python3 + numpy writes a checkpoint through LD_PRELOAD (np.save to /fern/ckpt/state.npy)"
run mkdir -p /fern/ckpt
/usr/bin/time -f "   checkpoint written and committed in %e s" \
  "$cli" run --root "$root" --node 0 -- "$py" -c "$save" /fern/ckpt/state.npy
"$py" -c "$save" "$work/reference.npy"
run ls -l /fern/ckpt
sha_ref=$(sha256sum < "$work/reference.npy" | cut -d' ' -f1)

echo "== SIGKILL nodes 1 and 4"
"$cli" local kill 1 --root "$root"
"$cli" local kill 4 --root "$root"

echo "== restart from the checkpoint on the 4 survivors"
run "$py" -c "$check" | tee "$work/check.txt"
grep -q "array equal: True" "$work/check.txt" || { echo "DEMO FAILED: restored array differs" >&2; exit 1; }
sha_out=$(run sha256sum /fern/ckpt/state.npy | cut -d' ' -f1)
echo "   reference sha256 $sha_ref (same program, plain tmpfs)"
echo "   restored  sha256 $sha_out"
[[ "$sha_ref" == "$sha_out" ]] || { echo "DEMO FAILED: restored checkpoint differs" >&2; exit 1; }
echo "   bit-exact after losing 2 of 6 nodes"

echo "== node 4 reboots with an empty tmpfs and rebuilds its shards"
"$cli" local restart 4 --wipe-data --root "$root"
for _ in $(seq 100); do
  st=$(FERN_EC_SOCKET="$root/node-4/sock" "$cli" status --json)
  [[ "$st" == *'"running": false'* && "$st" != *'"passes": 0'* ]] && break
  sleep 0.2
done
echo "   $(grep -o '"repair": {[^}]*}' <<<"$st")"

echo "== SIGKILL nodes 2 and 5 as well (3 lost > m=2): the restart must fail cleanly"
"$cli" local kill 2 --root "$root"
"$cli" local kill 5 --root "$root"
if run "$py" -c "import numpy as np; np.load('/fern/ckpt/state.npy')" 2>"$work/err.txt"; then
  echo "DEMO FAILED: a read succeeded with 3 of 6 nodes lost" >&2
  exit 1
fi
echo "   refused: $(tail -1 "$work/err.txt")"

echo "== erasure-coding throughput (same-run baselines)"
build/bin/ec_bench encode --backend auto --k 4 --m 2 --shard-size 1MiB  # the daemons' backend
echo "DEMO OK"
