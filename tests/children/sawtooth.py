#!/usr/bin/env python3
"""A garbage collector's sawtooth: allocate up to --amplitude MiB over each --period
seconds in touched 1 MiB chunks, free it all at once (mmap'd chunks go back to the
kernel, so RSS drops), and again, forever. Prints "ready" once. Memory never grows
from one cycle to the next: what a leak detector must not call a leak.
Standard library only."""

from __future__ import annotations

import argparse
import time

MiB = 2 ** 20

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--amplitude", type=float, default=20.0, help="MiB allocated per cycle")
p.add_argument("--period", type=float, default=0.5, help="seconds per cycle")
p.add_argument("--tick", action="store_true", help='print "cycle N" after each collection')
a = p.parse_args()
steps = max(1, int(a.amplitude))
print("ready", flush=True)
start = time.monotonic()
n = 0
while True:
    chunks = []
    for _ in range(steps):
        chunks.append(bytearray(b"\x01") * MiB)  # every page touched: resident
        n += 1
        delay = start + n * a.period / steps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    del chunks  # the collection: RSS back to the floor
    if a.tick:  # a test's clock: so many cycles seen
        print(f"cycle {n // steps}", flush=True)
