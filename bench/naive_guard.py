#!/usr/bin/env python3
"""The baseline Sentinel is measured against: the 20-line psutil loop everyone writes.

Usage: naive_guard.py LIMIT_BYTES CMD [ARGS...]
Samples every 100 ms with psutil's children(recursive=True) + memory_info(),
SIGTERM over the limit, SIGKILL 3 s later. No signal forwarding, no reaping.
"""

import subprocess
import sys
import time

import psutil

limit, cmd = int(sys.argv[1]), sys.argv[2:]
child = subprocess.Popen(cmd)
proc = psutil.Process(child.pid)
while child.poll() is None:
    rss = 0
    try:
        for p in [proc, *proc.children(recursive=True)]:
            try:
                rss += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        break
    if rss > limit:
        child.terminate()
        try:
            child.wait(3)
        except subprocess.TimeoutExpired:
            child.kill()
        break
    time.sleep(0.1)
code = child.wait()
sys.exit(128 - code if code < 0 else code)
