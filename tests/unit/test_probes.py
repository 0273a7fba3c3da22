"""The probe on fixture /proc and cgroup trees (built per test), and on a real tree."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from sentinel.probes.tree import (
    KEEP_CHILDREN_MAX_THREADS, PAGE_SIZE, TreeProbe, descriptor_budget,
)
from sentinel.probes.contract import Unreadable
from tests.conftest import proc_state, require, wait_until

NOBODY = 65534


def make_proc(root: Path, procs: dict[int, dict]) -> Path:
    """procs: pid -> {"rss_pages": n, "children": {tid: [pids]}, "smaps": (pss_kB, priv_kB)}."""
    for pid, spec in procs.items():
        d = root / str(pid)
        (d / "task").mkdir(parents=True)
        (d / "statm").write_text(f"1000 {spec.get('rss_pages', 0)} 10 1 0 50 0\n")
        for tid, kids in spec.get("children", {pid: []}).items():
            (d / "task" / str(tid)).mkdir()
            (d / "task" / str(tid) / "children").write_text(" ".join(map(str, kids)) + " ")
        if "smaps" in spec:
            pss, priv = spec["smaps"]
            (d / "smaps_rollup").write_text(
                f"00400000-7fff [rollup]\nRss: 999 kB\nPss: {pss} kB\n"
                f"Private_Clean: {priv // 2} kB\nPrivate_Dirty: {priv - priv // 2} kB\n")
    return root


def test_tree_sum_with_threads_zombie_vanished_and_duplicate(tmp_path):
    proc = make_proc(tmp_path, {
        100: {"rss_pages": 1, "children": {100: [101], 150: [102, 999]}},  # 999 vanished
        101: {"rss_pages": 10, "children": {101: [103]}},
        102: {"rss_pages": 20, "children": {102: [103]}},  # 103 listed twice (reparent race)
        103: {"rss_pages": 30},
        104: {"rss_pages": 0},  # not in the tree
    })
    probe = TreeProbe(100, include_root=False, proc_root=str(proc))
    sample = probe.sample()
    assert sorted(sample.pids) == [101, 102, 103]
    assert sample.rss_bytes == sample.measure_bytes == 60 * PAGE_SIZE
    with_root = TreeProbe(100, include_root=True, proc_root=str(proc)).sample()
    assert with_root.rss_bytes == 61 * PAGE_SIZE and with_root.pids[0] == 100


def test_root_threads_limit_where_children_are_read(tmp_path):
    proc = make_proc(tmp_path, {
        100: {"children": {100: [101], 150: [102]}},
        101: {"rss_pages": 1}, 102: {"rss_pages": 2},
    })
    only_main = TreeProbe(100, include_root=False, proc_root=str(proc), root_threads=(100,))
    assert only_main.sample().pids == (101,)


def test_process_leaving_the_tree_closes_its_descriptors(tmp_path):
    proc = make_proc(tmp_path, {100: {"children": {100: [101]}}, 101: {"rss_pages": 5}})
    probe = TreeProbe(100, include_root=False, proc_root=str(proc))
    assert probe.sample().rss_bytes == 5 * PAGE_SIZE
    assert 101 in probe._nodes
    (proc / "100" / "task" / "100" / "children").write_text("")
    assert probe.sample().processes == ()
    assert 101 not in probe._nodes
    probe.close()
    assert probe._nodes == {}


def test_a_real_zombie_counts_zero():
    """A child that exited and was not reaped: sh forks `true`, then execs sleep, which
    never waits, so `true` stays a zombie child of the sleep (state Z)."""
    root = subprocess.Popen(["sh", "-c", "true & exec sleep 60"])
    try:
        zombie = wait_until(lambda: next((c.pid for c in psutil.Process(root.pid).children()
                                          if c.status() == psutil.STATUS_ZOMBIE), None),
                            10, what="the unreaped child")
        assert proc_state(zombie) == "Z"
        sample = TreeProbe(root.pid, include_root=False).sample()
        assert sample.processes == ((zombie, 0),) and sample.rss_bytes == 0
        # It is part of the tree, and its RSS is not its former parent's.
        with_root = TreeProbe(root.pid, include_root=True).sample()
        assert with_root.pids == (root.pid, zombie) and dict(with_root.processes)[root.pid] > 0
    finally:
        root.kill()
        root.wait()


@pytest.mark.parametrize("measure,expected", [("pss", 300 * 1024), ("uss", 200 * 1024)])
def test_pss_and_uss_from_smaps_rollup(tmp_path, measure, expected):
    proc = make_proc(tmp_path, {
        100: {"children": {100: [101, 102]}},
        101: {"rss_pages": 1, "smaps": (100, 50)},
        102: {"rss_pages": 1, "smaps": (200, 150)},
    })
    sample = TreeProbe(100, include_root=False, measure=measure, proc_root=str(proc)).sample()
    assert sample.measure_bytes == expected
    assert sample.pss_bytes == 300 * 1024 and sample.uss_bytes == 200 * 1024
    assert sample.rss_bytes == 2 * PAGE_SIZE


def test_without_smaps_rollup_the_figures_come_from_smaps(tmp_path):
    """A kernel before 4.14 has no smaps_rollup; smaps has the same lines per mapping."""
    proc = make_proc(tmp_path, {100: {"children": {100: [101]}}, 101: {"rss_pages": 3}})
    (proc / "101" / "smaps").write_text(
        "00400000-00401000 r-xp 0 0:0 0 /bin/x\nRss: 8 kB\nPss: 6 kB\nPrivate_Clean: 2 kB\n"
        "Private_Dirty: 1 kB\n7fff-8000 rw-p 0 0:0 0 [heap]\nPss: 10 kB\n"
        "Private_Dirty: 10 kB\n")
    probe = TreeProbe(100, include_root=False, measure="pss", proc_root=str(proc))
    sample = probe.sample()
    assert (sample.pss_bytes, sample.uss_bytes) == (16 * 1024, 13 * 1024)
    assert sample.measure_bytes == 16 * 1024 and probe.errors == {}


@pytest.mark.parametrize("measure", ["pss", "uss"])
def test_unreadable_pss_is_unknown_not_zero(tmp_path, measure):
    """Neither file can be read for a live process: PSS/USS are None (not 0, which would
    never reach a limit), the error is counted, and the measure counts that process's
    RSS, an upper bound of both."""
    proc = make_proc(tmp_path, {100: {"children": {100: [101, 102]}},
                                101: {"rss_pages": 3, "smaps": (4, 2)},  # kB
                                102: {"rss_pages": 5}})  # neither smaps_rollup nor smaps
    probe = TreeProbe(100, include_root=False, measure=measure, proc_root=str(proc))
    sample = probe.sample()
    assert sample.pss_bytes is None and sample.uss_bytes is None
    own = 4 * 1024 if measure == "pss" else 2 * 1024
    assert sample.measure_bytes == own + 5 * PAGE_SIZE
    assert probe.errors == {("smaps_rollup", "FileNotFoundError"): 1}
    (proc / "102" / "smaps_rollup").mkdir()  # unreadable for another reason: EISDIR
    assert probe.sample().pss_bytes is None
    assert probe.errors[("smaps_rollup", "IsADirectoryError")] == 1


def test_a_process_gone_before_its_smaps_is_not_an_error(tmp_path):
    proc = make_proc(tmp_path, {100: {"children": {100: [101]}}, 101: {"rss_pages": 3}})
    probe = TreeProbe(100, include_root=False, measure="pss", proc_root=str(proc))
    (proc / "101" / "statm").unlink()  # as if it exited after its statm was opened
    assert probe.smaps_rollup(101) is None and probe.errors == {}


def test_real_pss_and_uss_are_read():
    probe = TreeProbe(os.getppid(), include_root=False, measure="pss")
    sample = probe.sample()
    assert sample.pss_bytes and sample.uss_bytes and probe.errors == {}
    assert sample.uss_bytes <= sample.pss_bytes <= sample.rss_bytes


def test_real_tree_matches_psutil():
    root = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30 & (sleep 30 & wait) & "
                             "echo ready; wait"], stdout=subprocess.PIPE)
    try:
        assert root.stdout.readline() == b"ready\n"
        probe = TreeProbe(root.pid, include_root=True)
        ps = psutil.Process(root.pid)
        # The subshells may still be exec'ing `sleep` (RSS changing): compare
        # until the tree is settled, i.e. both readings agree.
        for _ in range(100):
            sample = probe.sample()
            tree = [ps, *ps.children(recursive=True)]
            if (sorted(sample.pids) == sorted(p.pid for p in tree)
                    and sample.rss_bytes == sum(p.memory_info().rss for p in tree)):
                break
            time.sleep(0.02)
        else:
            raise AssertionError(f"probe {sample} never matched psutil {tree}")
        assert len(sample.pids) == 5  # sh, 2 sleeps, a subshell and its sleep
        probe.close()
    finally:
        for child in psutil.Process(root.pid).children(recursive=True):
            child.kill()
        root.kill()
        root.wait()
        root.stdout.close()


# ------------------------------------------------------------------ descriptors

def test_descriptor_budget_is_half_the_soft_limit_after_a_reserve():
    assert descriptor_budget(1024) == 448
    assert descriptor_budget(256) == 64
    assert descriptor_budget(100) == 0
    assert descriptor_budget(10**7) == 1024  # never more than FD_KEPT_MAX (kernel memory)


def test_kept_descriptors_never_exceed_the_budget_and_the_sum_is_whole(tmp_path):
    procs = {100: {"children": {100: list(range(101, 131))}}}
    procs.update({pid: {"rss_pages": 1} for pid in range(101, 131)})
    proc = make_proc(tmp_path, procs)
    full = TreeProbe(100, include_root=False, proc_root=str(proc)).sample()
    probe = TreeProbe(100, include_root=False, proc_root=str(proc), fd_budget=5)
    for _ in range(3):  # kept ones are reused, the rest opened, read and closed
        sample = probe.sample()
        assert sample.rss_bytes == full.rss_bytes == 30 * PAGE_SIZE
        assert sorted(sample.pids) == list(range(101, 131))
        assert probe.kept_descriptors == 5
        assert sum(node.kept() for node in probe._nodes.values()) == 5
    assert probe.errors == {}
    nothing = TreeProbe(100, include_root=False, proc_root=str(proc), fd_budget=0)
    assert nothing.sample().rss_bytes == 30 * PAGE_SIZE and nothing.kept_descriptors == 0


def test_a_process_with_many_threads_keeps_children_descriptors_only_in_half_the_budget(
        tmp_path):
    many = {tid: [] for tid in range(200, 200 + KEEP_CHILDREN_MAX_THREADS + 1)}
    many[200 + KEEP_CHILDREN_MAX_THREADS] = [300]  # the last thread forked
    proc = make_proc(tmp_path, {100: {"children": {100: [200]}},
                                200: {"rss_pages": 1, "children": many},
                                300: {"rss_pages": 2}})
    probe = TreeProbe(100, include_root=False, proc_root=str(proc), fd_budget=12)
    assert sorted(probe.sample().pids) == [200, 300]
    assert probe._nodes[200].children == {} and probe._nodes[200].statm is not None
    assert len(probe._nodes[300].children) == 1  # one thread: kept
    roomy = TreeProbe(100, include_root=False, proc_root=str(proc), fd_budget=100)
    assert sorted(roomy.sample().pids) == [200, 300]
    assert len(roomy._nodes[200].children) == KEEP_CHILDREN_MAX_THREADS + 1


def test_an_unreadable_file_is_counted_and_the_walk_goes_on(tmp_path):
    proc = make_proc(tmp_path, {100: {"children": {100: [101]}},
                                101: {"rss_pages": 1, "children": {101: [102]}},
                                102: {"rss_pages": 4}})
    (proc / "101" / "statm").unlink()
    (proc / "101" / "statm").mkdir()  # reading it fails with EISDIR, not "gone"
    probe = TreeProbe(100, include_root=False, proc_root=str(proc), fd_budget=0)
    sample = probe.sample()
    assert sample.processes == ((101, 0), (102, 4 * PAGE_SIZE))  # 102 still counted
    assert probe.errors == {("statm", "IsADirectoryError"): 1}


def test_a_children_file_longer_than_a_page_is_read_whole():
    # /proc/<pid>/task/<tid>/children hands out one page per read: some 680 PIDs.
    root = subprocess.Popen([sys.executable, "-c", "import os, sys\n"
                             "for _ in range(900): os.posix_spawnp('sleep', ['sleep', '60'], "
                             "os.environ)\nprint('ready', flush=True); sys.stdin.read()"],
                            stdout=subprocess.PIPE, stdin=subprocess.PIPE)
    try:
        assert root.stdout.readline() == b"ready\n"
        probe = TreeProbe(root.pid, include_root=False)
        assert len(probe.sample().pids) == 900
        probe.close()
    finally:
        for child in psutil.Process(root.pid).children():
            child.kill()
        root.stdin.close()
        root.wait()
        root.stdout.close()


def _world_readable_tree(procs: dict[int, dict]) -> Path:
    """``make_proc`` in a directory that user nobody can walk (pytest's tmp_path is 0700)."""
    base = Path(tempfile.mkdtemp(prefix="sentinel-proc-"))
    make_proc(base, procs)
    for d, _, files in os.walk(base):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    return base


def _as_nobody(fn):
    """``fn()`` with the effective UID of nobody (root's real UID kept to come back)."""
    require(root=True)
    os.seteuid(NOBODY)
    try:
        return fn()
    finally:
        os.seteuid(0)


@pytest.mark.parametrize("budget", [0, 8])
def test_a_denied_statm_is_reported_and_does_not_hide_its_subtree(budget):
    proc = _world_readable_tree({100: {"children": {100: [101]}},
                                 101: {"rss_pages": 1, "children": {101: [102]}},
                                 102: {"rss_pages": 4, "children": {102: [103]}},
                                 103: {"rss_pages": 2}})
    try:
        os.chmod(proc / "101" / "statm", 0)  # EACCES for anyone but root
        probe = TreeProbe(100, include_root=False, proc_root=str(proc), fd_budget=budget)
        sample = _as_nobody(probe.sample)
        probe.close()
        assert sample.processes == ((101, 0), (102, 4 * PAGE_SIZE), (103, 2 * PAGE_SIZE))
        assert sample.rss_bytes == 6 * PAGE_SIZE
        assert sample.unreadable == (Unreadable(101, "rss_bytes", "EACCES"),)
        assert probe.errors[("statm", "PermissionError")] >= 1
    finally:
        shutil.rmtree(proc)


def test_a_denied_smaps_rollup_of_a_live_process_is_none_with_a_reason():
    # A real process of another user (root's, read as nobody): statm is world-readable,
    # smaps_rollup needs ptrace access (EACCES).
    root = subprocess.Popen(["sh", "-c", "sleep 30 & wait"])
    kid = None
    try:
        kid = wait_until(lambda: (TreeProbe(root.pid, include_root=False).sample().pids or
                                  [None])[0], 5, what="sleep")
        for measure in ("pss", "uss"):
            probe = TreeProbe(root.pid, include_root=True, measure=measure)
            sample = _as_nobody(probe.sample)
            probe.close()
            assert sample.pids == (root.pid, kid) and sample.rss_bytes > 0
            assert sample.pss_bytes is None and sample.uss_bytes is None
            assert sample.measure_bytes == sample.rss_bytes  # unknown: counted as its RSS
            assert set(sample.unreadable) == {Unreadable(root.pid, "pss_bytes", "EACCES"),
                                              Unreadable(kid, "pss_bytes", "EACCES")}
    finally:
        if kid is not None:
            os.kill(kid, signal.SIGKILL)
        root.kill()
        root.wait()


def test_pss_is_read_at_most_so_often_and_estimated_from_rss_in_between(tmp_path):
    proc = make_proc(tmp_path, {100: {"children": {100: [101]}},
                                101: {"rss_pages": 100, "smaps": (40, 20)}})  # kB
    # Every read counts as costly (cheap 0) and allows the next only a minute later.
    probe = TreeProbe(100, include_root=False, measure="pss", proc_root=str(proc),
                      smaps_min_period=60.0, smaps_cheap_seconds=0.0)
    first = probe.sample()
    assert (first.pss_bytes, first.measure_bytes, probe.smaps_estimated) == \
        (40 * 1024, 40 * 1024, False)
    (proc / "101" / "statm").write_text("1000 110 10 1 0 50 0\n")  # 10 pages more resident
    (proc / "101" / "smaps_rollup").write_text("Pss: 999 kB\n")  # not read now
    between = probe.sample()
    assert probe.smaps_estimated and between.pss_bytes is None
    assert between.measure_bytes == 40 * 1024 + 10 * PAGE_SIZE  # new pages count in full
    probe.force_smaps()
    again = probe.sample()
    assert (again.pss_bytes, again.measure_bytes, probe.smaps_estimated) == \
        (999 * 1024, 999 * 1024, False)


def test_a_cheap_pss_read_is_read_every_sample(tmp_path):
    proc = make_proc(tmp_path, {100: {"children": {100: [101]}},
                                101: {"rss_pages": 100, "smaps": (40, 20)}})
    probe = TreeProbe(100, include_root=False, measure="pss", proc_root=str(proc),
                      smaps_min_period=60.0)  # a fixture read is far under 0.5 ms
    probe.sample()
    (proc / "101" / "smaps_rollup").write_text("Pss: 50 kB\n")
    assert probe.sample().pss_bytes == 50 * 1024 and not probe.smaps_estimated
