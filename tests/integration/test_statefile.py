"""--state-dir from real ``sentinel run``s: the next container of the pod carries the
kills over; a file of another pod or a directory that is not one is one warning line,
and the kill and the exit status are as without it."""

from __future__ import annotations

import json

from tests.conftest import leaker
from tests.integration.test_prometheus import free_port, metric, try_get, wait_until

UID = "0b6e5b8e-1c1f-4c4b-9d3b-2f54d7c2a001"


def args(port: int, state_dir, *extra: str) -> list[str]:
    return ["--metrics-address", "127.0.0.1", "--metrics-port", str(port), "--no-socket",
            "--termination-log", "", "--log-format", "json", "--grace-period", "1s",
            "--state-dir", str(state_dir), "--workload-name", "app", *extra]


def leak(start_sentinel, state_dir, uid=UID):
    s = start_sentinel(args(free_port(), state_dir, "--max-rss", "60Mi", "--",
                            *leaker("--rate", "100", "--quiet")), env={"POD_UID": uid})
    assert s.wait(30) == 143
    return s


def warnings_of(s) -> list[str]:
    return [r["msg"] for r in s.logs() if r.get("level") == "warning"
            and r.get("event") not in ("limit_crossed", "signal_sent", "exited", "alert")]


def idle(start_sentinel, state_dir, uid=UID):
    port = free_port()
    s = start_sentinel(args(port, state_dir, "--", "sleep", "60"), env={"POD_UID": uid})
    body = wait_until(lambda: try_get(f"http://127.0.0.1:{port}/metrics"), 20, what="/metrics")
    return s, body


KILLS = 'sentinel_kills_total{program="app",reason="memory_limit",signal="SIGTERM",workload="app"}'


def test_the_next_container_carries_the_kills_over(start_sentinel, tmp_path):
    shared = tmp_path / "shared"
    first = leak(start_sentinel, shared)
    assert not warnings_of(first)
    doc = json.loads((shared / "sentinel-state.json").read_text())
    assert doc["pod_uid"] == UID and doc["schema"] == 1
    assert {"labels": {"program": "app", "reason": "memory_limit", "signal": "SIGTERM"},
            "value": 1} \
        in doc["counters"]["kills"]
    leak(start_sentinel, shared)
    second = json.loads((shared / "sentinel-state.json").read_text())
    assert second["last_kill_timestamp_seconds"] > doc["last_kill_timestamp_seconds"]
    s, body = idle(start_sentinel, shared)
    assert metric(body, KILLS) == 2.0
    assert metric(body, 'sentinel_last_kill_timestamp_seconds{program="app",workload="app"}') == \
        second["last_kill_timestamp_seconds"]  # the carried one: no kill in this container
    [carried] = [r for r in s.logs() if r.get("event") == "state_file"]
    assert carried["kills"] == 2 and carried["level"] == "info"


def test_a_file_of_another_pod_is_one_warning_and_a_fresh_start(start_sentinel, tmp_path):
    shared = tmp_path / "shared"
    leak(start_sentinel, shared, uid="uid-of-another-pod")
    s, body = idle(start_sentinel, shared)
    assert metric(body, KILLS) == 0.0
    [warning] = warnings_of(s)
    assert "is from another pod (pod UID uid-of-another-pod" in warning and UID in warning


def test_a_state_dir_that_is_a_file_is_one_warning_and_the_kill_goes_on(start_sentinel,
                                                                        tmp_path):
    blocker = tmp_path / "shared"
    blocker.write_text("not a directory")
    s = leak(start_sentinel, blocker)  # exit 143, as without --state-dir
    [warning] = warnings_of(s)
    assert "is not a directory" in warning and "--state-dir" in warning
    assert "Traceback" not in s.stderr()
    assert blocker.read_text() == "not a directory"
