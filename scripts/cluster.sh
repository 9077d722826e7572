#!/usr/bin/env bash
# cluster.sh: a snapledger test cluster on one machine. Each host (primary, r1, r2, ...) is a
# network namespace on a private bridge, with its own loop-mounted btrfs filesystem, its own
# OpenSSH sshd and, once started, its own snapledger daemon. docs/TEST_CLUSTER.md explains it.
#
#   cluster.sh up        --dir D --replicas N [--bin-dir B[:B2...]] [--image-mb M] [--tag T]
#   cluster.sh down      --dir D [--keep-logs]
#   cluster.sh start     <host> --dir D [--wait S] [-- command...]
#   cluster.sh stop      <host> --dir D [--timeout S]
#   cluster.sh kill      <host> --dir D
#   cluster.sh link-down <host> --dir D
#   cluster.sh link-up   <host> --dir D
#   cluster.sh exec      <host> --dir D -- command...
#   cluster.sh status    --dir D
#
# --dir may also come from $SNAPLEDGER_CLUSTER_DIR. Exit codes: 0 ok, 1 error, 2 usage,
# 3 the machine cannot run a cluster (not root, a tool or kernel feature missing).
#
# Every resource `up` creates is appended to D/state just before (or, when its name is only
# known afterwards, just after) it is created, so `down` removes exactly what was created, also
# after a partial `up`. `down` is idempotent.
set -euo pipefail
shopt -s nullglob

readonly PROG=cluster.sh
readonly MARKER=.snapledger-cluster
readonly GRPC_PORT=7400
readonly METRICS_PORT=9400

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "$*"; exit 1; }
usage_error() { log "$*"; log "see the header of $0 for usage"; exit 2; }
unavailable() { log "cannot run a test cluster here: $*"; exit 3; }

# ---- arguments ------------------------------------------------------------------------------

CMD=""; HOST=""; DIR="${SNAPLEDGER_CLUSTER_DIR:-}"; REPLICAS=""; BIN_PATH=""; IMAGE_MB=256
WANT_TAG=""; KEEP_LOGS=0; WAIT_S=0; STOP_TIMEOUT_S=10; ARGV=()

parse_args() {
  [[ $# -gt 0 ]] || usage_error "no subcommand"
  CMD=$1; shift
  case $CMD in
    start|stop|kill|link-down|link-up|exec)
      [[ $# -gt 0 && $1 != -* ]] || usage_error "$CMD needs a host name"
      HOST=$1; shift ;;
    up|down|status) ;;
    -h|--help|help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) usage_error "unknown subcommand '$CMD'" ;;
  esac
  while [[ $# -gt 0 ]]; do
    case $1 in
      --dir) DIR=${2:?}; shift 2 ;;
      --replicas) REPLICAS=${2:?}; shift 2 ;;
      --bin-dir) BIN_PATH=${2:?}; shift 2 ;;
      --image-mb) IMAGE_MB=${2:?}; shift 2 ;;
      --tag) WANT_TAG=${2:?}; shift 2 ;;
      --keep-logs) KEEP_LOGS=1; shift ;;
      --wait) WAIT_S=${2:?}; shift 2 ;;
      --timeout) STOP_TIMEOUT_S=${2:?}; shift 2 ;;
      --) shift; ARGV=("$@"); break ;;
      *) usage_error "unknown argument '$1'" ;;
    esac
  done
  [[ -n $DIR ]] || usage_error "--dir is required"
  [[ $WAIT_S =~ ^[0-9]+$ && $STOP_TIMEOUT_S =~ ^[0-9]+$ ]] ||
    usage_error "--wait and --timeout take whole seconds"
}

# Paths go into sshd_config, authorized_keys and YAML unquoted: keep them plain.
check_safe_path() {
  [[ $1 =~ ^/[A-Za-z0-9._/+-]*$ ]] ||
    usage_error "path '$1' must be absolute and use only letters, digits and ._/+-"
}

