# The administrator's story, end to end, against the test bed's NVMe/TCP
# target: doctor, probe, sr-create, status, a volume attached as a VM disk
# would be, data written and read back, a path cut and restored while I/O
# goes on, then detach and destroy. Each step says what it does, what xapi
# would run on a real pool, and how long it took.
#
# XAPI here is the project's emulator with the real plugin behind it (a pool
# of one host); everything below it — the plugin, LVM, nvme-cli, the kernel's
# NVMe/TCP initiator and target — is real.
bin=$TESTBED_DIR/../../target/debug
for tool in nvmetcp nvmetcp-plugin xapi-emulator smapi-call; do
    [ -x "$bin/$tool" ] || tb_fail "$bin/$tool is missing: run tests/demo, which builds it"
done
n=0 total_start=$EPOCHREALTIME
step() { # TITLE WHAT — prints the step header and starts its clock
    n=$((n + 1))
    printf '\n\033[1m━━ step %d: %s\033[0m\n   %s\n' "$n" "$1" "$2"
    step_start=$EPOCHREALTIME
}
took() { awk -v a="$step_start" -v b="$EPOCHREALTIME" 'BEGIN {printf "   ✓ done in %.2f s\n", b - a}'; }
show() { printf '   $'; printf ' %q' "$@"; printf '\n'; "$@" 2>&1 | sed 's/^/   │ /'; }
nvmetcp() { "$bin/nvmetcp" --host unix:/run/xapi.sock "$@"; }
volume_dir=/usr/libexec/xapi-storage-script/volume/org.xen.xapi.storage.nvmetcp
datapath_dir=/usr/libexec/xapi-storage-script/datapath/nvmetcp
call() { "$bin/smapi-call" "$@"; }
field() { python3 -c 'import json, sys; v = json.load(sys.stdin); print(eval("v" + sys.argv[1]))' "$1"; }

step "the storage array" "an NVMe/TCP subsystem with one 256 MiB namespace on two ports (the kernel's nvmet target)"
nqn=$(tb_simple_target array1 256 10.99.0.1 10.99.0.2 2>/dev/null)
printf '   subsystem %s on 10.99.0.1:4420 and 10.99.0.2:4420\n' "$nqn"
took

step "install nvmetcp on the host" "what the RPM lays out: the plugin directories with one link per implemented method, the XAPI host plugin"
"$bin/nvmetcp-plugin" --list-links | while read -r dir file; do
    mkdir -p "/usr/libexec/xapi-storage-script/$dir"
    ln -sf "$bin/nvmetcp-plugin" "/usr/libexec/xapi-storage-script/$dir/$file"
