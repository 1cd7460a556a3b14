#!/usr/bin/env bash
# How long a daemon's event loop is busy right after a big put: starts a
# local cluster (data on /dev/shm, parity on /var/tmp), puts a file of SIZE
# (default 1G) ROUNDS times (default 6) with `fern-ec put`, and times a
# `fern-ec status` sent the moment each put returns. Prints one line of
# milliseconds. A measurement, not a test (docs/performance.md).
#   scripts/probe_loop_stall.sh [SIZE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1G}
rounds=${2:-6}
cli=build/bin/fern-ec
root=/dev/shm/fern-stall-$$
parity=/var/tmp/fern-stall-$$
src=/dev/shm/fern-stall-src-$$
export UCX_LOG_LEVEL=${UCX_LOG_LEVEL:-error}
cleanup() {
  "$cli" local stop --root "$root" >/dev/null 2>&1 || true
  rm -rf "$root" "$parity" "$src"
}
trap cleanup EXIT
"$cli" local start --root "$root" --parity-root "$parity" --data-capacity 2GiB \
  --parity-capacity 2GiB --prepare-parity=0 >/dev/null || { tail -3 "$root"/node-*/log; exit 1; }
head -c "$size" /dev/urandom >"$src"
line="status after put:"
for i in $(seq 1 "$rounds"); do
  "$cli" put "$src" "/stall/f$((i % 2))" --root "$root"
  t0=$(date +%s%N)
  "$cli" status --root "$root" >/dev/null
  t1=$(date +%s%N)
  line="$line $(((t1 - t0) / 1000000))ms"
  sleep 1
done
echo "$line"
