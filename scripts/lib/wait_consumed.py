"""Waits until adclick's /metrics says it consumed at least N messages.

Usage: python3 scripts/lib/wait_consumed.py URL N [DEADLINE_EPOCH]

One process and one kept-alive HTTP connection, polling every 50 ms: the
benchmarks time adclick from outside, and a `curl | awk` pair a poll cost
~8 ms of CPU, about 4% of the machine during a drain (docs/PERFORMANCE.md).
Exits 0 once reached, 1 at the deadline.
"""
import http.client
import sys
import time
import urllib.parse

url, target = sys.argv[1], int(sys.argv[2])
deadline = float(sys.argv[3]) if len(sys.argv) > 3 else float("inf")
parts = urllib.parse.urlsplit(url)
PREFIX = b"adclick_events_consumed_total"


def consumed(conn):
    conn.request("GET", parts.path or "/metrics")
    body = conn.getresponse().read()
    total = 0
    start = 0
    while True:
        i = body.find(b"\n" + PREFIX, start)
        if i < 0:
            return total
        end = body.find(b"\n", i + 1)
        line = body[i + 1 : end if end >= 0 else len(body)]
        total += int(float(line.rsplit(b" ", 1)[1]))
        start = i + 1


conn = None
while time.time() < deadline:
    try:
        if conn is None:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
        if consumed(conn) >= target:
            sys.exit(0)
    except (OSError, http.client.HTTPException, ValueError, IndexError):
        conn = None  # not up yet, or restarted: connect again
    time.sleep(0.05)
sys.exit(1)
