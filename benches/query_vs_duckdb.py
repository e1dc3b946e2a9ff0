#!/usr/bin/env python3
"""Times `query report --by campaign,country` against DuckDB running the same report in SQL
over the same Parquet files, interleaved, and checks that both agree with each other and
with the totals the generator says a correct report must show.

    benches/query_vs_duckdb.sh  (builds, generates the store if missing, runs this)

Environment: LAKE (store directory), QUERY (query binary), ROUNDS (default 3),
THREADS (default 2, for both engines), EXPECTED (genstore's JSON summary file).
"""
import json
import os
import statistics
import subprocess
import sys
import time

import duckdb

LAKE = os.environ["LAKE"]
QUERY = os.environ.get("QUERY", "target/release/query")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
THREADS = int(os.environ.get("THREADS", "2"))
EXPECTED = os.environ.get("EXPECTED")

# The README's attribution rules, in DuckDB's dialect: latest report per (click, txid) wins,
# declined/rejected/chargeback drop out, unmatched conversions form their own row.
DUCKDB_SQL = f"""
WITH v AS (
    SELECT campaign_id AS d0, country AS d1, kind, cost_micros, bot IS NOT TRUE AS keep,
           CASE WHEN kind = 'visit' THEN event_id END AS visit_key
    FROM read_parquet('{LAKE}/visits/*/*/*.parquet', hive_partitioning = true)
),
latest AS (
    SELECT click_id, arg_max_null(status, event_id) AS status,
           arg_max_null(payout_micros, event_id) AS payout
    FROM read_parquet('{LAKE}/conversions/*/*/*.parquet', hive_partitioning = true)
    GROUP BY click_id, coalesce(txid, '')
),
c AS (
    SELECT click_id, count(*) AS conversions, coalesce(sum(payout), 0) AS priced
    FROM latest
    WHERE lower(coalesce(status, '')) NOT IN ('declined', 'rejected', 'chargeback')
    GROUP BY click_id
)
SELECT v.kind IS NULL AS unknown_click, d0, d1,
       count(v.visit_key) AS visits,
       count(*) FILTER (WHERE v.kind = 'click') AS clicks,
       coalesce(sum(c.conversions), 0) AS conversions,
       coalesce(sum(c.priced), 0) AS revenue_micros,
       coalesce(sum(v.cost_micros) FILTER (WHERE v.kind = 'visit'), 0) AS cost_micros
FROM c FULL OUTER JOIN v ON v.visit_key = c.click_id
WHERE coalesce(v.keep, true)
GROUP BY ALL
"""


def run_query():
    t = time.perf_counter()
    out = subprocess.run(
        [QUERY, "report", "--store", f"file://{LAKE}", "--by", "campaign,country",
         "--format", "json", "--threads", str(THREADS), "--quiet"],
        check=True, capture_output=True, text=True).stdout
    elapsed = time.perf_counter() - t
    r = json.loads(out)
    rows = {}
    for row in r["rows"]:
        key = ("?", "?") if row["unknown_click"] else (row["campaign"], row["country"])
        rows[key] = (row["visits"], row["conversions"], row["revenue_micros"], row["cost_micros"])
    return elapsed, rows


def run_duckdb():
    con = duckdb.connect()
    con.execute(f"SET threads = {THREADS}")
    t = time.perf_counter()
    result = con.execute(DUCKDB_SQL).fetchall()
    elapsed = time.perf_counter() - t
    rows = {}
    for unknown, d0, d1, visits, _clicks, conv, rev, cost in result:
        key = ("?", "?") if unknown else (d0, d1)
        rows[key] = (visits, conv, rev, cost)
    return elapsed, rows


def totals(rows):
    return tuple(sum(v[i] for v in rows.values()) for i in range(4))


def main():
    ours, theirs = [], []
    q_rows = d_rows = None
    for i in range(ROUNDS + 1):  # the first round warms the page cache and is not counted
        tq, q_rows = run_query()
        td, d_rows = run_duckdb()
        if i > 0:
            ours.append(tq)
            theirs.append(td)
        print(f"round {i}{' (warm-up)' if i == 0 else ''}: query {tq:.2f} s, duckdb {td:.2f} s",
              file=sys.stderr)
    if q_rows != d_rows:
        diff = [k for k in set(q_rows) | set(d_rows) if q_rows.get(k) != d_rows.get(k)]
        print(f"MISMATCH in {len(diff)} rows, e.g. {diff[:3]}: "
              f"query {[q_rows.get(k) for k in diff[:3]]} duckdb {[d_rows.get(k) for k in diff[:3]]}")
        sys.exit(1)
    t = totals(q_rows)
    if EXPECTED:
        e = json.load(open(EXPECTED))
        want = (e["visits"], e["conversions"] + e["unknown_conversions"],
                e["revenue_micros"] + e["unknown_revenue_micros"], e["cost_micros"])
        if t != want:
            print(f"MISMATCH with the generator: report totals {t}, expected {want}")
            sys.exit(1)
    mq, md = statistics.median(ours), statistics.median(theirs)
    print(f"rows {len(q_rows)}, visits {t[0]}, conversions {t[1]}: identical in query and DuckDB"
          + (", and equal to the generator's totals" if EXPECTED else ""))
    print(f"query report --by campaign,country: median {mq:.2f} s; DuckDB {duckdb.__version__}: "
          f"median {md:.2f} s; ratio query/DuckDB = {mq / md:.2f} ({ROUNDS} rounds, {THREADS} threads)")


if __name__ == "__main__":
    main()
