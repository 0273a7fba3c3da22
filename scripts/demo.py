#!/usr/bin/env python3
"""The main job, as `make demo` runs it: a real leaking process stopped by Sentinel.

Starts `sentinel run --max-rss 150Mi -- python tests/leaker.py --rate 25` with the
metrics exporter on :8000 and the control socket at /tmp/sentinel.socket, reads
both while the leak climbs (the status reply's main fields, pretty-printed),
then shows the crossing, the SIGTERM and the exit code. Takes about 6 seconds:
the leak crosses the limit about 5 s in.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOCKET = os.environ.get("SENTINEL_SOCKET", "/tmp/sentinel.socket")
PORT = int(os.environ.get("SENTINEL_METRICS_PORT", "8000"))
LIMIT = "150Mi"


def say(text: str) -> None:
    print(f"\033[1;36mdemo:\033[0m {text}" if sys.stdout.isatty() else f"demo: {text}",
          flush=True)


def scrape() -> list[str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{PORT}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    keep = ("sentinel_workload_rss_bytes", "sentinel_memory_limit_bytes",
            "sentinel_kills_total{", "sentinel_workload_up")
    return [line for line in text.splitlines() if line.startswith(keep)]


def status() -> dict:
    """The ``status`` reply, read as ``echo status | nc -N -U SOCKET`` would: one JSON line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(SOCKET)
        s.sendall(b"status\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


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


def main() -> int:
    cmd = [sys.executable, "-m", "sentinel", "run", "--max-rss", LIMIT, "--grace-period", "3s",
           "--metrics-port", str(PORT), "--socket", SOCKET, "--",
           sys.executable, str(REPO / "tests" / "leaker.py"), "--rate", "25"]
    say(f"running: sentinel run --max-rss {LIMIT} -- python tests/leaker.py --rate 25")
    say(f"metrics on http://127.0.0.1:{PORT}/metrics, control socket {SOCKET}")
    proc = subprocess.Popen(cmd)
    try:
        time.sleep(3.0)  # let the leak climb a little
        try:
            say("the metrics endpoint, mid-leak:")
            for line in scrape():
                print("    " + line, flush=True)
        except OSError as exc:
            say(f"metrics not reachable ({exc}); see Sentinel's log above")
        try:
            reply = status()
            fields = main_fields(reply)
            say(f"`echo status | nc -N -U {SOCKET}` answers one JSON line; its main fields "
                f"(`sentinel status` shows them all as a table):")
            for line in json.dumps(fields, indent=2).splitlines():
                print("    " + line, flush=True)
            say(f"that is {mib(fields['memory']['measure_bytes'])} of a "
                f"{mib(fields['limit_bytes'])} limit; the leak goes on, Sentinel stops it "
                "when it crosses")
        except (OSError, ValueError) as exc:
            say(f"control socket not reachable ({exc}); see Sentinel's log above")
        code = proc.wait(timeout=60)
    except KeyboardInterrupt:
        proc.terminate()
        code = proc.wait()
    except subprocess.TimeoutExpired:
        proc.kill()
        say("the leaker was not stopped within 60 s: that is a bug")
        return 1
    meaning = {143: "the leaker obeyed SIGTERM (128+15)", 137: "it took a SIGKILL (128+9)"}
    say(f"sentinel exited with {code}: {meaning.get(code, 'see the log above')}")
    return 0 if code in (143, 137) else 1


if __name__ == "__main__":
    sys.exit(main())
