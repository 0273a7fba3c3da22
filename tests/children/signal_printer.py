#!/usr/bin/env python3
"""Test child: prints "ready <role> <pid> <pgid>", then "got <role> SIGNAME" for each signal.

--fork also starts a grandchild in the same process group (role "grandchild").
--exit-on SIG[=CODE] exits with CODE (default 0) when SIG arrives.
--info prints cwd, environment, fds, and the signal masks from /proc/self/status.
Output is flushed line by line: tests read it as a handshake.
"""

import argparse
import os
import signal
import sys
import time


def say(text: str) -> None:
    # One write(2) a line: atomic on a pipe, so child and grandchild never interleave.
    os.write(1, (text + "\n").encode())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--fork", action="store_true")
    p.add_argument("--exit-on", action="append", default=[])
    p.add_argument("--info", action="store_true")
    p.add_argument("--default", action="append", default=[],
                   help="leave this signal at its default action (e.g. TSTP)")
    a = p.parse_args()
    exits = {}
    for spec in a.exit_on:
        name, _, code = spec.partition("=")
        exits[getattr(signal, name if name.startswith("SIG") else "SIG" + name)] = int(code or 0)
    defaults = {getattr(signal, "SIG" + name.removeprefix("SIG")) for name in a.default}
    role = "child"
    if a.fork and os.fork() == 0:
        role = "grandchild"

    # Read before any handler is installed: what the child was given.
    if a.info and role == "child":
        status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines()
                      if ":\t" in line)
        say(f"cwd {os.getcwd()}")
        say(f"env SENTINEL_TEST_VAR={os.environ.get('SENTINEL_TEST_VAR')}")
        say(f"fds {sorted(int(f) for f in os.listdir('/proc/self/fd'))}")
        say(f"sigblk {status['SigBlk'].strip()} sigign {status['SigIgn'].strip()}")
        say(f"sid {os.getsid(0)} pgid {os.getpgrp()}")

    def handler(signum, frame):
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = str(signum)
        say(f"got {role} {name}")
        if signum in exits:
            os._exit(exits[signum])

    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD) or sig in defaults:
            continue
        try:
            signal.signal(sig, handler)
        except (OSError, ValueError):
            pass
    say(f"ready {role} {os.getpid()} {os.getpgrp()}")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
