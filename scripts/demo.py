#!/usr/bin/env python3
"""The main job, as `make demo` runs it: a real leaking process stopped by Sentinel.

Starts `sentinel run --max-rss 150Mi -- python tests/leaker.py --rate 25` with
its own metrics port (a free one on 127.0.0.1, not :8000) and its own control
socket (in a fresh temporary directory, not /tmp/sentinel.socket), so that
another Sentinel on this machine is neither disturbed nor shown by mistake.
Reads both while the leak climbs (the status reply's main fields,
pretty-printed), after checking that they are this demo's: the status names the
Sentinel it started and that Sentinel's child as the workload, and the metrics
carry this run's own workload name. Then shows the crossing, the SIGTERM and the
exit code. Takes about 6 seconds: the leak crosses the limit about 5 s in.

Variables SENTINEL_* of the caller's environment are not passed on (they would
change the demo: a SENTINEL_MAX_RSS, say); everything is given as flags.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT = "150Mi"
RATE = "25"  # MiB/s


def say(text: str) -> None:
    print(f"\033[1;36mdemo:\033[0m {text}" if sys.stdout.isatty() else f"demo: {text}",
          flush=True)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's pick). Sentinel binds it a
    moment later; if something takes it in between, the ownership check below
    says so instead of showing someone else's metrics."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        return resp.read().decode()


def status(path: str) -> dict:
    """The ``status`` reply, read as ``echo status | nc -N -U SOCKET`` would: one JSON line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(path)
        s.sendall(b"status\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def parent_of(pid: int) -> int | None:
    """PPid of ``pid`` from /proc/<pid>/status, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("PPid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def main_fields(reply: dict) -> dict:
    """The fields of a ``status`` reply worth a look mid-leak (sizes in bytes)."""
    st = reply.get("status") or {}
    mem = st.get("memory") or {}
    fields = {key: st.get(key) for key in ("phase", "workload", "main_pid", "measure",
                                          "limit_bytes", "headroom_bytes", "kills_total")}
    fields["memory"] = {key: mem.get(key) for key in ("measure_bytes", "rss_bytes",
                                                      "sample_age_seconds")}
    return fields


def mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.1f} MiB"


def wait_for_leak(proc: subprocess.Popen, sock: str, fraction: float, timeout: float) -> dict:
    """Poll ``status`` until the workload's measure reaches ``fraction`` of the
    limit; return that reply. Raises ``RuntimeError`` if Sentinel exits first or
    nothing answers within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sentinel exited ({proc.returncode}) before the leak got going")
        try:
            reply = status(sock)
            st = reply.get("status") or {}
            measure = (st.get("memory") or {}).get("measure_bytes") or 0
            if st.get("limit_bytes") and measure >= fraction * st["limit_bytes"]:
                return reply
        except (OSError, ValueError) as exc:
            last_error = exc
        time.sleep(0.1)
    raise RuntimeError(f"no status on {sock} within {timeout:.0f} s ({last_error})")


def check_own(reply: dict, sentinel_pid: int, workload: str, metrics: str) -> str | None:
    """None when the status and the metrics are this demo's Sentinel's, else why not."""
    st = reply.get("status") or {}
    if st.get("sentinel_pid") != sentinel_pid:
        return f"the socket is answered by pid {st.get('sentinel_pid')}, not this demo's Sentinel ({sentinel_pid})"
    main_pid = st.get("main_pid")
    if not main_pid or parent_of(main_pid) != sentinel_pid:
        return f"the workload pid {main_pid} is not a child of this demo's Sentinel ({sentinel_pid})"
    if st.get("workload") != workload:
        return f"the status names workload {st.get('workload')!r}, not {workload!r}"
    if f'workload="{workload}"' not in metrics:
        return f"the metrics do not carry workload={workload!r}: another exporter holds the port"
    return None


def main() -> int:
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="sentinel-demo-")
    sock = os.path.join(workdir, "sentinel.socket")
    workload = f"demo-leaker-{os.getpid()}"  # names this run's series in the metrics
    cmd = [sys.executable, "-m", "sentinel", "run", "--max-rss", LIMIT, "--grace-period", "3s",
           "--metrics-address", "127.0.0.1", "--metrics-port", str(port), "--socket", sock,
           "--workload-name", workload, "--",
           sys.executable, str(REPO / "tests" / "leaker.py"), "--rate", RATE]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    say(f"running: sentinel run --max-rss {LIMIT} -- python tests/leaker.py --rate {RATE}")
    say(f"metrics on http://127.0.0.1:{port}/metrics, control socket {sock}")
    proc = subprocess.Popen(cmd, env=env)
    try:
        try:
            reply = wait_for_leak(proc, sock, 0.4, timeout=30)
            text = scrape(port)
        except (RuntimeError, OSError, ValueError) as exc:
            say(f"could not read Sentinel ({exc}); see its log above")
            proc.terminate()
            proc.wait(timeout=30)
            return 1
        problem = check_own(reply, proc.pid, workload, text)
        if problem:
            say(f"not showing what this demo did not start: {problem}")
            proc.terminate()
            proc.wait(timeout=30)
            return 1
        st = reply["status"]
        say(f"status and metrics are this demo's own: Sentinel pid {proc.pid}, "
            f"leaker pid {st['main_pid']} (its child)")
        say("the metrics endpoint, mid-leak:")
        keep = ("sentinel_workload_rss_bytes", "sentinel_memory_limit_bytes",
                "sentinel_kills_total{", "sentinel_workload_up")
        for line in text.splitlines():
            if line.startswith(keep):
                print("    " + line, flush=True)
        fields = main_fields(reply)
        say(f"`echo status | nc -N -U {sock}` answers one JSON line; its main fields "
            f"(`sentinel status --socket {sock}` shows them all as a table):")
        for line in json.dumps(fields, indent=2).splitlines():
            print("    " + line, flush=True)
        say(f"that is {mib(fields['memory']['measure_bytes'])} of a "
            f"{mib(fields['limit_bytes'])} limit; the leak goes on, Sentinel stops it "
            "when it crosses")
        code = proc.wait(timeout=60)
    except KeyboardInterrupt:
        proc.terminate()
        code = proc.wait()
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        say("the leaker was not stopped within 60 s: that is a bug")
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    meaning = {143: "the leaker obeyed SIGTERM (128+15)", 137: "it took a SIGKILL (128+9)"}
    say(f"sentinel exited with {code}: {meaning.get(code, 'see the log above')}")
    return 0 if code in (143, 137) else 1


if __name__ == "__main__":
    sys.exit(main())
