"""What ``sentinel run`` imports before the spawn but uses only after it (``inspect``, which
``dataclasses`` imports) is put off until the workload runs, then executed at once; a module
that cannot be put off, or whose code fails, never stops Sentinel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(code: str, *path: str) -> dict:
    prelude = "import json, sys\nsys.path[:0] = " + repr([str(REPO), *path]) + "\n"
    out = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_inspect_is_put_off_across_the_imports_of_the_option_table_then_executed():
    facts = _run("""
from sentinel.launch import defer_imports, load_deferred
deferred = defer_imports()
import sentinel.config.settings as s
s.parse_settings("run", ["--max-rss", "200Mi", "--", "true"], {})
before = {m: m in sys.modules for m in ("ast", "dis", "tokenize")}
import inspect
still = "ast" in sys.modules
load_deferred(deferred)
print(json.dumps({"deferred": [m.__name__ for m in deferred], "before": before,
                  "after_import_statement": still, "after": "ast" in sys.modules,
                  "same": sys.modules["inspect"] is inspect,
                  "works": inspect.signature(s.parse_size).parameters["text"].name,
                  "hook_gone": "__getattr__" not in vars(inspect)}))
""")
    assert facts["deferred"] == ["inspect"]
    assert facts["before"] == {"ast": False, "dis": False, "tokenize": False}
    assert facts["after_import_statement"] is False  # `import inspect` alone runs nothing
    assert facts["after"] is True and facts["same"] is True and facts["hook_gone"] is True
    assert facts["works"] == "text"


def test_the_first_attribute_executes_a_deferred_module():
    facts = _run("""
from sentinel.launch import defer_imports
deferred = defer_imports(("inspect",))
import inspect
print(json.dumps({"isfunction": inspect.isfunction(defer_imports),
                  "ast": "ast" in sys.modules}))
""")
    assert facts == {"isfunction": True, "ast": True}


def test_missing_imported_or_failing_modules_never_raise(tmp_path):
    (tmp_path / "sentinel_broken_mod.py").write_text("raise RuntimeError('broken')\n")
    facts = _run("""
from sentinel.launch import defer_imports, load_deferred
import json as already
skipped = defer_imports(("no_such_module_here", "json"))
deferred = defer_imports(("sentinel_broken_mod",))
load_deferred(deferred)
try:
    import sentinel_broken_mod
    error = None
except RuntimeError as exc:
    error = str(exc)
print(json.dumps({"skipped": skipped, "deferred": len(deferred), "error": error,
                  "json_kept": sys.modules["json"] is already}))
""", str(tmp_path))
    assert facts == {"skipped": [], "deferred": 1, "error": "broken", "json_kept": True}
