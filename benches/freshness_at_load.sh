#!/bin/bash
# Freshness at full load: a closed-loop loadtest drives the demo campaign flat out while a probe
# visits `demo-lp` every few seconds and times until `query report` counts it.
# Usage (from the repository, after `cargo build --profile fast -p edge -p query -p loadtest`): benches/freshness_at_load.sh FLUSH_MS SECONDS
set -e
B=${B:-target/fast}
D=$(mktemp -d /var/tmp/freshload.XXXX)
sed "s/flush_interval_ms = [0-9]*/flush_interval_ms = $1/" edge/src/demo.toml > $D/edge.toml
taskset -c 0 $B/edge --config $D/edge.toml --data-dir $D/data --store file://$D/lake --listen 127.0.0.1:18096 --workers 1 > $D/edge.log 2>&1 &
EP=$!
sleep 1
taskset -c 1 $B/loadtest --target http://127.0.0.1:18096 -c 32 -d ${2}s > $D/load.log 2>&1 &
LP=$!
sleep 3
TODAY=$(date -u +%F)
i=0
while kill -0 $LP 2>/dev/null; do
  i=$((i+1))
  t0=$(date +%s.%N)
  curl -s -o /dev/null "http://127.0.0.1:18096/c/demo-lp?p=$i"
  while true; do
    n=$($B/query report --store file://$D/lake --from $TODAY --to $TODAY --by campaign --format json --quiet --threads 1 2>/dev/null | python3 -c "
import json,sys
d=json.load(sys.stdin)
print(sum(r['visits'] for r in d['rows'] if 'demo-lp' in json.dumps(r)))" 2>/dev/null || echo 0)
    [ "$n" -ge "$i" ] && break
    sleep 0.1
  done
  echo "probe $i visible after $(echo "$(date +%s.%N) - $t0" | bc) s"
  sleep 1
done
wait $LP || true
tail -15 $D/load.log
curl -s http://127.0.0.1:18096/metrics | grep -E "edge_store_(lag|commits_total|files_committed|segments_uncommitted)" || true
kill $EP; wait $EP 2>/dev/null || true
echo "files: $(find $D/lake -name '*.parquet' -not -path '*_delta_log*' | wc -l)"
rm -rf $D
