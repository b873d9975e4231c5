"""The Flink SQL side of `adclick reconcile --input`: the same recount in PyFlink.

A batch job of the Table API (`EnvironmentSettings.in_batch_mode()`, the
local mini cluster PyFlink starts, parallelism 2 by default to match
DuckDB's 2 threads) that counts a JSON-lines file of SPEC §1 payloads per
(event-time minute, ad) with dedup by (ad_id, click_id), and writes the same
two CSV files as adclick and scripts/reconcile/duckdb_recount.py
(`minute,ad_id,count` and `minute,rank,ad_id,count`, sorted, ties by ad id).
Used by scripts/bench-reconcile (`--with-flink`): a benchmark, never a test.

--mode valid-only: the file holds only valid clicks (the benchmark's): the
    filesystem connector with format json and typed columns, as DuckDB's
    valid-only; a malformed line fails the job.
--mode rules: any line, read whole (format raw) and held to the rules
    duckdb_recount.py --mode rules writes in SQL (a JSON object, click_id a
    string of 1..128 characters, ad_id [A-Za-z0-9_-]{1,64}, ts a non-negative
    integer, user_id absent, null or a string of at most 128 characters, at
    most 4096 characters).

Which copy of a repeated click counts: adclick counts the first in the
file. Flink's filesystem source has no line number or offset (its metadata
columns are file.path, file.name, file.size, file.modification-time), so
ROW_NUMBER() OVER (PARTITION BY ad_id, click_id ORDER BY <file position>)
cannot be written; the job keeps, per (ad_id, click_id), the smallest ts of
the copies. That is the first copy's ts whenever repeats carry the same ts,
which loadgen's do (a repeat is the earlier payload byte for byte; checked
on the benchmark's file: no (ad_id, click_id) with two ts); on a file where a
repeat has another ts, adclick and this job may differ. --dedup row-number
writes it as ROW_NUMBER() ... ORDER BY ts = 1 (Flink's deduplication idiom);
Flink plans that as a sort of every click, the default `group` (MIN(ts) ...
GROUP BY ad_id, click_id) as a hash aggregation: same rows, ~30% less CPU.

Memory: --managed-memory (default 4g) is the mini cluster's managed memory,
shared by the 2 slots, for the aggregations; with 1g the dedup's
aggregation spills to disk at 10 M clicks and costs ~20% more CPU.

The CSV files: the job writes each result sorted by one task (ORDER BY in
batch) as format csv into a directory; this script then writes the header
and appends the part files, in order. Inside the timed run, like DuckDB's
COPY.

CPU time: PyFlink runs the job in a JVM it starts as a child process and does
not wait for; this script closes that JVM's stdin (it exits on EOF) and waits
for it, so that `/usr/bin/time` counts the JVM's CPU seconds.

Run with PYTHONPATH=.tools/pyflink-<pin> (scripts/lib/pyflink.sh).
"""

import argparse
import glob
import os
import shutil
import sys
import tempfile
import time

SOURCE_VALID_ONLY = """
CREATE TEMPORARY TABLE clicks_file (click_id STRING, ad_id STRING, ts BIGINT)
WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'json')
"""

VALID_ONLY = """
CREATE TEMPORARY VIEW clicks AS
SELECT ad_id, click_id, ts FROM clicks_file
"""

SOURCE_RULES = """
CREATE TEMPORARY TABLE lines_file (line STRING)
WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'raw')
"""

