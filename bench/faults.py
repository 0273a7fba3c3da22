#!/usr/bin/env python3
"""The eBPF probe's cost to the workload: page-fault throughput of a first-touch program.

The ``rss_stat`` program runs on every page fault of every process on the node while
Sentinel's BPF object is attached, so its price is paid by every workload, watched or
not. This measures it the way the workload sees it: a small C program (compiled here
with ``cc``, so the loop has no interpreter in it) maps N MiB of anonymous memory,
touches each page once (one fault each; transparent huge pages off for the mapping),
unmaps it, and repeats; its figure is wall nanoseconds per page (mmap + fault + unmap,
divided by the pages), the median of its repetitions. Three cases, alternated in
rounds within one session so that the machine's drift hits them alike:

- ``off``: no BPF object loaded;
- ``on``: Sentinel's object loaded and attached, the program not watched;
- ``watched``: the program seeded into a tree (``MemoryTracker.seed``) with a limit far
  above it, as a workload under ``sentinel run --probe ebpf`` is.

The ratios are the medians of each round's ratio to that round's ``off`` (paired, so a
busy moment of this shared machine moves both sides of a ratio). Needs root (or
CAP_BPF + CAP_PERFMON), kernel BTF, libbpf1 and the built object (``make bpf``).

    python bench/faults.py [--rounds N] [--mib M] [--reps R] [--object LABEL=PATH ...]

Each ``--object`` adds its own ``on``/``watched`` pair (e.g. the object before and after
a change, measured in the same rounds); the default is the shipped object.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 2**20

# Hand-written C rather than Python/ctypes: a page fault costs a few hundred ns, and an
# interpreter's loop (one ctypes store per page) would cost more than the faults.
FIRST_TOUCH_C = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <sched.h>
#include <unistd.h>

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* first_touch MIB REPS CPU: on CPU CPU (-1: any), print "ready", wait for a line,
   run REPS rounds of mmap/touch/munmap of MIB MiB, print the median ns per page; then
   map and touch MIB MiB once more and keep them ("held"), and exit at the next line. */
int main(int argc, char **argv) {
    size_t bytes = (size_t)atol(argv[1]) << 20;
    int reps = atoi(argv[2]);
    long page = sysconf(_SC_PAGESIZE);
    size_t pages = bytes / page;
    double *ns = calloc(reps, sizeof *ns);
    char line[64];
    if (argc > 3 && atoi(argv[3]) >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(atoi(argv[3]), &set);
        if (sched_setaffinity(0, sizeof set, &set)) { perror("sched_setaffinity"); return 1; }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready\n");
    if (!fgets(line, sizeof line, stdin)) return 1;
    for (int r = 0; r < reps; r++) {
        double t0 = now_ns();
        char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) { perror("mmap"); return 1; }
        madvise(p, bytes, MADV_NOHUGEPAGE);  /* one fault per 4 KiB page */
        for (size_t i = 0; i < pages; i++) p[i * page] = 1;
        munmap(p, bytes);
        ns[r] = (now_ns() - t0) / pages;
    }
    qsort(ns, reps, sizeof *ns, cmp);
    printf("%.3f\n", ns[reps / 2]);
    char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 1; }
    madvise(p, bytes, MADV_NOHUGEPAGE);
    for (size_t i = 0; i < pages; i++) p[i * page] = 1;
    printf("held\n");
    if (!fgets(line, sizeof line, stdin)) return 0;
    return 0;
}
"""


def build(tmp: str) -> str:
    """Compile the first-touch program into ``tmp``; its path. Exits with one line when
    there is no C compiler."""
    src, exe = Path(tmp) / "first_touch.c", Path(tmp) / "first_touch"
    src.write_text(FIRST_TOUCH_C)
    try:
        subprocess.run(["cc", "-O2", "-o", str(exe), str(src)], check=True)
    except OSError as exc:
        raise SystemExit(f"bench/faults.py: no C compiler ({exc.strerror}): install one "
                         "(Debian: gcc)") from None
    except subprocess.CalledProcessError:
        raise SystemExit("bench/faults.py: the first-touch program did not compile (cc's "
                         "message above)") from None
    return str(exe)


