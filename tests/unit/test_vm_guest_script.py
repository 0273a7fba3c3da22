"""tests/vm/guest_memory_events.py runs for real only in the cgroup-v2 VM (the VM
harness runs it); on this cgroup-v1 host it must refuse in one JSON line, exit 2,
and leave nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "vm" / "guest_memory_events.py"


def test_guest_script_refuses_on_a_host_without_cgroup2_memory():
    run = subprocess.run([sys.executable, str(SCRIPT), "--prefix", "GUEST"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    assert run.stderr == ""
    prefix, _, line = run.stdout.strip().partition(" ")
    assert prefix == "GUEST"
    assert json.loads(line) == {
        "event": "unavailable",
        "reason": "/sys/fs/cgroup is not a cgroup2 mount (no cgroup.controllers); "
                  "mount cgroup2 there first"}
