"""Helpers for the cgroup v2 guest's scenarios (tests/vm/guest_*.py), run in the guest.

scripts/cgroup2-vm.py copies this directory to /vm and runs each guest_*.py as root with
/usr/bin/python3 (bookworm's 3.11) and PYTHONPATH=/opt/sentinel. A scenario prints JSON
lines: ``fact(...)`` for what it saw, ``check(name, ok, ...)`` for what it asserts; it
passes when it exits 0 (``finish()``) and no check is false. The host test
(tests/integration/test_cgroup2_vm.py) asserts both, and may assert facts of its own.
Standard library only: Sentinel's dependencies are importable, this file needs none.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

CGROUP = "/sys/fs/cgroup"
LEAKER = "/vm/children/leaker.py"
SENTINEL = ["/usr/bin/python3", "-m", "sentinel"]
MiB = 2**20

_failed = False


def fact(**fields) -> None:
    """One JSON line of what the scenario saw."""
    print(json.dumps(fields), flush=True)


def check(name: str, ok: bool, **detail) -> bool:
    """One JSON line ``{"check": name, "ok": bool, ...detail}``; a false one fails the scenario."""
    global _failed
    _failed |= not ok
    fact(check=name, ok=bool(ok), **detail)
    return bool(ok)


def finish() -> None:
    sys.exit(1 if _failed else 0)


def json_logs(stderr: str) -> list[dict]:
    """Sentinel's --log-format json lines from its stderr."""
    out = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def signals_sent(logs: list[dict]) -> list[str]:
    return [e["signal"] for e in logs if e.get("event") == "signal_sent"]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns a true value (returned); RuntimeError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Group:
    """A cgroup v2 child of the root, ``/sys/fs/cgroup/<name>``, with the memory controller.

    ``max_bytes`` goes to ``memory.max``, ``oom_group`` to ``memory.oom.group`` (1, as the
    kubelet sets it on every container since Kubernetes 1.28). On exit every process left in
    it is killed (``cgroup.kill``) and the group removed."""

    def __init__(self, name: str, max_bytes: int | None = None, oom_group: bool = True) -> None:
        self.path = f"{CGROUP}/{name}"
        os.mkdir(self.path)
        if max_bytes is not None:
            self.write("memory.max", str(max_bytes))
        self.write("memory.oom.group", "1" if oom_group else "0")

    def __enter__(self) -> "Group":
        return self

    def __exit__(self, *exc) -> None:
        self.write("cgroup.kill", "1")
        wait_until(lambda: "populated 0" in self.read("cgroup.events"), 10, "an empty group")
        os.rmdir(self.path)

    def write(self, name: str, value: str) -> None:
        fd = os.open(f"{self.path}/{name}", os.O_WRONLY)
        try:
            os.write(fd, value.encode())  # unbuffered: the kernel's EINVAL reaches us
        finally:
            os.close(fd)

    def read(self, name: str) -> str:
        with open(f"{self.path}/{name}") as f:
            return f.read()

    def number(self, name: str) -> int | None:
        """A one-number file (``memory.current``, ``memory.peak``); None for "max"."""
        value = self.read(name).strip()
        return None if value == "max" else int(value)

    def events(self) -> dict[str, int]:
        """``memory.events``: low, high, max, oom, oom_kill, oom_group_kill (counts)."""
        return {k: int(v) for k, v in (line.split() for line in self.read("memory.events")
                                         .splitlines())}

    def procs(self) -> list[int]:
        return [int(p) for p in self.read("cgroup.procs").split()]

    def spawn(self, argv: list[str], **kw) -> subprocess.Popen:
        """Start ``argv`` inside the group: a shell writes its own PID to ``cgroup.procs``
        and execs it, so no page of it is charged elsewhere first."""
        return subprocess.Popen(["/bin/sh", "-c", f'echo $$ > {self.path}/cgroup.procs && '
                                 'exec "$@"', "sh", *argv], **kw)


def control(path: str, command: str, timeout: float = 5.0) -> dict:
    """One command on Sentinel's control socket; its JSON reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(command.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)


def scrape(port: int, timeout: float = 5.0) -> dict[str, float]:
    """``/metrics`` on 127.0.0.1:``port`` as {"name{labels}": value} (comments dropped)."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout).read()
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def series(metrics: dict[str, float], name: str) -> float | None:
    """The value of the one series of ``name`` in ``scrape``'s result (any labels)."""
    values = [v for k, v in metrics.items() if k == name or k.startswith(name + "{")]
    return values[0] if len(values) == 1 else None
