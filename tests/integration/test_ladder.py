"""The memory limit: SIGTERM at the crossing, SIGKILL one grace period later,
tree accounting, restarts, and the negative controls."""

from __future__ import annotations

import signal

import pytest

from tests.conftest import leaker, wait_until


def _events(s, kind):
    return [rec for rec in s.logs() if rec.get("event") == kind]


def test_leaker_that_obeys_sigterm_exits_143_without_sigkill(start_sentinel, mode):
    s = start_sentinel(["--no-metrics", "--no-socket", "--log-format", "json", "--max-rss",
                        "60Mi", "--", *leaker("--rate", "100")], pid1=mode == "pid1")
    assert s.wait() == 143
    sent = [e["signal"] for e in _events(s, "signal_sent")]
    assert sent == ["SIGTERM"]
    crossed = _events(s, "limit_crossed")
    assert len(crossed) == 1 and crossed[0]["limit_bytes"] == 60 * 2**20
    assert crossed[0]["value_bytes"] > 60 * 2**20


def test_leaker_that_ignores_sigterm_is_killed_one_grace_period_later(start_sentinel, mode):
    s = start_sentinel(["--no-metrics", "--no-socket", "--log-format", "json", "--max-rss",
                        "60Mi", "--grace-period", "1s", "--",
                        *leaker("--rate", "100", "--ignore-term")], pid1=mode == "pid1")
    assert s.wait() == 137
    sent = _events(s, "signal_sent")
    assert [e["signal"] for e in sent] == ["SIGTERM", "SIGKILL"]
    term, kill = (e["kill"]["started"] for e in sent[:1]), sent[1]["kill"]["sigkill"]
    gap = kill - next(term)
    assert 0.95 <= gap <= 1.5, gap


def test_default_grace_period_is_three_seconds(start_sentinel):
    s = start_sentinel(["--no-metrics", "--no-socket", "--log-format", "json", "--max-rss",
                        "40Mi", "--", *leaker("--rate", "200", "--ignore-term")])
    assert s.wait(30) == 137
    sent = _events(s, "signal_sent")
    gap = sent[1]["kill"]["sigkill"] - sent[0]["kill"]["started"]
    assert 2.95 <= gap <= 3.6, gap


def test_grandchild_leak_counts(start_sentinel, mode):
    s = start_sentinel(["--no-metrics", "--no-socket", "--log-format", "json", "--max-rss",
                        "80Mi", "--", *leaker("--rate", "100", "--depth", "2")],
                       pid1=mode == "pid1")
    assert s.wait() == 143
    crossed = _events(s, "limit_crossed")[0]
    assert len(crossed["pids"]) == 3  # child, grandchild, great-grandchild
    # No single process is over the limit: only the tree's sum is.
    assert crossed["value_bytes"] > 80 * 2**20


def test_workload_under_the_limit_is_never_touched(start_sentinel, mode):
    s = start_sentinel(["--no-metrics", "--no-socket", "--log-format", "json", "--max-rss",
                        "200Mi", "--", *leaker("--rate", "100", "--max", "40", "--exit-at-max")],
                       pid1=mode == "pid1")
    assert s.wait() == 0
    assert _events(s, "limit_crossed") == [] and _events(s, "signal_sent") == []


def test_negative_control_without_a_limit_the_hog_survives(start_sentinel):
    # The same hog that is killed at 60Mi above reaches its own 100 MiB cap.
    s = start_sentinel(["--no-metrics", "--no-socket", "--log-format", "json", "--",
                        *leaker("--rate", "200", "--max", "100", "--exit-at-max")])
    assert s.wait() == 0
    assert any("reached --max" in line for line in s.rest())


@pytest.mark.parametrize("configured,expected", [(None, 137), ("99", 99)])
def test_memory_kill_is_never_exit_0(start_sentinel, configured, expected):
    extra = ["--memory-kill-exit-code", configured] if configured else []
    s = start_sentinel(["--no-metrics", "--no-socket", "--max-rss", "60Mi", *extra, "--",
                        *leaker("--rate", "100", "--term-exit", "0")])
    assert s.wait() == expected


def test_success_exit_code_remap(start_sentinel):
    s = start_sentinel(["--no-metrics", "--no-socket", "--success-exit-code", "143", "--",
                        *leaker("--rate", "1")])
    s.expect("leaker")
    s.signal(signal.SIGTERM)
    assert s.wait() == 0


def test_cleanup_time_within_grace_is_respected(start_sentinel):
    s = start_sentinel(["--no-metrics", "--no-socket", "--log-format", "json", "--max-rss",
                        "60Mi", "--grace-period", "3s", "--",
                        *leaker("--rate", "100", "--cleanup", "1", "--term-exit", "3")])
    assert s.wait() == 3
    assert [e["signal"] for e in _events(s, "signal_sent")] == ["SIGTERM"]


def test_restart_on_failure_with_back_off(start_sentinel):
    s = start_sentinel(["--no-metrics", "--no-socket", "--log-format", "json", "--restart",
                        "on-failure", "--restart-delay", "0.2s", "--max-restarts", "2", "--",
                        "sh", "-c", "echo run; exit 3"])
    assert s.wait() == 3
    spawned = _events(s, "spawned")
    assert len(spawned) == 3
    delays = [e["delay_seconds"] for e in _events(s, "restart_scheduled")]
    assert delays == [0.2, 0.4]  # doubles each time


def test_restart_on_failure_does_not_restart_success(start_sentinel):
    s = start_sentinel(["--no-metrics", "--no-socket", "--log-format", "json", "--restart",
                        "on-failure", "--", "true"])
    assert s.wait() == 0
    assert len(_events(s, "spawned")) == 1


def test_restart_always_restarts_after_memory_kill_and_stops_on_sigterm(start_sentinel):
    s = start_sentinel(["--no-metrics", "--no-socket", "--log-format", "json", "--restart",
                        "always", "--restart-delay", "0.1s", "--max-rss", "50Mi", "--",
                        *leaker("--rate", "200")])
    wait_until(lambda: len(_events(s, "restart_scheduled")) >= 2, 20, what="two restarts")
    s.signal(signal.SIGTERM)
    assert s.wait() == 143  # the forwarded SIGTERM, or the last kill's status in back-off
    assert len(_events(s, "kill_finished")) >= 2
    assert all(e["kill"]["reason"] == "memory_limit" for e in _events(s, "kill_finished")[:2])
