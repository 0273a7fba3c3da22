"""The ladder's tests (tests/integration/test_ladder.py) again with ``--probe ebpf``: the
same stops, grace periods, tree sums, restarts and exit codes when the kernel follows
the tree and wakes Sentinel, as a subreaper and as PID 1 of a PID namespace (BPF sees
host PIDs; the probe maps them to Sentinel's namespace). Each run must have loaded the
probe: a silent fall-back to polling would pass these tests for the wrong reason."""

from __future__ import annotations

import pytest

from tests.integration import test_ladder

# The same test functions, collected here so that this module's start_sentinel applies.
globals().update({name: getattr(test_ladder, name) for name in dir(test_ladder)
                  if name.startswith("test_")})


@pytest.fixture
def start_sentinel(start_sentinel):
    started = []

    def start(args, *, env=None, **kw):
        r = start_sentinel(args, env={**(env or {}), "SENTINEL_PROBE": "ebpf"}, **kw)
        started.append(r)
        return r

    yield start
    for r in started:
        text = r.stderr()
        assert "eBPF probe loaded" in text and "eBPF probe not loaded" not in text, text[-2000:]
