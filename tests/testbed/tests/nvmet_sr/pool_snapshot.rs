//! The two-host snapshot scenarios (issue 18): a snapshot taken on the
//! master of a disk a member's engine serves under `fio --verify` (the
//! master's journal, leaf and header, then the swap on the member through
//! its host plugin), a clone of that snapshot started on the master while
//! the member keeps writing, and the collector bringing the chain back to
//! one node after deactivating what the member still had active. Beside it
//! a plain (never snapshotted) volume the member's engine serves under
//! `datapath = engine` (its host.conf: the guests have no tap-ctl, so `auto`
//! would choose blkback) is snapshotted from the master in the same way: its
//! first snapshot turns its raw LV into the frozen node under the fio. A
//! mixed pool: the master runs the kernel's initiator, the member (no
//! `nvme_tcp`, as XCP-ng 8.3) the userspace one.
//!
//! Last, a VM with a reset-on-boot disk starts and stops on the member: the
//! member makes xapi-storage-script's calls (`Volume.clone`, `Volume.set
//! clone-on-boot`, the clone's datapath, a write, `Volume.destroy` of the
//! clone, `Volume.unset`); its metadata writes go to the master through the
//! member's own emulated XAPI (`serve-member-xapi`, relayed through
//! `/shared/plugin-fwd` to the master's host plugin), and the original's
//! data is unchanged.
//!
//! The master runs `pool-snapshot`, the member (the peer guest)
//! `pool-snapshot-member`; they meet through `tb_signal`/`tb_await`, and the
//! master's emulated XAPI relays plugin calls through `/shared/plugin-snap`.

