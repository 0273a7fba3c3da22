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

from sentinel.client import request
from sentinel.errors import EXIT_NOT_ENDED
from tests.conftest import descendants, require, wait_until, zombies_of
from tests.integration.adopt import adopting, reap, reap_adopted

FREEZER = Path("/sys/fs/cgroup/freezer")
GRACE = 1.0
GIVE_UP = 2.0  # guardian._REAP_GIVE_UP_SECONDS
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

    wait_until(lambda: _events(s, "kill_finished"), GRACE + GIVE_UP + SLACK,
               what=lambda: s.stderr()[-3000:])
    assert time.monotonic() - stopped <= GRACE + GIVE_UP + SLACK
    assert s.popen.poll() in (None, EXIT_NOT_ENDED)  # no other status was made up

    survivors = _events(s, "survivors")
    assert len(survivors) == 1
    facts = survivors[0]["survivors"]
    assert [f["pid"] for f in facts] == [main_pid]
    assert facts[0]["state"] == "D" and facts[0]["rss_bytes"] > 0
    line = survivors[0]["msg"]
    assert f"pid {main_pid} (state D uninterruptible sleep, rss " in line
    assert "2.0s after SIGKILL" in line and "frozen cgroup" in line

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
