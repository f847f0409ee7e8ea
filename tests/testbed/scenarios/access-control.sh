# Host allow-lists and DH-HMAC-CHAP (bidirectional) on the kernel target: only the
# listed host with the right keys gets in. Needs a kernel with NVMe in-band
# authentication (6.0+ built with CONFIG_NVME_AUTH, e.g. 6.12).
nqn=$TB_NQN_PREFIX:secure
tb_modules
tb_net_up 10.99.0.1
tb_subsystem "$nqn"
tb_namespace "$nqn" 1 32
tb_port 1 10.99.0.1
tb_link 1 "$nqn"
host=$(cat /etc/nvme/hostnqn)
host_key=$(nvme gen-dhchap-key --nqn "$host")
ctrl_key=$(nvme gen-dhchap-key --nqn "$nqn")
wrong_key=$(nvme gen-dhchap-key --nqn "$host")
tb_allow_host "$nqn" "$host" "$host_key" "$ctrl_key"

try() { # description, then nvme connect options
    local what=$1
    shift
    if nvme connect -t tcp -a 10.99.0.1 -s 4420 -n "$nqn" "$@" >/dev/null 2>&1; then
        tb_log "$what: connected"
        return 0
    fi
    tb_log "$what: refused"
    return 1
}
other=nqn.2014-08.org.nvmexpress:uuid:$(cat /proc/sys/kernel/random/uuid)
try "a host not on the allow-list" --hostnqn "$other" --hostid "${other##*:}" --dhchap-secret "$host_key" && tb_fail "host ACL not enforced"
try "the listed host without a key" && tb_fail "authentication not enforced"
try "the listed host with a wrong key" --dhchap-secret "$wrong_key" && tb_fail "wrong key accepted"
try "the listed host with the right keys" --dhchap-secret "$host_key" --dhchap-ctrl-secret "$ctrl_key"
tb_wait 10 "an authenticated live path" tb_has_live_paths "$nqn" 1
tb_log "path: $(tb_controllers "$nqn")"
