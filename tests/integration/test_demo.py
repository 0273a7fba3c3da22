"""`make demo` (scripts/demo.py) beside another Sentinel: the demo uses its own
free port and socket, and shows only what is its own leaker's.

The other Sentinel (a real one, guarding `sleep`) holds a socket and a metrics
port, and the environment names them in SENTINEL_SOCKET / SENTINEL_METRICS_PORT
as a developer's shell might; a SENTINEL_MAX_RSS there must not change the demo.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.control.client import request
from tests.conftest import PY, REPO, wait_until

DEMO = REPO / "scripts" / "demo.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(path: Path) -> dict:
    return request(str(path), "status", timeout=5)  # the project's own client



@pytest.fixture
def other_sentinel(start_sentinel, tmp_path):
    """A running Sentinel that is not the demo's: (socket path, metrics port, Running)."""
    sock, port = tmp_path / "other.socket", _free_port()
    other = start_sentinel(["--socket", str(sock), "--metrics-address", "127.0.0.1",
                            "--metrics-port", str(port), "--workload-name", "other", "--",
                            "sleep", "300"])
    wait_until(lambda: sock.exists(), what="the other Sentinel's socket")
    return sock, port, other


def test_demo_uses_its_own_port_and_socket_beside_another_sentinel(other_sentinel):
    sock, port, other = other_sentinel
    env = dict(os.environ, SENTINEL_SOCKET=str(sock), SENTINEL_METRICS_PORT=str(port),
               SENTINEL_MAX_RSS="1Gi")
    proc = subprocess.run([PY, str(DEMO)], capture_output=True, text=True, timeout=120, env=env)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    own = re.search(r"demo: status and metrics are this demo's own: Sentinel pid (\d+), "
                    r"leaker pid (\d+) \(its child\)", out)
    assert own, out
    m = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics, control socket (\S+)", out)
    assert m and int(m.group(1)) != port and m.group(2) != str(sock), out
    assert str(sock) not in out and f":{port}/" not in out
    assert '"limit_bytes": 157286400' in out  # 150Mi, not the environment's 1Gi
    assert f'"main_pid": {own.group(2)}' in out
    assert "sentinel exited with 143" in out
    assert not Path(m.group(2)).parent.exists(), "the demo's socket directory is left behind"
    # the other Sentinel was neither touched nor stopped
    assert other.popen.poll() is None
    st = _status(sock)["status"]
    assert st["workload"] == "other" and st["kills_total"] == 0 and st["phase"] == "running"


def test_demo_refuses_to_show_another_sentinels_status(other_sentinel):
    """The ownership check itself, on a real reply of the other Sentinel."""
    sock, port, other = other_sentinel
    spec = importlib.util.spec_from_file_location("sentinel_demo", DEMO)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    reply = _status(sock)
    metrics = demo.scrape(port)
    problem = demo.check_own(reply, os.getpid(), "demo-leaker-1", metrics)
    assert problem and "not this demo's Sentinel" in problem
    # right Sentinel pid, but its workload is not the one asked for
    problem = demo.check_own(reply, other.pid, "demo-leaker-1", metrics)
    assert problem and "not 'demo-leaker-1'" in problem
    # everything matches: the other Sentinel's own view of itself passes
    assert demo.check_own(reply, other.pid, "other", metrics) is None
    assert demo.check_own(reply, other.pid, "other", 'x{workload="elsewhere"} 1') is not None
    assert sys.modules.get("sentinel_demo") is None
