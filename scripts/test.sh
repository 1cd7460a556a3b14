#!/usr/bin/env bash
# The whole test suite from a clean checkout: installs missing Debian packages,
# builds (RelWithDebInfo) and runs every ctest, then builds the unit tests with
# AddressSanitizer + UndefinedBehaviorSanitizer and runs them again.
#   scripts/test.sh                 everything (what .ci/run calls)
#   FERN_SKIP_ASAN=1 scripts/test.sh  skip the sanitizer pass
#   FERN_SOAK=1 scripts/test.sh     also the long soak tests (opt-in)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
jobs=${FERN_JOBS:-2}

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$jobs"

label_args=()
[[ "${FERN_SOAK:-0}" == 1 ]] || label_args=(-LE soak)

if [[ "${FERN_SKIP_ASAN:-0}" != 1 ]]; then
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DFERN_ASAN=ON -DFERN_BUILD_BENCH=OFF
  cmake --build build-asan -j"$jobs"
  echo "== unit tests under ASan+UBSan"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan -j"$jobs" --output-on-failure -L unit
fi

echo "== full test suite"
ctest --test-dir build -j"$jobs" --output-on-failure "${label_args[@]}"
