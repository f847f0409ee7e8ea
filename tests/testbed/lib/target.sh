# Scenario building blocks for the test bed guest (sourced by stage 2 and by
# every scenario). The target is the kernel's own NVMe target (nvmet) set up
# through configfs; the initiator is the same kernel's NVMe/TCP host with native
# multipath. Paths are distinct addresses on a dummy link, so one can be cut by
# unlinking its port (the target stops serving it) or by removing its address
# (the network goes away; only keep-alive notices).
#
# Conventions: functions are tb_*; they print what they do on stderr, prefixed
# with the time since boot, and fail (non-zero) with a message when something
# is not as expected.

TB_CFG=/sys/kernel/config/nvmet
TB_LINK=tb0
TB_NQN_PREFIX=nqn.2026-11.io.nvmetcp.testbed

tb_log() { printf '[%7.2f] %s\n' "$(cut -d' ' -f1 /proc/uptime)" "$*" >&2; }
tb_fail() { tb_log "FAIL: $*"; return 1; }

# tb_wait SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.1 s until it succeeds.
tb_wait() {
    local seconds=$1 what=$2 deadline
    shift 2
    deadline=$(awk -v now="$(cut -d' ' -f1 /proc/uptime)" -v s="$seconds" 'BEGIN {print now + s}')
    until "$@" >/dev/null 2>&1; do
        if awk -v now="$(cut -d' ' -f1 /proc/uptime)" -v d="$deadline" 'BEGIN {exit !(now > d)}'; then
            tb_fail "timed out after ${seconds}s waiting for: $what"
            return 1
        fi
        sleep 0.1
    done
}

# tb_modules: loads target and initiator modules (TCP; RDMA with TB_RDMA=1).
tb_modules() {
    modprobe nvmet && modprobe nvmet-tcp && modprobe nvme-tcp && modprobe nvme-fabrics || return 1
    if [ "${TB_RDMA:-0}" = 1 ]; then modprobe rdma_rxe && modprobe nvmet-rdma && modprobe nvme-rdma; fi
}

# tb_net_up ADDR...: a dummy link carrying the given IPv4 addresses (/24).
tb_net_up() {
    ip link show "$TB_LINK" >/dev/null 2>&1 || ip link add "$TB_LINK" type dummy
    ip link set "$TB_LINK" up
    local addr
    for addr in "$@"; do
        ip addr show dev "$TB_LINK" | grep -q " $addr/" || ip addr add "$addr/24" dev "$TB_LINK"
    done
    tb_log "network: $TB_LINK carries $*"
}

# tb_subsystem NQN: creates a subsystem that allows any host.
tb_subsystem() {
    mkdir -p "$TB_CFG/subsystems/$1"
    echo 1 >"$TB_CFG/subsystems/$1/attr_allow_any_host"
    tb_log "subsystem $1"
}

# tb_namespace NQN NSID SIZE_MIB: a namespace backed by a file on tmpfs.
tb_namespace() {
    local nqn=$1 nsid=$2 size=$3 dir file
    dir=$TB_CFG/subsystems/$nqn/namespaces/$nsid
    file=/srv/testbed/${nqn##*:}-ns$nsid.img
    truncate -s "${size}M" "$file"
    mkdir -p "$dir"
    echo "$file" >"$dir/device_path"
    [ -e "$dir/buffered_io" ] && echo 1 >"$dir/buffered_io"
    echo 1 >"$dir/enable"
    tb_log "namespace $nsid of $nqn: ${size} MiB, uuid $(cat "$dir/device_uuid")"
}

# tb_port ID ADDR [SVCID [TRTYPE]]: a target port (TCP, 4420 by default).
tb_port() {
    local dir=$TB_CFG/ports/$1
    mkdir -p "$dir"
    echo "${4:-tcp}" >"$dir/addr_trtype"
    echo ipv4 >"$dir/addr_adrfam"
    echo "$2" >"$dir/addr_traddr"
    echo "${3:-4420}" >"$dir/addr_trsvcid"
    tb_log "port $1: ${4:-tcp} $2:${3:-4420}"
}

# tb_link PORT NQN / tb_unlink PORT NQN: serve (or stop serving) a subsystem on a port.
tb_link() { ln -s "$TB_CFG/subsystems/$2" "$TB_CFG/ports/$1/subsystems/$2" && tb_log "port $1 serves $2"; }
tb_unlink() { rm "$TB_CFG/ports/$1/subsystems/$2" && tb_log "port $1 no longer serves $2"; }

# tb_addr_del ADDR / tb_addr_add ADDR: take a target address off the network and back.
tb_addr_del() { ip addr del "$1/24" dev "$TB_LINK" && tb_log "address $1 removed"; }
tb_addr_add() { ip addr add "$1/24" dev "$TB_LINK" && tb_log "address $1 restored"; }

# tb_allow_host NQN HOSTNQN [HOST_KEY [CTRL_KEY]]: restrict the subsystem to listed
# hosts, optionally with DH-HMAC-CHAP keys (DHHC-1:...), bidirectional with CTRL_KEY.
tb_allow_host() {
    local nqn=$1 host=$2 dir=$TB_CFG/hosts/$2
    mkdir -p "$dir"
    if [ -n "${3:-}" ]; then
        [ -e "$dir/dhchap_key" ] || tb_fail "this kernel's target has no DH-HMAC-CHAP" || return 1
        echo "hmac(sha256)" >"$dir/dhchap_hash"
        echo ffdhe2048 >"$dir/dhchap_dhgroup"
        echo "$3" >"$dir/dhchap_key"
        [ -z "${4:-}" ] || echo "$4" >"$dir/dhchap_ctrl_key"
    fi
    echo 0 >"$TB_CFG/subsystems/$nqn/attr_allow_any_host"
    ln -sfn "$dir" "$TB_CFG/subsystems/$nqn/allowed_hosts/$host"
    tb_log "subsystem $nqn allows host $host${3:+ with DH-HMAC-CHAP}"
}

# tb_target_down / tb_target_up: stop serving every subsystem on every port, and back.
tb_target_down() {
    local link
    : >/run/tb-links
    for link in "$TB_CFG"/ports/*/subsystems/*; do
        [ -L "$link" ] || continue
        echo "${link%%/subsystems/*} ${link##*/}" >>/run/tb-links
        rm "$link"
    done
    tb_log "target down ($(wc -l </run/tb-links) port links removed)"
}
tb_target_up() {
    local port nqn
    while read -r port nqn; do ln -s "$TB_CFG/subsystems/$nqn" "$port/subsystems/$nqn"; done </run/tb-links
    tb_log "target up ($(wc -l </run/tb-links) port links restored)"
}

