"""The state file (sentinel.exporters.statefile): the pod's counters across container restarts.

Real files in a temporary directory; the counters come from a real ``GuardianState``."""

from __future__ import annotations

import json
import logging
import os

import pytest

from sentinel.exporters import statefile
from sentinel.core.state import REASON_MEMORY, GuardianState, KillRecord
from tests.conftest import wait_until

UID = "0b6e5b8e-1c1f-4c4b-9d3b-2f54d7c2a001"


def new_state(**kw) -> GuardianState:
    args = dict(mode="run", workload="app", command=("app",), measure="rss", limit_bytes=2**27,
                grace_period_seconds=3.0, interval_seconds=0.1, version="t")
    return GuardianState(**{**args, **kw})


def kill_at(wall: float) -> KillRecord:
    return KillRecord(reason=REASON_MEMORY, started_wall=wall, started_mono=0.0, measure="rss",
                      value_bytes=1, limit_bytes=1, pids=(1,), grace_period_seconds=3.0)


def written(sf: statefile.StateFile) -> dict:
    sf.close()
    with open(sf.path, "rb") as f:
        return json.loads(f.read())


def test_counts_carry_over_and_never_go_backwards(tmp_path):
    first = statefile.StateFile(str(tmp_path), new_state(), pod_uid=UID)
    assert first.load().startswith("on: ")
    first.state.kills[(REASON_MEMORY, "SIGTERM")] = 2
    first.state.kills[(REASON_MEMORY, "SIGKILL")] = 1
    first.state.restarts = 1
    first.state.last_kill = kill_at(1000.5)
    doc = written(first)
    assert doc["schema"] == statefile.SCHEMA and doc["pod_uid"] == UID
    assert doc["counters"]["kills"] == [
        {"labels": {"program": "app", "reason": "memory_limit", "signal": "SIGKILL"}, "value": 1},
        {"labels": {"program": "app", "reason": "memory_limit", "signal": "SIGTERM"}, "value": 2}]
    assert doc["last_kill_timestamp_seconds"] == 1000.5

    # The next container: carries 2+1 and 1, adds its own.
    second = statefile.StateFile(str(tmp_path), new_state(), pod_uid=UID)
    assert "carried 3 kill signal(s), 1 restart(s)" in second.load()
    assert second.carried.kills == {(REASON_MEMORY, "SIGTERM"): 2, (REASON_MEMORY, "SIGKILL"): 1}
    assert second.carried.last_kill_wall == 1000.5
    second.state.kills[(REASON_MEMORY, "SIGTERM")] = 1
    doc = written(second)
    by_signal = {k["labels"]["signal"]: k["value"] for k in doc["counters"]["kills"]}
    assert by_signal == {"SIGTERM": 3, "SIGKILL": 1}
    assert doc["counters"]["restarts"] == [{"labels": {"program": "app"}, "value": 1}]
    # No kill in this container: the last kill time is the carried one.
    assert doc["last_kill_timestamp_seconds"] == 1000.5


def test_unknown_counters_are_kept_for_a_newer_sentinel(tmp_path):
    path = tmp_path / statefile.FILE_NAME
    path.write_text(json.dumps({"schema": 1, "pod_uid": UID, "counters": {
        "kills": [], "oom_kills": [{"labels": {"container": "app"}, "value": 4}]}}))
    sf = statefile.StateFile(str(tmp_path), new_state(), pod_uid=UID)
    sf.load()
    assert written(sf)["counters"]["oom_kills"] == [{"labels": {"container": "app"}, "value": 4}]


@pytest.mark.parametrize("content, problem", [
    (b"{not json", "is not valid JSON"),
    (b"\xff\xfe", "is not valid JSON"),
    (b"[1, 2]", "is not a JSON object"),
    (json.dumps({"schema": 2, "pod_uid": UID}).encode(), "has schema 2"),
    (json.dumps({"schema": 1, "pod_uid": UID, "counters": {"kills": [{"value": 1}]}}).encode(),
     "has a malformed counter"),
    (json.dumps({"schema": 1, "pod_uid": UID, "counters": {"kills": [
        {"labels": {"reason": "memory_limit", "signal": "SIGTERM"}, "value": -3}]}}).encode(),
     "has a malformed counter"),
    (json.dumps({"schema": 1, "pod_uid": "another-pod", "counters": {}}).encode(),
     "is from another pod (pod UID another-pod, this pod's POD_UID is " + UID),
])
def test_a_bad_file_is_one_warning_and_a_fresh_start(tmp_path, caplog, content, problem):
    path = tmp_path / statefile.FILE_NAME
    path.write_bytes(content)
    sf = statefile.StateFile(str(tmp_path), new_state(), pod_uid=UID)
    with caplog.at_level(logging.INFO, logger="sentinel"):
        status = sf.load()
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    line = record.getMessage()
    assert problem in line and "\n" not in line, line
    assert "start at zero" in line
    assert "started fresh" in status
    assert sf.carried == statefile.Carried()
    # ... and the file is rewritten as this pod's.
    sf.state.kills[(REASON_MEMORY, "SIGTERM")] = 1
    doc = written(sf)
    assert doc["pod_uid"] == UID and doc["counters"]["kills"][0]["value"] == 1


