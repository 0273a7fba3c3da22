#!/usr/bin/env python3
"""The chaos script: a process that leaks memory at a chosen rate.

It grows in chunks it touches (so they count in RSS), optionally from a
forked child or grandchild (to prove tree accounting), optionally ignoring
SIGTERM (to prove the SIGKILL path) or taking a while to clean up. It prints
its RSS as it grows, and with --report writes one JSON object a line:
{"t": CLOCK_MONOTONIC seconds, "rss": bytes} per chunk, then
{"event": "sigterm", "t": ..., "rss": ...} when SIGTERM arrives, which is how
bench/ measures Sentinel's reaction time.

Exit: dies of SIGTERM (143 under a shell) by default; with --term-exit CODE it
exits CODE after --cleanup seconds; with --ignore-term only SIGKILL stops it.
Standard library only, so it runs in any image with a python3.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * PAGE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=50.0, help="growth in MiB/s (default 50)")
    p.add_argument("--chunk", type=float, default=1.0, help="chunk size in MiB (default 1)")
    p.add_argument("--max", type=float, default=0.0,
                   help="stop growing at this many MiB leaked and idle (default 0: never stop)")
    p.add_argument("--exit-at-max", action="store_true",
                   help="exit 0 once --max is reached instead of idling")
    p.add_argument("--start-delay", type=float, default=0.0,
                   help="seconds to idle before leaking (default 0)")
    p.add_argument("--depth", type=int, default=0,
                   help="leak from a forked descendant this many levels down (0: this process)")
    p.add_argument("--ignore-term", action="store_true", help="ignore SIGTERM (only SIGKILL works)")
    p.add_argument("--cleanup", type=float, default=0.0,
                   help="on SIGTERM, take this many seconds to clean up before exiting")
    p.add_argument("--term-exit", type=int, default=None,
                   help="on SIGTERM, exit with this code (default: die of SIGTERM, 143)")
    p.add_argument("--report", default=None, help="write JSON lines of (time, rss) here")
    p.add_argument("--quiet", action="store_true", help="do not print RSS lines")
    p.add_argument("--name", default=None, help="set the process title (comm) to this")
    args = p.parse_args(argv)
    if args.rate <= 0 or args.chunk <= 0:
        p.error("--rate and --chunk must be positive")
    return args


class Leaker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.chunks: list[bytearray] = []
        self.report = open(args.report, "a", buffering=1) if args.report else None

    def write(self, obj: dict) -> None:
        if self.report:
            self.report.write(json.dumps(obj) + "\n")

    def say(self, text: str) -> None:
        if not self.args.quiet:
            print(f"leaker[{os.getpid()}] {text}", flush=True)

    def on_term(self, signum, frame) -> None:
        self.write({"event": "sigterm", "t": time.monotonic(), "rss": rss_bytes(),
                    "pid": os.getpid()})
        self.say(f"got SIGTERM at rss {rss_bytes() / 2**20:.1f} MiB")
        if self.args.ignore_term:
            return
        if self.args.cleanup:
            time.sleep(self.args.cleanup)
        if self.args.term_exit is not None:
            os._exit(self.args.term_exit)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    def run(self) -> None:
        a = self.args
        signal.signal(signal.SIGTERM, self.on_term)
        chunk = int(a.chunk * 2**20)
        period = a.chunk / a.rate
        limit = int(a.max * 2**20) if a.max else None
        self.say(f"ready: leaking {a.rate:g} MiB/s in {a.chunk:g} MiB chunks")
        if a.start_delay:
            time.sleep(a.start_delay)
        start = time.monotonic()
        n = 0
        while True:
            if limit is None or n * chunk < limit:
                # SIGTERM waits while a chunk is added and recorded, so the report
                # always holds the chunk that crossed a limit before the signal.
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
                # bytes * n fills the buffer, so every page is touched and resident.
                self.chunks.append(bytearray(b"\x01") * chunk)
                n += 1
                now, rss = time.monotonic(), rss_bytes()
                self.write({"t": now, "rss": rss})
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
                if n % max(1, int(10 / a.chunk)) == 0:
                    self.say(f"rss {rss / 2**20:.1f} MiB")
                delay = start + n * period - time.monotonic()
            else:
                if a.exit_at_max:
                    self.say(f"reached --max at rss {rss_bytes() / 2**20:.1f} MiB: exiting")
                    return
                delay = 1.0
            if delay > 0:
                time.sleep(delay)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.name:
        try:
            with open("/proc/self/comm", "w") as f:
                f.write(args.name[:15])
        except OSError:
            pass
    if args.ignore_term:
        # Ignored before forking, so every descendant ignores it too.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for level in range(args.depth):
        pid = os.fork()
        if pid:
            # An intermediate parent: wait for the leaker and pass its status on.
            if not args.quiet:
                print(f"leaker[{os.getpid()}] level {level}: forked {pid}", flush=True)
            if args.ignore_term:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            if code < 0:
                signal.signal(-code, signal.SIG_DFL)
                os.kill(os.getpid(), -code)
            return code
    leaker = Leaker(args)
    try:
        leaker.run()
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
