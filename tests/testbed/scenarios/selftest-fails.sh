# A scenario that fails on purpose, so tests can prove the harness reports a
# failure (status, log, serial console) instead of hiding it.
tb_log "this scenario fails on purpose"
echo "marker: deliberate failure" >"$SCENARIO_OUT/evidence"
exit 3
