# The whole target goes away (every port stops serving) and comes back: both paths
# drop to connecting, then reconnect on their own.
a=10.99.0.1 b=10.99.0.2
nqn=$(tb_simple_target outage 64 $a $b)
tb_connect "$nqn" $a
tb_connect "$nqn" $b
tb_wait 10 "two live paths" tb_has_live_paths "$nqn" 2
tb_target_down
tb_wait 20 "no live path" tb_has_live_paths "$nqn" 0
tb_controllers "$nqn" | while read -r line; do tb_log "path: $line"; done
tb_target_up
tb_wait 30 "both paths live again" tb_has_live_paths "$nqn" 2
tb_log "target back: 2/2 paths live"
