#!/usr/bin/env bash
# Installs every Debian package fern-ec needs to build, test and benchmark.
# Idempotent: when everything is present it prints nothing and exits 0.
# Usage: scripts/setup.sh [--with-legacy] [--with-lammps]   (--with-legacy adds the
# unmodified programs the preload tests drive: fio, hdf5-tools, numpy, ...;
# --with-lammps adds LAMMPS and Open MPI for the opt-in LAMMPS test)
set -euo pipefail

pkgs=(
  build-essential cmake ninja-build ccache pkg-config clang libclang-rt-14-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libjerasure-dev libgf-complete-dev libisal-dev
  libucx-dev ucx-utils
  libprotobuf-dev protobuf-compiler
  e2fsprogs util-linux  # mkfs.ext4, fsfreeze: a test hangs a node's parity disk
)
for arg in "$@"; do
  case "$arg" in
    --with-legacy) pkgs+=(fio hdf5-tools python3-numpy sqlite3 rsync openssl) ;;
    --with-lammps) pkgs+=(lammps) ;;  # heavy: pulls Open MPI
    *) echo "setup.sh: unknown option $arg (--with-legacy, --with-lammps)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "setup.sh: missing packages: ${missing[*]}; run as root or install them" >&2
  exit 1
fi
echo "setup.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
