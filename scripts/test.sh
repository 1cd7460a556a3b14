#!/usr/bin/env bash
# The whole test suite from a clean checkout: installs missing Debian packages,
# builds the unit tests with AddressSanitizer + UndefinedBehaviorSanitizer and
# runs them, then with ThreadSanitizer, runs the libFuzzer targets for a
# bounded time (clang build), then builds RelWithDebInfo and runs every ctest
# (its summary closes the output).
#   scripts/test.sh                 everything (what .ci/run calls)
#   FERN_SKIP_ASAN=1 scripts/test.sh  skip the sanitizer pass
#   FERN_SKIP_TSAN=1 scripts/test.sh  skip the ThreadSanitizer pass
#   FERN_SKIP_FUZZ=1 scripts/test.sh  skip the fuzzers; FERN_FUZZ_SECONDS=N per fuzzer (30)
#   FERN_SOAK=1 scripts/test.sh     also the long soak tests (opt-in)
#   FERN_LAMMPS=1 scripts/test.sh   also LAMMPS write_restart/read_restart under the
#                                   preload (installs lammps + Open MPI)
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${FERN_LAMMPS:-0}" == 1 ]]; then
  scripts/setup.sh --with-legacy --with-lammps
else
  scripts/setup.sh --with-legacy
fi
jobs=${FERN_JOBS:-2}

label_args=()
[[ "${FERN_SOAK:-0}" == 1 ]] || label_args=(-LE soak)

if [[ "${FERN_SKIP_ASAN:-0}" != 1 ]]; then
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DFERN_ASAN=ON -DFERN_BUILD_BENCH=OFF
  cmake --build build-asan -j"$jobs"
  echo "== unit tests under ASan+UBSan"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan -j"$jobs" --output-on-failure -L unit
fi

if [[ "${FERN_SKIP_TSAN:-0}" != 1 ]]; then
  cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFERN_TSAN=ON -DFERN_BUILD_BENCH=OFF
  cmake --build build-tsan -j"$jobs"
  echo "== unit tests under ThreadSanitizer"
  # libucm (loaded with UCX) interposes madvise and takes a lock in it; glibc
  # calls madvise on a thread's stack as the thread exits, after TSan has torn
  # down that thread's state, and the process crashes. UCX_MEM_EVENTS=no keeps
  # libucm out of the way; fern-ec does not use UCX memory events.
  # The single-threaded erasure-coding sweeps are pure arithmetic: ASan and
  # the release build run them; under TSan they only cost minutes.
  UCX_MEM_EVENTS=no TSAN_OPTIONS=halt_on_error=1 \
    ctest --test-dir build-tsan -j"$jobs" --output-on-failure -L unit \
      -E 'ErasureCoderTest\.(EncodeMatchesReference|DecodesEveryErasurePatternUpToM|DeltaUpdateEqualsReencode)|CrossBackend\.JerasureAndIsalParityIdentical'
fi

if [[ "${FERN_SKIP_FUZZ:-0}" != 1 ]]; then
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DFERN_FUZZ=ON -DFERN_BUILD_BENCH=OFF -DFERN_FUZZ_SECONDS="${FERN_FUZZ_SECONDS:-30}"
  cmake --build build-fuzz -j"$jobs"
  echo "== fuzzers (libFuzzer, ${FERN_FUZZ_SECONDS:-30} s each)"
  ctest --test-dir build-fuzz --output-on-failure -L fuzz
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$jobs"
echo "== full test suite"
ctest --test-dir build -j"$jobs" --output-on-failure "${label_args[@]}"
