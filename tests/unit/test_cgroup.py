"""cgroup discovery and reads on fixture trees built per test: v1, v2 and hybrid layouts,
private and host cgroup namespaces (the mount's root field), read-only mounts, "max",
missing files and odd values; ``auto_limit``; the figures table and its document."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sentinel.errors import UsageError
from sentinel.probes import figures
from sentinel.probes.cgroup import (
    ANCESTOR_NOT_VISIBLE, OWN_FOOTPRINT_BYTES, OWN_FOOTPRINT_EVENTS_BYTES, CgroupMemory,
    auto_limit, discover, explain_no_cgroup, is_hierarchy_root, other_members,
    parse_mountinfo, parse_proc_cgroup, parse_value, relative_to_root, share_text,
)
from sentinel.probes.contract import MemoryProbe, Unreadable
from sentinel.probes import tree as tree_module
from sentinel.probes.tree import TreeProbe, walk_period_for

MiB = 1024 * 1024
V1_UNLIMITED = "9223372036854771712"  # PAGE_COUNTER_MAX pages in bytes, 4 KiB pages
REPO = Path(__file__).resolve().parents[2]

V2_FILES = {"memory.current": "104857600\n", "memory.max": "209715200\n",
            "memory.high": "max\n",
            "memory.stat": "anon 1\nfile 2\ninactive_file 4857600\nactive_file 3\n",
            "memory.events": "low 0\nhigh 4\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n"}
V1_FILES = {"memory.usage_in_bytes": "104857600\n", "memory.limit_in_bytes": "209715200\n",
            "memory.stat": "cache 5\ninactive_file 1\ntotal_inactive_file 4857600\n",
            "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"}


def build(tmp_path: Path, *, proc_cgroup: str, mounts: list[str],
          groups: dict[str, dict[str, str]]) -> Path:
    """A /proc with 42/cgroup and self/mountinfo, and cgroup directories under
    tmp_path/cg (``groups``: directory relative to tmp_path/cg -> files). Mount lines
    may say {cg} for that directory. Returns the fake /proc."""
    proc, cg = tmp_path / "proc", tmp_path / "cg"
    (proc / "42").mkdir(parents=True)
    (proc / "self").mkdir()
    (proc / "42" / "cgroup").write_text(proc_cgroup)
    (proc / "self" / "cgroup").write_text(proc_cgroup)
    (proc / "self" / "mountinfo").write_text(
        "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
        + "".join(line.format(cg=cg) + "\n" for line in mounts))
    for rel, files in groups.items():
        d = cg / rel
        d.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (d / name).write_text(text)
    return proc


def v2_mount(root="/", opts="rw,nosuid"):
    return f"30 25 0:26 {root} {{cg}} {opts} - cgroup2 cgroup2 rw"


def v1_mount(root="/", sub="memory", opts="rw,nosuid"):
    return f"35 31 0:32 {root} {{cg}}/{sub} {opts} - cgroup cgroup rw,memory"


# -- parsing ---------------------------------------------------------------
def test_proc_cgroup_lines_v1_v2_and_hybrid():
    assert parse_proc_cgroup("0::/a/b\n") == (None, "/a/b")
    assert parse_proc_cgroup("5:cpu,cpuacct:/x\n4:memory:/docker/abc\n") == ("/docker/abc", None)
    assert parse_proc_cgroup("4:memory:/m\n1:name=systemd:/s\n0::/u\n") == ("/m", "/u")
    assert parse_proc_cgroup("garbage\n\n") == (None, None)


def test_mountinfo_cgroup_mounts_with_root_and_read_only():
    mounts = parse_mountinfo(
        "31 23 0:28 / /sys/fs/cgroup ro,relatime - tmpfs tmpfs rw\n"
        "35 31 0:32 /libpod_parent/ctr /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup "
        "rw,memory\n"
        "41 31 0:38 / /sys/fs/cgroup/my\\040dir rw - cgroup2 cgroup2 rw\n"
        "bad line\n")
    assert [(m.fstype, m.root, m.mount_point, m.read_only) for m in mounts] == [
        ("cgroup", "/libpod_parent/ctr", "/sys/fs/cgroup/memory", True),
        ("cgroup2", "/", "/sys/fs/cgroup/my dir", False)]


@pytest.mark.parametrize("path, root, expected", [
    ("/", "/", ""), ("/a/b", "/", "a/b"), ("/kubepods/pod1/ctr", "/kubepods/pod1/ctr", ""),
    ("/kubepods/pod1/ctr", "/kubepods/pod1", "ctr"), ("/kubepods/pod2", "/kubepods/pod1", None),
    ("/kubepods/pod10", "/kubepods/pod1", None), ("/../other", "/", None)])
def test_the_mount_root_is_subtracted(path, root, expected):
    assert relative_to_root(path, root) == expected


@pytest.mark.parametrize("raw, limit, expected", [
    (b"104857600\n", False, (104857600, None)), (b"", False, (None, "empty")),
    (b"\n", False, (None, "empty")), (b"lots\n", False, (None, "garbage")),
    (b"-4096\n", False, (None, "negative")), (b"99999999999999999999999\n", False,
                                               (None, "huge")),
    (b"max\n", False, (None, "garbage")), (b"max\n", True, (None, None)),
    (V1_UNLIMITED.encode(), True, (None, None)), (b"209715200", True, (209715200, None))])
def test_values_odd_and_unlimited(raw, limit, expected):
    assert parse_value(raw, limit=limit) == expected


# -- discovery -------------------------------------------------------------
def test_v2_private_namespace(tmp_path):
    proc = build(tmp_path, proc_cgroup="0::/\n", mounts=[v2_mount()], groups={".": V2_FILES})
    mem = discover(42, proc_root=str(proc))
    assert (mem.version, mem.path, mem.read_only) == (2, str(tmp_path / "cg"), False)
    r = mem.read()
    assert (r.current_bytes, r.limit_bytes, r.high_bytes) == (104857600, 209715200, None)
    assert (r.inactive_file_bytes, r.working_set_bytes, r.oom_kills) == (4857600, 100000000, 1)
    assert r.events == {"low": 0, "high": 4, "max": 3, "oom": 1, "oom_kill": 1,
                        "oom_group_kill": 0}
    assert r.unreadable == () and mem.errors == {}


@pytest.mark.parametrize("root, cgroup_path, rel", [
    ("/kubepods/pod1/ctr", "/kubepods/pod1/ctr", "."),  # podman/Docker --cgroupns=host
    ("/kubepods/pod1", "/kubepods/pod1/ctr", "ctr"),
])
def test_v2_host_namespace_subtracts_the_mount_root(tmp_path, root, cgroup_path, rel):
    proc = build(tmp_path, proc_cgroup=f"0::{cgroup_path}\n", mounts=[v2_mount(root)],
                 groups={rel: V2_FILES})
    mem = discover(42, proc_root=str(proc))
    assert mem.path == str((tmp_path / "cg" / rel).resolve())
    assert mem.read().current_bytes == 104857600


def test_v1_host_namespace_read_only_with_unlimited_limit(tmp_path):
    files = dict(V1_FILES, **{"memory.limit_in_bytes": V1_UNLIMITED + "\n"})
    proc = build(tmp_path, proc_cgroup="9:cpu:/x\n4:memory:/libpod_parent/libpod-abc\n",
                 mounts=[v1_mount("/libpod_parent/libpod-abc", opts="ro,nosuid")],
                 groups={"memory": files})
    mem = discover(42, proc_root=str(proc))
    assert (mem.version, mem.path, mem.read_only) == (1, str(tmp_path / "cg" / "memory"), True)
    r = mem.read()
    assert (r.current_bytes, r.limit_bytes, r.high_bytes) == (104857600, None, None)
    assert (r.inactive_file_bytes, r.working_set_bytes) == (4857600, 100000000)
    assert r.oom_kills == 2 and r.unreadable == ()


@pytest.mark.parametrize("v2_first", [True, False])
def test_hybrid_uses_the_v1_memory_controller(tmp_path, v2_first):
    # These machines: cgroup2 at /sys/fs/cgroup/unified without a memory controller.
    mounts = [v1_mount(), v2_mount().replace("{cg}", "{cg}/unified")]
    proc = build(tmp_path, proc_cgroup="4:memory:/grp\n1:name=systemd:/grp\n0::/grp\n",
                 mounts=mounts[::-1] if v2_first else mounts,
                 groups={"memory/grp": V1_FILES, "unified/grp": {"cgroup.procs": "42\n"}})
    mem = discover(42, proc_root=str(proc))
    assert (mem.version, mem.path) == (1, str(tmp_path / "cg" / "memory" / "grp"))


def test_v2_without_memory_controller_is_explained(tmp_path):
    proc = build(tmp_path, proc_cgroup="0::/grp\n", mounts=[v2_mount()],
                 groups={"grp": {"cgroup.procs": "42\n"}})
    assert discover(42, proc_root=str(proc)) is None
    why = explain_no_cgroup(42, proc_root=str(proc))
    assert "memory.current" in why and "no memory controller" in why and "\n" not in why


def test_a_cgroup_outside_our_namespace_is_not_visible_and_sidecar_says_what_mount(tmp_path):
    # What a sidecar sees of another container's process: a path outside its own root.
    proc = build(tmp_path, proc_cgroup="0::/../ctr-workload\n", mounts=[v2_mount()],
                 groups={".": V2_FILES})
    assert discover(42, proc_root=str(proc)) is None
    why = explain_no_cgroup(42, proc_root=str(proc), sidecar=True)
    assert "outside the mount" in why
    assert "host's /sys/fs/cgroup read-only" in why and "--cgroup-root" in why
    proc_shared = build(tmp_path / "b", proc_cgroup="0::/kubepods/pod1/other\n",
                        mounts=[v2_mount("/kubepods/pod1/sentinel")], groups={".": V2_FILES})
    assert discover(42, proc_root=str(proc_shared)) is None


def test_no_cgroup_mount_at_all(tmp_path):
    proc = build(tmp_path, proc_cgroup="4:memory:/grp\n", mounts=[], groups={})
    assert discover(42, proc_root=str(proc)) is None
    assert "no v1 memory hierarchy is mounted here" in explain_no_cgroup(42, proc_root=str(proc))
    assert discover(7, proc_root=str(proc)) is None  # gone: no /proc/7/cgroup
    assert "cannot be read" in explain_no_cgroup(7, proc_root=str(proc))


def test_explain_is_empty_when_visible(tmp_path):
    proc = build(tmp_path, proc_cgroup="0::/\n", mounts=[v2_mount()], groups={".": V2_FILES})
    assert explain_no_cgroup(42, proc_root=str(proc)) == ""


def test_cgroup_root_overrides_the_mount_point_or_is_the_directory(tmp_path):
    proc = build(tmp_path, proc_cgroup="0::/kubepods/pod1/ctr\n", mounts=[],
                 groups={"elsewhere/kubepods/pod1/ctr": V2_FILES, "direct": V2_FILES})
    assert discover(42, proc_root=str(proc)) is None
    mem = discover(42, proc_root=str(proc), cgroup_root=str(tmp_path / "cg" / "elsewhere"))
    assert mem.path == str(tmp_path / "cg" / "elsewhere" / "kubepods" / "pod1" / "ctr")
    mem = discover(42, proc_root=str(proc), cgroup_root=str(tmp_path / "cg" / "direct"))
    assert mem.path == str(tmp_path / "cg" / "direct")
    assert CgroupMemory.for_pid(42, str(proc), str(tmp_path / "cg" / "direct")).version == 2
    assert discover(42, proc_root=str(proc), cgroup_root=str(tmp_path / "nowhere")) is None


def test_cgroup_root_never_takes_the_hierarchy_root_for_the_workloads_group(tmp_path):
    # A sidecar given the host's v1 memory hierarchy: its root (cgroup.sane_behavior, the
    # whole host's usage) must not stand for a target whose group is not under it.
    host_root = dict(V1_FILES, **{"cgroup.sane_behavior": "0\n", "cgroup.procs": "1\n"})
    proc = build(tmp_path, proc_cgroup="4:memory:/other/ctr\n", mounts=[v1_mount()],
                 groups={"memory": host_root})
    root = str(tmp_path / "cg" / "memory")
    assert discover(42, proc_root=str(proc), cgroup_root=root) is None
    assert "the hierarchy's root itself is never taken" in explain_no_cgroup(
        42, proc_root=str(proc), cgroup_root=root, sidecar=True)
    (tmp_path / "cg" / "memory" / "other" / "ctr").mkdir(parents=True)
    for name, text in V1_FILES.items():
        (tmp_path / "cg" / "memory" / "other" / "ctr" / name).write_text(text)
    mem = discover(42, proc_root=str(proc), cgroup_root=root)
    assert mem.path == root + "/other/ctr" and mem.version == 1


def test_cgroup_root_takes_only_a_group_the_process_is_in(tmp_path):
    # An ancestor (every sibling container's memory) or an unrelated group (another
    # workload's) given as --cgroup-root is never the workload's: its cgroup.procs
    # must list the process.
    proc = build(tmp_path, proc_cgroup="0::/kubepods/pod1/ctr\n", mounts=[],
                 groups={"pods": dict(V2_FILES, **{"cgroup.procs": "7\n8\n"}),
                         "mine": dict(V2_FILES, **{"cgroup.procs": "7\n42\n"})})
    assert discover(42, proc_root=str(proc), cgroup_root=str(tmp_path / "cg" / "pods")) is None
    why = explain_no_cgroup(42, proc_root=str(proc), cgroup_root=str(tmp_path / "cg" / "pods"))
    assert "no group there holds process 42" in why and "check --cgroup-root" in why
    mem = discover(42, proc_root=str(proc), cgroup_root=str(tmp_path / "cg" / "mine"))
    assert mem is not None and mem.path == str(tmp_path / "cg" / "mine")


def test_cgroup_root_takes_an_empty_leaf_the_workload_joins_but_no_empty_ancestor(tmp_path):
    # Sentinel outside the workload's group (--clamp-high needs it), the workload joining
    # it in a pre-exec step: an empty leaf. An empty group with child groups is an
    # ancestor (its usage is every child's): never.
    proc = build(tmp_path, proc_cgroup="0::/sentinel\n", mounts=[],
                 groups={"work": dict(V2_FILES, **{"cgroup.procs": ""}),
                         "pod": dict(V2_FILES, **{"cgroup.procs": ""}),
                         "pod/ctr": dict(V2_FILES, **{"cgroup.procs": "7\n"})})
    mem = discover(42, proc_root=str(proc), cgroup_root=str(tmp_path / "cg" / "work"))
    assert mem is not None and mem.path == str(tmp_path / "cg" / "work")
    assert discover(42, proc_root=str(proc), cgroup_root=str(tmp_path / "cg" / "pod")) is None


def test_the_hierarchy_root_and_the_other_members_of_a_group_are_told(tmp_path):
    proc = build(tmp_path, proc_cgroup="4:memory:/\n", mounts=[v1_mount()],
                 groups={"memory": dict(V1_FILES, **{"cgroup.sane_behavior": "0\n",
                                                     "cgroup.procs": "1\n42\n99\n"})})
    mem = discover(42, proc_root=str(proc))
    assert mem is not None and is_hierarchy_root(mem)
    assert other_members(mem, {42}) == [1, 99]


def test_cgroup_root_drops_the_root_of_the_mount_that_holds_the_path(tmp_path):
    # Two cgroup2 mounts; only the second's root holds the path: its root is dropped.
    proc = build(tmp_path, proc_cgroup="0::/kubepods/pod1/ctr\n",
                 mounts=[v2_mount("/other"), v2_mount("/kubepods/pod1")],
                 groups={"alt/ctr": V2_FILES})
    mem = discover(42, proc_root=str(proc), cgroup_root=str(tmp_path / "cg" / "alt"))
    assert mem is not None and mem.path == str(tmp_path / "cg" / "alt" / "ctr")


# -- reading ---------------------------------------------------------------
def test_missing_files_give_none_with_a_countable_reason(tmp_path):
    files = {k: v for k, v in V2_FILES.items() if k not in ("memory.stat", "memory.events")}
    proc = build(tmp_path, proc_cgroup="0::/\n", mounts=[v2_mount()], groups={".": files})
    mem = discover(42, proc_root=str(proc))
    r = mem.read()
    assert r.current_bytes == 104857600
    assert (r.inactive_file_bytes, r.working_set_bytes, r.oom_kills) == (None, None, None)
    assert set(r.unreadable) == {("memory.stat", "missing"), ("memory.events", "missing")}
    mem.read()
    assert mem.errors == {("memory.stat", "missing"): 2, ("memory.events", "missing"): 2}


def test_a_stat_file_without_inactive_file_and_events_without_oom_kill(tmp_path):
    files = dict(V1_FILES, **{"memory.stat": "cache 5\n", "memory.oom_control":
                              "oom_kill_disable 0\nunder_oom 0\n"})  # a kernel before 4.13
    proc = build(tmp_path, proc_cgroup="4:memory:/\n", mounts=[v1_mount()],
                 groups={"memory": files})
    r = discover(42, proc_root=str(proc)).read()
    assert (r.inactive_file_bytes, r.working_set_bytes, r.oom_kills) == (None, None, None)
    assert set(r.unreadable) == {("memory.stat", "missing"), ("memory.oom_control", "missing")}


@pytest.mark.parametrize("text, reason", [("", "empty"), ("many\n", "garbage"),
                                          ("-1\n", "negative"),
                                          ("184467440737095516160\n", "huge")])
def test_odd_current_values_never_raise(tmp_path, text, reason):
    proc = build(tmp_path, proc_cgroup="0::/\n", mounts=[v2_mount()],
                 groups={".": dict(V2_FILES, **{"memory.current": text})})
    mem = discover(42, proc_root=str(proc))
    r = mem.read()
    assert r.current_bytes is None and r.working_set_bytes is None
    assert r.unreadable == (("memory.current", reason),)
    assert mem.errors == {("memory.current", reason): 1}


def test_working_set_is_floored_at_zero(tmp_path):
    files = dict(V2_FILES, **{"memory.stat": "inactive_file 204857600\n"})
    proc = build(tmp_path, proc_cgroup="0::/\n", mounts=[v2_mount()], groups={".": files})
    assert discover(42, proc_root=str(proc)).read().working_set_bytes == 0


def test_limits_and_limit_changed_on_a_resize(tmp_path):
    proc = build(tmp_path, proc_cgroup="0::/\n", mounts=[v2_mount()],
                 groups={".": dict(V2_FILES, **{"memory.high": "157286400\n"})})
    mem = discover(42, proc_root=str(proc))
    assert mem.limits() == (209715200, 157286400)
    assert mem.limit_changed() is False  # the first look
    assert mem.limit_changed() is False
    (tmp_path / "cg" / "memory.max").write_text("419430400\n")  # an in-place pod resize
    assert mem.limit_changed() is True
    assert mem.limits() == (419430400, 157286400)
    assert mem.limit_changed() is False
    mem.close()
    assert mem.events()["oom_kill"] == 1  # descriptors reopen after close


# -- the tree probe with a cgroup -----------------------------------------------
def _tree_with_cgroup(tmp_path, measure, files=V2_FILES):
    proc = build(tmp_path, proc_cgroup="0::/\n", mounts=[v2_mount()], groups={".": files})
    (proc / "42" / "task" / "42").mkdir(parents=True)
    (proc / "42" / "statm").write_text("1000 25 10 1 0 50 0\n")
    (proc / "42" / "task" / "42" / "children").write_text("")
    return TreeProbe(42, include_root=True, measure=measure, proc_root=str(proc),
                     cgroup=discover(42, proc_root=str(proc)), fd_budget=8)


@pytest.mark.parametrize("measure, expected", [("cgroup", 104857600),
                                               ("working-set", 100000000)])
def test_measure_cgroup_is_usage_and_working_set_is_the_kubelets(tmp_path, measure, expected):
    probe = _tree_with_cgroup(tmp_path, measure)
    assert isinstance(probe, MemoryProbe)
    s = probe.sample()
    assert s.measure_bytes == expected
    assert (s.cgroup_memory_current_bytes, s.cgroup_memory_max_bytes, s.cgroup_working_set_bytes,
            s.cgroup_inactive_file_bytes, s.cgroup_oom_kills) == (
        104857600, 209715200, 100000000, 4857600, 1)
    probe.close()


@pytest.mark.parametrize("measure, walks", [("cgroup", 2), ("working-set", 2), ("rss", 4)])
def test_with_a_cgroup_measure_the_tree_is_walked_once_a_period(tmp_path, monkeypatch,
                                                                 measure, walks):
    # The cgroup's files are the figure, read every sample; the walk (11 ms for 1,000
    # processes) only lists the processes, at most every walk_period seconds. RSS walks
    # every sample.
    probe = _tree_with_cgroup(tmp_path, measure)
    probe.walk_period = walk_period_for(measure)
    now = [1000.0]
    monkeypatch.setattr(tree_module.time, "monotonic", lambda: now[0])
    calls = []
    real = probe.children
    monkeypatch.setattr(probe, "children", lambda pid, node=None: calls.append(pid)
                        or real(pid, node))
    current = tmp_path / "cg" / "memory.current"
    samples = []
    for t, usage in ((0.0, "104857600"), (0.4, "110000000"), (0.9, "120000000"),
                     (1.2, "130000000")):
        now[0] = 1000.0 + t
        current.write_text(usage + "\n")
        samples.append(probe.sample())
    assert len(calls) == walks  # cgroup measures: at 0.0 and 1.2 s
    assert [s.cgroup_memory_current_bytes for s in samples] == [
        104857600, 110000000, 120000000, 130000000]  # fresh every sample
    assert all(s.processes == samples[0].processes for s in samples)
    probe.close()


@pytest.mark.parametrize("measure", ["rss", "working-set"])
def test_an_unreadable_cgroup_file_is_named_in_the_sample(tmp_path, measure):
    files = dict(V2_FILES, **{"memory.stat": "garbled"})  # no inactive_file line
    probe = _tree_with_cgroup(tmp_path, measure, files)
    s = probe.sample()
    assert s.cgroup_working_set_bytes is None
    assert s.unreadable == (Unreadable(0, "cgroup_inactive_file_bytes", "missing"),)
    assert probe.cgroup.errors == {("memory.stat", "missing"): 1}
    if measure == "rss":
        assert probe.errors == {}  # an optional figure: the tree's sampling is not failing
    else:
        # The enforcing figure: counted where the supervisor's sampling health sees it
        # (never a silent switch to RSS), and the measure is the tree's RSS at least.
        assert probe.errors == {("memory.stat", "missing"): 1}
        assert s.measure_bytes == s.rss_bytes


# -- auto ------------------------------------------------------------------
def test_auto_limit_is_the_share_of_the_lower_limit_less_sentinels_own():
    assert auto_limit(1000 * MiB, None, 0.9, 0) == int(900 * MiB)
    assert auto_limit(1000 * MiB, 500 * MiB, 0.9, 0) == int(450 * MiB)  # high is lower
    assert auto_limit(None, 500 * MiB, 0.85, 32 * MiB) == int(500 * MiB * 0.85) - 32 * MiB
    assert auto_limit(400 * MiB, 800 * MiB, 1.0, 32 * MiB) == 368 * MiB


def test_auto_limit_without_a_limit_says_what_to_do():
    with pytest.raises(UsageError) as exc:
        auto_limit(None, None, 0.9, 0)
    assert str(exc.value) == ('--max-rss auto: the container has no memory limit (memory.max '
                              'is "max"); set resources.limits.memory or give --max-rss a size')
    with pytest.raises(UsageError, match=r"memory\.limit_in_bytes is unlimited"):
        auto_limit(None, None, 0.9, 0, version=1)
    with pytest.raises(UsageError, match="leaves nothing; raise resources.limits.memory"):
        auto_limit(30 * MiB, None, 0.9, 32 * MiB)


def v1_stat(hier_limit: str = V1_UNLIMITED, memsw: str = V1_UNLIMITED) -> str:
    return (f"cache 5\nhierarchical_memory_limit {hier_limit}\nhierarchical_memsw_limit "
            f"{memsw}\ntotal_inactive_file 4857600\n")


def test_v1_a_parents_tighter_limit_is_the_hierarchical_one(tmp_path):
    # The reproduced case: the container's own v1 limit unlimited, its parent's 512 MiB.
    own = dict(V1_FILES, **{"memory.limit_in_bytes": V1_UNLIMITED + "\n",
                            "memory.stat": v1_stat(str(512 * MiB))})
    parent = dict(V1_FILES, **{"memory.limit_in_bytes": f"{512 * MiB}\n"})
    proc = build(tmp_path, proc_cgroup="4:memory:/kubepods/pod1/ctr\n", mounts=[v1_mount()],
                 groups={"memory/kubepods/pod1": parent, "memory/kubepods/pod1/ctr": own})
    mem = discover(42, proc_root=str(proc))
    assert mem.limits() == (512 * MiB, None)
    assert mem.limit_source == str(tmp_path / "cg" / "memory" / "kubepods" / "pod1")
    assert auto_limit(*mem.limits(), 0.9, 0, version=1) == int(512 * MiB * 0.9)


def test_v1_hierarchical_limit_from_a_group_above_the_mount_root(tmp_path):
    # podman's host cgroupns: the mount's root is the container's group, its parent is
    # not visible; memory.stat still gives the kernel's minimum. memsw when lower.
    own = dict(V1_FILES, **{"memory.limit_in_bytes": f"{900 * MiB}\n",
                            "memory.stat": v1_stat(str(600 * MiB), str(500 * MiB))})
    proc = build(tmp_path, proc_cgroup="4:memory:/libpod_parent/libpod-abc\n",
                 mounts=[v1_mount("/libpod_parent/libpod-abc")], groups={"memory": own})
    mem = discover(42, proc_root=str(proc))
    assert mem.limits() == (500 * MiB, None)
    assert mem.limit_source == ANCESTOR_NOT_VISIBLE
    (tmp_path / "cg" / "memory" / "memory.stat").write_text(v1_stat())  # no tighter parent
    assert mem.limits() == (900 * MiB, None) and mem.limit_source == mem.path


def test_v2_the_lowest_max_and_high_of_the_visible_parents(tmp_path):
    files = dict(V2_FILES, **{"memory.max": "max\n", "memory.high": "max\n"})
    proc = build(tmp_path, proc_cgroup="0::/kubepods.slice/pod1/ctr\n", mounts=[v2_mount()],
                 groups={"kubepods.slice": {"memory.max": f"{512 * MiB}\n",
                                            "memory.high": "max\n"},
                         "kubepods.slice/pod1": {"memory.max": f"{1024 * MiB}\n",
                                                 "memory.high": f"{400 * MiB}\n"},
                         "kubepods.slice/pod1/ctr": files})
    # Above the mount point: never read, however low.
    (tmp_path / "memory.max").write_text("1048576\n")
    mem = discover(42, proc_root=str(proc))
    assert mem.limits() == (512 * MiB, 400 * MiB)
    assert mem.limit_source == str(tmp_path / "cg" / "kubepods.slice")
    assert mem.high_source == str(tmp_path / "cg" / "kubepods.slice" / "pod1")
    assert mem.read().limit_bytes is None  # the reading is the group's own file


def test_v2_a_private_namespace_sees_no_parent(tmp_path):
    proc = build(tmp_path, proc_cgroup="0::/\n", mounts=[v2_mount()], groups={".": V2_FILES})
    (tmp_path / "memory.max").write_text("1048576\n")  # the host's, outside the namespace
    mem = discover(42, proc_root=str(proc))
    assert mem.limits() == (209715200, None) and mem.limit_source == mem.path


def test_the_share_is_printed_as_given():
    assert share_text(0.855) == "85.5%" and share_text(0.9) == "90%" and share_text(1.0) == "100%"
    with pytest.raises(UsageError, match=r"--max-rss auto: 85\.5% of the container's limit"):
        auto_limit(30 * MiB, None, 0.855, 32 * MiB)


def test_sentinels_own_footprint_is_the_charts():
    helpers = (REPO / "charts/sentinel/templates/_helpers.tpl").read_text()
    define = helpers[helpers.index('define "sentinel.footprintMiB"'):]
    off, on = map(int, re.search(r"ternary (\d+) (\d+) \(eq \(include \"sentinel.k8sEvents\" "
                                 r"\.\) \"off\"\)", define).groups())
    assert (off * MiB, on * MiB) == (OWN_FOOTPRINT_BYTES, OWN_FOOTPRINT_EVENTS_BYTES)
    values = " ".join((REPO / "charts/sentinel/values.yaml").read_text().replace("#", "").split())
    assert f"maxRss + {off} MiB, or maxRss + {on} MiB when k8sEvents is not off" in values
    assert f"less Sentinel's own {off} MiB ({on} MiB when k8sEvents is not off" in values


# -- the figures table -------------------------------------------------------
def test_the_figures_document_is_generated_from_the_table():
    doc = (REPO / "docs" / "memory-figures.md").read_text()
    assert doc == figures.render_markdown(), \
        "run: python -m sentinel.probes.figures > docs/memory-figures.md"


def test_every_cgroup_and_smaps_figure_is_a_sample_field_and_a_metric():
    from dataclasses import fields

    from sentinel.probes.contract import MemorySample

    names = {f.name for f in fields(MemorySample)}
    assert {f.name for f in figures.FIGURES} <= names
    assert figures.BY_NAME["cgroup_oom_kills"].metric == \
        "sentinel_workload_cgroup_oom_kills_total"


def test_a_group_holding_only_the_processes_descendants_is_its_workloads(tmp_path):
    # Run mode with Sentinel outside the group: the workload (Sentinel's child) joined it
    # before the probe looked. Another process in it (not a descendant) is not ours.
    import os
    import subprocess

    from sentinel.probes import cgroup as cg

    child = subprocess.Popen(["sleep", "30"])
    try:
        group = tmp_path / "work"
        group.mkdir()
        (group / "cgroup.procs").write_text(f"{child.pid}\n")
        assert cg._holds(str(group), os.getpid())
        (group / "cgroup.procs").write_text(f"{child.pid}\n1\n")
        assert not cg._holds(str(group), os.getpid())
    finally:
        child.kill()
        child.wait()
