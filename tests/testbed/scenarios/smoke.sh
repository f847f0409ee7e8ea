# The smallest end-to-end check: a target with one port, one connection, one head.
nqn=$(tb_simple_target smoke 64 10.99.0.1)
tb_connect "$nqn" 10.99.0.1
tb_wait 10 "one live path" tb_has_live_paths "$nqn" 1
head=$(tb_head "$nqn")
tb_log "head $head: $(blockdev --getsize64 "$head") bytes"
[ "$(blockdev --getsize64 "$head")" = $((64 * 1024 * 1024)) ]
