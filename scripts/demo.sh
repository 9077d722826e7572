#!/usr/bin/env bash
# The demo: a primary and two replicas on this machine, each a network namespace with its own
# loop-mounted btrfs filesystem, its own OpenSSH sshd and the real daemons
# (scripts/cluster.sh). Appends Open vSwitch port-agent events through the primary's gRPC
# API, shows `snapledger status` with both replicas in sync, proves the replicas hold
# byte-identical, verified ledgers, asks a replica for similar events from its own vector
# index, and tears everything down.
# Usage: sudo scripts/demo.sh [--events N] [--keep]
#   --keep   leave the cluster running at the end (prints how to stop it)
# The single-node walk through the CLI is scripts/demo-single-node.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

events=20000
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "demo: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root: it installs packages, mounts loop-backed btrfs and creates namespaces" >&2
  exit 1
fi

# Only the programs the demo runs (scripts/cluster.sh starts the three daemons), not the tests.
bash scripts/build.sh snapledger snapledger-eventgen snapledger-primary snapledger-replica \
  snapledger-receive
build=$(pwd)/${BUILD_DIR:-build}
snapledger=$build/cli/snapledger
eventgen=$build/bench/snapledger-eventgen
cluster() { bash scripts/cluster.sh "$@"; }

dir=$(mktemp -d /var/tmp/snapledger-demo.XXXXXX)
cleanup() {
  if [ "$keep" = 1 ]; then
    echo
    echo "The cluster keeps running in $dir. Try:"
    echo "  $snapledger status --primary $primary"
    echo "Stop it with: bash scripts/cluster.sh down --dir $dir"
    return
  fi
  cluster down --dir "$dir" || true
  rm -rf "$dir"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "three hosts: network namespaces on a bridge, loop-mounted btrfs, sshd each"
cluster up --dir "$dir" --replicas 2 --bin-dir "$build/cli:$build/primary:$build/replica"
status=$(cluster status --dir "$dir")
primary=$(echo "$status" | sed -nE 's/^host name=primary .*grpc=([^ ]+).*/\1/p')

step "start the daemons: snapledger-primary, and snapledger-replica serve on r1 and r2"
for host in primary r1 r2; do cluster start "$host" --dir "$dir" --wait 30; done

step "append $events port-agent events through the primary's gRPC API"
"$eventgen" --count 1 --seed 7
"$eventgen" --count "$events" --seed 7 |
  "$snapledger" append --primary "$primary"

step "wait until both replicas verified the primary's newest block"
for i in $(seq 1 120); do
  if "$snapledger" status --primary "$primary" --json |
      jq -e '(.replicas | length) == 2 and all(.replicas[]; .state == "in_sync")' >/dev/null; then
    break
  fi
  sleep 0.5
done
"$snapledger" status --primary "$primary"

step "the replicas hold byte-identical, verified copies of the newest block"
newest=$("$snapledger" status --primary "$primary" --json | jq -r .primary.newest_block)
for host in primary r1 r2; do
  root=$dir/$host/mnt/ledger
  printf '%-8s %s\n' "$host" "$(sha256sum "$root/blocks/$newest/events.jsonl" | cut -c1-64)"
done
"$snapledger" --root "$dir/r1/mnt/ledger" verify --block "$newest"

step "each node keeps its own vector index: similar events, asked of replica r2"
r2=$(echo "$status" | sed -nE 's/^host name=r2 .*grpc=([^ ]+).*/\1/p')
for i in $(seq 1 60); do
  "$snapledger" similar --node "$r2" --text "port_vlan_changed br-int" -k 3 >/dev/null 2>&1 && break
  sleep 0.5
done
"$snapledger" similar --node "$r2" --text "port_vlan_changed br-int" -k 3

step "stop the daemons"
for host in r2 r1 primary; do cluster stop "$host" --dir "$dir"; done
echo "done"
