"""The probes are layer 1: they import only the standard library, third-party packages,
layer 0 (sentinel.errors, sentinel.logs, sentinel.config) and each other; never
sentinel.core, the exporters, control, ui or the wiring (issue 10's layers)."""

import ast
from pathlib import Path

PROBES = Path(__file__).resolve().parents[2] / "sentinel" / "probes"
ALLOWED = ("sentinel.errors", "sentinel.logs", "sentinel.config", "sentinel.probes")


def sentinel_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return {m for m in out if m == "sentinel" or m.startswith("sentinel.")}


def test_probes_import_nothing_above_their_layer():
    files = sorted(PROBES.glob("*.py"))
    assert {f.name for f in files} >= {"contract.py", "figures.py", "cgroup.py", "tree.py"}
    bad = {f.name: sorted(m for m in sentinel_imports(f)
                          if not any(m == a or m.startswith(a + ".") for a in ALLOWED))
           for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_core_still_offers_memory_sample():
    from sentinel.core.state import MemorySample as FromCore
    from sentinel.probes.contract import MemorySample

    assert FromCore is MemorySample
