#!/usr/bin/env bash
# The single-node demo: installs what it needs, builds, creates a loop-mounted btrfs
# filesystem, initialises a ledger, appends realistic Open vSwitch port-agent events while
# cutting blocks, verifies, lists blocks, looks events up, and cleans everything up.
# Usage: sudo scripts/demo-single-node.sh [--events N] [--keep]
#   --keep   leave the filesystem mounted at the end (prints how to unmount it)
set -euo pipefail
cd "$(dirname "$0")/.."

events=5000
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "demo: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root: it installs packages and mounts a loop-backed btrfs filesystem" >&2
  exit 1
fi

bash scripts/build.sh snapledger snapledger-eventgen  # only the programs this demo runs
build=$(pwd)/${BUILD_DIR:-build}
snapledger=$build/cli/snapledger
eventgen=$build/bench/snapledger-eventgen

work=$(mktemp -d /var/tmp/snapledger-demo.XXXXXX)
mnt=$work/ledger
loopdev=""
cleanup() {
  if [ "$keep" = 1 ]; then
    echo
    echo "The demo ledger stays mounted at $mnt (loop device $loopdev). Try:"
    echo "  $snapledger --root $mnt status"
    echo "Clean up with: umount $mnt && losetup -d $loopdev && rm -rf $work"
    return
  fi
  mountpoint -q "$mnt" && umount "$mnt"
  [ -n "$loopdev" ] && losetup -d "$loopdev" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*" | sed "s|$build/[a-z]*/||g; s|$work|\$DEMO|g"; "$@"; }

step "a 1 GiB btrfs filesystem on a loop device"
truncate -s 1G "$work/ledger.img"
mkfs.btrfs -q "$work/ledger.img" >/dev/null
loopdev=$(losetup --find --show "$work/ledger.img")
mkdir -p "$mnt"
mount "$loopdev" "$mnt"
echo "mounted $loopdev at $mnt"

step "initialise the ledger"
run "$snapledger" --root "$mnt" init

step "append $events Open vSwitch port-agent events, cutting a block every 1000"
echo "(one of them:)"
"$eventgen" --count 1 --seed 7
"$eventgen" --count "$events" --seed 7 | run "$snapledger" --root "$mnt" append --block-every 1000

step "a bad event is rejected and nothing is appended"
printf '%s\n' '{"event":"port_created","port":"tap1"}' '["not","an","object"]' |
  run "$snapledger" --root "$mnt" append || echo "(exit code $?: input rejected)"

step "verify the whole chain, and incrementally from the first block"
run "$snapledger" --root "$mnt" verify
first_block=$("$snapledger" --root "$mnt" blocks | awk 'NR==2{print $1}')
run "$snapledger" --root "$mnt" verify --from-block "$first_block"

step "blocks (read-only btrfs snapshots)"
run "$snapledger" --root "$mnt" blocks
btrfs subvolume list -o "$mnt/blocks" | sed "s|^|  |"

step "look events up: by seq, by hash, by time range"
run "$snapledger" --root "$mnt" get 42
hash=$("$snapledger" --root "$mnt" get 4242 | jq -r .hash)
run "$snapledger" --root "$mnt" get "$hash"
ts=$("$snapledger" --root "$mnt" get 100 | jq -r .ts)
run "$snapledger" --root "$mnt" range --from "$ts" --limit 3

step "tamper with one byte of a copy of the newest block, and verify it"
newest=$("$snapledger" --root "$mnt" blocks | awk '/^block-/{b=$1} END{print b}')
cp -r "$mnt/blocks/$newest" "$work/tampered"
sed -i '1234s/"body":{"/"body":{"X/' "$work/tampered/events.jsonl"
mkdir -p "$work/tampered-root/blocks"
mv "$work/tampered" "$work/tampered-root/blocks/$newest"
run "$snapledger" --root "$work/tampered-root" verify --block "$newest" ||
  echo "(exit code $?: verification failed, as it should)"

step "status"
run "$snapledger" --root "$mnt" status
