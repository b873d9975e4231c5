"""The DuckDB side of `adclick reconcile --input`: the same recount in SQL.

Counts a JSON-lines file of SPEC §1 payloads per (event-time minute, ad)
with dedup by (ad_id, click_id), writes the same two CSV files as adclick
(`minute,ad_id,count` and `minute,rank,ad_id,count`, ties by ad id), and
prints the seconds the query took. Used by tests/reconcile.rs (rows must be
identical) and scripts/bench-reconcile (the speed comparison).

--mode valid-only: the file holds only valid clicks (the benchmark's), read
    with read_json and typed columns: DuckDB's fastest reading.
--mode rules: any line; SPEC §1's rules written in SQL (JSON object, click_id
    1..128 characters, ad_id [A-Za-z0-9_-]{1,64}, ts a non-negative integer,
    user_id at most 128 characters, at most 4096 bytes). Not every corner of
    the decoder (repeated keys, escapes, UTF-8 detail): the test file keeps
    to what both read alike.

Repeats in these files are byte-identical, so which copy DISTINCT ON keeps
does not matter (adclick keeps the first).

Run with PYTHONPATH=.tools/duckdb-<pin> (scripts/lib/duckdb.sh).
"""

import argparse
import sys
import time

import duckdb

VALID_ONLY = """
CREATE TEMP TABLE clicks AS
SELECT DISTINCT ON (ad_id, click_id) ad_id, ts
FROM read_json($input, format = 'newline_delimited',
               columns = {click_id: 'VARCHAR', ad_id: 'VARCHAR', ts: 'BIGINT'})
"""

RULES = """
CREATE TEMP TABLE clicks AS
WITH objects AS (
    SELECT json AS j
    FROM read_json_objects($input, format = 'newline_delimited', ignore_errors = true)
    WHERE json_valid(json) AND json_type(json) = 'OBJECT' AND strlen(json::VARCHAR) <= 4096
), fields AS (
    SELECT j->>'$.click_id' AS click_id, j->>'$.ad_id' AS ad_id, j->>'$.ts' AS ts_text,
           json_type(j, '$.click_id') AS click_type, json_type(j, '$.ad_id') AS ad_type,
           json_type(j, '$.ts') AS ts_type, json_type(j, '$.user_id') AS user_type,
           j->>'$.user_id' AS user_id
    FROM objects
)
SELECT DISTINCT ON (ad_id, click_id) ad_id, CAST(ts_text AS BIGINT) AS ts
FROM fields
WHERE click_type = 'VARCHAR' AND length(click_id) BETWEEN 1 AND 128
  AND ad_type = 'VARCHAR' AND regexp_full_match(ad_id, '[A-Za-z0-9_-]{1,64}')
  AND ts_type IN ('UBIGINT', 'BIGINT') AND TRY_CAST(ts_text AS BIGINT) >= 0
  AND (user_type IS NULL OR user_type = 'NULL' OR (user_type = 'VARCHAR' AND length(user_id) <= 128))
"""

COUNTS = """
CREATE TEMP TABLE counts AS
SELECT ts // 60000 * 60000 AS minute, ad_id, count(*) AS n FROM clicks GROUP BY ALL
"""

STAMP = "strftime(make_timestamp(minute * 1000), '%Y-%m-%dT%H:%M:%SZ')"

COPY_COUNTS = f"""
COPY (SELECT {STAMP} AS minute, ad_id, n AS count FROM counts ORDER BY counts.minute, ad_id)
TO '{{path}}' (FORMAT csv, HEADER true)
"""

COPY_TOP = f"""
COPY (
    SELECT {STAMP} AS minute, rank, ad_id, n AS count FROM (
        SELECT minute, ad_id, n,
               row_number() OVER (PARTITION BY minute ORDER BY n DESC, ad_id) AS rank
        FROM counts
        QUALIFY rank <= {{top}}
    ) ORDER BY minute, rank
) TO '{{path}}' (FORMAT csv, HEADER true)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--counts-out", required=True)
    parser.add_argument("--top-out", required=True)
    parser.add_argument("--top", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mode", choices=["valid-only", "rules"], default="valid-only")
    args = parser.parse_args()
    for path in (args.counts_out, args.top_out):
        if "'" in path:
            sys.exit(f"duckdb_recount: a quote in the path {path!r} is not supported")
    started = time.monotonic()
    db = duckdb.connect()
    db.execute(f"SET threads = {args.threads}")
    db.execute(VALID_ONLY if args.mode == "valid-only" else RULES, {"input": args.input})
    db.execute(COUNTS)
    db.execute(COPY_COUNTS.format(path=args.counts_out))
    db.execute(COPY_TOP.format(path=args.top_out, top=args.top))
    print(f"duckdb {duckdb.__version__}: {time.monotonic() - started:.3f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
