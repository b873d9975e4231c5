#!/usr/bin/env python3
"""Query latency while slow clients hold connections (SECURITY.md, "Measured").

Against a running `adclick serve` on loopback: keeps STALLED connections that
send half a request head and then nothing (each one the server cuts is opened
again at once, as an attacker would), and meanwhile times QUERIES sequential
`GET /v1/ads/popular?count=10`, each on a new connection from QUERY_SOURCE (a
loopback address: 127.0.0.2 plays a second client). Prints p50, p99 and max.

    python3 scripts/slow-clients.py --port 8080 --stalled 1000 --queries 200

Loopback only: it is a test of this machine's own service, bounded in time.
"""
import argparse
import asyncio
import time

cut = 0


async def stalled(host, port):
    global cut
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /v1/ads/popular HTTP/1.1\r\nHost: x\r\n")
            await writer.drain()
            await reader.read()  # until the server closes it
            cut += 1
            writer.close()
        except OSError:
            await asyncio.sleep(0.05)


async def query(host, port, source):
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    writer.write(b"GET /v1/ads/popular?count=10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    answer = await reader.read()
    writer.close()
    if not answer.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"not a 200: {answer[:80]!r}")
    return time.perf_counter() - start


async def main(args):
    if not args.host.startswith("127.") and args.host not in ("localhost", "::1"):
        raise SystemExit("loopback addresses only")
    holders = [asyncio.create_task(stalled(args.host, args.port)) for _ in range(args.stalled)]
    await asyncio.sleep(2 if args.stalled else 0)
    latencies = []
    started = time.perf_counter()
    for _ in range(args.queries):
        latencies.append(await asyncio.wait_for(query(args.host, args.port, args.query_source), 60))
        await asyncio.sleep(0.05)
    latencies.sort()

    def ms(q):
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    print(
        f"stalled={args.stalled} queries={args.queries} p50={ms(0.5):.1f}ms "
        f"p99={ms(0.99):.1f}ms max={latencies[-1] * 1000:.1f}ms "
        f"over {time.perf_counter() - started:.1f}s; stalled connections cut: {cut}"
    )
    for task in holders:
        task.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--stalled", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--query-source", default="127.0.0.1")
    asyncio.run(main(parser.parse_args()))
