"""The eBPF probe (issue 12) on the real kernel, as root: the tracker follows a tree
through forks, execs and exits (compared with /proc), its sum agrees with ``statm``
within the kernel's per-CPU batch, a ``limit`` record fires at the threshold, Sentinel
with ``--probe ebpf`` is woken by it (not by its tick), a real kernel OOM victim is
reported with its PID the moment it is chosen, and a refused load (a verifier failure,
no capabilities, no BTF) is one line and polling as before."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from sentinel.probes.ebpf import PAGE, MemoryTracker, batch_error_pages
from tests.conftest import PY, leaker, require, wait_until
from tests.integration.test_cgroup_real import own_v1_group
from tests.integration.test_sampling_side import into

MiB = 1024 * 1024
QUIET = ["--no-metrics", "--no-socket", "--log-format", "json"]
ROOT = Path(__file__).resolve().parents[2]
BPF_DIR = ROOT / "sentinel" / "probes" / "bpf"

# A tree on command: "fork" forks a child that waits; "spawn" fork+execs a python that
# waits; "grow N" touches N MiB in the parent; "end" ends the last child. Each answers
# one line (the pids, or "ok").
TREE = r"""
import os, subprocess, sys, time
kids, keep = [], []
print("ready", os.getpid(), flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "fork":
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(w)
            os.read(r, 1)
            os._exit(0)
        os.close(r)
        kids.append(("fork", pid, w))
        print(pid, flush=True)
    elif cmd[0] == "spawn":
        p = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
        keep.append(p)
        kids.append(("spawn", p.pid, p))
        print(p.pid, flush=True)
    elif cmd[0] == "grow":
        b = bytearray(int(cmd[1]) << 20)
        for i in range(0, len(b), 4096):
            b[i] = 1
        keep.append(b)
        print("ok", flush=True)
    elif cmd[0] == "end":
        how, pid, h = kids.pop()
        if how == "fork":
            os.close(h)
            os.waitpid(pid, 0)
        else:
            h.stdin.close()
            h.wait()
        print("ok", flush=True)
"""


def _tree(pid: int) -> set[int]:
    root = psutil.Process(pid)
    return {pid, *(c.pid for c in root.children(recursive=True))}


def _statm_bytes(pids) -> int:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError):
            pass
    return total


class Tree:
    def __init__(self) -> None:
        self.p = subprocess.Popen([PY, "-c", TREE], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert self.p.stdout.readline().split()[0] == "ready"

    def ask(self, line: str) -> str:
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def close(self) -> None:
        for child in psutil.Process(self.p.pid).children(recursive=True):
            child.kill()
        self.p.kill()
        self.p.wait()
        self.p.stdin.close()
        self.p.stdout.close()


@pytest.fixture
def tracker():
    require(root=True)
    t = MemoryTracker()
    yield t
    t.close()


def test_the_tracker_follows_a_tree_through_forks_execs_and_exits(tracker):
    tree = Tree()
    try:
        assert tracker.seed(3, [tree.p.pid]) == 1
        seeded = tracker.drain()
        assert [(r.kind, r.ns_tgid) for r in seeded] == [("seeded", tree.p.pid)]
        assert set(tracker.processes(3)) == _tree(tree.p.pid)
        forked = int(tree.ask("fork"))
        spawned = int(tree.ask("spawn"))  # fork + execve(): the mm is swapped
        wait_until(lambda: len(_tree(tree.p.pid)) == 3, what="three processes")
        assert set(tracker.processes(3)) == _tree(tree.p.pid) == {tree.p.pid, forked, spawned}
        kinds = [(r.kind, r.ns_tgid, r.other) for r in tracker.drain()]
        assert ("fork", forked, tree.p.pid) in kinds and ("fork", spawned, tree.p.pid) in kinds
        # The exec'd child is counted with its new mm: the sum is the tree's statm, within
        # the batch error of each process (the child idles: its counters are still).
        time.sleep(0.05)
        err = batch_error_pages() * PAGE * 3
        statm = _statm_bytes(_tree(tree.p.pid))
        assert abs(tracker.sum_bytes(3) - statm) <= err, (tracker.sum_bytes(3), statm)
        assert tree.ask("end") == "ok"  # the spawned one exits
        assert set(tracker.processes(3)) == _tree(tree.p.pid) == {tree.p.pid, forked}
        assert [(r.kind, r.ns_tgid) for r in tracker.drain()] == [("exit", spawned)]
        assert tree.ask("end") == "ok"
        assert set(tracker.processes(3)) == {tree.p.pid}
        assert tracker.processes(4) == {}  # other slots stay empty
        tracker.forget(3)
        assert tracker.processes(3) == {} and tracker.sum_bytes(3) == 0
    finally:
        tree.close()


def test_a_limit_record_fires_at_the_threshold_with_the_sum_near_statm(tracker):
    tree = Tree()
    try:
        tracker.seed(0, [tree.p.pid])
        base = tracker.sum_bytes(0)
        threshold = base + 40 * MiB
        tracker.configure(0, threshold)
        tracker.drain()
        assert tree.ask("grow 30") == "ok"
        assert [r for r in tracker.drain() if r.kind == "limit"] == []  # below: nothing
        assert tree.ask("grow 30") == "ok"
        limits = [r for r in tracker.drain() if r.kind == "limit"]
        assert len(limits) == 1, limits  # one record per crossing (near: 0 = no repeat)
        rec = limits[0]
        # The record's sum is the first fold past the threshold: within one batch of it.
        assert threshold <= rec.sum_bytes <= threshold + batch_error_pages() * PAGE
        assert rec.ns_tgid == tree.p.pid
        statm = _statm_bytes([tree.p.pid])
        assert 0 <= statm - tracker.sum_bytes(0) <= batch_error_pages() * PAGE, \
            (statm, tracker.sum_bytes(0))
    finally:
        tree.close()


def test_step_records_are_rate_limited(tracker):
    tree = Tree()
    try:
        tracker.seed(1, [tree.p.pid])
        tracker.configure(1, None, step_bytes=4 * MiB, step_seconds=60.0)
        tracker.drain()
        assert tree.ask("grow 40") == "ok"
        steps = [r for r in tracker.drain() if r.kind == "step"]
        assert len(steps) == 1, steps  # 10 steps' worth of growth, one per 60 s
        tracker.configure(1, None, step_bytes=4 * MiB, step_seconds=0.0)
        assert tree.ask("grow 40") == "ok"
        steps = [r for r in tracker.drain() if r.kind == "step"]
        assert 8 <= len(steps) <= 11, [s.sum_bytes for s in steps]
    finally:
        tree.close()


def _ebpf_lines(s) -> list[dict]:
    return [e for e in s.logs() if e.get("event") == "ebpf"]


NO_CGROUP = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             'mount -t tmpfs none /sys/fs/cgroup && exec "$@"', "sh"]


def test_run_with_probe_ebpf_is_woken_by_the_kernel_not_its_tick(start_sentinel):
    # A 5 s tick and no cgroup visible (a private mount namespace with an empty
    # /sys/fs/cgroup: no cgroup wake-ups): only the kernel's eBPF record can stop a
    # 150 MiB/s leaker near 100 MiB before it exits 0 at 400 MiB (2.7 s).
    require("unshare")
    s = start_sentinel(["--no-metrics", "--no-socket", "--log-format", "json", "--log-level",
                        "debug", "--probe", "ebpf", "--max-rss", "100Mi", "--interval", "5s",
                        "--", *leaker("--rate", "150", "--max", "400", "--exit-at-max",
                                      "--quiet")],
                       wrap=NO_CGROUP)
    assert s.wait(30) == 143, s.stderr()[-3000:]
    assert [e["loaded"] for e in _ebpf_lines(s)] == [True]
    woke = [e for e in s.logs() if e.get("event") == "wakeup" and e.get("source") == "ebpf_limit"]
    assert woke, "not woken by the eBPF probe"
    crossed = [e for e in s.logs() if e.get("event") == "limit_crossed"]
    assert len(crossed) == 1
    # Far from the 300 MiB the tick would let through (8 MiB: ~50 ms at 150 MiB/s of a
    # loaded machine's loop latency).
    assert crossed[0]["value_bytes"] - 100 * MiB < 8 * MiB, crossed


@pytest.mark.parametrize("cgroup", ["visible", "hidden"])
def test_the_kernel_oom_victim_is_reported_with_its_pid(start_sentinel, cgroup):
    # hidden: Sentinel sees no cgroup (an empty /sys/fs/cgroup), so no oom_kill counter:
    # only the probe's victim record tells the kernel's kill apart.
    require("unshare")
    with own_v1_group(64 * MiB) as group:
        s = start_sentinel([*QUIET, "--probe", "ebpf", "--max-rss", "1Gi", "--",
                            *leaker("--rate", "100", "--quiet")], preexec_fn=into(group),
                           wrap=NO_CGROUP if cgroup == "hidden" else ())
        assert s.wait(30) == 137, s.stderr()[-3000:]
        spawned = [e for e in s.logs() if e.get("event") == "spawned"][0]
        victims = [e for e in s.logs() if e.get("event") == "oom_victim"]
        assert [v["pid"] for v in victims] == [spawned["pid"]], victims
        assert victims[0]["main"] is True
        oom = [e for e in s.logs() if e.get("event") == "kernel_oom_kill"]
        assert oom and oom[0]["pid"] == spawned["pid"]


def _falls_back(s) -> str:
    """Sentinel said once that eBPF did not load, and polling still stopped the leaker."""
    assert s.wait(30) == 143, s.stderr()[-3000:]
    lines = _ebpf_lines(s)
    assert len(lines) == 1 and lines[0]["loaded"] is False, lines
    text = lines[0]["msg"]
    assert text.startswith("eBPF probe not loaded: ") and text.endswith("; polling /proc instead")
    assert "Traceback" not in s.stderr()
    return text


def test_a_verifier_refusal_falls_back_to_polling_with_one_line(start_sentinel, tmp_path):
    require("clang")
    bad = tmp_path / "bad.bpf.o"
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-DFORCE_VERIFIER_FAIL",
                    f"-I{BPF_DIR}", "-c", str(BPF_DIR / "sentinel.bpf.c"), "-o", str(bad)],
                   check=True)
    s = start_sentinel([*QUIET, "--probe", "ebpf", "--max-rss", "60Mi", "--",
                        *leaker("--rate", "100", "--quiet")],
                       env={"SENTINEL_BPF_OBJECT": str(bad)})
    text = _falls_back(s)
    assert "verifier refused on_rss_stat" in text, text


def test_no_capabilities_falls_back_to_polling_naming_the_rights(start_sentinel):
    require("setpriv")
    # Root without CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN (what a default container has).
    s = start_sentinel(
        [*QUIET, "--probe", "ebpf", "--max-rss", "60Mi", "--", *leaker("--rate", "100",
                                                                       "--quiet")],
        wrap=["setpriv", "--inh-caps=-all", "--bounding-set=-bpf,-perfmon,-sys_admin", "--"])
    text = _falls_back(s)
    assert "EPERM" in text and "CAP_BPF" in text and "CAP_PERFMON" in text and \
        "seccomp" in text, text


def test_no_kernel_btf_falls_back_to_polling(start_sentinel, tmp_path):
    require("unshare")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    # A private mount namespace where /sys/kernel/btf/vmlinux is an empty file.
    s = start_sentinel([*QUIET, "--probe", "ebpf", "--max-rss", "60Mi", "--",
                        *leaker("--rate", "100", "--quiet")],
                       wrap=["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             f'mount --bind "{empty}" /sys/kernel/btf/vmlinux && exec "$@"',
                             "sh"])
    text = _falls_back(s)
    assert "BTF" in text, text


def test_auto_falls_back_quietly_and_poll_never_loads(start_sentinel):
    require("setpriv")
    s = start_sentinel([*QUIET, "--probe", "auto", "--max-rss", "60Mi", "--",
                        *leaker("--rate", "100", "--quiet")],
                       wrap=["setpriv", "--inh-caps=-all", "--bounding-set=-bpf,-perfmon,"
                             "-sys_admin", "--"])
    assert s.wait(30) == 143
    lines = _ebpf_lines(s)
    assert len(lines) == 1 and lines[0]["level"] == "info", lines  # not a warning
    s = start_sentinel([*QUIET, "--max-rss", "60Mi", "--", *leaker("--rate", "100", "--quiet")])
    assert s.wait(30) == 143
    assert _ebpf_lines(s) == []  # the default never touches bpf()


def test_status_says_how_memory_is_followed(start_sentinel, tmp_path):
    from sentinel.control.client import request

    sock = tmp_path / "s.sock"
    s = start_sentinel(["--no-metrics", "--socket", str(sock), "--log-format", "json",
                        "--probe", "ebpf", "--max-rss", "1Gi", "--", PY, "-c",
                        "import os, time\nif os.fork() == 0:\n    time.sleep(60)\n"
                        "print('up', flush=True); time.sleep(60)"])
    s.expect("up")

    def probe():
        from sentinel.errors import ControlError

        try:  # the socket comes up just after the workload starts
            reply = request(str(sock), "status", timeout=2.0)
        except ControlError:
            return {}
        return reply["status"]["probe"]

    wait_until(lambda: probe().get("followed") == 2, 10, what="two followed processes")
    info = probe()
    assert info["probe"] == "ebpf" and info["threshold_bytes"] < 1 << 30, info
    s.signal(signal.SIGTERM)
    assert s.wait(10) == 143


def test_the_default_probe_never_imports_the_ebpf_modules():
    # --probe poll (the default): start-up stays as lean as before issue 12.
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "sentinel", "run",
                          "--no-metrics", "--no-socket", "--", "true"],
                         capture_output=True, text=True, timeout=30,
                         env={k: v for k, v in os.environ.items()
                              if not k.startswith("SENTINEL_")})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "sentinel.probes.ebpf" not in out.stderr and "libbpf" not in out.stderr
    assert "sentinel.probes.tree" in out.stderr  # (importtime did list the imports)


def test_lost_records_are_counted_from_the_sequence_numbers(tracker):
    # A step record per fold (32 pages) and 900 MiB of growth before the ring buffer
    # (256 KiB: about 4,700 records) is read: the kernel drops the rest, and the gap in
    # the sequence numbers says how many.
    tree = Tree()
    try:
        tracker.seed(2, [tree.p.pid])
        tracker.configure(2, None, step_bytes=PAGE, step_seconds=0.0)
        tracker.drain()
        assert tree.ask("grow 900") == "ok"  # ~7,200 folds for ~4,700 places
        tracker.configure(2, None)
        got = tracker.drain()  # what fit; no gap seen yet
        assert tracker.lost == 0 and len(got) > 1000
        assert tree.ask("fork") != ""  # the next record comes after the dropped ones
        (fork,) = tracker.drain()
        assert fork.kind == "fork"
        assert tracker.lost == fork.seq - got[-1].seq - 1 > 0, (tracker.lost, len(got))
    finally:
        tree.close()


def test_several_programs_each_have_their_own_tree(start_sentinel, tmp_path):
    config = tmp_path / "sentinel.yaml"
    config.write_text(json.dumps({
        "version": 1, "settings": {"probe": "ebpf", "max-rss": "60Mi"},
        "programs": [
            {"name": "web", "main": True,
             "command": [PY, "-c", "import time; print('web up', flush=True); time.sleep(60)"]},
            {"name": "leak", "command": leaker("--rate", "100", "--quiet"),
             "restart": "never", "on-give-up": "continue"}]}))
    sock = tmp_path / "s.sock"
    s = start_sentinel(["--no-metrics", "--socket", str(sock), "--log-format", "json",
                        "--config", str(config)])
    wait_until(lambda: any(e.get("event") == "gave_up" for e in s.logs()), 20,
               what="the leaker stopped")
    crossed = [e for e in s.logs() if e.get("event") == "limit_crossed"]
    assert [e["program"] for e in crossed] == ["leak"], crossed
    assert [e["loaded"] for e in _ebpf_lines(s)] == [True]  # one object for both
    from sentinel.control.client import request

    web = request(str(sock), "status web", timeout=2.0)["status"]
    assert web["probe"]["probe"] == "ebpf" and web["probe"]["followed"] == 1, web["probe"]
    s.signal(signal.SIGTERM)
    assert s.wait(10) == 143


def test_every_run_of_a_restarted_program_is_woken_by_the_kernel(start_sentinel):
    # As above, three runs (--restart on-failure): each is stopped near 100 MiB, which
    # only the kernel's record can do with a 5 s tick and no cgroup.
    require("unshare")
    s = start_sentinel(["--no-metrics", "--no-socket", "--log-format", "json", "--probe",
                        "ebpf", "--max-rss", "100Mi", "--interval", "5s", "--restart",
                        "on-failure", "--max-restarts", "2", "--restart-delay", "0.1s", "--",
                        *leaker("--rate", "150", "--max", "400", "--exit-at-max", "--quiet")],
                       wrap=NO_CGROUP)
    assert s.wait(60) == 143, s.stderr()[-3000:]
    crossed = [e for e in s.logs() if e.get("event") == "limit_crossed"]
    assert len(crossed) == 3, [e.get("msg") for e in s.logs()][-20:]
    assert all(e["value_bytes"] - 100 * MiB < 8 * MiB for e in crossed), crossed


# Grows to just under the limit (argv[1] bytes), then rests (argv[2] s) and exits 0.
PLATEAU = """
import mmap, sys, time
m, i = mmap.mmap(-1, 200 << 20), 0
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096
while rss() < int(sys.argv[1]):
    m[i] = 1
    i += 4096
print("resting", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_a_workload_resting_just_under_the_limit_costs_no_more_than_idle(start_sentinel):
    # Between the kernel's threshold (the limit less the batch error) and the limit:
    # the records stop when the growth stops, and so do the samples.
    s = start_sentinel([*QUIET, "--probe", "ebpf", "--max-rss", "100Mi", "--", PY, "-c",
                        PLATEAU, str(100 * MiB - 64 * 1024), "8"])
    s.expect("resting", 20)
    time.sleep(1)  # a planned sample or two after the last growth
    before = psutil.Process(s.pid).cpu_times()
    time.sleep(4)
    after = psutil.Process(s.pid).cpu_times()
    used = (after.user + after.system) - (before.user + before.system)
    assert used < 0.1, f"{used:.2f} CPU-s in 4 s while the workload rests"  # idle: ~0.001
    assert s.wait(20) == 0  # never stopped: it stayed under the limit


def test_a_zombie_is_never_seeded(tracker):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        wait_until(lambda: Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", 5,
                   what="a zombie")
        tracker.seed(7, [pid])
        assert tracker.drain() == [] and tracker.processes(7) == {}
    finally:
        os.waitpid(pid, 0)


# 300 MiB touched, then forked; the child rewrites every page after "go": copy-on-write
# doubles the PSS while no RSS counter moves.
COW = """
import mmap, os, sys, time
m = mmap.mmap(-1, 300 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for i in range(0, len(m), 4096): m[i] = 1
r, w = os.pipe()
if os.fork() == 0:
    os.read(r, 1)
    for i in range(0, len(m), 4096): m[i] = 2
    time.sleep(60); os._exit(0)
print("forked", flush=True)
sys.stdin.readline()
os.write(w, b"g")
os.wait()
"""


def test_pss_growth_without_rss_change_is_still_caught_by_polling(start_sentinel):
    # No cgroup (so no cgroup wake-up): polling's own cadence must catch it.
    require("unshare")
    s = start_sentinel([*QUIET, "--probe", "ebpf", "--measure", "pss", "--max-rss", "450Mi",
                        "--", PY, "-c", COW], stdin=subprocess.PIPE, wrap=NO_CGROUP)
    s.expect("forked", 30)
    time.sleep(1)  # a few samples of the resting tree: 300 MiB shared by two, PSS 300
    assert [e for e in s.logs() if e.get("event") == "limit_crossed"] == []
    t0 = time.monotonic()
    s.popen.stdin.write(b"go\n")
    s.popen.stdin.flush()
    wait_until(lambda: [e for e in s.logs() if e.get("event") == "limit_crossed"], 15,
               what="the PSS limit crossed")
    assert time.monotonic() - t0 < 5  # the 30 s back-stop would be far later
    s.popen.stdin.close()


def test_a_bad_object_file_falls_back_at_once(start_sentinel):
    # /dev/zero once grew Sentinel by gigabytes while the leaker went unchecked.
    t0 = time.monotonic()
    s = start_sentinel([*QUIET, "--probe", "ebpf", "--max-rss", "60Mi", "--",
                        *leaker("--rate", "100", "--quiet")],
                       env={"SENTINEL_BPF_OBJECT": "/dev/zero"})
    text = _falls_back(s)
    assert "/dev/zero is not readable (not a regular file): unset SENTINEL_BPF_OBJECT" in text
    assert time.monotonic() - t0 < 10
    assert "is not a Sentinel variable" not in s.stderr()
