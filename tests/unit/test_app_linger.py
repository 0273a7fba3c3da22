"""How long Sentinel may linger after a kill when --linger is not given (sentinel.app)."""

from __future__ import annotations

import pytest

from sentinel import app
from sentinel.config.settings import Settings
from sentinel.core.guardian import Guardian


@pytest.fixture
def guardian():
    g = Guardian(Settings(command=("true",)), None, set())
    yield g
    g.close()
    g.loop.close()


def test_the_default_is_a_few_seconds_in_a_pod_and_zero_elsewhere(guardian):
    s = Settings(command=("true",))
    assert app.linger_seconds(s, guardian, {}) == 0.0
    assert app.linger_seconds(s, guardian, {"POD_NAME": "web-0"}) == app.DEFAULT_LINGER_SECONDS
    assert app.DEFAULT_LINGER_SECONDS == 5.0
    guardian.k8s_events = object()  # Events on (the recorder), outside a pod's variables
    assert app.linger_seconds(s, guardian, {}) == app.DEFAULT_LINGER_SECONDS


def test_an_explicit_linger_wins(guardian):
    assert app.linger_seconds(Settings(command=("true",), linger_seconds=0.0), guardian,
                              {"POD_NAME": "web-0"}) == 0.0
    assert app.linger_seconds(Settings(command=("true",), linger_seconds=40.0), guardian,
                              {}) == 40.0


# ------------------------------------------------ the cgroup published for status

def test_the_probes_cgroup_is_published_and_its_absence_explained(tmp_path):
    from types import SimpleNamespace

    from sentinel.core.state import GuardianState

    def fake(cgroup):
        st = GuardianState(mode="run", workload="w", command=("w",), measure="rss",
                           limit_bytes=None, grace_period_seconds=3.0, interval_seconds=0.1,
                           version="t")
        return SimpleNamespace(state=st, probe=SimpleNamespace(cgroup=cgroup))

    g = fake(SimpleNamespace(version=1, path="/sys/fs/cgroup/memory/x", read_only=True))
    app._publish_cgroup(g, Settings(command=("true",)))
    assert g.state.cgroup == {"version": 1, "path": "/sys/fs/cgroup/memory/x", "read_only": True}
    assert "cgroup" not in g.state.kernel_notes

    # An empty directory as --cgroup-root: no memory controller there, and the note says so.
    g = fake(None)
    app._publish_cgroup(g, Settings(command=("true",), cgroup_root=str(tmp_path)))
    assert g.state.cgroup == {}
    assert g.state.kernel_notes["cgroup"].startswith(
        "no cgroup memory controller is visible for process self")
    assert "--cgroup-root" in g.state.kernel_notes["cgroup"]
