"""Several idle programs under one Sentinel share their wake-ups and the cgroup read.

A Group of idle programs (``sleep``) runs in a child Python process for a few seconds;
a sample listener records when each program sampled, and the shared cgroup reader counts
its reads. Idle samples converge on common wake-ups (``Group.piggyback``), so there are
far fewer distinct sampling moments than samples, and the container's cgroup files are
read about once per moment, not once per program.
"""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from tests.conftest import REPO

SCRIPT = r"""
import json, os, signal, sys
sys.path.insert(0, sys.argv[2])
from sentinel.config.settings import parse_settings
from sentinel.config.programs import load_config
from sentinel.core.spawn import block_signals
from sentinel import logs
import sentinel.core.group as g

path = sys.argv[1]
cli = parse_settings("run", ["--no-metrics", "--no-socket", "--config", path])
cfg = load_config(path, cli, frozenset({"metrics_port", "socket_path"}))
logs.setup("human", "error")
mask = block_signals()
grp = g.Group(cfg, {s.name: cfg.program_settings(s) for s in cfg.programs}, mask,
              subreaper=True)
times = []
grp.sample_listeners.append(lambda sample: times.append(grp.loop.time()))
reads = [0]
memory = next(iter(grp._cgroups.values()))
real = memory.read
def counted():
    reads[0] += 1
    return real()
memory.read = counted
grp.loop.call_later(2.0, lambda: (times.clear(), reads.__setitem__(0, 0)))
grp.loop.call_later(6.0, lambda: signal.raise_signal(signal.SIGTERM))  # tgkill: not self-caused
grp.run()
moments = sorted({round(t, 3) for t in times})
print(json.dumps({"samples": len(times), "moments": len(moments), "reads": reads[0]}),
      flush=True)
os._exit(0)  # the group is closed; no interpreter teardown (its daemon threads)
"""


def test_idle_programs_share_wake_ups_and_the_cgroup_read(tmp_path):
    cfg = tmp_path / "sentinel.yaml"
    cfg.write_text(yaml.safe_dump({"programs": [
        {"name": f"p{i}", "command": ["sleep", "60"], "max-rss": "1Gi"} for i in range(6)]}))
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(cfg), str(REPO)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # 6 programs sampling about once a second for 4 s: ~24 samples. Unaligned, each
    # program wakes on its own (~24 moments, 24 reads); aligned, ~4-8 of each.
    assert got["samples"] >= 18, got
    assert got["moments"] <= got["samples"] / 2, got
    assert got["reads"] <= got["samples"] / 2, got
