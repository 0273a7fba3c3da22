"""The ``sentinel`` console script.

``sentinel run`` and ``sentinel watch`` take the fast path (``sentinel.launch``):
parse the arguments with argparse, block signals, spawn the workload, and only
then import the guardian, exporters and dashboard. Every other command goes to
the typer app in ``sentinel.cli``. The dependency is one-way: ``entry`` imports
``launch`` and ``cli``; ``cli`` imports ``launch``, never ``entry``.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if args and args[0] in ("run", "watch"):
            from sentinel.launch import run_or_watch

            return run_or_watch(args[0], args[1:])
        from sentinel.cli import main as cli_main

        return cli_main(args)
    except KeyboardInterrupt:
        # Ctrl-C before signals are blocked (during imports): nothing was started.
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
