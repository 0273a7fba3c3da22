"""``sentinel.core`` imports only its own layer or lower (errors, logs, config,
probes): the process lifecycle never depends on metrics, events, control or ui,
nor on the wiring in ``sentinel.app``."""

from __future__ import annotations

import ast
from pathlib import Path

import sentinel

CORE = Path(sentinel.__file__).parent / "core"
ALLOWED = ("sentinel.core", "sentinel.config", "sentinel.errors", "sentinel.logs",
           "sentinel.probes")


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            if node.module == "sentinel":  # from sentinel import x
                names += [f"sentinel.{a.name}" for a in node.names]
    return [n for n in names if n == "sentinel" or n.startswith("sentinel.")]


def test_core_imports_nothing_above_it():
    wrong = {f"{p.name}: {name}" for p in sorted(CORE.glob("*.py")) for name in _imports(p)
             if name != "sentinel" and not name.startswith(ALLOWED)
             and name != "sentinel.__version__"}
    assert not wrong, sorted(wrong)
    assert (CORE / "__init__.py").read_text() == ""
