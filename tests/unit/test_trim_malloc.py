"""Start-up's freed C heap goes back to the kernel once start-up is over
(``kernel.trim_malloc``, called by ``app.supervise`` before the guardian runs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from sentinel import app
from sentinel.core import kernel

REPO = Path(__file__).resolve().parents[2]

# 40 MiB in 8 KiB blocks (glibc's heap, not mmap: below M_MMAP_THRESHOLD), all freed but
# the last, which pins the heap's top: free() alone gives none of it back.
FRAGMENT = """
import json, sys
sys.path.insert(0, {repo!r})
from sentinel.core import kernel
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
blocks = [bytearray(8192) for _ in range(5120)]
top = blocks[-1]
del blocks
before = rss()
trimmed = kernel.trim_malloc() if {trim} else None
print(json.dumps({{"before": before, "after": rss(), "trimmed": trimmed}}))
"""


def _fragment(trim: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", FRAGMENT.format(repo=str(REPO), trim=trim)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_freed_heap_below_live_memory_is_given_back():
    got = _fragment(trim=True)
    assert got["trimmed"] is True
    assert got["before"] - got["after"] > 30, got  # MiB


def test_without_the_trim_it_stays_in_rss():  # the negative control for the test above
    got = _fragment(trim=False)
    assert got["before"] - got["after"] < 5, got


def test_supervise_trims_once_start_up_is_over(monkeypatch):
    calls = []
    monkeypatch.setattr(kernel, "trim_malloc", lambda: calls.append("trim") or True)
    monkeypatch.setattr(app, "start_components", lambda g, s, m=None: calls.append("parts")
                        or [])
    guardian = SimpleNamespace(run=lambda: calls.append("run") or 7, linger=None,
                               k8s_events=None)
    settings = SimpleNamespace(linger_seconds=0.0)
    assert app.supervise(guardian, settings) == 7
    assert calls == ["parts", "trim", "run"]