def test_a_missing_file_is_a_quiet_new_start(tmp_path, caplog):
    sf = statefile.StateFile(str(tmp_path / "new"), new_state(), pod_uid=UID)
    with caplog.at_level(logging.INFO, logger="sentinel"):
        assert "new: no earlier container" in sf.load()
    assert not caplog.records
    assert written(sf)["counters"]["kills"] == []  # the directory is created


def test_the_write_is_atomic_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / statefile.FILE_NAME
    path.write_text("old")
    before = os.stat(path).st_ino
    statefile.write_atomically(str(path), b"new\n")
    assert path.read_text() == "new\n"
    assert os.stat(path).st_ino != before  # replaced by rename, never truncated in place
    assert sorted(os.listdir(tmp_path)) == [statefile.FILE_NAME]


def test_a_file_in_place_of_the_directory_is_one_warning_and_no_error(tmp_path, caplog):
    # A regular file where the directory should be: even root cannot write there.
    blocker = tmp_path / "shared"
    blocker.write_text("")
    comps: dict = {}
    sf = statefile.StateFile(str(blocker), new_state(), pod_uid=UID, components=comps)
    with caplog.at_level(logging.INFO, logger="sentinel"):
        sf.load()
        for n in range(3):
            sf.state.kills[(REASON_MEMORY, "SIGTERM")] = n + 1
            sf.save()
        sf.close()
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "is not a directory" in warning and "--state-dir" in warning, warning
    assert "\n" not in warning
    assert sf.write_errors_total >= 1 and sf.writes_total == 0
    assert comps[statefile.COMPONENT].startswith(f"error: cannot write {sf.path}: ")


def test_save_never_waits_for_the_disk(tmp_path):
    sf = statefile.StateFile(str(tmp_path), new_state(), pod_uid=UID)
    gate = __import__("threading").Event()
    real = statefile.write_atomically
    statefile.write_atomically = lambda path, data: (gate.wait(10), real(path, data))
    try:
        sf.save()  # the writer thread is now stuck "on the disk"
        for n in range(50):
            sf.state.kills[(REASON_MEMORY, "SIGTERM")] = n
            sf.save()  # returns at once; the newest snapshot replaces the queued one
        assert sf.pending()
    finally:
        gate.set()
        statefile.write_atomically = real
    doc = written(sf)
    assert doc["counters"]["kills"][0]["value"] == 49
    assert sf.writes_total <= 3  # coalesced, not 51 writes


def test_a_write_that_fails_is_one_warning(tmp_path, caplog):
    sf = statefile.StateFile(str(tmp_path), new_state(), pod_uid=UID)
    sf.load()
    (tmp_path / f".{statefile.FILE_NAME}.{os.getpid()}.tmp").mkdir()  # the temporary is taken
    with caplog.at_level(logging.INFO, logger="sentinel"):
        for n in range(3):
            sf.state.kills[(REASON_MEMORY, "SIGTERM")] = n + 1
            sf.save()
        sf.close()
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"cannot write the state file {sf.path}: ") and "\n" not in warning
    assert "enforcement goes on" in warning and "--state-dir" in warning
    assert sf.write_errors_total >= 1 and not (tmp_path / statefile.FILE_NAME).exists()


