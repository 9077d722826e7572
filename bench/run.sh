#!/usr/bin/env bash
# Runs snapledger's benchmarks (see bench/README.md):
#   1. append throughput on a loop-mounted btrfs image (the production filesystem),
#   2. the same append benchmark on the host filesystem, for comparison,
#   3. verification speed vs sha256sum on the btrfs image,
#   4. replication: a full block over SSH on 127.0.0.1 (BlockShipper over libssh, plain and
#      zstd-compressed, vs btrfs send | ssh | btrfs receive over an OpenSSH ControlMaster),
#      between two loop-mounted btrfs images the benchmark makes itself.
#   --index: the derived similarity index alone (snapledger-index-bench: rebuild speed, recall
#      and latency of the embedded FAISS index, and hnswlib for comparison); needs no root.
# Parts 1, 3 and 4 need root (loop mounts) and mkfs.btrfs, part 4 also OpenSSH (sshd, ssh,
# ssh-keygen); without them they are skipped with a message. Everything is created under one
# mktemp directory and removed on exit, failure or interrupt (images unmounted and loop
# devices detached first).
#
# Usage: bench/run.sh [--quick] [--replication] [--lag] [--netns] [--index] [--lookup]
#   --quick        smaller sizes, fewer runs (about two minutes)
#   --replication  only part 4
#   --lag          only steady-state replication lag and wire bytes per block on a test cluster
#                  (snapledger-lag-bench; scripts/cluster.sh: network namespaces, root)
#   --netns        only bootstrap replication across a test cluster's namespaces, unshaped and
#                  on a 1 Gbit/s tc-limited link (snapledger-netns-replication-bench)
#   --lag and --netns may be combined; each tears its cluster down itself (cluster.sh down).
#   --index        only the similarity index benchmark, 1,000,000 events, 3 runs (--quick:
#                  200,000 events, 1 run), in a mktemp directory removed on exit
#   --lookup       only the lookup index benchmark (snapledger-bench-lookup: rebuild, per-block
#                  catch-up and lookups on its own loop-mounted btrfs; root), 1,000,000 events
#                  and 300 blocks (--quick: 200,000 and 100)
# BUILD_DIR (default "build") holds the built binaries; a relative BUILD_DIR is taken from the
# repository root.
set -euo pipefail

quick=0
only_replication=0
lag=0
netns=0
index=0
lookup=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    --replication) only_replication=1 ;;
    --lag) lag=1 ;;
    --netns) netns=1 ;;
    --index) index=1 ;;
    --lookup) lookup=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-build}
