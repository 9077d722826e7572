#!/usr/bin/env bash
# Installs dependencies (when run as root) and builds snapledger into ${BUILD_DIR:-build}.
# Usage: scripts/build.sh [TARGET...]
#   With no target, builds everything: every program, benchmark and test (scripts/test.sh).
#   With targets, builds only those and what they need (the demos name the programs they run).
set -euo pipefail
cd "$(dirname "$0")/.."
targets=()
for t in "$@"; do
  case "$t" in
    -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
    -*) echo "build: unknown option $t" >&2; exit 2 ;;
    *) targets+=(--target "$t") ;;
  esac
done
bash scripts/install-deps.sh
build_dir=${BUILD_DIR:-build}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} >/dev/null
cmake --build "$build_dir" -j"$(nproc)" "${targets[@]}"
