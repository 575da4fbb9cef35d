"""Produce and consume throughput from Python, for `diaspora bench python`.

    python -m pydiaspora.bench --addr HOST:PORT --ca CA --topic T --size N --items K

produces K items of N bytes to topic T (an existing, empty topic), waits
until all are acknowledged, then reads them back from the start, and prints
one JSON object: {"produce_s": ..., "consume_s": ..., "bytes": ...}.

Payloads of 64 KiB and more are NumPy uint8 arrays (sent with their dtype
and shape, read back with `Item.array()`, which does not copy); smaller ones
are `bytes` (each item read back is measured with `len(item)`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

import pydiaspora as dsp

ARRAY_FROM = 64 << 10


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pydiaspora.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--addr", required=True, help="the node's QUIC address, HOST:PORT")
    ap.add_argument("--ca", required=True, help="the node's CA file")
    ap.add_argument("--topic", required=True, help="an existing, empty topic")
    ap.add_argument("--size", type=int, required=True, help="payload bytes per item")
    ap.add_argument("--items", type=int, required=True, help="items to produce and consume")
    ap.add_argument("--timeout", type=float, default=60.0, help="give up when nothing arrives for this long, s")
    a = ap.parse_args(argv)

    client = dsp.Client(a.addr, a.ca)
    as_array = a.size >= ARRAY_FROM
    payload = np.full(a.size, 0xAB, dtype=np.uint8) if as_array else b"\xab" * a.size

    p = client.producer(a.topic)
    send = p.send
    t0 = time.perf_counter()
    for _ in range(a.items):
        send(payload)
    p.flush()
    produce_s = time.perf_counter() - t0
    p.close()

    c = client.consumer(a.topic, start="earliest")
    n = 0
    nbytes = 0
    t0 = time.perf_counter()
    while n < a.items:
        batch = c.poll_many(4096, timeout=a.timeout)
        if not batch:
            print(f"only {n} of {a.items} items came back", file=sys.stderr)
            return 1
        n += len(batch)
        if as_array:
            for it in batch:
                nbytes += it.array().nbytes
        else:
            for it in batch:
                nbytes += len(it)
    consume_s = time.perf_counter() - t0
    c.close()
    client.close()
    print(json.dumps({"produce_s": produce_s, "consume_s": consume_s, "bytes": nbytes, "items": n}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
