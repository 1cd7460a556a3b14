#!/usr/bin/env bash
# The main job: installs missing Debian packages, builds, and runs it.
# Today that is the erasure-coding throughput run (ec_bench encode) for both
# backends at k=4 m=2 with 1 MiB shards; the cluster demo (daemons, a legacy
# program under LD_PRELOAD, nodes killed, checkpoint restored) replaces it when
# the daemon and preload issues land.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"${FERN_JOBS:-2}"

for backend in isal jerasure; do
  build/bin/ec_bench encode --backend "$backend" --k 4 --m 2 --shard-size 1MiB
done
build/bin/ec_bench encode --backend jerasure --technique cauchy_good --k 4 --m 2 --shard-size 1MiB
