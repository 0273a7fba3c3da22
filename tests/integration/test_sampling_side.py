"""The sampling side on real kernel files (issue 9): a v1 usage threshold wakes Sentinel
long before its next tick, ``--max-rss auto`` follows a changed ``memory.limit_in_bytes``,
the shared-pages warning comes before the kill it would explain (and not without
sharing), and an enforcing cgroup figure that becomes unreadable is said once, loudly."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from sentinel.control.client import request
from sentinel.errors import ControlError
from tests.conftest import PY, leaker, wait_until
from tests.integration.test_cgroup_auto import v1_group
from tests.integration.test_cgroup_real import own_v1_group

MiB = 1024 * 1024
QUIET = ["--no-metrics", "--no-socket", "--log-format", "json"]


def into(group: Path):
    """A pre-exec step: the started process (Sentinel) joins ``group`` before it runs,
    so its pages and its workload's are charged there (KERNEL.md: a process that moves
    later leaves its earlier pages behind)."""
    def join() -> None:
        (group / "cgroup.procs").write_text(str(os.getpid()))
    return join


def events(s, kind: str) -> list[dict]:
    return [e for e in s.logs() if e.get("event") == kind]


def test_a_v1_usage_threshold_wakes_sentinel_long_before_its_5s_tick(start_sentinel):
    # 512 MiB of group limit: the kernel never kills. The leaker grows 150 MiB/s and exits
    # 0 on its own at 400 MiB (~2.7 s) unless stopped; Sentinel ticks every 5 s, so only a
    # wake-up can stop it at 100 MiB (~0.7 s after it starts).
    with own_v1_group(512 * MiB) as group:
        t0 = time.monotonic()
        s = start_sentinel([*QUIET, "--max-rss", "100Mi", "--interval", "5s",
                            "--grace-period", "2s", "--", *leaker(
                                "--rate", "150", "--max", "400", "--exit-at-max", "--quiet")],
                           preexec_fn=into(group))
        code = s.wait(30)
        took = time.monotonic() - t0
        assert code == 143, s.stderr()[-3000:]  # SIGTERM, not its own exit at 400 MiB
        assert took < 4.5, f"stopped after {took:.1f}s: the 5 s tick, not a wake-up"
        woken = [e for e in events(s, "wakeup") if e.get("source") == "usage_threshold"]
        assert woken, s.stderr()[-3000:]
        crossed = events(s, "limit_crossed")
        assert crossed and crossed[0]["value_bytes"] < 200 * MiB, crossed


def test_max_rss_auto_follows_a_changed_limit(start_sentinel, tmp_path):
    sock = str(tmp_path / "s.sock")
    with own_v1_group(400 * MiB) as group:
        s = start_sentinel(["--no-metrics", "--socket", sock, "--log-format", "json",
                            "--log-level", "debug", "--max-rss", "auto:50%", "--", "sleep", "60"],
                           preexec_fn=into(group))
        first = 200 * MiB - 32 * MiB  # 50 % less Sentinel's own 32 MiB
        wait_until(lambda: _status_limit(sock) == first, 10, what=f"limit {first}")
        memsw = group / "memory.memsw.limit_in_bytes"
        if memsw.exists():  # memory.limit_in_bytes may not exceed it (EINVAL): it goes first
            memsw.write_text(str(600 * MiB))
        (group / "memory.limit_in_bytes").write_text(str(600 * MiB))  # a pod resize
        after = 300 * MiB - 32 * MiB
        wait_until(lambda: _status_limit(sock) == after, 10, what=f"limit {after}")
        status = request(sock, "status", timeout=1.0)["status"]
        memory = status["memory"]
        # status's auto line is the resolution now in force, not the start-up one
        assert "new limit 600.0 MiB" in status["kernel_notes"]["auto"], status["kernel_notes"]
        # --measure rss, and every cgroup figure in the sample all the same
        assert memory["cgroup_memory_max_bytes"] == 600 * MiB, memory
        assert memory["cgroup_memory_current_bytes"] and memory["rss_bytes"] is not None
        changed = events(s, "limit_changed")
        assert changed and changed[-1]["limit_bytes"] == after, s.stderr()[-2000:]
        assert changed[-1]["old_limit_bytes"] == first
        # The v1 threshold follows: armed for the new limit (usage + the new headroom).
        wait_until(lambda: [e for e in events(s, "threshold") if e["limit_bytes"] == after],
                   10, what="the threshold re-armed for the new limit")
        s.signal(signal.SIGTERM)
        assert s.wait(10) == 143


def _status_limit(sock: str):
    try:
        reply = request(sock, "status", timeout=1.0)
    except ControlError:
        return None  # not listening yet
    return reply["status"]["limit_bytes"] if reply.get("ok") else None


# A parent that touches 64 MiB, then forks 4 children that keep it (shared pages: RSS
# counts them 5 times, PSS once); with "private" each process touches its own 64 MiB,
# the parent after the forks (nothing of it is inherited).
TREE = """
import os, sys, time
shared = sys.argv[1] == "shared"
if shared:
    buf = bytearray(b"\\x01") * (64 << 20)