# tb_simple_target NAME SIZE_MIB ADDR...: modules, network, one subsystem
# ($TB_NQN_PREFIX:NAME) with namespace 1, one port per address, all linked.
# Prints the subsystem NQN.
tb_simple_target() {
    local size=$2 nqn=$TB_NQN_PREFIX:$1 port=0 addr
    shift 2
    tb_modules && tb_net_up "$@" && tb_subsystem "$nqn" && tb_namespace "$nqn" 1 "$size" || return 1
    for addr in "$@"; do
        port=$((port + 1))
        tb_port "$port" "$addr" && tb_link "$port" "$nqn" || return 1
    done
    echo "$nqn"
}

# --- the initiator's view (sysfs only) ---------------------------------------

# tb_subsys_dir NQN: the host's nvme-subsystem directory for NQN.
tb_subsys_dir() {
    local dir
    for dir in /sys/class/nvme-subsystem/*; do
        [ "$(cat "$dir/subsysnqn" 2>/dev/null)" = "$1" ] && { echo "$dir"; return 0; }
    done
    return 1
}

# tb_controllers NQN: "name state address" of each controller of the subsystem.
tb_controllers() {
    local dir ctrl
    dir=$(tb_subsys_dir "$1") || return 1
    for ctrl in "$dir"/nvme*; do
        [[ ${ctrl##*/} =~ ^nvme[0-9]+$ ]] || continue
        echo "${ctrl##*/} $(cat "$ctrl/state") $(cat "$ctrl/address")"
    done
}

# tb_live_paths NQN: how many controllers of the subsystem are live.
tb_live_paths() { tb_controllers "$1" | awk '$2 == "live"' | wc -l; }
tb_has_live_paths() { [ "$(tb_live_paths "$1")" = "$2" ]; }

# tb_head NQN [NSID]: the multipath head block device of a namespace.
tb_head() {
    local dir dev
    dir=$(tb_subsys_dir "$1") || return 1
    for dev in "$dir"/nvme*; do
        [[ ${dev##*/} =~ ^nvme[0-9]+n${2:-1}$ ]] && { echo "/dev/${dev##*/}"; return 0; }
    done
    return 1
}

# tb_connect NQN ADDR [SVCID]: connects one path with nvme-cli (test bed only;
# the driver itself talks to /dev/nvme-fabrics).
tb_connect() {
    nvme connect -t tcp -a "$2" -s "${3:-4420}" -n "$1" -k 5 -c 2 -l -1 >&2 && tb_log "connected $1 via $2"
}

# tb_reset: removes everything a scenario may have left: controllers, VGs,
# target configuration, network, backing files. Controllers go first: with every
# path down, I/O to a head (an LVM scan) would wait forever.
tb_reset() {
    local c link dir
    for c in /sys/class/nvme/nvme*; do
        [ -e "$c/delete_controller" ] && timeout 30 sh -c "echo 1 >$c/delete_controller" 2>/dev/null
    done
    command -v dmsetup >/dev/null && timeout 30 dmsetup remove_all --force >/dev/null 2>&1
    # LVM's /dev/<vg>/ nodes of what is gone, and the driver's host state.
    command -v vgscan >/dev/null && timeout 30 vgscan --mknodes >/dev/null 2>&1
    rm -rf /run/nvmetcp /etc/nvmetcp /etc/xensource/pool.conf /etc/xensource-inventory
    if [ -d "$TB_CFG" ]; then
        for link in "$TB_CFG"/ports/*/subsystems/* "$TB_CFG"/subsystems/*/allowed_hosts/*; do
            [ -L "$link" ] && rm "$link"
        done
        for dir in "$TB_CFG"/ports/*/referrals/*; do
            [ -d "$dir" ] && { echo 0 >"$dir/enable"; rmdir "$dir"; }
        done
        for dir in "$TB_CFG"/subsystems/*/namespaces/*; do
            [ -d "$dir" ] && { echo 0 >"$dir/enable"; rmdir "$dir"; }
        done
        for dir in "$TB_CFG"/ports/* "$TB_CFG"/subsystems/* "$TB_CFG"/hosts/*; do
            [ -d "$dir" ] && rmdir "$dir"
        done
    fi
    ip link del "$TB_LINK" 2>/dev/null
    rm -f /srv/testbed/*.img
    true
}

# --- two guests ----------------------------------------------------------------

# tb_signal NAME: tells the other guest NAME happened (a file in /shared).
tb_signal() { date +%s.%N >"/shared/$1" && tb_log "signalled $1"; }

# tb_await NAME SECONDS: waits for the other guest's signal NAME.
tb_await() { tb_wait "$2" "the other host to signal $1" test -e "/shared/$1" && tb_log "got $1"; }
