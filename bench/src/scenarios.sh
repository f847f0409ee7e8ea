# Shell prelude of the bench scenarios (run inside the test-bed guest with
# lib/target.sh loaded). The bench program fills B, PLUGIN, NOOP, REPEAT,
# CALLS, SIZES, RUNTIME and STALL_SECONDS in front of this text.
export NVMETCP_GUEST_STEP=1 NVMETCP_PLUGIN=$PLUGIN
# A fresh SR per scenario: an earlier scenario's activated volumes leave /dev/<VG> behind.
SR=$(cat /proc/sys/kernel/random/uuid)
H="nvmetcp://sr/$SR"
VG=nvmetcp_${SR//-/}
ms() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f\n", (b - a) * 1000}'; }
call() { "$B" call "$@"; }
json_field() { python3 -c 'import json, sys; v = json.load(sys.stdin); print(eval("v" + sys.argv[1]))' "$1"; }
no_paths() {
    local _
    for _ in $(seq 200); do
        [ "$(tb_controllers "$1" | wc -l)" = 0 ] && return 0
        sleep 0.05
    done
    tb_fail "paths to $1 remain"
}
sr_up() {
    local nqn=$1 portals=$2
    STORED=$(call SR.create "{\"dbg\":\"b\",\"uuid\":\"$SR\",\"configuration\":{\"portals\":\"$portals\",\"nqn\":\"$nqn\",\"namespace\":\"1\"},\"name\":\"bench\",\"description\":\"\"}")
    call SR.attach "{\"dbg\":\"a\",\"configuration\":$STORED}" >/dev/null
}
volume_device() {
    local size=$1 volume uri
    volume=$(call Volume.create "{\"dbg\":\"v\",\"sr\":\"$H\",\"name\":\"io\",\"description\":\"\",\"size\":$size,\"sharable\":false}")
    uri=$(echo "$volume" | json_field '["uri"][0]')
    call Datapath.attach "{\"dbg\":\"p\",\"uri\":\"$uri\",\"domain\":\"0\"}" >attach.json
    call Datapath.activate "{\"dbg\":\"p\",\"uri\":\"$uri\",\"domain\":\"0\"}" >/dev/null
    json_field '["implementations"][1][1]["path"]' <attach.json
}
