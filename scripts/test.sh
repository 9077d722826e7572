#!/usr/bin/env bash
# Installs what snapledger needs, builds it, and runs every test: unit tests and the
# integration tests on real btrfs (those skip, saying why, without root or loop devices).
# Usage: scripts/test.sh [extra ctest arguments, e.g. -L unit or -R EventLog]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
build_dir=${BUILD_DIR:-build}
ctest --test-dir "$build_dir" -j2 --output-on-failure --timeout 900 "$@"