def test_a_kernel_oom_kill_is_persisted_with_the_other_kills(tmp_path):
    from sentinel.core.state import Event

    sf = statefile.StateFile(str(tmp_path), new_state(), pod_uid=UID)
    sf.load()
    sf.state.kills[("kernel_oom", "SIGKILL")] = 1
    sf(Event("kernel_oom_kill", "the kernel killed pid 12"))  # the listener queues a write
    # Written at once, not only at close(): the kernel may take Sentinel next.
    wait_until(lambda: os.path.exists(sf.path), 5, what="the state file after the OOM kill")
    with open(sf.path, "rb") as f:
        doc = json.loads(f.read())
    sf.close()
    assert doc["counters"]["kills"] == [
        {"labels": {"program": "app", "reason": "kernel_oom", "signal": "SIGKILL"}, "value": 1}]
    again = statefile.StateFile(str(tmp_path), new_state(), pod_uid=UID)
    again.load()
    assert again.carried.kills == {("kernel_oom", "SIGKILL"): 1}


# ---------------------------------------------------------------- several programs
class Host:
    """A host of several programs as the state file sees it: ``programs`` (objects
    with ``.state``) and ``program(None)``, the main one."""

    def __init__(self, *states: GuardianState, main: int = 0) -> None:
        self.state = new_state(workload="", program="")
        self.programs = [type("P", (), {"state": st})() for st in states]
        self._main = main

    def program(self, name=None):
        return self.programs[self._main] if name is None else \
            next(p for p in self.programs if p.state.program == name)


def test_each_program_keeps_its_own_counters_across_containers(tmp_path):
    web, worker = new_state(program="web"), new_state(program="worker")
    host = Host(web, worker)
    first = statefile.StateFile(str(tmp_path), host.state, pod_uid=UID, host=host)
    first.load()
    web.kills[(REASON_MEMORY, "SIGTERM")] = 2
    worker.restarts = 3
    worker.last_kill = kill_at(2000.0)
    doc = written(first)
    assert doc["counters"]["kills"] == [
        {"labels": {"program": "web", "reason": "memory_limit", "signal": "SIGTERM"}, "value": 2}]
    assert doc["counters"]["restarts"] == [{"labels": {"program": "web"}, "value": 0},
                                           {"labels": {"program": "worker"}, "value": 3}]
    assert doc["last_kill_timestamp_seconds_by_program"] == {"worker": 2000.0}
    assert doc["last_kill_timestamp_seconds"] == 2000.0  # the pod's latest, for older readers

    # The next container: each program gets its own back, never another's.
    web2, worker2 = new_state(program="web"), new_state(program="worker")
    host2 = Host(web2, worker2)
    second = statefile.StateFile(str(tmp_path), host2.state, pod_uid=UID, host=host2)
    assert "carried 2 kill signal(s), 3 restart(s)" in second.load()
    assert second.carried_for("web") == statefile.Carried(kills={(REASON_MEMORY, "SIGTERM"): 2})
    assert second.carried_for("worker") == statefile.Carried(restarts=3, last_kill_wall=2000.0)
    assert second.carried_for("nonesuch") is None
    # A program no longer supervised (a reload removed it) keeps its counters in the file.
    host2.programs = host2.programs[:1]
    web2.kills[(REASON_MEMORY, "SIGTERM")] = 1
    doc = written(second)
    assert {"labels": {"program": "web", "reason": "memory_limit", "signal": "SIGTERM"},
            "value": 3} in doc["counters"]["kills"]
    assert {"labels": {"program": "worker"}, "value": 3} in doc["counters"]["restarts"]


def test_a_file_from_before_programs_goes_to_the_main_program(tmp_path):
    (tmp_path / statefile.FILE_NAME).write_text(json.dumps({
        "schema": 1, "pod_uid": UID, "last_kill_timestamp_seconds": 1500.0, "counters": {
            "kills": [{"labels": {"reason": "memory_limit", "signal": "SIGTERM"}, "value": 4}],
            "restarts": [{"labels": {}, "value": 2}]}}))
    host = Host(new_state(program="web"), new_state(program="api"), main=1)
    sf = statefile.StateFile(str(tmp_path), host.state, pod_uid=UID, host=host)
    assert "carried 4 kill signal(s), 2 restart(s)" in sf.load()
    assert sf.carried_for("api") == statefile.Carried(kills={(REASON_MEMORY, "SIGTERM"): 4},
                                                      restarts=2, last_kill_wall=1500.0)
    assert sf.carried_for("web") is None
    assert sf.carried is sf.carried_for("api")
    doc = written(sf)  # rewritten with the program named
    assert doc["counters"]["kills"] == [
        {"labels": {"program": "api", "reason": "memory_limit", "signal": "SIGTERM"}, "value": 4}]
    assert doc["last_kill_timestamp_seconds_by_program"] == {"api": 1500.0}
