# The test bed at work: a kernel NVMe/TCP target with two paths, both connected
# with native multipath into one head, LVM on it, and I/O that carries on while
# one path is cut (port unlinked, then address removed) and restored.
a=10.99.0.1 b=10.99.0.2
nqn=$(tb_simple_target demo 256 $a $b)
tb_connect "$nqn" $a
tb_connect "$nqn" $b
tb_wait 10 "two live paths" tb_has_live_paths "$nqn" 2
tb_controllers "$nqn" | while read -r line; do tb_log "path: $line"; done
head=$(tb_head "$nqn")
subsys=$(tb_subsys_dir "$nqn")
subsystems=(/sys/class/nvme-subsystem/*/)
[ ${#subsystems[@]} = 1 ] || tb_fail "expected one subsystem on the host"
namespaces=(/dev/nvme*n1)
[ ${#namespaces[@]} = 1 ] || tb_fail "expected exactly one namespace block device (the multipath head)"
echo round-robin >"$subsys/iopolicy"
tb_log "one head $head over 2 paths, iopolicy $(cat "$subsys/iopolicy")"

pvcreate -q "$head"
vgcreate -q tbdemo "$head"
lvcreate -q -y -n data -L 64M tbdemo
lv=/dev/tbdemo/data
[ -b "$lv" ] || lv=/dev/mapper/tbdemo-data
tb_log "LVM: $(lvs --noheadings -o lv_name,vg_name,lv_size --units m tbdemo | xargs)"
head -c 4M /dev/urandom >/srv/testbed/pattern
dd if=/srv/testbed/pattern of="$lv" bs=1M oflag=direct status=none
dd if="$lv" of=/srv/testbed/readback bs=1M count=4 iflag=direct status=none
cmp /srv/testbed/pattern /srv/testbed/readback
tb_log "wrote and read back 4 MiB through LVM on the head"

# Background I/O: a direct write+read of 64 KiB in a loop; each round logs its time.
io_loop() {
    local i=0
    while [ ! -e /run/tb-stop ]; do
        dd if=/srv/testbed/pattern of="$lv" bs=64k count=1 seek=$((64 + i % 512)) oflag=direct status=none || echo "ERROR $i" >>/run/tb-io-errors
        dd if="$lv" of=/dev/null bs=64k count=1 skip=$((64 + i % 512)) iflag=direct status=none || echo "ERROR $i" >>/run/tb-io-errors
        cut -d' ' -f1 /proc/uptime >>/run/tb-io-times
        i=$((i + 1))
    done
}
rm -f /run/tb-stop /run/tb-io-errors /run/tb-io-times
io_loop &
io_pid=$!
io_rounds() { wc -l </run/tb-io-times 2>/dev/null || echo 0; }
io_progresses() { local before; before=$(io_rounds); sleep 1; [ "$(io_rounds)" -gt "$before" ]; }
tb_wait 10 "I/O running" io_progresses

cut_and_restore() { # how cut restore wait-seconds
    tb_log "--- cutting one path by $1"
    $2
    tb_wait "$4" "a path to be lost" tb_has_live_paths "$nqn" 1
    tb_controllers "$nqn" | while read -r line; do tb_log "path: $line"; done
    tb_wait 30 "I/O to go on over the remaining path" io_progresses
    tb_log "I/O continues on 1/2 paths"
    $3
    tb_wait 30 "both paths live again" tb_has_live_paths "$nqn" 2
    tb_log "2/2 paths live again"
}
cut_and_restore "unlinking port 2" "tb_unlink 2 $nqn" "tb_link 2 $nqn" 15
cut_and_restore "removing address $b" "tb_addr_del $b" "tb_addr_add $b" 30

touch /run/tb-stop
wait "$io_pid"
longest=$(awk 'NR > 1 && $1 - prev > max {max = $1 - prev} {prev = $1} END {printf "%.2f", max}' /run/tb-io-times)
tb_log "I/O rounds: $(io_rounds), longest pause between rounds: ${longest}s"
cp /run/tb-io-times "$SCENARIO_OUT/io-times"
[ ! -s /run/tb-io-errors ] || tb_fail "I/O errors during path cuts: $(wc -l </run/tb-io-errors)"
dd if="$lv" of=/srv/testbed/readback bs=1M count=4 iflag=direct status=none
cmp /srv/testbed/pattern /srv/testbed/readback
tb_log "data intact after both cuts"

vgchange -q -an tbdemo
for c in $(tb_controllers "$nqn" | awk '{print $1}'); do echo 1 >"/sys/class/nvme/$c/delete_controller"; done
tb_wait 10 "the head to go away" sh -c "! test -e $head"
tb_log "clean teardown: head gone"