/// Shell helpers of both sides.
pub const HELPERS: &str = r#"
SR=3f1c6d0e-8a8f-4e0a-9b5e-2d7c1f0a9e12
sr="\"sr\":\"nvmetcp://sr/$SR\""
vg=nvmetcp_$(echo "$SR" | tr -d -)
json() { python3 -c 'import json,sys; v=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"; }
dp() { echo "\"uri\":\"nvmetcp://$SR/$1\",\"domain\":\"$2\""; }
plug() { # VOLUME DOMAIN -> backend type and block device, attached and active as for a VM
    local backend
    backend=$(expect_ok Datapath.attach "{\"dbg\":\"da\",$(dp "$1" "$2")}") || return 1
    expect_ok Datapath.activate "{\"dbg\":\"dv\",$(dp "$1" "$2")}" >/dev/null || return 1
    json "$backend" 'v["implementations"][0][1]["backend_type"] + " " + [i[1]["path"] for i in v["implementations"] if i[0] == "BlockDevice"][0]'
}
unplug() {
    expect_ok Datapath.deactivate "{\"dbg\":\"dd\",$(dp "$1" "$2")}" >/dev/null
    expect_ok Datapath.detach "{\"dbg\":\"dt\",$(dp "$1" "$2")}" >/dev/null
}
sum() { sha256sum | cut -d' ' -f1; }
# The first 4 MiB of a device (the region fio never writes).
quiet_sum() { dd if="$1" bs=1M count=4 iflag=direct status=none | sum; }
tag_of() { lvs --noheadings -o lv_tags "$vg/$1" | tr ',' '\n' | sed -n "s/^ *$2=//p"; }
node_of() { tag_of "$1" nn; }
chain_of() { # VOLUME: its chain's nodes, leaf first
    local n
    n=$(node_of "$1")
    while [ -n "$n" ]; do printf '%s ' "$n"; n=$(tag_of "$n" np); done
}
show_lvs() { tb_log "LVs $*:"; lvs --noheadings -o lv_name,lv_tags "$vg" | sed 's/^/    /' >&2; }
# This host's SMlog: the plugin's syslog lines (LOCAL2), kept with the scenario's files.
SMLOG=$SCENARIO_OUT/SMlog
smlog() {
    python3 -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
if os.path.exists("/dev/log"):
    os.unlink("/dev/log")
s.bind("/dev/log")
with open(sys.argv[1], "ab", buffering=0) as f:
    while True:
        f.write(s.recv(65536) + b"\n")
' "$SMLOG" &
    smlog_pid=$!
    tb_wait 10 "this host's syslog socket" test -S /dev/log
}
# SMlog's lines after line $1 that match $2.
smlog_since() { tail -n +"$(($1 + 1))" "$SMLOG" | grep -F -- "$2" || true; }
ro_config="activation { read_only_volume_list = [ \"$vg\" ] }"
ro_of() { # LV: whether its device-mapper table is read-only on this host (1), or none
    local d name
    name="${vg//-/--}-${1//-/--}"
    for d in /sys/block/dm-*; do
        [ -e "$d/dm/name" ] && [ "$(cat "$d/dm/name")" = "$name" ] && { cat "$d/ro"; return 0; }
    done
    echo none
}
"#;

/// The master's side.
pub const MASTER: &str = r#"
smlog
trap 'kill "$smlog_pid"; rm -f /dev/log' EXIT
nqn=$TB_NQN_PREFIX:poolsnap
tb_modules; tb_subsystem "$nqn"; tb_namespace "$nqn" 1 256
[ -d "$TB_CFG/ports/1" ] || tb_port 1 10.98.0.1
tb_link 1 "$nqn"
mkdir -p /etc/xensource /var/lib/xcp && echo master >/etc/xensource/pool.conf
"$T" serve-two-hosts /shared/plugin-snap >xapi.out &
xapi=$!
tb_wait 20 "the emulated pool" grep -q serving xapi.out
stored=$(expect_ok SR.create "{\"dbg\":\"c\",\"uuid\":\"$SR\",\"configuration\":{\"portals\":\"10.98.0.1\",\"nqn\":\"$nqn\",\"namespace\":\"1\"},\"name\":\"poolsnap\",\"description\":\"\"}")
expect_ok SR.attach "{\"dbg\":\"a\",\"configuration\":$stored}" >/dev/null
a=$(json "$(expect_ok Volume.create "{\"dbg\":\"v\",$sr,\"name\":\"vm disk\",\"description\":\"\",\"size\":16777216,\"sharable\":false}")" 'v["key"]')
b=$(json "$(expect_ok Volume.create "{\"dbg\":\"v\",$sr,\"name\":\"plain disk\",\"description\":\"\",\"size\":16777216,\"sharable\":false}")" 'v["key"]')
# A first snapshot at rest: from now on the volume's data is a chain.
s0=$(json "$(expect_ok Volume.snapshot "{\"dbg\":\"s0\",$sr,\"key\":\"$a\"}")" 'v["key"]')
printf '%s' "$stored" >/shared/snap-config
echo "$a" >/shared/snap-volume
echo "$b" >/shared/snap-plain
tb_signal snap-layered
tb_await snap-writing 300
# The member's engine serves the volume and fio writes: the snapshot is
# taken here and swapped there.
expect_err NVMETCP_VOLUME_ACTIVE Volume.destroy "{\"dbg\":\"x\",$sr,\"key\":\"$a\"}" >/dev/null
s1=$(json "$(expect_ok Volume.snapshot "{\"dbg\":\"s1\",$sr,\"key\":\"$a\"}")" 'v["key"]')
tb_log "snapshot $s1 taken here of the disk the member writes"
# The plain volume the member's engine serves (aio: on its raw LV): its
# first snapshot, taken here and swapped there, freezes that LV.
sb=$(json "$(expect_ok Volume.snapshot "{\"dbg\":\"sb\",$sr,\"key\":\"$b\"}")" 'v["key"]')
tb_log "snapshot $sb taken here of the plain disk the member's engine writes"
lvs --noheadings -o lv_tags "$vg" >tags.txt
grep -q 'nj=' tags.txt && tb_fail "the snapshot left its journal"
frozen_node=$(node_of "$s1")
[ "$(node_of "$sb")" = "$b" ] || tb_fail "the plain volume's snapshot does not hold its raw LV: $(node_of "$sb")"
read_frozen() { # NODE FORMAT: a snapshot's chain (its 16 MiB), read here with every LV active read-only
    vgchange -q -ay --config "$ro_config" "$vg" >&2
    qemu-img convert -U -f "$2" -O raw "/dev/$vg/$1" /tmp/frozen.raw
    vgchange -q -an "$vg" >/dev/null 2>&1 || true
    echo "$(head -c 16777216 /tmp/frozen.raw | sum) $(quiet_sum /tmp/frozen.raw)"
    rm -f /tmp/frozen.raw
}
read_snapshot() { # VOLUME: read_frozen of the node holding its data
    local node
    node=$(node_of "$1")
    read_frozen "$node" "$(tag_of "$node" nf)"
}
read -r frozen frozen_quiet < <(read_frozen "$frozen_node" qcow2)
[ "$frozen_quiet" = "$(cat /shared/snap-quiet)" ] || tb_fail "the snapshot does not hold the data of the snapshot point"
read -r frozen_b frozen_b_quiet < <(read_frozen "$b" raw)
[ "$frozen_b_quiet" = "$(cat /shared/snap-quiet-b)" ] || tb_fail "the plain volume's snapshot does not hold the data of the snapshot point"
echo "$s1" >/shared/snap-s1
tb_signal snap-taken
# A clone of the snapshot started here while the member keeps writing.
c=$(json "$(expect_ok Volume.clone "{\"dbg\":\"c\",$sr,\"key\":\"$s1\"}")" 'v["key"]')
read -r type dev < <(plug "$c" 5)
[ "$type" = vbd3 ] || tb_fail "the clone is not served by the engine ($type)"
[ "$(quiet_sum "$dev")" = "$frozen_quiet" ] || tb_fail "the clone does not start from the snapshot"
dd if=/dev/urandom of="$dev" bs=1M count=2 seek=4 oflag=direct status=none
unplug "$c" 5
tb_log "the clone ran here while the member wrote"
# Issue 18: the collector merges online in the chain the member's engine
# serves under fio, through that engine (host plugin chain_commit), never
# with qemu-img here. A second live snapshot makes the chain
# $a <- s1's node <- s2's node <- leaf; destroying s0 merges s1's node into
# the raw base (an intermediate commit: the member's engine rewrites the
# backing link of s2's node, a read-only parent until the member reloads it;
# the leaves the clone gave s1 and itself, open nowhere, are rebased here), and
# destroying s2 merges the running leaf into s2's node (an active commit:
# the member's engine writes s2's node from then on).
s2=$(json "$(expect_ok Volume.snapshot "{\"dbg\":\"s2\",$sr,\"key\":\"$a\"}")" 'v["key"]')
show_lvs "after the live snapshot $s2"
read -r -a before <<<"$(chain_of "$a")"
[ "${#before[@]}" = 4 ] && [ "${before[2]}" = "$frozen_node" ] && [ "${before[3]}" = "$a" ] ||
    tb_fail "the chain of $a before the merges is not leaf <- s2 <- s1 <- base: ${before[*]}"
s1_node=$(node_of "$s1")
mark=$(wc -l <"$SMLOG")
expect_ok Volume.destroy "{\"dbg\":\"m0\",$sr,\"key\":\"$s0\"}" >/dev/null
show_lvs "after destroying $s0"
# s1 and the clone each have a leaf of their own on the merged node (the clone
# gave them those): both now rest on the base.
[ "$(node_of "$s1")" = "$s1_node" ] || tb_fail "s1 points at another node after the destroy: $(node_of "$s1"), not $s1_node"
[ "$(tag_of "$s1_node" np)" = "$a" ] || tb_fail "s1's node was not relinked onto $a: $(tag_of "$s1_node" np)"
[ "$(chain_of "$a")" = "${before[0]} ${before[1]} $a " ] || tb_fail "the chain after merging $frozen_node: $(chain_of "$a")"
[ "$(tag_of "$(node_of "$c")" np)" = "$a" ] || tb_fail "the clone's leaf was not rebased onto $a: $(tag_of "$(node_of "$c")" np)"
expect_ok Volume.destroy "{\"dbg\":\"m2\",$sr,\"key\":\"$s2\"}" >/dev/null
show_lvs "after destroying $s2"
# An active commit that outlasts the collector's patience (60 s) is left to
# its next run: SR.attach runs it, as xapi's next plug would.
for round in 1 2 3 4 5; do
    [ "$(chain_of "$a")" != "${before[1]} $a " ] || break
    tb_log "the leaf's merge is still running (round $round): SR.attach runs the collector again"
    sleep 10
    expect_ok SR.attach "{\"dbg\":\"a\",\"configuration\":$stored}" >/dev/null
    show_lvs "after SR.attach $round"
done
[ "$(chain_of "$a")" = "${before[1]} $a " ] || tb_fail "the chain after merging the running leaf: $(chain_of "$a")"
grep -q 'nj=' < <(lvs --noheadings -o lv_tags "$vg") && tb_fail "an online merge left its journal"
tb_log "the master's SMlog of the two destroys:"
smlog_since "$mark" 'merge' | sed 's/^/    /' >&2
[ "$(smlog_since "$mark" "the member's engine merges" | wc -l)" = 2 ] ||
    tb_fail "the member's engine was not asked twice to merge"
[ "$(smlog_since "$mark" 'node merged by the engine serving the volume' | wc -l)" = 2 ] ||
    tb_fail "the two merges were not finished as online merges"
[ -z "$(smlog_since "$mark" 'qemu-img commit')" ] || tb_fail "qemu-img commit ran here on a chain the member has open"
read -r again _ < <(read_snapshot "$s1")
[ "$again" = "$frozen" ] || tb_fail "the snapshot s1 changed in the online merges"
tb_log "the member's engine merged two nodes online: the chain of $a is ${#before[@]} nodes down to 2, the snapshots unchanged"
tb_signal snap-cloned
tb_await snap-detached 300
read -r again _ < <(read_snapshot "$s1")
[ "$again" = "$frozen" ] || tb_fail "the snapshot changed after it was taken"
read -r again _ < <(read_frozen "$b" raw)
[ "$again" = "$frozen_b" ] || tb_fail "the plain volume's snapshot changed after it was taken"
# Destroyed, the snapshots and the clone are collected into the volume's
# own LV; node LVs still active on the member are deactivated there first.
# The plain volume goes before its snapshot: its leaf is removed, not merged.
for v in "$c" "$s1" "$b" "$sb"; do expect_ok Volume.destroy "{\"dbg\":\"x\",$sr,\"key\":\"$v\"}" >/dev/null; done
[ "$(lvs --noheadings -o lv_name "$vg" | wc -l)" = 1 ] || { lvs -o lv_name,lv_tags "$vg"; tb_fail "not collected to one LV"; }
# This host's plugin, answering the calls the member forwards.
mkdir -p /etc/xapi.d/plugins && ln -sf "$(dirname "$NVMETCP")/nvmetcp-plugin" /etc/xapi.d/plugins/nvmetcp
"$T" answer-plugin /shared/plugin-fwd /etc/xapi.d/plugins/nvmetcp 2>forwarded.log &
forwarded=$!
tb_signal snap-collected
tb_await snap-member-done 300
kill "$forwarded"
cat forwarded.log
for f in Volume.clone Volume.set Volume.destroy Volume.unset; do
    grep 'answered volume_call' forwarded.log | grep -qF "\"$f\"" || tb_fail "the member's $f was not run here"
done
[ "$(lvs --noheadings -o lv_name "$vg" | wc -l)" = 1 ] || { lvs -o lv_name,lv_tags "$vg"; tb_fail "the reset-on-boot clone was not collected"; }
expect_ok Volume.destroy "{\"dbg\":\"x\",$sr,\"key\":\"$a\"}" >/dev/null
expect_ok SR.destroy "{\"dbg\":\"x\",$sr}" >/dev/null
tb_signal snap-master-done
kill "$xapi"
"#;

/// The member's side.
pub const MEMBER: &str = r#"
tb_modules
# A mixed pool: this member cannot load nvme_tcp (as XCP-ng 8.3), the master
# can (as XCP-ng 9). The member serves the SR over the userspace initiator;
# this host's own lvs and lvchange below see its /dev/nbdN too.
cp /etc/lvm/lvm.conf /run/lvm.conf.before
smlog
trap 'kill "$smlog_pid"; rm -f /dev/log /etc/modprobe.d/testbed-no-nvme-tcp.conf /etc/nvmetcp/host.conf; cp /run/lvm.conf.before /etc/lvm/lvm.conf' EXIT
modprobe -r nvme_tcp
echo "install nvme_tcp /bin/false" >/etc/modprobe.d/testbed-no-nvme-tcp.conf
modprobe nbd nbds_max=4
sed -i 's#global_filter = \[ #&"a|^/dev/nbd[0-9]+$|", #' /etc/lvm/lvm.conf
mkdir -p /etc/xensource && echo "slave:10.98.0.1" >/etc/xensource/pool.conf
echo "INSTALLATION_UUID='member'" >/etc/xensource-inventory
mkdir -p /etc/xapi.d/plugins && ln -sf "$(dirname "$NVMETCP")/nvmetcp-plugin" /etc/xapi.d/plugins/nvmetcp
"$T" answer-plugin /shared/plugin-snap /etc/xapi.d/plugins/nvmetcp 2>answers.log &
answers=$!
tb_await snap-layered 300
stored=$(cat /shared/snap-config)
a=$(cat /shared/snap-volume)
expect_ok SR.attach "{\"dbg\":\"a\",\"configuration\":$stored}" >/dev/null
grep -Eq '"initiator": ?"userspace"' "/run/nvmetcp/srs/$SR.json" || tb_fail "the member without nvme_tcp did not attach over the userspace initiator"
read -r type dev < <(plug "$a" 7)
[ "$type" = vbd3 ] || tb_fail "the member does not serve the layered volume through its engine ($type)"
[ "$(ro_of "$a")" = 1 ] || tb_fail "the chain's base is writable on the member: $(ro_of "$a")"
# A plain volume, served by this host's engine as its host.conf asks.
b=$(cat /shared/snap-plain)
mkdir -p /etc/nvmetcp && echo "datapath = engine" >/etc/nvmetcp/host.conf
read -r type dev_b < <(plug "$b" 8)
[ "$type" = vbd3 ] || tb_fail "datapath = engine: the member does not serve the plain volume through its engine ($type)"
# Known data where fio never writes, then fio --verify in a loop on the rest.
dd if=/dev/urandom of="$dev" bs=1M count=4 oflag=direct status=none
quiet_sum "$dev" >/shared/snap-quiet
dd if=/dev/urandom of="$dev_b" bs=1M count=4 oflag=direct status=none
quiet_sum "$dev_b" >/shared/snap-quiet-b
( n=0
  while [ ! -e /shared/snap-cloned ] || [ "$n" -lt 2 ]; do
      n=$((n + 1))
      fio --offset=8m --size=8m --rw=randwrite --bs=4k --direct=1 --verify=crc32c --do_verify=1 --iodepth=4 \
          --ioengine=libaio --output="fio.$n.log" --name=live --filename="$dev" --name=plain --filename="$dev_b" --size=4m || exit 1
      [ "$(grep -c "err= 0" "fio.$n.log")" = 2 ] || exit 1
  done
  echo "$n" >fio.rounds ) &
writer=$!
sleep 2
kill -0 "$writer" || tb_fail "fio ended before the snapshot"
tb_signal snap-writing
tb_await snap-taken 300
# After the swap this host writes the new leaf; the old one is read-only here.
s1=$(cat /shared/snap-s1)
old=$(node_of "$s1")
[ "$(ro_of "$old")" = 1 ] || tb_fail "the snapshot's node $old is writable on the member after the swap: $(ro_of "$old")"
[ "$(ro_of "$b")" = 1 ] || tb_fail "the plain volume's raw LV is writable on the member after the swap: $(ro_of "$b")"
dd if=/dev/urandom of="$dev" bs=1M count=4 oflag=direct status=none
dd if=/dev/urandom of="$dev_b" bs=1M count=4 oflag=direct status=none
# The master merges twice between these (an active commit under fio may
# need several collector runs): 600 s was too short on a loaded host.
tb_await snap-cloned 1200
wait "$writer" || { cat fio.*.log; tb_fail "fio --verify failed across the snapshots and merges of the master"; }
tb_log "fio --verify passed in $(cat fio.rounds) rounds on both disks across the master's snapshots, clone and merges"
# The master's collector merged twice in this chain through this host's engine.
grep 'answered chain_commit' answers.log | sed 's/^/    /' >&2
[ "$(grep 'answered chain_commit' answers.log | grep -F '"start"' | grep -cF 'started')" = 2 ] ||
    tb_fail "this host's engine was not asked twice to start a merge"
[ "$(smlog_since 0 'the engine merges for the master' | wc -l)" = 2 ] || tb_fail "this host's SMlog does not show the two merges"
tb_log "after the merges: the raw base $a is read-only here: $(ro_of "$a")"
served=$(dd if="$dev" bs=1M count=16 iflag=direct status=none | sum)
unplug "$a" 7
unplug "$b" 8
rm /etc/nvmetcp/host.conf
# Node LVs left active here (as an administrator's vgchange would): the
# master's collector must deactivate them here before removing them.
for lv in $(lvs --noheadings -o lv_name "$vg" | grep -o 'node-[^ ]*'); do
    lvchange -q -ay --config "$ro_config" "$vg/$lv"
done
tb_signal snap-detached
tb_await snap-collected 300
for d in /sys/block/dm-*; do
    [ -e "$d/dm/name" ] || continue
    name=$(cat "$d/dm/name")
    case $name in "${vg//-/--}-node"*) tb_fail "removed LV $name is still mapped here" ;; esac
done
grep 'answered lv_release' answers.log | grep -qF 'released\":true' || tb_fail "the master never deactivated an LV here"
read -r type path < <(plug "$a" 7)
[ "$type" = vbd ] || tb_fail "the collected volume is not a plain volume again ($type)"
[ "$(dd if="$path" bs=1M count=16 iflag=direct status=none | sum)" = "$served" ] || tb_fail "the collected volume lost data"
unplug "$a" 7
# A VM with the disk reset-on-boot starts here, as xapi-storage-script runs it
# on the host the VM starts on: the metadata writes go to the master.
"$T" serve-member-xapi /shared/plugin-fwd >member-xapi.out &
member_xapi=$!
tb_wait 20 "this member's emulated XAPI" grep -q serving member-xapi.out
c=$(json "$(expect_ok Volume.clone "{\"dbg\":\"rb\",$sr,\"key\":\"$a\"}")" 'v["key"]')
expect_ok Volume.set "{\"dbg\":\"rb\",$sr,\"key\":\"$a\",\"k\":\"clone-on-boot\",\"v\":\"$c\"}" >/dev/null
read -r type dev_c < <(plug "$c" 9)
[ "$(dd if="$dev_c" bs=1M count=16 iflag=direct status=none | sum)" = "$served" ] || tb_fail "the reset-on-boot clone does not start from the disk's data"
dd if=/dev/urandom of="$dev_c" bs=1M count=4 oflag=direct status=none
unplug "$c" 9
# The VM stops: the clone goes, and the disk's key with it.
expect_ok Volume.destroy "{\"dbg\":\"rb\",$sr,\"key\":\"$c\"}" >/dev/null
expect_ok Volume.unset "{\"dbg\":\"rb\",$sr,\"key\":\"$a\",\"k\":\"clone-on-boot\"}" >/dev/null
expect_ok Volume.stat "{\"dbg\":\"st\",$sr,\"key\":\"$a\"}" | grep -q clone-on-boot && tb_fail "Volume.unset left clone-on-boot"
read -r type path < <(plug "$a" 7)
[ "$(dd if="$path" bs=1M count=16 iflag=direct status=none | sum)" = "$served" ] || tb_fail "the reset-on-boot run changed the original disk"
unplug "$a" 7
kill "$member_xapi"
tb_log "a reset-on-boot VM started and stopped on this member through the master; the disk is unchanged"
expect_ok SR.detach "{\"dbg\":\"d\",$sr}" >/dev/null
tb_signal snap-member-done
# The master's last destroy asks this host whether it maps the volume.
tb_await snap-master-done 300
kill "$answers"
"#;
