"""The probes on real kernel files: a real cgroup v1 memory group of the test's own (found
from /proc/<pid>/cgroup, its usage tracked, its limit read, a real kernel OOM kill seen in
oom_kill), and PSS against RSS on real forked workers that share a large buffer."""

from __future__ import annotations

import errno
import json
import os
import signal
import shlex
import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from sentinel.probes.cgroup import auto_limit, discover
from sentinel.probes.tree import TreeProbe
from tests.conftest import PY, SENTINEL, clean_env, require, wait_until

MiB = 1024 * 1024
MEMCG = Path("/sys/fs/cgroup/memory")

# Grows by the MiB count on each stdin line (every page written), answers "ok".
GROWER = ("import sys\nchunks = []\nprint('ready', flush=True)\nfor line in sys.stdin:\n"
          "    chunks.append(bytearray(b'\\x01') * (int(line) * 1048576))\n"
          "    print('ok', flush=True)\n")


def _own_memory_group() -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
    raise AssertionError("this process has no cgroup v1 memory line in /proc/self/cgroup")


@contextmanager
def own_v1_group(limit_bytes: int):
    """A new memory group at the top of the v1 hierarchy, never inside or above the
    group this test runs in; removed afterwards (its tasks killed, rmdir retried)."""
    require(root=True)
    if not (MEMCG / "cgroup.procs").is_file():
        raise AssertionError(f"no cgroup v1 memory hierarchy at {MEMCG} (ls /sys/fs/cgroup/)")
    name = f"sentinel-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    own = _own_memory_group()
    assert own.split("/")[1:2] != [name], "the new group would hold this test"
    group = MEMCG / name
    group.mkdir()
    try:
        (group / "memory.limit_in_bytes").write_text(str(limit_bytes))
        memsw = group / "memory.memsw.limit_in_bytes"
        if memsw.exists():  # no swap way out: the kernel must OOM-kill
            memsw.write_text(str(limit_bytes))
        yield group
    finally:
        # Child groups first (a test's own, or podman's under --cgroup-parent): a group
        # with children cannot be removed. podman (cgroupfs manager) makes the parent in
        # every hierarchy, not only the memory one: those go too (same unique name).
        others = [h / name for h in MEMCG.parent.iterdir() if h != MEMCG and (h / name).is_dir()]
        for top in [group, *others]:
            for d in sorted((p for p in top.rglob("*") if p.is_dir()),
                            key=lambda p: -len(p.parts)):
                _remove_group(d)
            _remove_group(top)


def _remove_group(group: Path) -> None:
    """Kill the group's tasks and remove it, retrying while they leave (EBUSY)."""
    deadline = time.monotonic() + 10
    while True:
        for pid in (group / "cgroup.procs").read_text().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            group.rmdir()
            break
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # the killed tasks are still leaving the group