# JSON_QUERY(... WITH ARRAY WRAPPER) gives a field as JSON text in [ ]: its
# type is the first character after the bracket ("[\"" a string, "[1" a
# number, "[null]"); an absent field gives NULL.
RULES = r"""
CREATE TEMPORARY VIEW clicks AS
WITH objects AS (
    SELECT line AS j FROM lines_file
    WHERE line IS JSON OBJECT AND CHAR_LENGTH(line) <= 4096
), fields AS (
    SELECT JSON_VALUE(j, '$.click_id') AS click_id,
           JSON_VALUE(j, '$.ad_id') AS ad_id,
           JSON_VALUE(j, '$.ts') AS ts_text,
           JSON_VALUE(j, '$.user_id') AS user_id,
           JSON_QUERY(j, '$.click_id' WITH ARRAY WRAPPER) AS click_json,
           JSON_QUERY(j, '$.ad_id' WITH ARRAY WRAPPER) AS ad_json,
           JSON_QUERY(j, '$.ts' WITH ARRAY WRAPPER) AS ts_json,
           JSON_QUERY(j, '$.user_id' WITH ARRAY WRAPPER) AS user_json
    FROM objects
)
SELECT ad_id, click_id, CAST(ts_text AS BIGINT) AS ts
FROM fields
WHERE click_json LIKE '["%' AND CHAR_LENGTH(click_id) BETWEEN 1 AND 128
  AND ad_json LIKE '["%' AND REGEXP(ad_id, '^[A-Za-z0-9_-]{1,64}$')
  AND REGEXP(ts_json, '^\[[0-9]+\]$') AND TRY_CAST(ts_text AS BIGINT) >= 0
  AND (user_json IS NULL OR user_json = '[null]' OR (user_json LIKE '["%' AND CHAR_LENGTH(user_id) <= 128))
"""

DEDUP_ROW_NUMBER = """
CREATE TEMPORARY VIEW firsts AS
SELECT ad_id, ts FROM (
    SELECT ad_id, ts,
           ROW_NUMBER() OVER (PARTITION BY ad_id, click_id ORDER BY ts) AS copy
    FROM clicks
) WHERE copy = 1
"""

# The same choice (the smallest ts of the copies) as a grouping: Flink plans
# it as a hash aggregation, not a sort of every click.
DEDUP_GROUP = """
CREATE TEMPORARY VIEW firsts AS
SELECT ad_id, MIN(ts) AS ts FROM clicks GROUP BY ad_id, click_id
"""

COUNTS = """
CREATE TEMPORARY VIEW counts AS
SELECT ts - MOD(ts, 60000) AS minute_ms, ad_id, COUNT(*) AS n FROM firsts
GROUP BY ts - MOD(ts, 60000), ad_id
"""

STAMP = "DATE_FORMAT(TO_TIMESTAMP_LTZ({col}, 3), 'yyyy-MM-dd''T''HH:mm:ss''Z''')"

SINK = """
CREATE TEMPORARY TABLE {name} ({columns})
WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'csv',
      'sink.rolling-policy.file-size' = '8gb')
"""

INSERT_COUNTS = f"""
INSERT INTO counts_out
SELECT {STAMP.format(col="minute_ms")}, ad_id, n FROM counts ORDER BY minute_ms, ad_id
"""

INSERT_TOP = f"""
INSERT INTO top_out
SELECT {STAMP.format(col="minute_ms")}, rnk, ad_id, n FROM (
    SELECT minute_ms, ad_id, n,
           ROW_NUMBER() OVER (PARTITION BY minute_ms ORDER BY n DESC, ad_id) AS rnk
    FROM counts
) WHERE rnk <= {{top}}
ORDER BY minute_ms, rnk
"""


def keep_gateway_process():
    """Makes PyFlink's JVM launcher remember the process it starts."""
    import pyflink.java_gateway as java_gateway

    launched = []
    launch = java_gateway.launch_gateway_server_process

    def launch_and_keep(env, args):
        process = launch(env, args)
        launched.append(process)
        return process

    java_gateway.launch_gateway_server_process = launch_and_keep
    return launched


def stop_gateway(launched):
    """Ends the JVM and waits for it (its CPU time then counts as ours)."""
    from pyflink.java_gateway import get_gateway

    try:
        get_gateway().close()
    except Exception:  # the JVM exits below whatever the socket says
        pass
    for process in launched:
        process.stdin.close()
        try:
            process.wait(timeout=60)
        except Exception:
            process.kill()
            process.wait()


