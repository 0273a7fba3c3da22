"""The package's layers, checked on the source: no module imports a layer above its own.

Layers, lowest first (a module may import its own layer or a lower one):

0. ``sentinel`` (the package ``__init__``), ``sentinel.errors``, ``sentinel.logs``,
   ``sentinel.config.*``
1. ``sentinel.probes.*``
2. ``sentinel.core.*``
3. ``sentinel.exporters.*``, ``sentinel.control.*``, ``sentinel.ui.*``: siblings that do not
   import one another, except that ``ui`` may import ``control`` (``sentinel top`` is a
   control-socket client)
4. ``sentinel.app``, ``sentinel.cli``, ``sentinel.entry``, ``sentinel.__main__``

Every import counts: at module level and inside functions (the lazy imports that keep
the PID-1 path small are still dependencies), ``import x``, ``from x import y`` and
relative imports. The checker is plain ``ast``: nothing is imported, so a module whose
import has side effects is checked too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "sentinel"

# Group of a module name -> its layer. A group is the longest matching prefix below.
GROUPS: dict[str, int] = {
    "sentinel": 0, "sentinel.errors": 0, "sentinel.logs": 0, "sentinel.config": 0,
    "sentinel.probes": 1,
    "sentinel.core": 2,
    "sentinel.exporters": 3, "sentinel.control": 3, "sentinel.ui": 3,
    "sentinel.app": 4, "sentinel.cli": 4, "sentinel.entry": 4, "sentinel.launch": 4,
    "sentinel.__main__": 4,
}
# Packages whose modules are groups of their own (a module is "sentinel.config.settings",
# its group "sentinel.config"); the other names above are single modules.
PACKAGES = ("sentinel.config", "sentinel.probes", "sentinel.core", "sentinel.exporters",
            "sentinel.control", "sentinel.ui")
# Same-layer imports between different groups that are allowed (importer, imported).
SIBLINGS_ALLOWED = {("sentinel.ui", "sentinel.control")}
# Layer 0 and layer 4 groups may import their layer-mates (config uses errors; cli uses entry).
SHARED_LAYERS = {0, 4}

# Violations allowed for now; each entry is (importer file, imported module).
KNOWN: set[tuple[str, str]] = set()  # (file, module) pairs allowed to break a rule: none


def group_of(module: str) -> str | None:
    """The group (a key of GROUPS) of a dotted module name inside ``sentinel``, or None."""
    for pkg in PACKAGES:
        if module == pkg or module.startswith(pkg + "."):
            return pkg
    return module if module in GROUPS else None


def module_name(path: Path, root: Path) -> str:
    """``root/sentinel/core/guardian.py`` -> ``sentinel.core.guardian`` (``__init__``: the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """Every ``sentinel...`` module ``path`` imports, with its line, anywhere in the file.

    ``from sentinel.core import fdlimit`` yields ``sentinel.core.fdlimit`` when that is a
    module under ``root`` (else ``sentinel.core``); relative imports are resolved against
    the file's package.
    """
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                is_module = (root / Path(*sub.split("."))).with_suffix(".py").exists() or \
                    (root / Path(*sub.split(".")) / "__init__.py").exists()
                out.append((node.lineno, sub if is_module else target))
    return [(line, m) for line, m in out if m == "sentinel" or m.startswith("sentinel.")]


def violations(root: Path, known: set = frozenset()) -> list[str]:
    """Check every module of the ``sentinel`` package under ``root``; one line per problem:
    ``file:line: A (layer n) imports B (layer m)``, or a module in no layer."""
    problems = []
    for path in sorted((root / "sentinel").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        me = module_name(path, root)
        mine = group_of(me)
        if mine is None:
            problems.append(f"{rel}:1: {me} is in no layer; add it to GROUPS in "
                            "tests/unit/test_layering.py (and to the README's layout)")
            continue
        for line, other in imports_of(path, root):
            theirs = group_of(other)
            if theirs is None:
                problems.append(f"{rel}:{line}: {me} imports {other}, which is in no layer")
                continue
            a, b = GROUPS[mine], GROUPS[theirs]
            upward = b > a
            sibling = (a == b and mine != theirs and a not in SHARED_LAYERS
                       and (mine, theirs) not in SIBLINGS_ALLOWED)
            if (upward or sibling) and (rel, other) not in known:
                why = "a higher layer" if upward else "a sibling it may not use"
                problems.append(f"{rel}:{line}: {me} (layer {a}) imports {other} "
                                f"(layer {b}, {why})")
    return problems


def cycles(root: Path) -> list[list[str]]:
    """The import cycles among the modules under ``root/sentinel`` (function-level imports
    included), each as its sorted modules: the strongly connected components of more than
    one module (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for path in sorted((root / "sentinel").rglob("*.py")):
        me = module_name(path, root)
        graph[me] = {m for _, m in imports_of(path, root) if m != me}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v] & graph.keys()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_module_imports_a_higher_layer_or_a_forbidden_sibling():
    problems = violations(PACKAGE.parent, KNOWN)
    assert not problems, "layering broken:\n" + "\n".join(problems)


def test_package_inits_are_empty_and_the_top_one_imports_nothing():
    for init in sorted(PACKAGE.rglob("__init__.py")):
        if init.parent == PACKAGE:
            tree = ast.parse(init.read_text())
            assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))], \
                f"{init}: the top package must import nothing (it is loaded before the spawn)"
        else:
            assert init.read_text() == "", f"{init} must stay empty"


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in {"sentinel/__init__.py": "", **files}.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_negative_control_an_upward_import_is_reported(tmp_path):
    root = _package(tmp_path, {
        "sentinel/core/__init__.py": "",
        "sentinel/core/ladder.py": "import os\n\n\ndef f():\n    from sentinel import app\n",
        "sentinel/app.py": "from sentinel.core import ladder\n",
    })
    assert violations(root) == [
        "sentinel/core/ladder.py:5: sentinel.core.ladder (layer 2) imports sentinel.app "
        "(layer 4, a higher layer)"]


def test_negative_control_relative_sibling_and_unlayered_imports_are_reported(tmp_path):
    root = _package(tmp_path, {
        "sentinel/control/__init__.py": "",
        "sentinel/control/server.py": "from ..ui import dashboard\nfrom . import verbs\n",
        "sentinel/control/verbs.py": "import sentinel.exporters.metrics\n",
        "sentinel/ui/__init__.py": "",
        "sentinel/ui/dashboard.py": "from ..control.server import x\n",  # allowed
        "sentinel/exporters/__init__.py": "",
        "sentinel/exporters/metrics.py": "from sentinel.plugins import y\n",
        "sentinel/stray.py": "",
    })
    assert violations(root) == [
        "sentinel/control/server.py:1: sentinel.control.server (layer 3) imports "
        "sentinel.ui.dashboard (layer 3, a sibling it may not use)",
        "sentinel/control/verbs.py:1: sentinel.control.verbs (layer 3) imports "
        "sentinel.exporters.metrics (layer 3, a sibling it may not use)",
        "sentinel/exporters/metrics.py:1: sentinel.exporters.metrics imports sentinel.plugins, "
        "which is in no layer",
        "sentinel/stray.py:1: sentinel.stray is in no layer; add it to GROUPS in "
        "tests/unit/test_layering.py (and to the README's layout)",
    ]


def test_no_import_cycles_entry_and_cli_included():
    """``sentinel.entry`` (the console script) imports ``sentinel.cli`` and ``sentinel.launch``;
    ``cli`` imports ``launch``, never ``entry`` (issue 10: the entry <-> cli circle)."""
    assert cycles(PACKAGE.parent) == []


def test_negative_control_a_cycle_through_a_lazy_import_is_found(tmp_path):
    root = _package(tmp_path, {
        "sentinel/entry.py": "def main():\n    from sentinel.cli import main\n",
        "sentinel/cli.py": "def run():\n    from sentinel import entry\n",
        "sentinel/launch.py": "",
    })
    assert cycles(root) == [["sentinel.cli", "sentinel.entry"]]
