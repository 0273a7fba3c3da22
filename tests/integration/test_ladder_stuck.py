"""A process that does not die after SIGKILL. The cgroup v1 freezer holds a task
in the refrigerator (shown as state D) and a pending SIGKILL does not wake it:
Sentinel names it with its state and RSS, says the kill was not confirmed, and
exits within a bounded time; after the thaw the pending signal ends it and
nothing is left."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from sentinel.control.client import request
from sentinel.errors import EXIT_NOT_ENDED
from tests.conftest import descendants, require, wait_until, zombies_of
from tests.integration.adopt import adopting, reap, reap_adopted

FREEZER = Path("/sys/fs/cgroup/freezer")
GRACE = 1.0
GIVE_UP = 2.0  # guardian._REAP_GIVE_UP_SECONDS: named as not confirmed yet
BOUND = 10.0  # guardian._main_reap_bound() with this GRACE: the main process given up on
SLACK = 2.0  # scheduling on a loaded 2-core machine


def _own_freezer_group() -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "freezer" in controllers.split(","):
            return path
    pytest.fail("this process has no cgroup v1 freezer line in /proc/self/cgroup")


def _tasks(group: Path) -> list[int]:
    return [int(x) for x in (group / "cgroup.procs").read_text().split()]


def _set_state(group: Path, state: str) -> None:
    (group / "freezer.state").write_text(state)
    wait_until(lambda: (group / "freezer.state").read_text().strip() == state, 10,
               what=f"freezer.state {state}")


@pytest.fixture
def freezer_group():
    """A new freezer group at the top of the v1 hierarchy (never the test's own group or
    one above it); thawed, emptied and removed afterwards."""
    require(root=True)
    if not (FREEZER / "cgroup.procs").is_file():
        pytest.fail(f"no cgroup v1 freezer hierarchy at {FREEZER} (ls /sys/fs/cgroup/)")
    name = f"sentinel-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    assert not _own_freezer_group().startswith(f"/{name}")
    group = FREEZER / name
    group.mkdir()
    try:
        with adopting():  # what a Sentinel gives up on comes to the test, to be reaped
            yield group
            _set_state(group, "THAWED")
    finally:
        (group / "freezer.state").write_text("THAWED")
        for pid in _tasks(group):
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        deadline = time.monotonic() + 10
        while True:
            try:
                group.rmdir()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        reap_adopted()


def _events(s, kind: str) -> list[dict]:
    return [rec for rec in s.logs() if rec.get("event") == kind]


def _join(group: Path, then: str) -> str:
    """Shell words that move the shell itself into ``group``, say so, then exec ``then``."""
    return f"echo $$ > {group}/cgroup.procs && echo in-group && exec {then}"


def test_frozen_main_process_is_named_with_state_and_rss_and_not_confirmed(
        start_sentinel, freezer_group, tmp_path, mode):
    sock = tmp_path / "s.sock"
    s = start_sentinel(["--no-metrics", "--socket", str(sock), "--log-format", "json",
                        "--k8s-events", "off", "--grace-period", f"{GRACE}s", "--",
                        "sh", "-c", _join(freezer_group, "sleep 60")], pid1=mode == "pid1")
    s.expect("in-group")
    wait_until(lambda: sock.exists(), 15, what=lambda: s.stderr()[-2000:])
    main_pid = wait_until(lambda: _events(s, "spawned"), 10, what="the spawned line")[0]["pid"]
    frozen = _tasks(freezer_group)
    assert len(frozen) == 1
    _set_state(freezer_group, "FROZEN")
    assert request(str(sock), "stop", timeout=5.0).get("ok")
    stopped = time.monotonic()

    # 2 s after SIGKILL: named, not confirmed yet, and still waited for.
    first = wait_until(lambda: _events(s, "survivors"), GRACE + GIVE_UP + SLACK,
                       what=lambda: s.stderr()[-3000:])[0]
    assert time.monotonic() - stopped <= GRACE + GIVE_UP + SLACK
    assert "2.0s after SIGKILL; the kill is not confirmed yet" in first["msg"]
    assert f"waits for the main process (pid {main_pid}) up to 10.0s" in first["msg"]
    assert _events(s, "kill_finished") == [] and s.popen.poll() is None

    wait_until(lambda: _events(s, "kill_finished"), GRACE + BOUND + SLACK,
               what=lambda: s.stderr()[-3000:])
    took = time.monotonic() - stopped
    assert GRACE + BOUND - 0.5 <= took <= GRACE + BOUND + SLACK, took
    assert s.popen.poll() in (None, EXIT_NOT_ENDED)  # no other status was made up

    survivors = _events(s, "survivors")
    assert len(survivors) == 2
    for rec in survivors:
        facts = rec["survivors"]
        assert [f["pid"] for f in facts] == [main_pid]
        # RSS is read (0: process_mrelease freed the frozen victim's memory at SIGKILL).
        assert facts[0]["state"] == "D" and facts[0]["rss_bytes"] is not None
        assert f"pid {main_pid} (state D uninterruptible sleep, rss " in rec["msg"]
        assert "frozen cgroup" in rec["msg"]
    assert "10.0s after SIGKILL" in survivors[1]["msg"]
    assert "not confirmed yet" not in survivors[1]["msg"]

    finished = _events(s, "kill_finished")
    assert len(finished) == 1
    kill = finished[0]["kill"]
    assert kill["signals"] == ["SIGTERM", "SIGKILL"]  # sent and reached: not its end
    assert kill["confirmed"] is False and kill["exit_code"] is None
    assert "operator stop not confirmed" in finished[0]["msg"]
    assert f"exits with code {EXIT_NOT_ENDED}" in finished[0]["msg"]

    if mode == "subreaper":
        assert s.wait(5) == EXIT_NOT_ENDED  # exits while the process is still frozen
        assert _tasks(freezer_group) == frozen
    _set_state(freezer_group, "THAWED")
    # As PID 1, Sentinel's exit ends the namespace only once the frozen task can die.
    assert s.wait(10) == EXIT_NOT_ENDED
    wait_until(lambda: _tasks(freezer_group) == [], 10, what="the thawed task to die")
    if mode == "subreaper":
        assert reap(frozen[0]) in (128 + 15, 128 + 9)  # adopted: the pending signal ended it
    assert descendants(s.popen.pid) == [] and zombies_of(os.getpid()) == []


def test_main_process_that_dies_after_2s_of_sigkill_keeps_its_status_137(
        start_sentinel, freezer_group, tmp_path, mode):
    # A process slow to die (here: frozen, thawed 3 s after its SIGKILL; in life a big
    # process under a CPU limit, an NFS/FUSE stall): Sentinel says at 2 s that the kill
    # is not confirmed yet, waits on, and exits with the real status, not 71. SIGTERM is
    # ignored (inherited across exec), so the pending fatal signal is the SIGKILL.
    sock = tmp_path / "s.sock"
    s = start_sentinel(["--no-metrics", "--socket", str(sock), "--log-format", "json",
                        "--k8s-events", "off", "--grace-period", f"{GRACE}s", "--",
                        "sh", "-c", "trap '' TERM; " + _join(freezer_group, "sleep 60")],
                       pid1=mode == "pid1")
    s.expect("in-group")
    wait_until(lambda: sock.exists(), 15, what=lambda: s.stderr()[-2000:])
    main_pid = wait_until(lambda: _events(s, "spawned"), 10, what="the spawned line")[0]["pid"]
    _set_state(freezer_group, "FROZEN")
    assert request(str(sock), "stop", timeout=5.0).get("ok")

    wait_until(lambda: [e for e in _events(s, "signal_sent") if e["signal"] == "SIGKILL"],
               GRACE + SLACK, what=lambda: s.stderr()[-3000:])
    killed = time.monotonic()
    first = wait_until(lambda: _events(s, "survivors"), GIVE_UP + SLACK,
                       what=lambda: s.stderr()[-3000:])[0]
    assert "not confirmed yet" in first["msg"]
    time.sleep(max(0.0, killed + 3.0 - time.monotonic()))
    assert s.popen.poll() is None, s.stderr()[-3000:]  # still waiting: not given up at 2 s
    _set_state(freezer_group, "THAWED")

    assert s.wait(BOUND + SLACK) == 137, s.stderr()[-3000:]
    assert time.monotonic() - killed < BOUND
    finished = _events(s, "kill_finished")
    assert len(finished) == 1, s.stderr()[-3000:]
    kill = finished[0]["kill"]
    assert kill["signals"] == ["SIGTERM", "SIGKILL"] and kill["exit_code"] == 137
    assert kill["confirmed"] is True and kill["survivors"] == []
    assert "operator stop done" in finished[0]["msg"] and "exit code 137" in finished[0]["msg"]
    assert [e["exit_code"] for e in _events(s, "exited")] == [137]
    assert descendants(s.popen.pid) == [] and zombies_of(os.getpid()) == []


def test_frozen_leftover_after_the_main_child_exits_is_named_and_not_confirmed(
        start_sentinel, freezer_group, tmp_path):
    sock = tmp_path / "s.sock"
    inner = _join(freezer_group, "sleep 60").replace("$$", "\\$\\$")
    s = start_sentinel(["--no-metrics", "--socket", str(sock), "--log-format", "json",
                        "--k8s-events", "off", "--grace-period", f"{GRACE}s", "--",
                        "sh", "-c", f'sh -c "{inner}" & wait'])
    s.expect("in-group")
    wait_until(lambda: sock.exists(), 15, what=lambda: s.stderr()[-2000:])
    frozen = _tasks(freezer_group)
    assert len(frozen) == 1
    _set_state(freezer_group, "FROZEN")
    assert request(str(sock), "stop", timeout=5.0).get("ok")
    stopped = time.monotonic()

    # The main shell dies of SIGTERM; the frozen leftover gets SIGTERM, then SIGKILL one
    # grace period later, and is given up on GIVE_UP seconds after that.
    assert s.wait(GRACE + GRACE + GIVE_UP + SLACK + 5) == 143  # the workload's status
    assert time.monotonic() - stopped <= GRACE + GIVE_UP + SLACK
    survivors = _events(s, "survivors")
    assert [f["pid"] for f in survivors[0]["survivors"]] == frozen
    assert survivors[0]["survivors"][0]["state"] == "D"
    assert f"pid {frozen[0]} (state D uninterruptible sleep" in survivors[0]["msg"]
    finished = _events(s, "kill_finished")
    assert len(finished) == 1
    assert finished[0]["kill"]["confirmed"] is False and finished[0]["kill"]["exit_code"] == 143
    assert "not confirmed" in finished[0]["msg"] and f"still there: [{frozen[0]}]" in \
        finished[0]["msg"]

    _set_state(freezer_group, "THAWED")
    wait_until(lambda: _tasks(freezer_group) == [], 10, what="the thawed task to die")
    assert reap(frozen[0]) in (128 + 15, 128 + 9)
    assert zombies_of(os.getpid()) == []
