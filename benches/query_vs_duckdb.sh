#!/usr/bin/env bash
# `query report --by campaign,country` against DuckDB on the same synthetic store, in one run.
#
#   benches/query_vs_duckdb.sh                  # 50 M visits under /var/tmp (about 3 GB)
#   VISITS=5000000 LAKE=/var/tmp/lake5m benches/query_vs_duckdb.sh
#
# Builds `query` and `genstore` (release), generates the store when LAKE does not hold one
# (genstore writes it with the sink's own Parquet writer and prints the totals a correct report
# must show), installs DuckDB from PyPI if missing, then times both engines, interleaved, over
# ROUNDS rounds after a warm-up, and checks that they agree with each other and the generator.
set -euo pipefail
BIN="${CARGO_TARGET_DIR:-target}/release"
cd "$(dirname "$0")/.."
VISITS=${VISITS:-50000000}
LAKE=${LAKE:-/var/tmp/clicktracker-lake-$((VISITS / 1000000))m}
export LAKE ROUNDS=${ROUNDS:-3} THREADS=${THREADS:-2}
cargo build --release -q -p query -p benches --bin query --bin genstore
python3 -c 'import duckdb' 2>/dev/null || python3 -m pip install --quiet duckdb
if [ ! -f "$LAKE/expected.json" ]; then
    rm -rf "$LAKE"
    mkdir -p "$LAKE"
    echo "generating $VISITS visits into $LAKE" >&2
    "$BIN/genstore" --store "file://$LAKE" --visits "$VISITS" > "$LAKE/expected.json.tmp"
    mv "$LAKE/expected.json.tmp" "$LAKE/expected.json"
fi
echo "store: $(du -sh "$LAKE" | cut -f1), $(find "$LAKE" -name '*.parquet' | wc -l) files" >&2
QUERY="$BIN/query" EXPECTED="$LAKE/expected.json" exec python3 benches/query_vs_duckdb.py