# ---- processes ------------------------------------------------------------------------------

# The start time of a process (field 22 of /proc/<pid>/stat), which tells a recorded process
# from a later one that reuses its pid. Empty when there is no such process.
proc_start_time() {
  local stat rest
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 0
  rest=${stat##*) }
  local -a f
  read -ra f <<<"$rest"
  echo "${f[19]}"
}

# True while the process recorded as (pid, start time) is alive (a zombie counts as gone:
# nothing may reap an orphan on machines without a real init).
alive() {
  local stat rest
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  rest=${stat##*) }
  local -a f
  read -ra f <<<"$rest"
  [[ ${f[19]} == "$2" && ${f[0]} != Z ]]
}

# wait_gone <tenths of a second> pid start [pid start ...]: true when all are gone in time.
wait_gone() {
  local tenths=$1; shift
  local -a ps=("$@")
  local i j any
  for ((i = 0; i <= tenths; i++)); do
    any=0
    for ((j = 0; j < ${#ps[@]}; j += 2)); do
      if alive "${ps[j]}" "${ps[j + 1]}"; then any=1; break; fi
    done
    ((any)) || return 0
    sleep 0.1
  done
  return 1
}

# spawn <pidfile> <logfile> command...: starts `command` in a new session (so signals meant for
# the caller's process group, e.g. from timeout(1) or ^C, do not reach it) with its output
# appended to <logfile>, and writes "<pid> <start time>" to <pidfile>.
spawn() {
  local pidfile=$1 logfile=$2; shift 2
  local what=$*
  rm -f "$pidfile.tmp"
  # The inner shell writes its own pid and execs the command, so the pid is the command's.
  setsid bash -c 'echo $$ >"$0.tmp"; exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 &
  local i pid=""
  for ((i = 0; i < 100; i++)); do
    [[ -s $pidfile.tmp ]] && pid=$(<"$pidfile.tmp") && [[ -n $pid ]] && break
    sleep 0.05
  done
  [[ -n $pid ]] || die "could not start $what (no pid within 5 s)"
  local start
  start=$(proc_start_time "$pid")
  [[ -n $start ]] || { rm -f "$pidfile.tmp"; die "$what exited at once; see $logfile"; }
  echo "$pid $start" >"$pidfile"
  rm -f "$pidfile.tmp"
}

# ---- cluster description --------------------------------------------------------------------

# D/cluster.env holds TAG, NET (the first three octets), HOSTS, BIN_PATH, RECEIVE_BIN. Host i
# (primary is 0) gets address NET.(i+1), namespace sl<tag>-<host> and, in the root namespace,
# the bridge port sl<tag>v<i> (names of links must stay within 15 characters).
declare -A ADDR NSNAME VETH LROOT
load_env() {
  [[ -f $DIR/cluster.env ]] || die "$DIR holds no cluster (no cluster.env)"
  # shellcheck disable=SC1091
  source "$DIR/cluster.env"
  read -ra HOST_LIST <<<"$HOSTS"
  BRIDGE=slbr$TAG
  local i h
  for i in "${!HOST_LIST[@]}"; do
    h=${HOST_LIST[$i]}
    ADDR[$h]=$NET.$((i + 1)); NSNAME[$h]=sl$TAG-$h; VETH[$h]=sl${TAG}v$i
    LROOT[$h]=$DIR/$h/mnt/ledger
  done
}

check_host() {
  [[ -n ${ADDR[$1]:-} ]] || die "no host '$1' in this cluster (hosts: ${HOST_LIST[*]})"
}

# Finds a program in BIN_PATH (colon-separated directories); empty when it is not there.
find_bin() {
  local d
  local -a dirs
  IFS=: read -ra dirs <<<"$BIN_PATH"
  for d in "${dirs[@]}"; do
    [[ -x $d/$1 ]] && { echo "$d/$1"; return 0; }
  done
  return 0
}

record() { echo "$*" >>"$DIR/state"; }

# ---- up -------------------------------------------------------------------------------------

preflight() {
  [[ $(id -u) == 0 ]] || unavailable "needs root (network namespaces, loop devices, mounts)"
  local t
  for t in ip losetup mkfs.btrfs mount umount mountpoint ssh ssh-keygen setsid truncate; do
    command -v "$t" >/dev/null || unavailable "'$t' is not installed"
  done
  [[ -x /usr/sbin/sshd ]] || unavailable "/usr/sbin/sshd is missing (openssh-server)"
  [[ -e /proc/self/ns/net ]] || unavailable "the kernel has no network namespaces"
  [[ -e /dev/loop-control ]] || unavailable "no loop devices (/dev/loop-control is missing)"
  grep -qw btrfs /proc/filesystems || modprobe btrfs 2>/dev/null ||
    unavailable "the kernel cannot mount btrfs"
}

# True when no route other than the default one covers NET.0/24.
subnet_free() {
  [[ -z $(ip -4 route show table all match "$1.1" 2>/dev/null | grep -v '^default' |
          grep -v '^local\|^broadcast' || true) ]]
}

# Picks a tag and claims it by creating its bridge (an atomic test-and-set). The tag is four
# hex digits a b encoding the subnet 10.a.b.0/24 with a in 200..254, so different tags never
# share a subnet.
claim_tag() {
  local tries a b tag err
  for ((tries = 0; tries < 50; tries++)); do
    if [[ -n $WANT_TAG ]]; then
      [[ $WANT_TAG =~ ^[0-9a-f]{4}$ ]] || usage_error "--tag takes four hex digits"
      tag=$WANT_TAG
    else
      a=$((200 + RANDOM % 55)); b=$((RANDOM % 256))
      tag=$(printf '%02x%02x' "$a" "$b")
    fi
    a=$((16#${tag:0:2})); b=$((16#${tag:2:2}))
    if subnet_free "10.$a.$b" && [[ -z $(ip netns list | grep "^sl$tag-" || true) ]]; then
      record "link slbr$tag"
      if err=$(ip link add "slbr$tag" type bridge 2>&1); then
        TAG=$tag; NET="10.$a.$b"
        return 0
      fi
      [[ $err == *"File exists"* ]] || unavailable "cannot create a bridge: $err"
    fi
    [[ -z $WANT_TAG ]] || die "tag $WANT_TAG is in use"
  done
  die "found no free tag in 50 tries"
}

setup_bridge() {
  ip addr add "$NET.254/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
}

setup_netns() {
  local host=$1 ns veth addr err
  ns=${NSNAME[$host]}; veth=${VETH[$host]}; addr=${ADDR[$host]}
  record "netns $ns"
  err=$(ip netns add "$ns" 2>&1) || unavailable "cannot create network namespace $ns: $err"
  ip -n "$ns" link set lo up
  record "link $veth"
  ip link add "$veth" type veth peer name eth0 netns "$ns"
  ip link set "$veth" master "$BRIDGE" up
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
}

setup_filesystem() {
  local host=$1 img dev mnt
  img=$DIR/$host/disk.img; mnt=$DIR/$host/mnt
  record "file $img"
  truncate -s "${IMAGE_MB}M" "$img"
  dev=$(losetup --find --show "$img") || die "losetup failed for $img"
  record "loop $dev $img"
  # Direct I/O: the loop device writes straight to the image file, as btrfs on a disk writes
  # to the disk. Buffered, the host's page cache takes every write first and the whole of it
  # reaches the disk at the next flush (a btrfs commit, an fsync), however early the data was
  # written back: a replica's write-back could not overlap its receive, and each byte is
  # copied once more. Buffered only where the image's filesystem refuses direct I/O (said so).
  if ! losetup --direct-io=on "$dev" 2>/dev/null ||
    [[ $(losetup -n -O DIO "$dev" 2>/dev/null | tr -d ' ') != 1 ]]; then
    log "$host: the filesystem holding $img refuses direct I/O; $dev stays buffered"
  fi
  mkfs.btrfs -q -f "$dev" >/dev/null
  mkdir -p "$mnt"
  record "mount $mnt"
  mount "$dev" "$mnt"
  mkdir "$mnt/ledger"  # empty: the daemon (or `snapledger init`) lays the ledger out in it
}

keygen() { ssh-keygen -q -t ed25519 -N '' -C "snapledger-cluster-$TAG-$2" -f "$1"; }

setup_keys() {
  local host
  for host in "${HOST_LIST[@]}"; do
    keygen "$DIR/$host/ssh_host_ed25519_key" "$host"
  done
  keygen "$DIR/primary/id_ed25519" primary-client
  : >"$DIR/primary/known_hosts"
  for host in "${HOST_LIST[@]}"; do
    echo "${ADDR[$host]} $(cat "$DIR/$host/ssh_host_ed25519_key.pub")" \
      >>"$DIR/primary/known_hosts"
  done
}

write_sshd_config() {
  local host=$1 h=$DIR/$1
  cat >"$h/authorized_keys" <<EOF
command="$RECEIVE_BIN --root ${LROOT[$host]}",restrict $(cat "$DIR/primary/id_ed25519.pub")
EOF
  # HOME points into the host's directory: sshd runs the forced command through root's shell,
  # and root's ~/.bashrc on these machines is slow.
  cat >"$h/sshd_config" <<EOF
ListenAddress ${ADDR[$host]}
Port 22
HostKey $h/ssh_host_ed25519_key
AuthorizedKeysFile $h/authorized_keys
PidFile $h/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
SetEnv HOME=$h
# A primary that vanished mid-transfer (a cut link) must not hold the replica's receive lock
# for the kernel's TCP timeout: the session is dropped after ~6 s without an answer.
ClientAliveInterval 2
ClientAliveCountMax 3
EOF
}

write_daemon_configs() {
  local host r
  cat >"$DIR/primary/primary.yaml" <<EOF
node_id: primary
ledger_root: ${LROOT[primary]}
epoch: 1
grpc_listen: ${ADDR[primary]}:$GRPC_PORT
metrics_listen: ${ADDR[primary]}:$METRICS_PORT
blocks: {every_events: 2000, interval_ms: 200}
retention: {keep_newest: 8, max_blocks_behind: 64}
ssh: {identity_file: $DIR/primary/id_ed25519, known_hosts_file: $DIR/primary/known_hosts, trust_unknown_host_key: false}
shipping: {watchdog_seconds: 10, backoff_initial_ms: 100, backoff_max_ms: 2000}
replicas:
EOF
  for r in "${HOST_LIST[@]:1}"; do
    echo "  - {id: $r, host: ${ADDR[$r]}, port: 22, user: root, compression: none, receive_command: \"snapledger-receive\"}" \
      >>"$DIR/primary/primary.yaml"
    cat >"$DIR/$r/replica.yaml" <<EOF
node_id: $r
ledger_root: ${LROOT[$r]}
grpc_listen: ${ADDR[$r]}:$GRPC_PORT
metrics_listen: ${ADDR[$r]}:$METRICS_PORT
primary_grpc: ${ADDR[primary]}:$GRPC_PORT
retention: {keep_newest: 8}
EOF
  done
}

# True when something accepts TCP connections on addr:port (a bounded probe from the root
# namespace, through the bridge).
accepts() { timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

start_sshd() {
  local host=$1 h=$DIR/$1 pid start addr i
  addr=${ADDR[$host]}
  spawn "$h/sshd.owned-pid" "$h/sshd.log" \
    ip netns exec "${NSNAME[$host]}" /usr/sbin/sshd -D -e -f "$h/sshd_config"
  read -r pid start <"$h/sshd.owned-pid"
  record "pid sshd $host $pid $start"
  for ((i = 0; i < 100; i++)); do
    accepts "$addr" 22 && return 0
    alive "$pid" "$start" || break
    sleep 0.1
  done
  log "sshd of $host did not listen on $addr:22; its log:"
  tail -n 20 "$h/sshd.log" >&2 || true
  return 1
}

up_body() {
  claim_tag
  local -a hosts=(primary)
  local i
  for ((i = 1; i <= REPLICAS; i++)); do hosts+=("r$i"); done
  cat >"$DIR/cluster.env" <<EOF
TAG=$TAG
NET=$NET
HOSTS="${hosts[*]}"
BIN_PATH=$BIN_PATH
RECEIVE_BIN=$RECEIVE_BIN
EOF
  load_env
  setup_bridge
  local host
  for host in "${HOST_LIST[@]}"; do
    mkdir -p "$DIR/$host"
    setup_netns "$host"
    setup_filesystem "$host"
  done
  setup_keys
  mkdir -p /run/sshd  # sshd's privilege separation directory
  for host in "${HOST_LIST[@]}"; do
    write_sshd_config "$host"
    start_sshd "$host"
  done
  write_daemon_configs
}

cmd_up() {
  [[ $REPLICAS =~ ^[0-9]+$ && $REPLICAS -ge 1 && $REPLICAS -le 50 ]] ||
    usage_error "--replicas takes 1..50"
  [[ $IMAGE_MB =~ ^[0-9]+$ && $IMAGE_MB -ge 128 ]] ||
    usage_error "--image-mb takes at least 128 (mkfs.btrfs's minimum is about 110)"
  mkdir -p "$DIR"
  DIR=$(realpath "$DIR")
  check_safe_path "$DIR"
  [[ ! -e $DIR/state ]] || die "$DIR already holds a cluster; run: $PROG down --dir $DIR"
  [[ -z $(ls -A "$DIR") ]] || die "$DIR is not empty"
  : >"$DIR/$MARKER"
  preflight
  if [[ -z $BIN_PATH ]]; then
    local here; here=$(cd "$(dirname "$0")/.." && pwd)
    BIN_PATH=$here/build/cli:$here/build/primary:$here/build/replica
  fi
  local d
  local -a dirs
  IFS=: read -ra dirs <<<"$BIN_PATH"
  for d in "${dirs[@]}"; do check_safe_path "$(realpath -m "$d")"; done
  BIN_PATH=$(for d in "${dirs[@]}"; do realpath -m "$d"; done | paste -sd:)
  RECEIVE_BIN=$(find_bin snapledger-receive)
  [[ -n $RECEIVE_BIN ]] ||
    unavailable "snapledger-receive is not in --bin-dir $BIN_PATH (build it first)"
  : >"$DIR/state"
  local t0=$SECONDS interrupted=0 rc
  trap 'interrupted=1' INT TERM
  set +e
  (set -e; trap - INT TERM; up_body)
  rc=$?
  set -e
  if ((interrupted && rc == 0)); then rc=130; fi
  if ((rc != 0)); then
    log "up failed (status $rc); removing what it created (logs stay in $DIR)"
    KEEP_LOGS=1 cmd_down >&2 || true
    exit "$rc"
  fi
  load_env
  log "up: ${#HOST_LIST[@]} hosts on $NET.0/24 in $((SECONDS - t0)) s"
  cmd_status
}

# ---- down -----------------------------------------------------------------------------------

# Stops processes in bulk: SIGTERM to all, up to 5 s, then SIGKILL. Args: pid start pairs.
terminate_all() {
  [[ $# -gt 0 ]] || return 0
  local -a ps=("$@")
  local j
  for ((j = 0; j < ${#ps[@]}; j += 2)); do
    if alive "${ps[j]}" "${ps[j + 1]}"; then kill -TERM "${ps[j]}" 2>/dev/null || true; fi
  done
  wait_gone 50 "${ps[@]}" && return 0
  for ((j = 0; j < ${#ps[@]}; j += 2)); do
    if alive "${ps[j]}" "${ps[j + 1]}"; then
      log "pid ${ps[j]} ignored SIGTERM for 5 s; SIGKILL"
      kill -KILL "${ps[j]}" 2>/dev/null || true
    fi
  done
  wait_gone 50 "${ps[@]}" || log "some processes outlived SIGKILL: $*"
}

# Kills whatever still runs in the cluster's own namespaces: sshd's per-connection processes
# and what they run (a receive in progress), leftovers of `exec`. Nothing else can be in them.
kill_netns_leftovers() {
  local ns pid i
  for _ in 1 2 3; do
    local -a left=()
    for ns in "$@"; do
      [[ -e /run/netns/$ns ]] || continue
      for pid in $(ip netns pids "$ns" 2>/dev/null); do left+=("$pid" "$(proc_start_time "$pid")"); done
    done
    [[ ${#left[@]} -gt 0 ]] || return 0
    for ((i = 0; i < ${#left[@]}; i += 2)); do kill -KILL "${left[$i]}" 2>/dev/null || true; done
    wait_gone 50 "${left[@]}" || true
  done
}

unmount() {
  local mnt=$1 i
  mountpoint -q "$mnt" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    umount "$mnt" 2>/dev/null && return 0
    sleep 0.1
  done
  log "$mnt stayed busy for 5 s; detaching it lazily"
  umount -l "$mnt" || log "cannot unmount $mnt"
}

# Loop devices still backed by `img`.
loops_of() {
  losetup -l -n -O NAME,BACK-FILE 2>/dev/null | awk -v img="$1" '
    { f = $0; sub(/^[^ ]+ +/, "", f); sub(/ \(deleted\)$/, "", f); if (f == img) print $1 }'
}

# Detaches the loop devices backed by our image `img` (recorded as `dev`; found by image too, in
# case `up` was interrupted before recording it; a device number reused by someone else is
# left alone). The kernel lets go of a device only after the last reference to the unmounted
# filesystem is dropped, which can lag behind umount and the exit of processes in other mount
# namespaces (on a loaded machine, with direct I/O, that took more than 5 s), so this retries
# for up to 30 s.
detach_loop() {
  local img=$2 i dev
  for ((i = 0; i < 300; i++)); do
    local -a devs
    mapfile -t devs < <(loops_of "$img")
    [[ ${#devs[@]} -gt 0 ]] || return 0
    for dev in "${devs[@]}"; do losetup -d "$dev" 2>/dev/null || true; done
    sleep 0.1
  done
  log "loop device(s) $(loops_of "$img" | paste -sd' ') of $img stayed attached for 30 s"
}

cmd_down() {
  if [[ ! -d $DIR ]]; then echo "down: $DIR does not exist; nothing to do"; return 0; fi
  DIR=$(realpath "$DIR")
  [[ -e $DIR/$MARKER ]] || die "$DIR was not made by $PROG up (no $MARKER); not touching it"
  local -a lines=() pids=() nss=()
  [[ -f $DIR/state ]] && mapfile -t lines <"$DIR/state"
  local line kind a b c d h
  # Processes first, daemons before sshd; then everything else in reverse order of creation.
  # (pid files too, in case `up` or `start` was killed before recording in D/state)
  for h in "$DIR"/*/daemon.pid "$DIR"/*/sshd.owned-pid; do
    read -r a b <"$h" && pids+=("$a" "$b")
  done
  for line in "${lines[@]}"; do
    read -r kind a b c d <<<"$line"
    case $kind in
      pid) pids+=("$c" "$d") ;;
      netns) nss+=("$a") ;;
    esac
  done
  terminate_all "${pids[@]}"
  kill_netns_leftovers "${nss[@]}"
  local i
  for ((i = ${#lines[@]} - 1; i >= 0; i--)); do
    read -r kind a b c d <<<"${lines[$i]}"
    case $kind in
      mount) unmount "$a" ;;
      loop) detach_loop "$a" "$b" ;;
      file) rm -f "$a" ;;
      link) if ip link show "$a" >/dev/null 2>&1; then ip link del "$a" || log "cannot delete $a"; fi ;;
      netns) if [[ -e /run/netns/$a ]]; then ip netns del "$a" || log "cannot delete netns $a"; fi ;;
      pid) ;;
      *) log "unknown state line: ${lines[$i]}" ;;
    esac
  done
  check_gone "${lines[@]}" || die "down: left the above in place; $DIR kept"
  if ((KEEP_LOGS)); then
    find "$DIR" -depth -mindepth 1 ! -name '*.log' ! -name '*.yaml' ! -name "$MARKER" \
      ! -name cluster.env -delete 2>/dev/null || true
    echo "down: removed the cluster; logs and configs stay in $DIR"
  else
    rm -rf --one-file-system "$DIR"
    echo "down: removed the cluster and $DIR"
  fi
}

# Fails loudly when something recorded is still there.
check_gone() {
  local line kind a b c d left=()
  for line in "$@"; do
    read -r kind a b c d <<<"$line"
    case $kind in
      mount) mountpoint -q "$a" 2>/dev/null && left+=("mount $a") ;;
      loop) [[ -n $(loops_of "$b") ]] && left+=("loop $a") ;;
      link) ip link show "$a" >/dev/null 2>&1 && left+=("link $a") ;;
      netns) [[ -e /run/netns/$a ]] && left+=("netns $a") ;;
      pid) alive "$c" "$d" && left+=("pid $c") ;;
    esac
  done
  if [[ ${#left[@]} -gt 0 ]]; then
    log "down: still present: ${left[*]}"
    return 1
  fi
}

# ---- host commands --------------------------------------------------------------------------

daemon_pidfile() { echo "$DIR/$1/daemon.pid"; }

# Prints "pid start" of the host's daemon when it runs; nothing otherwise.
daemon_running() {
  local f pid start
  f=$(daemon_pidfile "$1")
  [[ -f $f ]] || return 0
  read -r pid start <"$f"
  alive "$pid" "$start" && echo "$pid $start"
  return 0
}

cmd_start() {
  load_env
  check_host "$HOST"
  [[ -z $(daemon_running "$HOST") ]] || die "$HOST already runs a daemon"
  local -a command=("${ARGV[@]}")
  if [[ ${#command[@]} -eq 0 ]]; then
    local bin
    if [[ $HOST == primary ]]; then
      bin=$(find_bin snapledger-primary)
      [[ -n $bin ]] || unavailable "snapledger-primary is not in $BIN_PATH"
      command=("$bin" --config "$DIR/primary/primary.yaml")
    else
      bin=$(find_bin snapledger-replica)
      [[ -n $bin ]] || unavailable "snapledger-replica is not in $BIN_PATH"
      command=("$bin" serve --config "$DIR/$HOST/replica.yaml")
    fi
  fi
  local h=$DIR/$HOST pid start
  echo "=== $(date -Is) $PROG start: ${command[*]}" >>"$h/daemon.log"
  spawn "$h/daemon.pid" "$h/daemon.log" ip netns exec "${NSNAME[$HOST]}" "${command[@]}"
  read -r pid start <"$h/daemon.pid"
  record "pid daemon $HOST $pid $start"
  if ((WAIT_S > 0)); then
    local addr i
    addr=${ADDR[$HOST]}
    for ((i = 0; i < WAIT_S * 10; i++)); do
      accepts "$addr" "$GRPC_PORT" && break
      if ! alive "$pid" "$start"; then
        log "$HOST's daemon exited before listening on $addr:$GRPC_PORT; its log:"
        tail -n 30 "$h/daemon.log" >&2
        exit 1
      fi
      sleep 0.1
    done
    accepts "$addr" "$GRPC_PORT" || die "$HOST's daemon did not listen on $addr:$GRPC_PORT in $WAIT_S s"
  fi
  echo "start host=$HOST pid=$pid"
}

elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }

cmd_stop() {
  load_env
  check_host "$HOST"
  local running pid start t0
  running=$(daemon_running "$HOST")
  if [[ -z $running ]]; then echo "stop host=$HOST result=not-running"; return 0; fi
  read -r pid start <<<"$running"
  t0=$EPOCHREALTIME
  kill -TERM "$pid" 2>/dev/null || true
  if wait_gone $((STOP_TIMEOUT_S * 10)) "$pid" "$start"; then
    echo "stop host=$HOST pid=$pid result=term seconds=$(elapsed "$t0")"
  else
    log "$HOST's daemon (pid $pid) ignored SIGTERM for $STOP_TIMEOUT_S s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone 50 "$pid" "$start" || die "pid $pid outlived SIGKILL for 5 s"
    echo "stop host=$HOST pid=$pid result=kill seconds=$(elapsed "$t0")"
  fi
  rm -f "$(daemon_pidfile "$HOST")"
}

cmd_kill() {
  load_env
  check_host "$HOST"
  local running pid start
  running=$(daemon_running "$HOST")
  if [[ -z $running ]]; then echo "kill host=$HOST result=not-running"; return 0; fi
  read -r pid start <<<"$running"
  kill -KILL "$pid" 2>/dev/null || true
  wait_gone 50 "$pid" "$start" || die "pid $pid outlived SIGKILL for 5 s"
  rm -f "$(daemon_pidfile "$HOST")"
  echo "kill host=$HOST pid=$pid result=kill"
}

# The host's side of the link stays configured; its peer in the bridge goes down, so packets
# are dropped silently (connections stall, as on a cut cable) until link-up.
cmd_link() {
  load_env
  check_host "$HOST"
  ip link set "${VETH[$HOST]}" "$1"
  echo "$CMD host=$HOST"
}

cmd_exec() {
  load_env
  [[ ${#ARGV[@]} -gt 0 ]] || usage_error "exec needs -- command..."
  check_host "$HOST"
  exec ip netns exec "${NSNAME[$HOST]}" "${ARGV[@]}"
}

cmd_status() {
  load_env
  echo "cluster dir=$DIR tag=$TAG subnet=$NET.0/24 bridge=$BRIDGE gateway=$NET.254" \
    "identity=$DIR/primary/id_ed25519 known_hosts=$DIR/primary/known_hosts"
  local host addr running daemon link cfg
  for host in "${HOST_LIST[@]}"; do
    addr=${ADDR[$host]}
    running=$(daemon_running "$host")
    daemon="daemon=stopped"
    [[ -n $running ]] && daemon="daemon=running pid=${running%% *}"
    link=up
    [[ $(ip -o link show "${VETH[$host]}" 2>/dev/null) =~ \<([^>]*)\> &&
       ,${BASH_REMATCH[1]}, == *,UP,* ]] || link=down
    cfg=$DIR/$host/replica.yaml
    [[ $host == primary ]] && cfg=$DIR/primary/primary.yaml
    echo "host name=$host netns=${NSNAME[$host]} address=$addr ssh=$addr:22" \
      "grpc=$addr:$GRPC_PORT metrics=$addr:$METRICS_PORT ledger_root=${LROOT[$host]}" \
      "config=$cfg log=$DIR/$host/daemon.log link=$link $daemon"
  done
}

main() {
  parse_args "$@"
  case $CMD in
    up) cmd_up ;;
    down) cmd_down ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    kill) cmd_kill ;;
    link-down) cmd_link down ;;
    link-up) cmd_link up ;;
    exec) cmd_exec ;;
    status) cmd_status ;;
  esac
}

main "$@"
