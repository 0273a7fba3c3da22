"""``--tui`` off a terminal: no dashboard, no escape codes, and a plain status line
at most once per interval instead of nothing."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime

from tests.conftest import PY, SENTINEL

QUIET = ["--no-metrics", "--k8s-events", "off", "--termination-log", "", "--no-socket"]


def _ts(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def test_tui_off_a_terminal_prints_a_plain_status_line_at_most_once_per_interval():
    out = subprocess.run([*SENTINEL, "run", "--tui", *QUIET, "--log-format", "json",
                          "--interval", "1s", "--max-rss", "1Gi", "--", PY, "-c",
                          "import time; print('hello', flush=True); time.sleep(4.5)"],
                         capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hello\n"  # stdout stays the workload's
    assert "\x1b[" not in out.stderr
    records = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    lines = [r for r in records if r.get("event") == "status_line"]
    assert 3 <= len(lines) <= 5, out.stderr
    for r in lines:
        assert " running (pid " in r["msg"] and "of 1.0 GiB" in r["msg"] and "procs 1" in r["msg"]
    times = [_ts(r["ts"]) for r in lines]
    assert all(b - a >= 0.95 for a, b in zip(times, times[1:])), times  # at most one a second
