#!/usr/bin/env python3
"""Test child: makes N orphans that exit at once (zombies for the reaper), prints
"orphaned N", then waits; with --linger, the orphans stay alive (ignoring SIGTERM
with --stubborn) and their PIDs are printed as "orphan <pid>". With --polite K the
first K orphans handle SIGTERM instead: they print "orphan <pid> got SIGTERM" and
exit (a SIGKILL, e.g. from their PID namespace ending, prints nothing)."""

import argparse
import os
import signal
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("count", type=int)
    p.add_argument("--linger", action="store_true")
    p.add_argument("--stubborn", action="store_true")
    p.add_argument("--polite", type=int, default=0, metavar="K")
    p.add_argument("--exit", type=int, default=None, help="exit with this code after orphaning")
    a = p.parse_args()
    for i in range(a.count):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            if os.fork() == 0:  # the grandchild: an orphan once its parent exits
                if i < a.polite:
                    def polite(signum, frame):
                        os.write(1, f"orphan {os.getpid()} got SIGTERM\n".encode())
                        os._exit(0)

                    signal.signal(signal.SIGTERM, polite)
                elif a.stubborn:
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)
                os.write(w, f"{os.getpid()}\n".encode())
                os.close(w)
                if a.linger:
                    while True:
                        time.sleep(3600)
                os._exit(0)
            os._exit(0)
        os.close(w)
        gpid = os.read(r, 64).decode().strip()
        os.close(r)
        os.waitpid(pid, 0)
        if a.linger:
            print(f"orphan {gpid}", flush=True)
    print(f"orphaned {a.count}", flush=True)
    if a.exit is not None:
        return a.exit
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
