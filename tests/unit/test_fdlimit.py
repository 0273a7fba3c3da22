"""Sentinel raises its own soft RLIMIT_NOFILE; a spawn inside ``as_given`` sees the one
Sentinel was given. Run in a child interpreter: the limits are per process."""

from __future__ import annotations

import resource
import subprocess
import sys

SCRIPT = """
import resource
from sentinel.core import fdlimit
N = resource.RLIMIT_NOFILE
assert fdlimit.raise_soft() == (1024, 1024) == resource.getrlimit(N)
assert fdlimit.given() == (256, 1024)
with fdlimit.as_given():
    assert resource.getrlimit(N) == (256, 1024)
    out = open("/proc/self/limits").read()  # what a spawn made now inherits
assert resource.getrlimit(N) == (1024, 1024)
line = next(l for l in out.splitlines() if l.startswith("Max open files"))
print(line.split()[3:5])
"""


def test_raise_soft_then_as_given_for_a_spawn():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=30, preexec_fn=lambda: resource.setrlimit(
                             resource.RLIMIT_NOFILE, (256, 1024)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['256', '1024']"


def test_as_given_changes_nothing_before_raise_soft():
    script = ("import resource\nfrom sentinel.core import fdlimit\nN = resource.RLIMIT_NOFILE\n"
              "before = resource.getrlimit(N)\nwith fdlimit.as_given():\n"
              "    assert resource.getrlimit(N) == before\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=30)
    assert out.stdout.strip() == "ok", out.stderr
