#!/usr/bin/env bash
# Installs every package snapledger needs to build, test and run, from Debian's archive.
# Idempotent: when everything is already installed it changes nothing and downloads nothing.
set -euo pipefail

packages=(
  # build
  build-essential cmake pkg-config git
  clang-format  # Debian 12's is version 14, which the format check (scripts/format.sh) needs
  # libraries
  libssl-dev libssh-dev libboost-dev libboost-system-dev
  libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc libgrpc-dev
  prometheus-cpp-dev libcli11-dev libyaml-cpp-dev libspdlog-dev libfmt-dev libzstd-dev
  libbtrfsutil-dev liblmdb-dev nlohmann-json3-dev libfaiss-dev libhnswlib-dev
  libgtest-dev libgmock-dev
  # runtime tools used by the ledger, the demo and the tests
  btrfs-progs util-linux iproute2 openssh-server openssh-client jq coreutils procps
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run this script as root (it uses apt-get)" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
