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

# The attribution and trust rules (docs/query.md), in DuckDB's dialect: each report is judged
# against its click's network (a postback must carry the token of a network that requires
# one; pixels only where the network takes them; an unknown click only with a token or when
# no network required one), then the latest report per (click, txid) wins, an authenticated
# one over the others;
# declined/rejected/chargeback drop out, unmatched conversions form their own row.
DUCKDB_SQL = f"""
WITH v AS (
    SELECT campaign_id AS d0, country AS d1, kind, cost_micros, bot IS NOT TRUE AS keep,
           event_id, network_id, network_token, network_pixels
    FROM read_parquet('{LAKE}/visits/*/*/*.parquet', hive_partitioning = true)
),
j AS (
    SELECT r.click_id, r.txid, r.status, r.method,
           (CASE WHEN r.auth = 'token' THEN '1' ELSE '0' END) || r.event_id AS rank,
           CASE WHEN r.method = 'pixel' AND x.network_pixels = 'default_payout' THEN NULL
                ELSE r.payout_micros END AS payout,
           x.event_id AS visit_key, x.d0, x.d1, x.keep
    FROM read_parquet('{LAKE}/conversions/*/*/*.parquet', hive_partitioning = true) r
    LEFT JOIN (SELECT * FROM v WHERE kind = 'visit') x ON x.event_id = r.click_id
    WHERE coalesce(x.keep, true) AND CASE
        WHEN x.event_id IS NULL THEN coalesce(r.auth, 'open') NOT IN ('token', 'open')
        WHEN r.method = 'pixel' THEN x.network_pixels IS NOT DISTINCT FROM 'off'
        WHEN r.method <> 'postback' OR coalesce(r.auth, 'open') = 'open' THEN false
        WHEN x.network_token THEN r.auth_network_id IS DISTINCT FROM x.network_id
        ELSE false END = false
),
latest AS (
    SELECT any_value(visit_key) AS visit_key, any_value(d0) AS d0, any_value(d1) AS d1,
           arg_max_null(status, rank) AS status, arg_max_null(payout, rank) AS payout
    FROM j
    GROUP BY click_id, coalesce(txid, '')
),
c AS (
    SELECT visit_key IS NULL AS unknown_click, d0, d1, count(*) AS conversions,
           coalesce(sum(payout), 0) AS revenue_micros
    FROM latest
    WHERE lower(coalesce(status, '')) NOT IN ('declined', 'rejected', 'chargeback')
    GROUP BY ALL
),
vv AS (
    SELECT false AS unknown_click, d0, d1,
           count(*) FILTER (WHERE kind = 'visit') AS visits,
           count(*) FILTER (WHERE kind = 'click') AS clicks,
           coalesce(sum(cost_micros) FILTER (WHERE kind = 'visit'), 0) AS cost_micros
    FROM v WHERE keep
    GROUP BY ALL
)
SELECT unknown_click, d0, d1, sum(visits), sum(clicks), sum(conversions),
       sum(revenue_micros), sum(cost_micros)
FROM (
    SELECT unknown_click, d0, d1, visits, clicks, 0 AS conversions, 0 AS revenue_micros,
           cost_micros FROM vv
    UNION ALL
    SELECT unknown_click, d0, d1, 0, 0, conversions, revenue_micros, 0 FROM c
)
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
