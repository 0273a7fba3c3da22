"""The kernel's side of a kill, on the real kernel (root, cgroup v1 memory and freezer).

- A kernel OOM kill is told apart: Sentinel runs INSIDE an own v1 memory group (a
  pre-exec write to cgroup.procs) with ``--max-rss`` above the group's limit, so the
  kernel kills the leaker first; Sentinel survives (v1 has no oom.group) and its JSON
  log, ``status`` and exit code say ``kernel_oom``. Negative control: a ``kill -9``
  from outside (oom_kill unchanged) is not called one.
- Racing the kernel: a fast leaker that ignores SIGTERM would reach the group's limit
  within a 10 s grace period; Sentinel SIGKILLs early and oom_kill stays 0. Negative
  control: with ``--no-early-sigkill`` the kernel gets there first.
- process_mrelease after Sentinel's SIGKILL: a frozen victim's memory is freed
  without thawing (without the call it stays held: test_kernel_memory.py shows it).
- oom_score_adj: the workload's is raised by the margin after the spawn.

Every group is new, at the top of its hierarchy, and removed in a finally.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

from sentinel.control.client import request
from sentinel.core.kernel_side import KernelSide
from sentinel.core.state import GuardianState
from sentinel.errors import ControlError
from tests.conftest import PY, descendants, leaker, printer, wait_until
from tests.integration.test_cgroup_real import own_v1_group
from tests.integration.test_kernel_memory import v1_group

MiB = 1 << 20

# Ignores SIGTERM (only the SIGKILL ends it: a default SIGTERM would already make it a
# dying process), touches N MiB of private anonymous memory, says "ready", then sleeps.
HOLDER = ("import mmap, signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
          "n = int(sys.argv[1]) << 20\n"
          "m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
          "for i in range(0, n, 4096):\n    m[i] = 1\nprint('ready', flush=True)\n"
          "time.sleep(600)\n")


def oom_kills(group: Path) -> int:
    for line in (group / "memory.oom_control").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    raise AssertionError(f"no oom_kill line in {group}/memory.oom_control")


def joiner(group: Path):
    """A pre-exec step: the started process (Sentinel) joins ``group`` before it runs,
    so every page it and its workload touch is charged there."""
    def join() -> None:
        with open(group / "cgroup.procs", "w") as f:
            f.write("0")  # 0: the writing process itself
    return join


def events(s, kind: str) -> list[dict]:
    return [r for r in s.logs() if r.get("event") == kind]


def status(sock: Path) -> dict:
    reply = request(str(sock), "status", timeout=2.0)
    assert reply.get("ok"), reply
    return reply["status"]


def sampled(sock: Path) -> bool:
    """The control socket answers and the workload was sampled once."""
    try:
        return bool(status(sock)["memory"])
    except ControlError:
        return False


def common(sock: Path, tmp_path: Path) -> list[str]:
    return ["--socket", str(sock), "--no-metrics", "--log-format", "json",
            "--k8s-events", "off", "--termination-log", str(tmp_path / "termination-log")]


# ---------------------------------------------------------------- kernel OOM kills
def test_a_kernel_oom_kill_is_told_apart_and_reported(start_sentinel, mode, tmp_path):
    sock = tmp_path / "s.sock"
    with own_v1_group(192 * MiB) as group:
        # --max-rss 1g: far above the group's 192 MiB, so the kernel acts first. The
        # restart back-off keeps Sentinel up to be asked for its status.
        s = start_sentinel([*common(sock, tmp_path), "--max-rss", "1g", "--restart",
                            "on-failure", "--restart-delay", "20s", "--",
                            *leaker("--rate", "200", "--quiet")],
                           pid1=mode == "pid1", preexec_fn=joiner(group))
        wait_until(lambda: events(s, "kernel_oom_kill") or s.popen.poll() is not None, 30,
                   what="the kernel's OOM kill to be reported")
        assert s.popen.poll() is None, s.stderr()[-3000:]  # Sentinel survived it
        assert oom_kills(group) >= 1
        (ev,) = events(s, "kernel_oom_kill")
        assert ev["level"] == "error" and ev["pid"] == ev["kill"]["pids"][0]
        assert ev["oom_kills_delta"] >= 1 and ev["cgroup_limit_bytes"] == 192 * MiB
        assert "the kernel's OOM killer killed pid" in ev["msg"]
        assert "192.0 MiB" in ev["msg"] and "--max-rss auto" in ev["msg"]
        st = wait_until(lambda: (lambda x: x if x["last_kill"] else None)(status(sock)), 10,
                        what="status to show the last kill")
        kill = st["last_kill"]
        assert kill["reason"] == "kernel_oom" and kill["exit_code"] == 137
        assert kill["signals"] == [] and kill["limit_bytes"] == 1 << 30
        assert {"reason": "kernel_oom", "signal": "SIGKILL", "count": 1} in st["kills"]
        assert st["last_exit_code"] == 137
        term = (tmp_path / "termination-log").read_text()
        assert term.startswith("KernelOOMKill: ") and "192.0 MiB" in term, term
        s.signal(signal.SIGTERM)  # in the back-off: Sentinel ends with the last exit code
        assert s.wait(20) == 137


def test_a_kill_9_from_outside_is_not_a_kernel_oom_kill(start_sentinel, mode, tmp_path):
    sock = tmp_path / "s.sock"
    with own_v1_group(192 * MiB) as group:
        s = start_sentinel([*common(sock, tmp_path), "--max-rss", "1g", "--",
                            *printer()], pid1=mode == "pid1", preexec_fn=joiner(group))
        s.expect("ready child")
        wait_until(lambda: sampled(sock), 10, what="a first sample")
        workload = descendants(s.pid)[0]
        os.kill(workload, signal.SIGKILL)  # as `kill -9 PID` from outside would
        assert s.wait(20) == 137
        assert oom_kills(group) == 0
        assert not events(s, "kernel_oom_kill")
        (exited,) = events(s, "exited")
        assert exited["exit_code"] == 137


# ---------------------------------------------------------------- racing the kernel
def _race(start_sentinel, tmp_path, *extra: str):
    sock = tmp_path / "s.sock"
    group_cm = own_v1_group(256 * MiB)
    group = group_cm.__enter__()
    try:
        s = start_sentinel([*common(sock, tmp_path), "--max-rss", "64m", "--grace-period",
                            "10s", *extra, "--",
                            *leaker("--rate", "150", "--ignore-term", "--quiet")],
                           preexec_fn=joiner(group))
        code = s.wait(40)
        return s, code, oom_kills(group)
    finally:
        group_cm.__exit__(None, None, None)


def test_sentinel_sigkills_before_the_kernel_would_within_the_grace_period(
        start_sentinel, tmp_path):
    s, code, kernel_kills = _race(start_sentinel, tmp_path)
    assert code == 137
    assert kernel_kills == 0, s.stderr()[-3000:]  # Sentinel got there first
    sent = events(s, "signal_sent")
    assert [e["signal"] for e in sent] == ["SIGTERM", "SIGKILL"], sent
    kill = sent[-1]["kill"]
    assert kill["early_sigkill_reason"] and "hard limit 256.0 MiB" in \
        kill["early_sigkill_reason"]
    assert kill["sigkill"] - kill["started"] < 8.0  # well before the 10 s grace period ends
    assert "before the grace period ends" in sent[-1]["msg"]
    (early,) = events(s, "early_sigkill")
    assert early["level"] == "warning"
    assert not events(s, "kernel_oom_kill")


def test_without_the_early_sigkill_the_kernel_gets_there_first(start_sentinel, tmp_path):
    s, code, kernel_kills = _race(start_sentinel, tmp_path, "--no-early-sigkill")
    assert code == 137
    assert kernel_kills == 1, s.stderr()[-3000:]
    assert [e["signal"] for e in events(s, "signal_sent")] == ["SIGTERM"]
    (ev,) = events(s, "kernel_oom_kill")
    assert ev["kill"]["reason"] == "kernel_oom"


# A workload that touches 100 MiB of private memory, idles past the growth window
# (sampler.RATE_WINDOW_SECONDS), then writes a 300 MiB checkpoint (page cache, paced
# at 100 MiB/s) and goes on writing it after SIGTERM: the cgroup's usage grows, its
# working set does not.
CHECKPOINTER = ("import mmap, signal, sys, time\n"
                "termed = []\n"
                "signal.signal(signal.SIGTERM, lambda *_: termed.append(1))\n"
                "m = mmap.mmap(-1, 100 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
                "for i in range(0, 100 << 20, 4096):\n    m[i] = 1\n"
                "chunk = b'x' * (10 << 20)\n"
                "print('ready', flush=True)\n"
                "time.sleep(3.5)\n"
                "with open(sys.argv[1], 'wb') as f:\n"
                "    for _ in range(30):\n"
                "        f.write(chunk)\n        f.flush()\n        time.sleep(0.1)\n"
                "print('checkpoint written', 'after SIGTERM' if termed else 'unasked',"
                " flush=True)\n"
                "sys.exit(0 if termed else 3)\n")


def test_a_checkpoint_growing_the_page_cache_keeps_its_whole_grace_period(
        start_sentinel, tmp_path):
    # --measure cgroup (usage, page cache included) crosses its 200m limit as the
    # checkpoint is written: SIGTERM. The usage grows at ~100 MiB/s (at that slope the
    # 512 MiB hard limit would come in ~3.5 s, before the 10 s grace period ends) while
    # the working set stays flat: no early SIGKILL, the checkpoint is finished and the
    # workload exits in its own time.
    sock = tmp_path / "s.sock"
    with own_v1_group(512 * MiB) as group:
        s = start_sentinel([*common(sock, tmp_path), "--measure", "cgroup", "--max-rss",
                            "200m", "--grace-period", "10s", "--",
                            PY, "-c", CHECKPOINTER, str(tmp_path / "checkpoint")],
                           preexec_fn=joiner(group))
        s.expect("ready", timeout=20)
        assert s.expect("checkpoint written", timeout=30) == \
            "checkpoint written after SIGTERM", s.stderr()[-3000:]
        s.wait(30)
        assert oom_kills(group) == 0
    assert [e["signal"] for e in events(s, "signal_sent")] == ["SIGTERM"], s.stderr()[-3000:]
    assert not events(s, "early_sigkill")
    assert (tmp_path / "checkpoint").stat().st_size == 300 * MiB
    (exited,) = events(s, "exited")
    assert exited["exit_code"] == 0


# ---------------------------------------------------------------- process_mrelease
def test_sentinels_sigkill_frees_a_frozen_victims_memory_without_thawing(
        start_sentinel, tmp_path):
    sock = tmp_path / "s.sock"
    with v1_group("memory") as mem, v1_group("freezer") as frz:
        s = None
        try:
            # Only the workload joins the groups (Sentinel must keep running).
            s = start_sentinel([*common(sock, tmp_path), "--max-rss", "none",
                                "--grace-period", "0.5s", "--", "sh", "-c",
                                f'echo $$ > {mem}/cgroup.procs; echo $$ > {frz}/cgroup.procs;'
                                f' exec "$0" -c "$1" 256', PY, HOLDER])
            s.expect("ready")
            usage = lambda: int((mem / "memory.usage_in_bytes").read_text())  # noqa: E731
            assert usage() >= 256 * MiB
            (frz / "freezer.state").write_text("FROZEN")
            wait_until(lambda: (frz / "freezer.state").read_text().strip() == "FROZEN",
                       what="the freezer group to freeze")
            assert request(str(sock), "stop", timeout=2.0)["ok"]
            # SIGTERM cannot be handled (frozen); SIGKILL after 0.5 s, then process_mrelease.
            wait_until(lambda: usage() < 64 * MiB, timeout=5.0,
                       what=lambda: f"the frozen victim's memory to be freed, still {usage()}")
            assert (frz / "freezer.state").read_text().strip() == "FROZEN"  # never thawed
            assert [e["signal"] for e in events(s, "signal_sent")] == ["SIGTERM", "SIGKILL"]
        finally:
            with contextlib.suppress(OSError):
                (frz / "freezer.state").write_text("THAWED")
        assert s.wait(20) == 137
        wait_until(lambda: not (mem / "cgroup.procs").read_text().strip(), 10,
                   what="the group to empty")


# ---------------------------------------------------------------- oom_score_adj
def _own_adj() -> int:
    return int(Path("/proc/self/oom_score_adj").read_text())


def test_the_workload_is_ranked_above_sentinel_for_the_oom_killer(start_sentinel, mode,
                                                                  tmp_path):
    sock = tmp_path / "s.sock"
    s = start_sentinel([*common(sock, tmp_path), "--max-rss", "none", "--",
                        *printer("--exit-on", "TERM=0")], pid1=mode == "pid1")
    s.expect("ready child")
    workload = descendants(s.pid)[0]
    base = _own_adj()  # what Sentinel (and so its child) inherited from this test
    wait_until(lambda: Path(f"/proc/{workload}/oom_score_adj").read_text().strip()
               == str(min(1000, base + 100)), 10, what="the workload's oom_score_adj")
    assert int(Path(f"/proc/{s.pid}/oom_score_adj").read_text()) <= base
    effective = int(next(line for line in Path("/proc/self/status").read_text().splitlines()
                         if line.startswith("CapEff:")).split()[1], 16)
    if not effective & (1 << 24):  # no CAP_SYS_RESOURCE (as here): said once, quietly
        # (other topics, e.g. the PSI window, say their own notes)
        (note,) = [n for n in events(s, "kernel_note") if "oom_score_adj" in n["msg"]]
        assert note["level"] == "info" and "needs CAP_SYS_RESOURCE" in note["msg"]
    s.signal(signal.SIGTERM)
    assert s.wait(20) == 0


def test_margin_0_leaves_oom_score_adj_alone(start_sentinel, tmp_path):
    sock = tmp_path / "s.sock"
    s = start_sentinel([*common(sock, tmp_path), "--max-rss", "none",
                        "--oom-score-adj-margin", "0", "--", *printer("--exit-on", "TERM=0")])
    s.expect("ready child")
    wait_until(lambda: sampled(sock), 10, what="a first sample")
    workload = descendants(s.pid)[0]
    assert Path(f"/proc/{workload}/oom_score_adj").read_text().strip() == str(_own_adj())
    s.signal(signal.SIGTERM)
    assert s.wait(20) == 0


def _bare_kernel_side() -> tuple[GuardianState, KernelSide]:
    """A KernelSide on a minimal supervisor stand-in (state only; no probe, no source)."""
    state = GuardianState(mode="run", workload="w", command=("sleep",), measure="rss",
                          limit_bytes=None, grace_period_seconds=1.0, interval_seconds=0.1,
                          version="")
    return state, KernelSide(SimpleNamespace(state=state, probe=None, source=None))


def test_the_pidfd_opened_when_the_ladder_starts_is_the_one_used_after_sigkill():
    # The victim is SIGKILLed and reaped before the post-SIGKILL hook runs: a PID looked
    # up then could be another process's; the pidfd held from the ladder's start still
    # names the victim (process_mrelease answers ESRCH, "already"), never a newcomer.
    state, side = _bare_kernel_side()
    victim = subprocess.Popen(["sleep", "60"])
    side.open_pidfds([victim.pid])
    victim.kill()
    victim.wait()
    side.after_sigkill([victim.pid])
    wait_until(lambda: side.mrelease_results, 5, what="the mrelease thread's results")
    assert side.mrelease_results == {"already": 1}
    assert "mrelease" not in state.kernel_notes
    side.close_pidfds()


def test_a_victim_that_is_not_dying_is_counted_apart_and_never_blamed_on_the_kernel():
    # process_mrelease on a process no SIGKILL reached (EINVAL: not dying; as for a
    # victim that shares its mm after vfork) is "not_dying": no "unavailable" note
    # that would blame the kernel for every later kill.
    state, side = _bare_kernel_side()
    alive = subprocess.Popen(["sleep", "60"])
    try:
        side.open_pidfds([alive.pid])
        side.after_sigkill([alive.pid])
        wait_until(lambda: side.mrelease_results, 5, what="the mrelease thread's results")
        assert side.mrelease_results == {"not_dying": 1}
        assert "mrelease" not in state.kernel_notes
        assert alive.poll() is None
    finally:
        alive.kill()
        alive.wait()


def test_a_kernel_oom_kill_of_another_process_of_the_tree_is_reported(start_sentinel,
                                                                     tmp_path):
    # The main process (a shell) outlives the kernel's kill of its leaking child: the
    # oom_kill rise is reported as a kernel_oom_kill without a PID, and counted.
    sock = tmp_path / "s.sock"
    with own_v1_group(192 * MiB) as group:
        leak = " ".join(leaker("--rate", "200", "--quiet"))
        s = start_sentinel([*common(sock, tmp_path), "--max-rss", "1g", "--", "sh", "-c",
                            f"{leak}; echo leaker-gone $?; exec sleep 600"],
                           preexec_fn=joiner(group))
        s.expect("leaker-gone 137", timeout=30)
        (ev,) = wait_until(lambda: events(s, "kernel_oom_kill"), 10,
                           what="the kernel's kill of the leaker to be reported")
        assert ev["pid"] is None and ev["oom_kills_delta"] >= 1 and ev["level"] == "error"
        assert "not the main one" in ev["msg"]
        st = status(sock)
        assert {"reason": "kernel_oom", "signal": "SIGKILL", "count": 1} in st["kills"]
        assert st["last_kill"] is None and st["phase"] == "running"


def test_watch_mode_raises_the_attached_targets_oom_score_adj(start_sentinel, tmp_path):
    target = subprocess.Popen([PY, "-c", "import time; print('ready', flush=True); "
                               "time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        assert target.stdout.readline() == "ready\n"
        base = _own_adj()
        s = start_sentinel(["--no-metrics", "--no-socket", "--log-format", "json",
                            "--k8s-events", "off", "--target-pid", str(target.pid)],
                           cmd="watch")
        wait_until(lambda: events(s, "attached"), 10, what="the attach")
        wait_until(lambda: Path(f"/proc/{target.pid}/oom_score_adj").read_text().strip()
                   == str(min(1000, base + 100)), 10, what="the target's oom_score_adj")
    finally:
        target.kill()
        target.wait()
        target.stdout.close()


def test_clamp_high_on_cgroup_v1_says_once_why_it_does_nothing(start_sentinel, tmp_path):
    # memory.high is v2's; here (v1 memory) --clamp-high is one INFO line, and the memory
    # kill goes on as ever (the real clamp: tests/vm/guest_clamp_high.py).
    sock = tmp_path / "s.sock"
    with own_v1_group(256 * MiB) as group:
        s = start_sentinel([*common(sock, tmp_path), "--max-rss", "48m", "--clamp-high",
                            "--grace-period", "0.5s", "--",
                            *leaker("--rate", "50", "--max", "80", "--ignore-term",
                                    "--quiet")], preexec_fn=joiner(group))
        assert s.wait(30) == 137
        (note,) = [e for e in events(s, "kernel_note") if "--clamp-high" in e["msg"]]
        assert note["level"] == "info" and "cgroup v2 only; this cgroup is v1" in note["msg"]
        assert [e["signal"] for e in events(s, "signal_sent")] == ["SIGTERM", "SIGKILL"]


def test_processes_the_workload_forked_before_it_was_raised_are_raised_too(start_sentinel,
                                                                          tmp_path):
    # `sh -c 'sleep & ...'` forks at once, before Sentinel raises the shell: the sleep
    # inherited Sentinel's value, and gets the workload's within the first samples.
    sock = tmp_path / "s.sock"
    s = start_sentinel([*common(sock, tmp_path), "--max-rss", "1Gi", "--",
                        "sh", "-c", "sleep 30 & sleep 30 & wait"])
    base = _own_adj()
    want = str(min(1000, base + 100))
    wait_until(lambda: len(descendants(s.pid)) >= 3, 10, what="the shell and its sleeps")
    wait_until(lambda: all(Path(f"/proc/{pid}/oom_score_adj").read_text().strip() == want
                           for pid in descendants(s.pid)), 10,
               what="every process of the workload at the workload's oom_score_adj")
    s.signal(signal.SIGTERM)
    assert s.wait(20) == 143