[[ $build = /* ]] || build=$repo/$build

# The similarity index benchmark: CPU and page cache only, no root; its ledger (~410 MB at
# 1,000,000 events) and index files go under a mktemp directory removed on exit.
if (( index )); then
  index_bin=$build/bench/snapledger-index-bench
  if [[ ! -x $index_bin ]]; then
    echo "run.sh: $index_bin not found; build first: cmake --build $build" >&2
    exit 1
  fi
  index_work=$(mktemp -d -t snapledger-index-bench.XXXXXX)
  trap 'rm -rf "$index_work"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  echo "kernel $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), quick=$quick"
  printf '\n===== similarity index: embedded FAISS index (and hnswlib) =====\n'
  if (( quick )); then
    "$index_bin" --dir "$index_work/bench" --events 200000 --queries 300 --runs 1
  else
    "$index_bin" --dir "$index_work/bench" --events 1000000 --queries 1000 --runs 3
  fi
  exit $?
fi

# The lookup index benchmark: makes, uses and removes its own loop-mounted btrfs (LoopBtrfs).
if (( lookup )); then
  lookup_bin=$build/bench/snapledger-bench-lookup
  if [[ ! -x $lookup_bin ]]; then
    echo "run.sh: $lookup_bin not found; build first: cmake --build $build" >&2
    exit 1
  fi
  echo "kernel $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), quick=$quick"
  printf '\n===== lookup index: rebuild, per-block catch-up, lookups =====\n'
  if (( quick )); then
    "$lookup_bin" --events 200000 --blocks 100 --image-mb 1024
  else
    "$lookup_bin" --events 1000000 --blocks 300
  fi
  exit $?
fi

# The cluster benchmarks: each runs its own TestCluster (scripts/cluster.sh up/down, under a
# mktemp directory of its own) and removes it on exit, failure or SIGINT/SIGTERM.
if (( lag || netns )); then
  if [[ $EUID -ne 0 ]]; then
    echo "run.sh: --lag/--netns need root (network namespaces, loop devices)" >&2
    exit 1
  fi
  lag_bin=$build/bench/snapledger-lag-bench
  netns_bin=$build/bench/snapledger-netns-replication-bench
  for bin in $( ((lag)) && echo "$lag_bin") $( ((netns)) && echo "$netns_bin"); do
    if [[ ! -x $bin ]]; then
      echo "run.sh: $bin not found; build first: cmake --build $build" >&2
      exit 1
    fi
  done
  echo "kernel $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), quick=$quick"
  rc=0
  if (( lag )); then
    printf '\n===== replication lag: primary + 2 replicas in network namespaces =====\n'
    if (( quick )); then
      "$lag_bin" --seconds 15 --warmup-seconds 5 --runs 1 || rc=$?
    else
      "$lag_bin" --seconds 60 --runs 3 --every-events 2000 --interval-ms 200 || rc=$?
    fi
  fi
  if (( netns )); then
    printf '\n===== bootstrap replication across network namespaces =====\n'
    if (( quick )); then
      "$netns_bin" --size-mb 200 --runs 1 --link-rate none --link-rate 1gbit || rc=$?
    else
      "$netns_bin" --size-mb 1024 --runs 3 --link-rate none --link-rate 1gbit || rc=$?
    fi
  fi
  exit "$rc"
fi
append_bin=$build/bench/snapledger-bench-append
verify_bin=$build/bench/snapledger-bench-verify
replication_bin=$build/bench/snapledger-bench-replication
bins=("$replication_bin")
(( only_replication )) || bins+=("$append_bin" "$verify_bin")
for bin in "${bins[@]}"; do
  if [[ ! -x $bin ]]; then
    echo "run.sh: $bin not found; build first:" >&2
    echo "  cmake -S $repo -B $build -DCMAKE_BUILD_TYPE=Release && cmake --build $build" >&2
    exit 1
  fi
done

if (( quick )); then
  append_args=(--events 20000 --max-seconds 2 --runs 1)
  verify_args=(--size-mb 100 --runs 1)
  replication_args=(--size-mb 200 --runs 3)
  image_size=1G
else
  append_args=(--events 200000 --max-seconds 4 --runs 5)
  verify_args=(--size-mb 1024 --runs 3)
  replication_args=(--size-mb 1024 --runs 5)
  image_size=4G
fi

work=$(mktemp -d -t snapledger-bench.XXXXXX)
mnt=$work/mnt
loopdev=""
cleanup() {
  local rc=$?
  set +e
  if mountpoint -q "$mnt" 2>/dev/null; then
    umount "$mnt" || umount -l "$mnt"
  fi
  [[ -n $loopdev ]] && losetup -d "$loopdev"
  # The replication benchmark cleans up after itself, even when stopped; should it have died
  # anyway, stop the ssh ControlMaster and the sshd it started (by their pid files: the sshd's
  # connection handlers, then the sshd; its mounts go with them) and detach the loop devices
  # of its images.
  local dir pid img dev
  for dir in "$work"/snapledger-sshd-*; do
    [[ -f $dir/control_master.pid ]] && kill "$(cat "$dir/control_master.pid")" 2>/dev/null
    if [[ -f $dir/sshd.pid ]]; then
      pid=$(cat "$dir/sshd.pid")
      pkill -TERM -P "$pid" 2>/dev/null
      kill "$pid" 2>/dev/null
    fi
  done
  sleep 0.5
  for img in "$work"/snapledger-loop-*/btrfs.img; do
    [[ -f $img ]] || continue
    for dev in $(losetup -j "$img" 2>/dev/null | cut -d: -f1); do losetup -d "$dev"; done
  done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

section() { printf '\n===== %s =====\n' "$*"; }

section "environment"
echo "kernel $(uname -r), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), quick=$quick"
echo "work dir $work on $(findmnt -no FSTYPE -T "$work") ($(findmnt -no SOURCE -T "$work"))"

btrfs_ok=1
if [[ $EUID -ne 0 ]]; then
  echo "SKIPPING the btrfs benchmarks: loop-mounting an image needs root (run as root)"
  btrfs_ok=0
elif ! command -v mkfs.btrfs >/dev/null || ! command -v losetup >/dev/null; then
  echo "SKIPPING the btrfs benchmarks: mkfs.btrfs or losetup is missing (apt install btrfs-progs)"
  btrfs_ok=0
fi
ssh_ok=1
if [[ ! -x /usr/sbin/sshd ]] || ! command -v ssh >/dev/null || ! command -v ssh-keygen >/dev/null
then
  ssh_ok=0
fi

if (( btrfs_ok && !only_replication )); then
  truncate -s "$image_size" "$work/btrfs.img"
  mkfs.btrfs -q "$work/btrfs.img" >/dev/null
  loopdev=$(losetup --find --show "$work/btrfs.img")
  mkdir "$mnt"
  mount "$loopdev" "$mnt"
  echo "btrfs image $image_size on $loopdev mounted at $mnt"

  section "append: btrfs on a loop device ($mnt)"
  "$append_bin" --dir "$mnt/append" "${append_args[@]}"
fi

if (( !only_replication )); then
  section "append: host filesystem, $(findmnt -no FSTYPE -T "$work") (for comparison)"
  "$append_bin" --dir "$work/host-append" "${append_args[@]}"
fi

if (( btrfs_ok && !only_replication )); then
  section "verify: btrfs on a loop device ($mnt)"
  "$verify_bin" --dir "$mnt/verify" "${verify_args[@]}"
fi

section "replication: full block over SSH on 127.0.0.1, two btrfs loop images"
if (( !btrfs_ok )); then
  echo "SKIPPED (needs root and btrfs-progs, see above)"
elif (( !ssh_ok )); then
  echo "SKIPPED: OpenSSH is missing (apt install openssh-server openssh-client)"
else
  # TMPDIR: the benchmark's images, mounts and sshd directory go under $work.
  TMPDIR=$work "$replication_bin" "${replication_args[@]}"
fi