def statm_resident(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def one_run(exe: str, mib: int, reps: int, tracker=None, tree: int = 0,
            cpu: int = -1) -> tuple[float, int]:
    """Run the first-touch program once; (median ns per page, |tracker sum - statm| in
    bytes while it holds its last mapping, or -1 when not watched). With ``tracker`` it
    is seeded into ``tree`` before it starts touching. ``cpu``: the CPU it runs on
    (-1: any)."""
    p = subprocess.Popen([exe, str(mib), str(reps), str(cpu)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        if tracker is not None:
            tracker.configure(tree, 1 << 40)  # a limit far above: it never fires
            tracker.seed(tree, [p.pid])
            if p.pid not in tracker.processes(tree):
                raise SystemExit(f"bench/faults.py: the tracker did not follow pid {p.pid}")
        p.stdin.write("go\n")
        p.stdin.flush()
        ns = float(p.stdout.readline())
        assert p.stdout.readline().strip() == "held"
        error = -1
        if tracker is not None:
            error = abs(tracker.sum_bytes(tree) - statm_resident(p.pid))
        p.stdin.write("q\n")
        p.stdin.flush()
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdin.close()
        p.stdout.close()
    if tracker is not None:
        tracker.forget(tree)
    return ns, error


def measure(objects: dict[str, bytes], rounds: int, mib: int, reps: int, cpu: int = -1,
            progress=None) -> dict:
    """Alternate ``off`` and, per object, ``on`` and ``watched`` runs (each round in a
    shuffled order, the object loaded afresh for each run) for ``rounds`` rounds, the
    program on CPU ``cpu`` (-1: any). Returns ``{"ns": {case: [ns per page, one a
    round]}, "ratio": {case: [ratio to that round's off]}, "error_bytes": the largest
    |sum - statm| seen while watched}``; cases are ``off``, ``on``/``watched`` (one
    object) or ``on LABEL``/``watched LABEL``. Raises ``EbpfUnavailable`` when an
    object cannot be loaded here."""
    from sentinel.probes.ebpf import MemoryTracker

    with tempfile.TemporaryDirectory(prefix="sentinel-faults-") as tmp:
        exe = build(tmp)
        one_run(exe, mib, 2)  # warm the page cache and the allocator
        cases = [("off", None), *((f"{kind}{f' {label}' if len(objects) > 1 else ''}", data)
                                  for label, data in objects.items()
                                  for kind in ("on", "watched"))]
        ns: dict[str, list[float]] = {case: [] for case, _ in cases}
        errors = [0]
        order = random.Random(0)
        for r in range(rounds):
            # Each round in its own order: no case always follows the same one.
            for case, data in order.sample(cases, len(cases)):
                if data is None:
                    ns[case].append(one_run(exe, mib, reps, cpu=cpu)[0])
                    continue
                tracker = MemoryTracker(data)
                try:
                    got, err = one_run(exe, mib, reps, tracker if case.startswith("watched")
                                       else None, cpu=cpu)
                finally:
                    tracker.close()
                ns[case].append(got)
                errors.append(err)
            if progress:
                progress(r + 1, {k: v[-1] for k, v in ns.items()})
    ratio = {k: [v[i] / ns["off"][i] for i in range(rounds)] for k, v in ns.items()
             if k != "off"}
    return {"ns": ns, "ratio": ratio, "error_bytes": max(errors)}


def table(res: dict) -> str:
    """The result as a Markdown table: median ns per page and the paired ratio."""
    lines = ["| case | ns per page fault, median | vs off, median of paired ratios |",
             "|---|---|---|"]
    for case, values in res["ns"].items():
        ratio = "1" if case == "off" else f"{statistics.median(res['ratio'][case]):.3f}x"
        lines.append(f"| {case} | {statistics.median(values):.1f} | {ratio} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15, help="off/on/watched rounds (default 15)")
    # 4 MiB: the freed pages come back hot from the allocator, so each repetition costs
    # the same (on this project's VMs ±3 % between repetitions, against ±20 % at 256 MiB).
    ap.add_argument("--mib", type=int, default=4, help="MiB touched per repetition (default 4)")
    ap.add_argument("--reps", type=int, default=200, help="repetitions per run (default 200)")
    ap.add_argument("--cpu", type=int, default=(os.cpu_count() or 1) - 1,
                    help="the CPU the program runs on (default: the last; -1: any)")
    ap.add_argument("--object", action="append", default=[], metavar="LABEL=PATH",
                    help="a BPF object to measure (repeatable; default: the shipped one)")
    a = ap.parse_args()
    from sentinel.probes.ebpf import EbpfUnavailable, object_bytes

    try:
        objects = ({label: Path(path).read_bytes() for label, path in
                    (o.split("=", 1) for o in a.object)} if a.object
                   else {"": object_bytes()})
    except (OSError, ValueError) as exc:
        raise SystemExit(f"bench/faults.py: --object LABEL=PATH: {exc}") from None
    except EbpfUnavailable as exc:
        raise SystemExit(f"bench/faults.py: {exc}") from None

    def progress(r, last):
        print(f"round {r}/{a.rounds}: " + ", ".join(f"{k} {v:.1f}" for k, v in last.items()),
              file=sys.stderr)

    try:
        res = measure(objects, a.rounds, a.mib, a.reps, a.cpu, progress)
    except EbpfUnavailable as exc:
        raise SystemExit(f"bench/faults.py: eBPF probe not loaded: {exc}") from None
    print(table(res))
    print(f"\n{a.rounds} rounds, {a.mib} MiB x {a.reps} per run on CPU {a.cpu}; the tracker's "
          f"sum within {res['error_bytes'] / 1024:.0f} KiB of statm while watched")
    return 0


if __name__ == "__main__":
    sys.exit(main())