done
mkdir -p /etc/xapi.d/plugins && ln -sf "$bin/nvmetcp-plugin" /etc/xapi.d/plugins/nvmetcp
links=("$volume_dir"/*.* "$datapath_dir"/*.*)
printf '   %s method links\n' "${#links[@]}"
"$bin/xapi-emulator" --unix /run/xapi.sock --plugin "$bin/nvmetcp-plugin" >/run/xapi.url &
xapi=$!
tb_wait 10 "XAPI" test -S /run/xapi.sock
took

step "nvmetcp doctor --pool" "every check of the manual guide on every host, with the fix for each problem"
show nvmetcp doctor --pool --portals 10.99.0.1,10.99.0.2 || true
printf '   (xapi-storage-script is not running because this test bed has no real xapi; on XCP-ng it is)\n'
took

step "nvmetcp probe" "what the array offers, asked through XAPI on the pool master (SR.probe_ext runs the plugin)"
show nvmetcp probe --portals 10.99.0.1 --nqn "$nqn"
took

step "nvmetcp sr-create" "creates the shared SR: XAPI makes a PBD per host, each host connects every path"
show nvmetcp sr-create --name "Demo NVMe/TCP" --portals 10.99.0.1,10.99.0.2 --nqn "$nqn"
sr=$(nvmetcp status --json | field '["srs"][0]["uuid"]')
took

step "nvmetcp status" "every SR, host and path: state, ANA state, I/O policy"
show nvmetcp status
took

step "create a volume" "Volume.create, as xapi runs it for xe vdi-create: a 64 MiB logical volume, its metadata in LV tags"
volume=$(call "$volume_dir" Volume.create "{\"dbg\":\"demo\",\"sr\":\"nvmetcp://sr/$sr\",\"name\":\"demo disk\",\"description\":\"\",\"size\":67108864,\"sharable\":false}")
uri=$(echo "$volume" | field '["uri"][0]')
printf '   volume %s (%s bytes)\n' "$uri" "$(echo "$volume" | field '["virtual_size"]')"
took

step "attach it as a VM disk would be" "Datapath.attach and Datapath.activate, as xapi runs them when a VM starts"
attached=$(call "$datapath_dir" Datapath.attach "{\"dbg\":\"demo\",\"uri\":\"$uri\",\"domain\":\"0\"}")
call "$datapath_dir" Datapath.activate "{\"dbg\":\"demo\",\"uri\":\"$uri\",\"domain\":\"0\"}" >/dev/null
device=$(echo "$attached" | field '["implementations"][1][1]["path"]')
printf '   block device for blkback: %s\n' "$device"
took

step "write and read data" "16 MiB of random data written with O_DIRECT, read back and compared"
head -c 16M /dev/urandom >/run/pattern
dd if=/run/pattern of="$device" bs=1M oflag=direct status=none
dd if="$device" of=/run/readback bs=1M count=16 iflag=direct status=none
cmp /run/pattern /run/readback
printf '   sha256 %s, read back identical\n' "$(sha256sum </run/pattern | cut -c1-16)"
took

step "cut a path" "the array's second port stops serving the subsystem while a VM-like writer keeps going"
rm -f /run/io.count /run/io.errors /run/io.stop
echo 0 >/run/io.count
(i=0; while [ ! -e /run/io.stop ]; do
    dd if=/run/pattern of="$device" bs=64k count=1 seek=$((256 + i % 128)) oflag=direct status=none || echo "$i" >>/run/io.errors
    i=$((i + 1)); echo "$i" >/run/io.count.new && mv /run/io.count.new /run/io.count
done) &
writer=$!
sleep 1
tb_unlink 2 "$nqn" 2>/dev/null
tb_wait 20 "the cut to show" sh -c "! $bin/nvmetcp --host unix:/run/xapi.sock status >/dev/null"
show nvmetcp status || true
before=$(cat /run/io.count); sleep 2; after=$(cat /run/io.count)
[ "$after" -gt "$before" ] || tb_fail "I/O stopped on one path"
errors=0; [ -s /run/io.errors ] && errors=$(wc -l </run/io.errors)
printf '   I/O goes on over the remaining path: %s writes in 2 s, %s errors\n' $((after - before)) "$errors"
took

step "restore the path" "the port serves the subsystem again; the kernel reconnects by itself (reconnect_delay)"
tb_link 2 "$nqn" 2>/dev/null
tb_wait 30 "both paths live" "$bin/nvmetcp" --host unix:/run/xapi.sock status
show nvmetcp status
touch /run/io.stop; wait "$writer"
[ ! -s /run/io.errors ] || tb_fail "$(wc -l </run/io.errors) writes failed during the path cut"
dd if="$device" of=/run/readback bs=1M count=16 iflag=direct status=none
cmp /run/pattern /run/readback
printf '   no write failed; the first 16 MiB still read back identical\n'
took

step "detach" "Datapath.deactivate and Datapath.detach (VM shutdown), Volume.destroy (xe vdi-destroy)"
call "$datapath_dir" Datapath.deactivate "{\"dbg\":\"demo\",\"uri\":\"$uri\",\"domain\":\"0\"}" >/dev/null
call "$datapath_dir" Datapath.detach "{\"dbg\":\"demo\",\"uri\":\"$uri\",\"domain\":\"0\"}" >/dev/null
call "$volume_dir" Volume.destroy "{\"dbg\":\"demo\",\"sr\":\"nvmetcp://sr/$sr\",\"key\":\"$(echo "$volume" | field '["key"]')\"}" >/dev/null
printf '   %s is gone\n' "$device"
took

step "destroy the SR" "SR.destroy (xe sr-destroy): the volume group and its label are removed, the paths released"
call "$volume_dir" SR.destroy "{\"dbg\":\"demo\",\"sr\":\"nvmetcp://sr/$sr\"}" >/dev/null
tb_wait 10 "the paths to be released" sh -c "[ -z \"\$(ls /sys/class/nvme/ 2>/dev/null)\" ]"
printf '   no NVMe controller left on the host\n'
kill "$xapi"
took

awk -v a="$total_start" -v b="$EPOCHREALTIME" -v n="$n" 'BEGIN {printf "\n\033[1mdemo complete: %d steps in %.1f s\033[0m\n", n, b - a}'
