"""The console script's two ways in: ``run``/``watch`` take the fast path (``sentinel.launch``)
without typer, the CLI or the wiring loaded at the spawn; the typer app's ``run`` reaches the
same fast path without importing ``sentinel.entry`` (no entry <-> cli circle)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("typer", "click", "rich", "psutil", "prometheus_client", "kubernetes", "yaml",
         "asyncio", "sentinel.cli", "sentinel.app", "sentinel.core.guardian",
         "sentinel.exporters", "sentinel.control", "sentinel.ui",
         # argparse (with shutil, gettext and locale for its help formatter) only for --help
         # and the errors it judges: importing and building it cost ~4 ms of the start.
         "argparse", "shutil", "gettext", "locale",
         # inspect's own imports: dataclasses imports inspect, which stays a lazy module
         # until the workload runs (launch.defer_imports); ~5 ms of the start.
         "ast", "dis", "tokenize")

# Records what is imported at the moment the workload is spawned, then spawns it. The facts
# go to their own file: on stderr they could interleave with Sentinel's log writer thread.
SPY = """
import json, sys
import sentinel.core.spawn as sp
real = sp.spawn
facts = open(sys.argv[1], "a")
def spy(*a, **kw):
    loaded = sorted(m for m in sys.modules if m.startswith({heavy!r}))
    print(json.dumps({{"at_spawn": loaded}}), file=facts, flush=True)
    return real(*a, **kw)
sp.spawn = spy
from {module} import main
code = main(["run", "--no-metrics", "--no-socket", "--k8s-events", "off", "--",
             "sh", "-c", "exit 3"])
print(json.dumps({{"entry_loaded": "sentinel.entry" in sys.modules}}), file=facts, flush=True)
raise SystemExit(code)
"""


def run_spy(module: str, tmp_path) -> tuple[int, dict]:
    path = tmp_path / "facts.jsonl"
    out = subprocess.run([sys.executable, "-c", SPY.format(heavy=HEAVY, module=module),
                          str(path)], capture_output=True, text=True, timeout=60)
    facts: dict = {}
    for line in (path.read_text() if path.exists() else "").splitlines():
        facts.update(json.loads(line))
    assert "at_spawn" in facts, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    return out.returncode, facts


def test_the_console_script_spawns_before_anything_heavy_is_imported(tmp_path):
    code, facts = run_spy("sentinel.entry", tmp_path)
    assert code == 3  # the workload's exit status passes through
    assert facts["at_spawn"] == []


def test_the_typer_apps_run_takes_the_same_fast_path_without_importing_entry(tmp_path):
    code, facts = run_spy("sentinel.cli", tmp_path)
    assert code == 3
    assert facts["entry_loaded"] is False  # cli -> launch, never cli -> entry
    assert "sentinel.app" not in facts["at_spawn"]  # typer is loaded here, the wiring not yet
