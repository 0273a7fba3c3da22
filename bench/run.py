#!/usr/bin/env python3
"""Sentinel's benchmark: reaction time, overshoot, idle cost, sample cost, start-up, measures.

Each figure is measured for Sentinel and, side by side, for its peers where
they do the same job: the naive psutil loop (bench/naive_guard.py) for
enforcement and idle cost, tini and dumb-init (when installed: `make bench`
installs them) for start-up. Prints a table with ratios and one summary line.

    python bench/run.py [--runs N] [--idle-seconds S] [--quick] [--only measures|programs|ebpf]

The cost per sample of each --measure (rss, pss, uss, working-set, cgroup) is
taken on trees of 10 and 1,000 `sleep` processes in a memory group of its own
at the top of the cgroup v1 hierarchy (root; removed afterwards).

With root and the BPF object built (`make bpf`), it ends with issue 12's figures:
`sentinel --probe ebpf` beside the polling Sentinel (reaction, overshoot, idle cost)
and the probe's cost per page fault to every workload (bench/faults.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))  # bench/faults.py
PY = sys.executable
LEAKER = str(REPO / "tests" / "leaker.py")
NAIVE = str(REPO / "bench" / "naive_guard.py")
SENTINEL = [PY, "-m", "sentinel", "run"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MiB = 2**20


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Sentinel's guards in this bench: the default (polling /proc) and --probe ebpf.
GUARDS = {"sentinel": (), "sentinel-ebpf": ("--probe", "ebpf")}


def ebpf_loaded(log: str) -> bool:
    """Whether Sentinel's JSON log ``log`` says the eBPF probe loaded; exits with its
    one line when it did not (a bench of --probe ebpf that polled would mislead)."""
    for line in log.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == "ebpf":
            if rec.get("loaded"):
                return True
            raise SystemExit(f"bench: --probe ebpf: {rec.get('msg', line)} "
                             "(run as root with `make bpf` built, or leave out the eBPF rows)")
    raise SystemExit("bench: --probe ebpf: Sentinel logged no eBPF line")


def sentinel_cmd(*extra: str) -> list[str]:
    """Sentinel at default settings: exporter and control socket on (on a free port/path)."""
    sock = tempfile.mktemp(prefix="sentinel-bench-", suffix=".sock")
    return [*SENTINEL, "--metrics-port", str(free_port()), "--socket", sock, *extra]


# ---------------------------------------------------------------- reaction
def reaction_run(guard: str, limit_mib: int, rate: float,
                 chunk_mib: float = 1.0) -> tuple[float, float]:
    """One leak to the limit in chunks of ``chunk_mib``; return (reaction seconds,
    overshoot bytes) from the leaker's report. ``guard``: a key of ``GUARDS`` or
    ``naive``."""
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as report:
        leak = [PY, LEAKER, "--rate", str(rate), "--chunk", str(chunk_mib), "--report",
                report.name, "--quiet"]
        limit = limit_mib * MiB
        if guard in GUARDS:
            level = ("--log-level", "info", "--log-format", "json") if GUARDS[guard] else (
                "--log-level", "error")
            cmd = sentinel_cmd(*GUARDS[guard], "--max-rss", f"{limit_mib}Mi", *level, "--",
                               *leak)
        else:
            cmd = [PY, NAIVE, str(limit), *leak]
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, timeout=60)
        if GUARDS.get(guard):
            ebpf_loaded(done.stderr)
        rows = [json.loads(line) for line in Path(report.name).read_text().splitlines()]
    crossing = next(r for r in rows if "event" not in r and r["rss"] > limit)
    term = next(r for r in rows if r.get("event") == "sigterm")
    return term["t"] - crossing["t"], max(0, term["rss"] - limit)


# ---------------------------------------------------------------- idle cost
def cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid`` in seconds, all its threads (the exporter's and the
    socket's too): ``/proc/<pid>/task/*/schedstat`` (nanoseconds on the CPU), else
    utime+stime from ``/proc/<pid>/stat`` (clock ticks: 10 ms steps, too coarse for a
    process that runs a few milliseconds a second)."""
    try:
        return sum(int((task / "schedstat").read_text().split()[0])
                   for task in Path(f"/proc/{pid}/task").iterdir()) / 1e9
    except (OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wakeups(pid: int) -> int:
    """Voluntary context switches of all of ``pid``'s threads: how often it slept and
    was woken (a timer, a record, a connection)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


def rss_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def idle_cost(guard: str, seconds: float) -> tuple[float, float, float]:
    """Own CPU seconds per minute, own RSS (MiB) and wake-ups per minute (voluntary
    context switches, all threads) while watching an idle `sleep`. ``guard``: a key of
    ``GUARDS`` or ``naive``."""
    cmd = (sentinel_cmd(*GUARDS[guard], "--max-rss", "1Gi", "--log-format", "json", "--",
                        "sleep", "3600")
           if guard in GUARDS else [PY, NAIVE, str(2**30), "sleep", "3600"])
    log = tempfile.TemporaryFile("w+")
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    try:
        time.sleep(1.5)  # past start-up and imports
        if GUARDS.get(guard):
            log.seek(0)
            ebpf_loaded(log.read())
        c0, w0, t0 = cpu_seconds(p.pid), wakeups(p.pid), time.monotonic()
        time.sleep(seconds)
        c1, w1, t1 = cpu_seconds(p.pid), wakeups(p.pid), time.monotonic()
        rss = rss_of(p.pid)
    finally:
        import psutil

        # The naive loop does not forward SIGTERM: end the whole tree ourselves.
        tree = psutil.Process(p.pid).children(recursive=True)
        p.terminate()
        p.wait(10)
        for child in tree:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        log.close()
    return (c1 - c0) / (t1 - t0) * 60, rss / MiB, (w1 - w0) / (t1 - t0) * 60


def idle_cost_of(cmd: list[str], seconds: float, settle: float = 1.5) -> tuple[float, float]:
    """Own CPU seconds per minute and own RSS (MiB) of the Sentinel started by ``cmd``
    (its workload idle), measured over ``seconds`` after ``settle``; the tree is ended
    with SIGTERM."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(settle)
        c0, t0 = cpu_seconds(p.pid), time.monotonic()
        time.sleep(seconds)
        c1, t1 = cpu_seconds(p.pid), time.monotonic()
        rss = rss_of(p.pid)
    finally:
        p.terminate()
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
    return (c1 - c0) / (t1 - t0) * 60, rss / MiB


def programs_cost(counts: tuple[int, ...], seconds: float, rounds: int) -> dict[int, tuple]:
    """Idle CPU (CPU-s/min) and RSS (MiB) of one Sentinel supervising N idle programs
    from a config file (each `sleep 3600` with a 1 GiB rss limit, metrics and socket
    on), for each N of ``counts``: the medians of ``rounds`` alternating runs."""
    import yaml

    found: dict[int, list[tuple[float, float]]] = {n: [] for n in counts}
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-") as tmp:
        paths = {}
        for n in counts:
            path = Path(tmp) / f"programs-{n}.yaml"
            path.write_text(yaml.safe_dump({"programs": [
                {"name": f"p{i}", "command": ["sleep", "3600"], "max-rss": "1Gi"}
                for i in range(n)]}))
            paths[n] = str(path)
        for _ in range(rounds):
            for n in counts:
                found[n].append(idle_cost_of(sentinel_cmd("--config", paths[n]), seconds))
    return {n: (statistics.median(c for c, _ in v), statistics.median(r for _, r in v))
            for n, v in found.items()}


def print_programs_cost(costs: dict[int, tuple]) -> None:
    one_cpu, one_rss = costs[min(costs)]
    print("| programs | own CPU (CPU-s/min) | vs one program | own RSS (MiB) |")
    print("|---|---|---|---|")
    for n, (cpu, rss) in sorted(costs.items()):
        print(f"| {n} | {cpu:.3f} | {cpu / one_cpu:.2f}x | {rss:.1f} |")


# ---------------------------------------------------------------- sample cost
def sample_cost(n: int, iterations: int) -> tuple[float, float]:
    """Microseconds per sample of a tree of n processes: Sentinel's probe vs psutil."""
    import psutil

    from sentinel.probes.tree import TreeProbe

    root = subprocess.Popen(["sh", "-c", f"for i in $(seq {n - 1}); do sleep 3600 & done; "
                             "echo ready; wait"], stdout=subprocess.PIPE)
    try:
        root.stdout.readline()
        probe = TreeProbe(root.pid, include_root=True)
        assert len(probe.sample().processes) == n
        t0 = time.perf_counter()
        for _ in range(iterations):
            probe.sample()
        ours = (time.perf_counter() - t0) / iterations * 1e6
        proc = psutil.Process(root.pid)
        t0 = time.perf_counter()
        for _ in range(iterations):
            sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
        naive = (time.perf_counter() - t0) / iterations * 1e6
        probe.close()
    finally:
        for child in psutil.Process(root.pid).children(recursive=True):
            child.kill()
        root.kill()
        root.wait()
        root.stdout.close()
    return ours, naive


# ---------------------------------------------------------------- cost per measure
MEASURES = ("rss", "pss", "uss", "working-set", "cgroup")
MEMCG = Path("/sys/fs/cgroup/memory")  # this project's hosts: cgroup v1 memory (hybrid)
CGROUP_ALONE = "cgroup files alone (no tree walk)"
# With a cgroup measure Sentinel walks the tree once a second (probes.tree.walk_period_for).
WALKED_EACH_SECOND = ("working-set", "cgroup")
WALK_NOTE = "as sampled at 10 Hz (tree walked 1/s)"


def _own_v1_group() -> Path:
    """A new memory group at the top of the v1 hierarchy for the bench's workload (never
    the one this process runs in); the caller removes it. Needs root."""
    if not (MEMCG / "cgroup.procs").is_file():
        raise SystemExit(f"bench: no cgroup v1 memory hierarchy at {MEMCG}; run as root on a "
                         "v1/hybrid host, or leave out --only measures")
    group = MEMCG / f"sentinel-bench-{os.getpid()}"
    group.mkdir()
    return group


def _remove_group(group: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        for pid in (group / "cgroup.procs").read_text().split():
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        try:
            group.rmdir()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # killed tasks still leaving the group


def measure_costs(sizes: tuple[int, ...], seconds: float) -> list[tuple[int, str, float, float]]:
    """``[(processes, measure, wall us a sample, CPU share of a core at 10 Hz)]``: one
    ``TreeProbe.sample()`` of a tree of ``sleep`` processes in an own v1 memory group,
    for each ``--measure``; CPU time from ``time.process_time()`` over ``seconds``."""
    from sentinel.probes.cgroup import CgroupMemory
    from sentinel.probes.tree import TreeProbe

    out = []
    group = _own_v1_group()
    try:
        for n in sizes:
            root = subprocess.Popen(
                ["sh", "-c", f'echo $$ > "{group}/cgroup.procs"; '
                 f"for i in $(seq {n - 1}); do sleep 3600 & done; echo ready; wait"],
                stdout=subprocess.PIPE)
            try:
                root.stdout.readline()
                for measure in MEASURES:
                    cg = CgroupMemory(str(group), 1)
                    probe = TreeProbe(root.pid, include_root=True, measure=measure, cgroup=cg)
                    assert len(probe.sample().processes) == n
                    count, c0, t0 = 0, time.process_time(), time.perf_counter()
                    while time.perf_counter() - t0 < seconds:
                        probe.sample()
                        count += 1
                    wall = (time.perf_counter() - t0) / count
                    cpu = (time.process_time() - c0) / count
                    probe.close()
                    out.append((n, measure, wall * 1e6, cpu * 10 * 100))
                # The cgroup's files alone: one read covers any tree (no walk).
                cg = CgroupMemory(str(group), 1)
                cg.read()
                count, c0, t0 = 0, time.process_time(), time.perf_counter()
                while time.perf_counter() - t0 < seconds / 3:
                    cg.read()
                    count += 1
                out.append((n, CGROUP_ALONE, (time.perf_counter() - t0) / count * 1e6,
                            (time.process_time() - c0) / count * 10 * 100))
                cg.close()
                # As Sentinel samples with a cgroup measure at 10 Hz: the cgroup's files
                # every sample, the tree walked once a second (walk_period_for).
                got = {m: (w, c) for k, m, w, c in out if k == n}
                alone_w, alone_c = got[CGROUP_ALONE]
                for measure in WALKED_EACH_SECOND:
                    walk_w, walk_c = got[measure]
                    out.append((n, f"{measure}, {WALK_NOTE}", (walk_w + 9 * alone_w) / 10,
                                (walk_c + 9 * alone_c) / 10))
            finally:
                root.kill()
                root.wait()
                root.stdout.close()
                for pid in (group / "cgroup.procs").read_text().split():
                    try:
                        os.kill(int(pid), 9)
                    except ProcessLookupError:
                        pass
    finally:
        _remove_group(group)
    return out


def print_measure_costs(costs: list[tuple[int, str, float, float]]) -> None:
    head = ("measure", *(f"tree of {n}: us a sample (CPU at 10 Hz)"
                         for n in dict.fromkeys(c[0] for c in costs)))
    by = {(m, n): (w, c) for n, m, w, c in costs}
    rows = [(m, *(f"{by[(m, n)][0]:.3g} us ({by[(m, n)][1]:.2g} % of a core)"
                  for n in dict.fromkeys(c[0] for c in costs))) for m in (*MEASURES, CGROUP_ALONE,
                                                        *(f"{m}, {WALK_NOTE}"
                                                          for m in WALKED_EACH_SECOND))]
    w = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    print("| " + " | ".join(h.ljust(w[i]) for i, h in enumerate(head)) + " |")
    print("|" + "|".join("-" * (x + 2) for x in w) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |")


# ---------------------------------------------------------------- --probe ebpf
FINE_CHUNK_MIB = 0.125  # the leaker's granularity for the overshoot: 1 MiB chunks
# alone put the crossing chunk's record up to 1 MiB over the limit, whoever guards.
EBPF_IDLE_MIN_SECONDS = 60.0  # the eBPF side's back-stop tick is 30 s: see two of them
TARGETS = {"reaction": "<= 1 ms", "overshoot": "<= 0.5 MiB", "idle": "<= 0.01 CPU-s/min",
           "fault": "<= 1.10x"}


def ebpf_costs(runs: int, idle_seconds: float, rounds: int) -> list[tuple[str, str, str, str]]:
    """Issue 12's figures, ``sentinel --probe ebpf`` next to the polling Sentinel, each
    pair alternating: reaction and overshoot at 100 MiB/s to a 100 MiB limit (1 MiB and
    ``FINE_CHUNK_MIB`` chunks), idle cost and wake-ups, and the per-fault cost to the
    workload (``bench/faults.py``). Rows ``(figure, ebpf, poll, target)``. Exits with
    one line when the probe does not load here (root, ``make bpf``)."""
    import faults

    out = []
    for chunk in (1.0, FINE_CHUNK_MIB):
        res: dict[str, list[tuple[float, float]]] = {g: [] for g in GUARDS}
        for _ in range(runs):
            for g in ("sentinel-ebpf", "sentinel"):
                res[g].append(reaction_run(g, 100, 100, chunk))
        med = {g: (statistics.median(r for r, _ in v) * 1000,
                   statistics.median(o for _, o in v) / MiB) for g, v in res.items()}
        size = f"{chunk:g} MiB chunks"
        out.append((f"reaction time, median ({size})", f"{med['sentinel-ebpf'][0]:.3g} ms",
                    f"{med['sentinel'][0]:.3g} ms", TARGETS["reaction"]))
        out.append((f"overshoot at SIGTERM, median ({size})",
                    f"{med['sentinel-ebpf'][1]:.3g} MiB", f"{med['sentinel'][1]:.3g} MiB",
                    TARGETS["overshoot"]))
    window = max(idle_seconds, EBPF_IDLE_MIN_SECONDS)
    idle = {g: idle_cost(g, window) for g in ("sentinel-ebpf", "sentinel")}
    out.append((f"own CPU watching an idle workload ({window:.0f} s)",
                f"{idle['sentinel-ebpf'][0]:.3g} CPU-s/min", f"{idle['sentinel'][0]:.3g} CPU-s/min",
                TARGETS["idle"]))
    out.append(("wake-ups watching an idle workload", f"{idle['sentinel-ebpf'][2]:.3g} /min",
                f"{idle['sentinel'][2]:.3g} /min", ""))
    out.append(("own RSS watching", f"{idle['sentinel-ebpf'][1]:.3g} MiB",
                f"{idle['sentinel'][1]:.3g} MiB", ""))
    from sentinel.probes.ebpf import EbpfUnavailable, object_bytes

    try:
        f = faults.measure({"": object_bytes()}, rounds, 4, 200, (os.cpu_count() or 1) - 1)
    except EbpfUnavailable as exc:
        raise SystemExit(f"bench: the eBPF probe does not load here: {exc}") from None
    off = statistics.median(f["ns"]["off"])
    for case, label in (("on", "attached, process not watched"), ("watched", "watched")):
        ratio = statistics.median(f["ratio"][case])
        out.append((f"page fault of the workload, {label}",
                    f"{statistics.median(f['ns'][case]):.0f} ns ({ratio:.3f}x)",
                    f"{off:.0f} ns (no probe)", TARGETS["fault"]))
    return out


def print_ebpf_costs(rows: list[tuple[str, str, str, str]]) -> None:
    head = ("figure", "--probe ebpf", "--probe poll (default)", "issue 12's target")
    w = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    print("| " + " | ".join(h.ljust(w[i]) for i, h in enumerate(head)) + " |")
    print("|" + "|".join("-" * (x + 2) for x in w) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |")


# ---------------------------------------------------------------- start-up
def startup(prefix: list[str], runs: int) -> tuple[float, float]:
    """Median ms for `PREFIX true` to finish, and until the child runs (`date +%s.%N`)."""
    total, to_child = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([*prefix, "true"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        total.append((time.perf_counter() - t0) * 1000)
        w0 = time.time()
        out = subprocess.run([*prefix, "date", "+%s.%N"], capture_output=True, text=True).stdout
        to_child.append((float(out.split()[-1]) - w0) * 1000)
    return statistics.median(total), statistics.median(to_child)


def compile_sources() -> None:
    """Byte-compile Sentinel's sources (``__pycache__``, git-ignored), as ``pip install`` does
    and as the image ships them: an editable checkout under ``PYTHONDONTWRITEBYTECODE=1``
    (these machines set it) would otherwise compile every module at every start, which
    costs about 6 ms before the spawn and 1.5 MiB of RSS that no installed Sentinel pays."""
    import compileall

    compileall.compile_dir(str(REPO / "sentinel"), quiet=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="leaks per guard (default 7)")
    ap.add_argument("--idle-seconds", type=float, default=20.0, help="idle window (default 20)")
    ap.add_argument("--quick", action="store_true", help="fewer runs, for a smoke test")
    ap.add_argument("--only", choices=("measures", "programs", "ebpf"),
                    help="run one section: measures (cost per sample of each --measure), "
                         "programs (idle cost of 1 and 10 programs from a config file), "
                         "ebpf (--probe ebpf beside polling, and its cost per page fault)")
    a = ap.parse_args()
    if a.quick:
        a.runs, a.idle_seconds = 3, 5.0
    if a.only == "measures":
        print("bench: cost per sample of each measure, trees of 10 and 1000...", file=sys.stderr)
        print_measure_costs(measure_costs((10, 1000), 1.0 if a.quick else 3.0))
        return 0
    if a.only == "ebpf":
        compile_sources()
        print("bench: --probe ebpf beside polling...", file=sys.stderr)
        print_ebpf_costs(ebpf_costs(a.runs, a.idle_seconds, 5 if a.quick else 15))
        return 0
    if a.only == "programs":
        print("bench: idle cost of 1 and 10 programs under one Sentinel...", file=sys.stderr)
        print_programs_cost(programs_cost((1, 10), a.idle_seconds, 1 if a.quick else 3))
        return 0
    compile_sources()
    rows: list[tuple[str, str, str, str]] = []

    def row(name, ours, peer, unit, peer_name="naive psutil loop"):
        ratio = f"{peer / ours:.1f}x better" if ours and peer and peer > ours else (
            f"{ours / peer:.2f}x of peer" if peer else "")
        rows.append((name, f"{ours:.3g} {unit}", f"{peer:.3g} {unit} ({peer_name})"
                     if peer is not None else "-", ratio))

    print(f"bench: {a.runs} leaks per guard at 100 MiB/s to a 100 MiB limit...", file=sys.stderr)
    res = {g: [reaction_run(g, 100, 100) for _ in range(a.runs)] for g in ("sentinel", "naive")}
    s_react = statistics.median(r for r, _ in res["sentinel"]) * 1000
    n_react = statistics.median(r for r, _ in res["naive"]) * 1000
    s_over = statistics.median(o for _, o in res["sentinel"]) / MiB
    n_over = statistics.median(o for _, o in res["naive"]) / MiB
    row("reaction time, median", s_react, n_react, "ms")
    row("overshoot at SIGTERM, median", s_over, n_over, "MiB")

    print(f"bench: idle cost over {a.idle_seconds:.0f} s each...", file=sys.stderr)
    s_cpu, s_rss, _ = idle_cost("sentinel", a.idle_seconds)
    n_cpu, n_rss, _ = idle_cost("naive", a.idle_seconds)
    row("own CPU watching an idle workload", s_cpu, n_cpu, "CPU-s/min")
    row("own RSS watching", s_rss, n_rss, "MiB")

    print("bench: sample cost for trees of 1, 10, 100...", file=sys.stderr)
    for n in (1, 10, 100):
        ours, naive = sample_cost(n, 300 if n < 100 else 100)
        row(f"one sample, tree of {n}", ours, naive, "us", "psutil children+memory_info")

    print("bench: start-up...", file=sys.stderr)
    runs = 5 if a.quick else 15
    base_total, _ = startup([], runs)
    s_total, s_child = startup([*SENTINEL, "--no-metrics", "--no-socket", "--log-level",
                                "error", "--"], runs)
    n_total, n_child = startup([PY, NAIVE, str(2**30)], runs)
    row("`run -- true` over plain `true`", s_total - base_total, n_total - base_total, "ms")
    row("until the child runs", s_child, n_child, "ms")
    # The floor: the same interpreter (with its site, as `-m sentinel` has) that only execs.
    _, b_child = startup([PY, "-c", "import os, sys; os.execvp(sys.argv[1], sys.argv[1:])"],
                         runs)
    row("until the child runs, vs the bare interpreter", s_child, b_child, "ms", "python -c exec")
    for peer, prefix in (("tini", ["tini", "-s", "--"]), ("dumb-init", ["dumb-init"])):
        exe = shutil.which(prefix[0]) or shutil.which(prefix[0], path=str(Path(PY).parent))
        if exe:
            p_total, p_child = startup([exe, *prefix[1:]], runs)
            row(f"until the child runs, vs {peer}", s_child, p_child, "ms", peer)
        else:
            rows.append((f"until the child runs, vs {peer}", f"{s_child:.3g} ms",
                         f"{peer} not installed (make bench installs it)", ""))

    w = [max(len(r[i]) for r in rows + [("figure", "sentinel", "peer", "ratio")])
         for i in range(4)]
    head = ("figure", "sentinel", "peer", "ratio")
    print("| " + " | ".join(h.ljust(w[i]) for i, h in enumerate(head)) + " |")
    print("|" + "|".join("-" * (x + 2) for x in w) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |")
    print(f"\nsummary: reaction {s_react:.1f} ms (naive {n_react:.1f}), overshoot {s_over:.1f} MiB, "
          f"idle CPU {s_cpu:.3f} CPU-s/min (naive {n_cpu:.2f}), RSS {s_rss:.1f} MiB, "
          f"child runs after {s_child:.0f} ms, `run -- true` +{s_total - base_total:.0f} ms")

    print("\nbench: cost per sample of each measure, trees of 10 and 1000...", file=sys.stderr)
    print()
    print_measure_costs(measure_costs((10, 1000), 1.0 if a.quick else 3.0))

    print("\nbench: idle cost of 1 and 10 programs under one Sentinel...", file=sys.stderr)
    print()
    print_programs_cost(programs_cost((1, 10), a.idle_seconds, 1 if a.quick else 3))

    print("\nbench: --probe ebpf beside polling...", file=sys.stderr)
    print()
    try:
        print_ebpf_costs(ebpf_costs(a.runs, a.idle_seconds, 5 if a.quick else 15))
    except SystemExit as exc:  # no eBPF here (not root, no object): the rest stands
        print(f"eBPF rows left out: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