def concatenate(header, directory, path):
    """The header, then the job's part files (one task wrote them, in order)."""
    parts = sorted(
        (p for p in glob.glob(os.path.join(directory, "**", "*"), recursive=True)
         if os.path.isfile(p) and not os.path.basename(p).startswith(".")),
        key=lambda p: [int(t) if t.isdigit() else t for t in p.replace(".", "-").split("-")],
    )
    with open(path, "wb") as out:
        out.write(header.encode() + b"\n")
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True)
    parser.add_argument("--counts-out", required=True)
    parser.add_argument("--top-out", required=True)
    parser.add_argument("--top", type=int, default=100)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--mode", choices=["valid-only", "rules"], default="valid-only")
    parser.add_argument("--dedup", choices=["group", "row-number"], default="group")
    parser.add_argument("--managed-memory", default="4g")
    parser.add_argument("--explain", action="store_true", help="print the plan, run nothing")
    args = parser.parse_args()
    if "'" in args.input:
        sys.exit(f"flink_recount: a quote in the path {args.input!r} is not supported")
    started = time.monotonic()
    launched = keep_gateway_process()
    from pyflink.common import Configuration
    from pyflink.table import EnvironmentSettings, TableEnvironment
    import pyflink

    # Flink's temporary files (spills, the RPC jar it unpacks) go under the
    # run's own directory, removed once the JVM has ended.
    work = tempfile.mkdtemp(prefix="flink-recount-")
    config = Configuration()
    config.set_string("io.tmp.dirs", work)
    config.set_string("parallelism.default", str(args.parallelism))
    config.set_string("table.local-time-zone", "UTC")
    # The mini cluster's task slots: one per parallel task, memory for the
    # dedup's sort and the aggregations (spills to disk beyond it).
    config.set_string("taskmanager.numberOfTaskSlots", str(args.parallelism))
    config.set_string("taskmanager.memory.managed.size", args.managed_memory)
    settings = EnvironmentSettings.new_instance().in_batch_mode().with_configuration(config).build()
    t_env = TableEnvironment.create(settings)

    try:
        path = "file://" + os.path.abspath(args.input)
        if args.mode == "valid-only":
            t_env.execute_sql(SOURCE_VALID_ONLY.format(path=path))
            t_env.execute_sql(VALID_ONLY)
        else:
            t_env.execute_sql(SOURCE_RULES.format(path=path))
            t_env.execute_sql(RULES)
        t_env.execute_sql(DEDUP_GROUP if args.dedup == "group" else DEDUP_ROW_NUMBER)
        t_env.execute_sql(COUNTS)
        t_env.execute_sql(SINK.format(name="counts_out", path=f"file://{work}/counts",
                                      columns="`minute` STRING, ad_id STRING, n BIGINT"))
        t_env.execute_sql(SINK.format(name="top_out", path=f"file://{work}/top",
                                      columns="`minute` STRING, rnk BIGINT, ad_id STRING, n BIGINT"))
        statements = t_env.create_statement_set()
        statements.add_insert_sql(INSERT_COUNTS)
        statements.add_insert_sql(INSERT_TOP.format(top=args.top))
        if args.explain:
            print(statements.explain())
            return 0
        statements.execute().wait()
        concatenate("minute,ad_id,count", f"{work}/counts", args.counts_out)
        concatenate("minute,rank,ad_id,count", f"{work}/top", args.top_out)
    except Exception as error:  # its text needs the JVM, stopped below
        print(f"flink_recount: {error}", file=sys.stderr)
        raise
    finally:
        stop_gateway(launched)
        shutil.rmtree(work, ignore_errors=True)
    print(f"flink {pyflink.version.__version__}: {time.monotonic() - started:.3f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