for _ in range(4):
    if os.fork() == 0:
        if not shared:
            own = bytearray(b"\\x02") * (64 << 20)
        time.sleep(60)
        os._exit(0)
    time.sleep(0.3)
if not shared:
    buf = bytearray(b"\\x01") * (64 << 20)
time.sleep(60)
"""


def _tree_run(start_sentinel, tmp_path, kind: str):
    script = tmp_path / "tree.py"
    script.write_text(TREE)
    # RSS ~5 x 75 MiB either way: both cross 300 MiB and are stopped; only the shared
    # tree's RSS over-counts (PSS ~90 MiB against ~330 MiB private).
    s = start_sentinel([*QUIET, "--max-rss", "300Mi", "--grace-period", "1s", "--",
                        PY, str(script), kind])
    assert s.wait(30) == 143, s.stderr()[-3000:]
    return s


def test_shared_pages_are_warned_about_once_before_the_kill(start_sentinel, tmp_path):
    s = _tree_run(start_sentinel, tmp_path, "shared")
    logs = s.logs()
    notes = [i for i, e in enumerate(logs) if e.get("topic") == "shared_pages"]
    crossed = [i for i, e in enumerate(logs) if e.get("event") == "limit_crossed"]
    assert len(notes) == 1, s.stderr()[-3000:]
    assert crossed and notes[0] < crossed[0], s.stderr()[-3000:]
    text = logs[notes[0]]["msg"]
    assert logs[notes[0]]["level"] == "warning"
    assert "--measure pss" in text and "--measure working-set" in text, text


def test_no_shared_pages_no_warning(start_sentinel, tmp_path):
    s = _tree_run(start_sentinel, tmp_path, "private")
    assert events(s, "limit_crossed")
    assert not [e for e in s.logs() if e.get("topic") == "shared_pages"], s.stderr()[-3000:]


def test_an_unreadable_enforcing_cgroup_figure_is_said_once_never_replaced(
        start_sentinel, tmp_path):
    group = v1_group(tmp_path, str(512 * MiB), usage=str(50 * MiB))
    s = start_sentinel([*QUIET, "--measure", "cgroup", "--max-rss", "100Mi", "--cgroup-root",
                        str(group), "--", PY, "-c", "import time; print('up', flush=True); "
                        "time.sleep(60)"])
    s.expect("up")
    usage = group / "memory.usage_in_bytes"
    usage.write_text("garbage\n")  # the same inode: Sentinel's kept fd reads this
    wait_until(lambda: events(s, "sampling_failed"), 10, what="sampling_failed")
    failed = events(s, "sampling_failed")
    assert "memory.usage_in_bytes garbage" in failed[0]["msg"], failed
    usage.write_text(str(60 * MiB) + "\n")
    wait_until(lambda: events(s, "sampling_recovered"), 10, what="sampling_recovered")
    assert len(events(s, "sampling_failed")) == 1
    assert not events(s, "limit_crossed")  # RSS (small) never replaced the usage figure
    s.signal(signal.SIGTERM)
    assert s.wait(10) == 143


def test_watch_says_once_when_the_targets_cgroup_is_not_visible(start_sentinel, tmp_path):
    import subprocess

    target = subprocess.Popen(["sleep", "60"])
    try:
        s = start_sentinel([*QUIET, "--target-pid", str(target.pid), "--cgroup-root",
                            str(tmp_path / "not-mounted")], cmd="watch")
        wait_until(lambda: [e for e in s.logs() if e.get("topic") == "cgroup"], 10,
                   what="the cgroup note")
        notes = [e for e in s.logs() if e.get("topic") == "cgroup"]
        assert len(notes) == 1, notes
        assert "in sidecar mode the workload's cgroup belongs to another container" in \
            notes[0]["msg"] and "hostPath" in notes[0]["msg"], notes
        # watched all the same, on the tree's figures (the note may come before the event)
        wait_until(lambda: events(s, "attached"), 10, what="the attached event")
    finally:
        target.kill()
        target.wait()


def test_a_v1_kernel_oom_wakes_sentinel_through_its_oom_notification(start_sentinel):
    # --max-rss far above the group's 64 MiB: the kernel kills the leaker (SIGKILL, 137)
    # and the group's OOM notification wakes Sentinel.
    with own_v1_group(64 * MiB) as group:
        s = start_sentinel([*QUIET, "--max-rss", "1Gi", "--", *leaker("--rate", "100",
                                                                          "--quiet")],
                           preexec_fn=into(group))
        assert s.wait(30) == 137, s.stderr()[-3000:]
        woken = [e for e in events(s, "wakeup") if e.get("source") == "oom_notify"]
        assert woken and woken[0]["rose"].get("oom_kill", 0) >= 1, s.stderr()[-3000:]


# Waits for its go-file, then leaks 150 MiB/s and exits 0 at 400 MiB (2.7 s) unless stopped.
LEAK_ON_GO = """
import os, sys, time
print("waiting", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
chunks = []
for _ in range(400):
    chunks.append(bytearray(b"\\x01") * (1 << 20))
    time.sleep(1 / 150)
"""
HOLDER = "b = bytearray(b'\\x01') * (150 << 20); print('held', flush=True); input()"


def test_a_threshold_passed_by_others_memory_is_moved_and_still_stops_the_leak(
        start_sentinel, tmp_path):
    # A process of the group that is not the workload's takes 150 MiB: the group's usage
    # passes the threshold while the tree's RSS stays small, and the wake-up moves the
    # threshold up by what usage had gained by then (the holder may still be allocating:
    # a threshold below the ideal only wakes early, and is moved again). The leak that follows is stopped by the moved
    # threshold; unmoved, only the 5 s tick would see it (the leak exits 0 after 2.7 s).
    import subprocess

    script, go = tmp_path / "leak.py", tmp_path / "go"
    script.write_text(LEAK_ON_GO)
    holder = None
    with own_v1_group(1024 * MiB) as group:
        try:
            s = start_sentinel([*QUIET, "--log-level", "debug", "--max-rss", "100Mi",
                                "--interval", "5s", "--grace-period", "2s", "--", PY,
                                str(script), str(go)], preexec_fn=into(group))
            s.expect("waiting")
            wait_until(lambda: events(s, "threshold"), 10, what="the threshold armed")
            armed = events(s, "threshold")[0]["threshold_bytes"]
            holder = subprocess.Popen([PY, "-c", HOLDER], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True,
                                      preexec_fn=into(group))
            assert holder.stdout.readline().strip() == "held"
            wait_until(lambda: [e for e in events(s, "threshold")
                                if e["threshold_bytes"] > armed + 50 * MiB], 10,
                       what=lambda: f"the threshold moved up: {s.stderr()[-3000:]}")
            go.write_text("")
            t0 = time.monotonic()
            assert s.wait(30) == 143, s.stderr()[-3000:]
            assert time.monotonic() - t0 < 2.5, "stopped by the 5 s tick, not a wake-up"
            woke = [e for e in events(s, "wakeup") if e.get("source") == "usage_threshold"]
            assert len(woke) >= 2, woke
        finally:
            if holder is not None:
                holder.kill()
                holder.wait()
                holder.stdin.close()
                holder.stdout.close()


def _cached_side(group: Path, tmp_path: Path, limit: int, cache_mib: int):
    """A sampling side on the real v1 ``group`` after ``cache_mib`` MiB of page cache
    were written (by a process in it, so charged to it); its wake-ups attached to a
    real asyncio loop. Returns (guardian, side, loop)."""
    import asyncio
    import subprocess

    from sentinel.config.settings import Settings
    from sentinel.probes.cgroup import CgroupMemory
    from tests.unit.test_guardian_clock import FakeLoop, Recorder, ScriptedProbe

    subprocess.run(["dd", "if=/dev/zero", f"of={tmp_path / 'cache'}", "bs=1M",
                    f"count={cache_mib}", "status=none"], check=True, preexec_fn=into(group))
    loop = asyncio.new_event_loop()
    s = Settings(command=("app",), workload_name="app", max_rss_bytes=limit)
    probe = ScriptedProbe(FakeLoop(), 0, 0)
    probe.cgroup = CgroupMemory(str(group), 1)  # type: ignore[attr-defined]
    g = Recorder(s, None, set(), loop=loop, probe=probe)
    side = g.sampling_side
    side.on_run()
    return g, side, loop


def _v1_sample(group: Path, measure: int):
    from sentinel.probes.contract import MemorySample

    usage = int((group / "memory.usage_in_bytes").read_text())
    hard = int((group / "memory.limit_in_bytes").read_text())
    return MemorySample(at_mono=0.0, measure_bytes=measure, rss_bytes=measure,
                        processes=((4242, measure),), duration_seconds=0.0,
                        cgroup_memory_current_bytes=usage, cgroup_memory_max_bytes=hard)


def test_a_v1_threshold_above_the_hard_limit_does_not_cover(tmp_path):
    # 256 MiB hard limit, ~200 MiB of page cache, a 20 MiB workload under a 100 MiB
    # limit: the threshold belongs at usage + 80 MiB = ~280 MiB, above the hard limit,
    # where the kernel reclaims cache instead: it never fires, the tick must not stretch.
    with own_v1_group(256 * MiB) as group:
        g, side, loop = _cached_side(group, tmp_path, 100 * MiB, 200)
        try:
            now = _v1_sample(group, 20 * MiB)
            assert now.cgroup_memory_current_bytes > 180 * MiB, now
            side.on_sample(now)
            thr = side.threshold
            assert thr is not None and thr.fd >= 0, g.state.kernel_notes  # really armed
            assert thr.threshold_bytes > 256 * MiB
            assert not side.covered(now)
            # The same group with room above the threshold: covered.
            (group / "memory.memsw.limit_in_bytes").write_text(str(1024 * MiB))
            (group / "memory.limit_in_bytes").write_text(str(1024 * MiB))
            assert side.covered(_v1_sample(group, 20 * MiB))
        finally:
            side.close()
            g.close()
            loop.close()


def test_a_v1_threshold_whose_rearm_fails_does_not_cover(tmp_path):
    with own_v1_group(1024 * MiB) as group:
        g, side, loop = _cached_side(group, tmp_path, 100 * MiB, 20)
        try:
            now = _v1_sample(group, 20 * MiB)
            side.on_sample(now)
            thr = side.threshold
            assert thr is not None and thr.fd >= 0 and side.covered(now)
            thr.path = str(group / "no-such-file")  # the kernel refuses the next one
            done = loop.create_future()
            rearmed = side._rearmed

            def heard(*args) -> None:  # the handshake: the helper thread's answer ran
                rearmed(*args)
                done.set_result(args)

            side._rearmed = heard  # type: ignore[method-assign]
            side.on_limit(200 * MiB)
            side.on_sample(now)  # re-armed by a helper thread, answered on the loop
            _, _, fd, err = loop.run_until_complete(asyncio.wait_for(done, 10))
            assert fd == -1 and "does not exist" in err  # refused for real (ENOENT)
            assert side.threshold is None and not side.covered(now)
            assert g.state.kernel_notes["usage_threshold"] == err
        finally:
            side.close()
            g.close()
            loop.close()