def _line(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline()
    assert line, f"the grower exited ({proc.poll()})"
    return line.strip()


def test_a_real_v1_group_is_found_read_and_its_oom_kill_counted():
    limit = 64 * MiB
    with own_v1_group(limit) as group:
        # The pre-exec write to cgroup.procs: its pages are charged to the group from the
        # start (a process that moves itself leaves earlier pages to the old group).
        with subprocess.Popen(["sh", "-c", f"echo $$ > {group}/cgroup.procs && exec {PY} -c "
                               f"\"$0\"", GROWER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) as child:
            assert _line(child) == "ready"
            mem = discover(child.pid)
            assert mem is not None, "no cgroup found for the child"
            assert (mem.version, mem.path) == (1, str(group))
            before = mem.read()
            assert before.limit_bytes == limit and before.high_bytes is None
            assert before.oom_kills == 0 and before.current_bytes > 0
            assert auto_limit(before.limit_bytes, before.high_bytes, 0.9) == int(limit * 0.9)
            child.stdin.write("24\n")
            child.stdin.flush()
            assert _line(child) == "ok"
            grown = mem.read()
            assert grown.current_bytes >= before.current_bytes + 22 * MiB, (before, grown)
            assert grown.current_bytes <= limit
            assert grown.working_set_bytes is not None and \
                grown.working_set_bytes <= grown.current_bytes
            child.stdin.write("80\n")  # past the limit: the kernel's OOM killer
            child.stdin.flush()
            assert child.wait(30) == -signal.SIGKILL
            after = mem.read()
            assert after.oom_kills == before.oom_kills + 1, after
            assert after.events["oom_kill"] == after.oom_kills
            mem.close()


def test_a_real_v1_parents_limit_binds_a_child_group_without_its_own():
    # The reviewer's case: the workload's own group unlimited, its parent 512 MiB.
    with own_v1_group(512 * MiB) as parent:
        ctr = parent / "ctr"
        ctr.mkdir()
        with subprocess.Popen(["sh", "-c", f"echo $$ > {ctr}/cgroup.procs && echo ready && "
                               "exec cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) as child:
            assert _line(child) == "ready"
            mem = discover(child.pid)
            assert (mem.version, mem.path) == (1, str(ctr))
            assert mem.read().limit_bytes is None  # its own file: unlimited
            assert mem.limits() == (512 * MiB, None)
            assert mem.limit_source == str(parent)
            assert auto_limit(*mem.limits(), 0.9, 0, version=1) == int(512 * MiB * 0.9)
            mem.close()
            child.stdin.close()


WORKERS = ("import os, sys, time\n"
           "buf = bytearray(b'\\x01') * (64 * 1048576)\n"
           "for _ in range(4):\n"
           "    if os.fork() == 0:\n"
           "        total = 0\n"
           "        for i in range(0, len(buf), 4096):\n"
           "            total += buf[i]\n"  # reads every page; writes none
           "        os.write(1, b'ready %d\\n' % total)\n"
           "        time.sleep(60)\n"
           "        os._exit(0)\n"
           "os.write(1, b'ready parent\\n')\n"
           "time.sleep(60)\n")


@contextmanager
def _killed_after(parent: subprocess.Popen):
    try:
        yield
    finally:
        for pid in TreeProbe(parent.pid, include_root=False).sample().pids:
            os.kill(pid, signal.SIGKILL)
        parent.kill()


def test_pss_counts_shared_pages_once_where_summed_rss_counts_them_five_times():
    # A prefork server's shape: a parent touches 64 MiB, then forks 4 workers that only
    # read it. Summed RSS counts the buffer 5 times, PSS once.
    with subprocess.Popen([PY, "-c", WORKERS], stdout=subprocess.PIPE, text=True) as parent, \
            _killed_after(parent):
        ready = [parent.stdout.readline() for _ in range(5)]
        assert all(line.startswith("ready") for line in ready), ready
        probe = TreeProbe(parent.pid, include_root=True, measure="pss")
        sample = probe.sample()
        probe.close()
        assert len(sample.pids) == 5 and sample.unreadable == ()
        buffer = 64 * MiB
        assert sample.rss_bytes >= 4.8 * buffer, sample
        assert buffer <= sample.pss_bytes <= 1.5 * buffer, sample
        assert sample.rss_bytes / sample.pss_bytes >= 3.5, sample
        assert sample.measure_bytes == sample.pss_bytes
        assert sample.uss_bytes <= sample.pss_bytes


BASE_IMAGE = "localhost/sentinel-base:bookworm"  # scripts/make-base-image.sh
REPO = Path(__file__).resolve().parents[2]
IN_CONTAINER = ("import json\nfrom sentinel.probes.cgroup import discover\n"
                "m = discover()\nr = m.read()\n"
                "print(json.dumps([m.version, m.path, m.read_only, r.limit_bytes, "
                "r.current_bytes, r.oom_kills]))\n")


def podman_run(*args: str) -> subprocess.CompletedProcess:
    """The probe code of this tree, read-only, in the project's base image (its python3
    and the standard library are all the probes need before the spawn)."""
    require("podman")
    images = subprocess.run(["podman", "image", "exists", BASE_IMAGE])
    assert images.returncode == 0, f"{BASE_IMAGE} is missing: run scripts/make-base-image.sh"
    return subprocess.run(["podman", "run", "--rm", "--network", "none",
                           "-v", f"{REPO / 'sentinel'}:/opt/s/sentinel:ro",
                           "-e", "PYTHONPATH=/opt/s", *args], capture_output=True, text=True,
                          timeout=120)


def test_in_a_podman_container_the_cgroup_is_found_through_the_mount_root():
    # podman on v1: the host's cgroup namespace, so /proc/self/cgroup says
    # /libpod_parent/libpod-<id> and the read-only mount's root is that same path.
    p = podman_run("--memory", "100m", BASE_IMAGE, "python3", "-c", IN_CONTAINER)
    assert p.returncode == 0, p.stderr
    version, path, read_only, limit, current, oom_kills = json.loads(p.stdout)
    assert (version, path, read_only) == (1, "/sys/fs/cgroup/memory", True)
    assert limit == 100 * MiB and 0 < current < limit and oom_kills == 0


def test_in_a_podman_container_auto_takes_a_parent_groups_limit():
    # --cgroup-parent with a 512 MiB limit, no --memory: the container's own group is
    # unlimited and its parent above the mount's root; memory.stat's hierarchical limit
    # still says 512 MiB, and the start-up line says where it came from.
    with own_v1_group(512 * MiB) as parent:
        p = podman_run(f"--cgroup-parent=/{parent.name}", BASE_IMAGE, "python3", "-m",
                       "sentinel", "run", "--max-rss", "auto", "--k8s-events", "off",
                       "--no-metrics", "--no-socket", "--", "true")
    assert p.returncode == 0, p.stderr
    value = int(512 * MiB * 0.9) - 32 * MiB
    assert ("--max-rss auto: cgroup v1 /sys/fs/cgroup/memory: memory.limit_in_bytes 512 MiB "
            "from an ancestor not visible here (v1 hierarchical_memory_limit); 90% of it, "
            f"less Sentinel's own 32 MiB: limit 428.8 MiB ({value} bytes)") in p.stderr


def test_in_a_podman_container_without_a_limit_auto_is_refused():
    p = podman_run(BASE_IMAGE, "python3", "-m", "sentinel", "run", "--max-rss", "auto", "--",
                   "true")
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip() == (
        "sentinel: error: --max-rss auto: the container has no memory limit "
        "(memory.limit_in_bytes is unlimited); set resources.limits.memory or give "
        "--max-rss a size")


def _sentinel_in(group: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """``sentinel run ARGS`` started inside ``group`` (the shell joins it, then execs)."""
    argv = " ".join(shlex.quote(a) for a in (*SENTINEL, "run", "--no-metrics", "--no-socket",
                                             *args))
    return subprocess.run(["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec {argv}'],
                          capture_output=True, text=True, timeout=timeout, env=clean_env({}))


def test_a_cgroup_measure_names_its_group_and_warns_of_processes_not_the_workloads():
    # The cgroup measures count every process of the group: one that is not the
    # workload's (here a sleep already in the group) is named once, as a warning.
    with own_v1_group(512 * MiB) as group:
        other = subprocess.Popen(["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec sleep 60'])
        try:
            wait_until(lambda: str(other.pid) in (group / "cgroup.procs").read_text().split(),
                       timeout=10, what="the other process in the group")
            out = _sentinel_in(group, "--measure", "cgroup", "--max-rss", "400Mi", "--", "true")
            assert out.returncode == 0, out.stderr
            assert f"--measure cgroup: cgroup v1 {group} (memory.usage_in_bytes)" in out.stderr
            warning = [line for line in out.stderr.splitlines() if "also holds" in line]
            assert len(warning) == 1 and f"pid {other.pid}" in warning[0], out.stderr
        finally:
            other.kill()
            other.wait()


def test_a_cgroup_measure_in_the_hierarchys_root_group_is_refused():
    # The root group's usage is the whole host's: never a container's limit.
    require(root=True)
    keeper = MEMCG / "cgroup.procs"
    out = subprocess.run(["sh", "-c", f'echo $$ > {keeper} && exec ' + " ".join(
        shlex.quote(a) for a in (*SENTINEL, "run", "--measure", "working-set", "--max-rss",
                                 "100Mi", "--", "true"))],
        capture_output=True, text=True, timeout=30, env=clean_env({}))
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "hierarchy's root group" in out.stderr


def test_a_cgroup_root_the_workload_is_not_in_is_refused_also_with_rss(tmp_path):
    # A group holding another workload, or an ancestor, is never measured, and a
    # wrong --cgroup-root is said even where the cgroup figures are optional.
    with own_v1_group(512 * MiB) as group:
        other = subprocess.Popen(["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec sleep 60'])
        try:
            wait_until(lambda: str(other.pid) in (group / "cgroup.procs").read_text().split(),
                       timeout=10, what="the other process in the group")
            _refused_cgroup_roots(tmp_path, group)
        finally:
            other.kill()
            other.wait()


def _refused_cgroup_roots(tmp_path: Path, group: Path) -> None:
    own = _own_memory_group()  # e.g. /a/b: /a is an ancestor of ours, with child groups
    ancestor = MEMCG / own.split("/")[1] if own.count("/") >= 2 else MEMCG
    for args in (["--cgroup-root", str(group)],
                 ["--cgroup-root", str(group), "--measure", "cgroup", "--max-rss", "1Gi"],
                 ["--cgroup-root", str(ancestor)],
                 ["--cgroup-root", str(tmp_path / "nowhere")]):
        out = subprocess.run([*SENTINEL, "run", "--no-metrics", "--no-socket", *args,
                              "--", "true"], capture_output=True, text=True, timeout=30,
                             env=clean_env({}))
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.count("\n") == 1 and "check --cgroup-root" in out.stderr, \
            out.stderr
