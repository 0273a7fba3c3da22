"""Warn before the kill (issue 11), with real processes: a leaker under `sentinel run`
gets a `warning` and a `prediction` alert before its kill, the prediction within 20 % of
the actual time to the kill; a leak that plateaus (`--max`) resolves its alerts once; a
garbage-collector sawtooth (tests/children/sawtooth.py) under the same rules fires no
`leak`, while a leaker beside it in the same run does. Short windows through the options.
"""

from __future__ import annotations

import datetime

import pytest

from tests.conftest import PY, REPO, leaker, wait_until
from tests.integration.test_programs import events, start

CHILDREN = REPO / "tests" / "children"
COMMON = ["--log-format", "json", "--no-metrics", "--no-socket", "--k8s-events", "off"]
# Windows short enough for a test: a 2 s leak window (1 s of history, at least 10 points,
# before leak and prediction may fire), 1 MiB/s the least a leak.
RULES = ["--leak-window", "2s", "--leak-min-rate", "1Mi/s"]


def ts(record: dict) -> float:
    return datetime.datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).timestamp()


def alerts(s, program: str | None = None) -> list[tuple[str, str]]:
    return [(r["rule"], r["state"]) for r in events(s, "alert", program)]


@pytest.mark.parametrize("mode", ["subreaper", "pid1"])
def test_a_leaker_is_warned_and_predicted_before_its_kill(start_sentinel, mode):
    # 8 MiB/s from ~10 MiB to a 60 MiB limit: ~6 s to the kill; predicted within 4 s.
    s = start_sentinel([*COMMON, "--max-rss", "60Mi", *RULES, "--predict-within", "4s",
                        "--warn-at", "80%", "--",
                        *leaker("--rate", "8", "--chunk", "0.25", "--quiet")],
                       pid1=mode == "pid1")
    assert s.wait(30) == 143  # the leaker dies of the SIGTERM
    logs = s.logs()
    kinds = [(r["event"], r.get("rule"), r.get("state")) for r in logs
             if r.get("event") in ("alert", "signal_sent", "limit_crossed")]
    order = [k for k in kinds if k[0] != "alert" or k[2] == "firing"]
    fired = [k[1] for k in order if k[0] == "alert"]
    assert "warning" in fired and "prediction" in fired and "leak" in fired, kinds
    first_kill = next(i for i, k in enumerate(order) if k[0] == "limit_crossed")
    assert order.index(("alert", "warning", "firing")) < first_kill
    assert order.index(("alert", "prediction", "firing")) < first_kill
    prediction = next(r for r in logs if r.get("event") == "alert"
                      and r["rule"] == "prediction" and r["state"] == "firing")
    sigterm = next(r for r in logs if r.get("event") == "signal_sent")
    actual = ts(sigterm) - ts(prediction)
    assert prediction["seconds_to_limit"] == pytest.approx(actual, rel=0.2), (prediction, actual)
    assert prediction["level"] == "warning" and prediction["limit_bytes"] == 60 * 2 ** 20
    assert prediction["msg"].startswith("limit predicted: rss reaches the limit 60.0 MiB in ")
    warning = next(r for r in logs if r.get("event") == "alert" and r["rule"] == "warning")
    assert warning["share"] > 0.8 and warning["window_seconds"] == 0.0
    # Each rule fired once; the exit resolved each once (the run is over).
    for rule in ("warning", "leak", "prediction"):
        assert alerts(s).count((rule, "firing")) == 1
        assert alerts(s).count((rule, "resolved")) == 1


def test_a_plateau_resolves_the_leak_and_the_prediction_once(start_sentinel, tmp_path):
    # Per program in a config file: 8 MiB/s for 24 MiB, then idle at ~34 MiB (57 % of
    # the limit: no warning), the limit ~5 s away while it grows (predicted within 6 s).
    s = start(start_sentinel, tmp_path, [
        {"name": "leaky", "command": leaker("--rate", "8", "--max", "24", "--chunk", "0.25",
                                            "--quiet"),
         "max-rss": "60Mi", "leak-window": "2s", "leak-min-rate": "1Mi/s",
         "predict-within": "6s"}])
    wait_until(lambda: ("leak", "resolved") in alerts(s, "leaky")
               and ("prediction", "resolved") in alerts(s, "leaky"), 20,
               what=f"leak and prediction resolved: {alerts(s)}")
    got = alerts(s, "leaky")
    assert sorted(got) == sorted([("leak", "firing"), ("prediction", "firing"),
                                  ("leak", "resolved"), ("prediction", "resolved")]), got
    assert got.index(("leak", "firing")) < got.index(("leak", "resolved"))
    assert got.index(("prediction", "firing")) < got.index(("prediction", "resolved"))
    assert not events(s, "signal_sent") and not events(s, "limit_crossed")
    resolved = next(r for r in events(s, "alert", "leaky") if r["rule"] == "leak"
                    and r["state"] == "resolved")
    assert resolved["level"] == "info" and resolved["msg"].startswith("leak no longer suspected")


def test_a_garbage_collector_sawtooth_is_no_leak_while_a_leaker_beside_it_is(
        start_sentinel, tmp_path):
    # Both under the same rules in one run: the leaker's leak alert and kill are the
    # handshake (and the negative control); by then the sawtooth has had 3 windows.
    rules = {"max-rss": "60Mi", "leak-window": "2s", "leak-min-rate": "1Mi/s",
             "interval": "20ms"}
    s = start(start_sentinel, tmp_path, [
        {"name": "gc", "main": True, "command": [PY, str(CHILDREN / "sawtooth.py"),
                                                "--amplitude", "20", "--period", "0.25"],
         **rules},
        {"name": "leaker", "command": leaker("--rate", "4", "--chunk", "0.25", "--quiet"),
         "on-give-up": "continue", **{**rules, "max-rss": "40Mi"}}])
    wait_until(lambda: events(s, "signal_sent", "leaker"), 30,
               what=f"the leaker's kill: {alerts(s)}")
    assert ("leak", "firing") in alerts(s, "leaker")
    assert ("leak", "firing") not in alerts(s, "gc"), alerts(s, "gc")
    assert not events(s, "limit_crossed", "gc")  # under its limit throughout
