"""Waits until adclick's /metrics says it consumed at least N messages.

Usage: python3 scripts/lib/wait_consumed.py URL N [DEADLINE_EPOCH]

The benchmarks time adclick from outside, so the wait must be both precise
and cheap: a `curl | awk` pair ten times a second cost ~4% of the machine
during a drain, and even this process polling every 50 ms (adclick renders
~116 KB of metrics a poll) ~3%. So: one process, one kept-alive connection,
and polls spaced by the time the rest should take at the rate seen so far
(70% of it, between 10 ms and 0.5 s): a dozen polls a drain, the last one
at most ~10 ms late. Exits 0 once reached, 1 at the deadline.
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
seen = None  # (time, consumed) at the last poll that answered
while time.time() < deadline:
    pause = 0.05
    try:
        if conn is None:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
        n = consumed(conn)
        if n >= target:
            sys.exit(0)
        now = time.monotonic()
        if seen and n > seen[1]:
            rate = (n - seen[1]) / (now - seen[0])
            pause = min(max(0.7 * (target - n) / rate, 0.01), 0.5)
        seen = (now, n)
    except (OSError, http.client.HTTPException, ValueError, IndexError):
        conn = None  # not up yet, or restarted: connect again
    time.sleep(pause)
sys.exit(1)
