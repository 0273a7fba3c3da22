"""Test child: a workload of many threads or processes that leaks on demand.

Prints "limits <soft> <hard>" (RLIMIT_NOFILE from /proc/self/limits, as the
kernel gave it at exec), starts --threads idle threads (64 KiB stacks) or
--procs idle child processes (`sleep`, in its process group), prints
"ready <pid>", then waits for a line on stdin. "leak" makes it grow at
--rate MiB/s in 1 MiB chunks it touches, printing "leaked <MiB>" per chunk,
until a signal ends it (SIGTERM: dies of it, 143). "exit CODE" exits CODE.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time


def nofile_limits() -> tuple[str, str]:
    with open("/proc/self/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return soft, hard
    raise SystemExit("no 'Max open files' in /proc/self/limits")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--procs", type=int, default=0)
    p.add_argument("--rate", type=float, default=50.0)
    a = p.parse_args()
    say = lambda text: (sys.stdout.write(text + "\n"), sys.stdout.flush())  # noqa: E731
    say("limits %s %s" % nofile_limits())
    idle = threading.Event()
    threading.stack_size(64 * 1024)
    for _ in range(a.threads):
        threading.Thread(target=idle.wait, daemon=True).start()
    for _ in range(a.procs):
        os.posix_spawnp("sleep", ["sleep", "3600"], os.environ)
    say(f"ready {os.getpid()}")
    for line in sys.stdin:
        word = line.split()
        if word[:1] == ["exit"]:
            return int(word[1])
        if word[:1] == ["leak"]:
            chunks = []
            while True:
                chunks.append(bytearray(os.urandom(16)) * (2**20 // 16))
                say(f"leaked {len(chunks)}")
                time.sleep(1 / a.rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
