"""The typer app: every command but the fast path of ``run``/``watch``.

``run`` and ``watch`` are listed here for ``sentinel --help`` and hand their
arguments to ``sentinel.entry``, whose argparse parser (one option table in
``sentinel.config``) owns their flags: the workload must not wait for typer's
import.
"""

from __future__ import annotations

import sys

import typer

from sentinel import __version__

app = typer.Typer(
    name="sentinel",
    help="A process guardian for containers: PID 1 that forwards signals, reaps zombies and "
         "enforces a memory limit (SIGTERM, grace period, SIGKILL).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True,
                "help_option_names": []}


@app.command(context_settings=_PASSTHROUGH, add_help_option=False)
def run(ctx: typer.Context) -> None:
    """Run CMD under Sentinel: sentinel run [OPTIONS] -- CMD [ARGS...] (see run --help)."""
    from sentinel.entry import main as entry_main

    raise typer.Exit(entry_main(["run", *ctx.args]))


@app.command(context_settings=_PASSTHROUGH, add_help_option=False)
def watch(ctx: typer.Context) -> None:
    """Guard a workload Sentinel did not start (sidecar mode; see watch --help)."""
    from sentinel.entry import main as entry_main

    raise typer.Exit(entry_main(["watch", *ctx.args]))


@app.command()
def version() -> None:
    """Print Sentinel's version."""
    typer.echo(f"sentinel {__version__}")


def main(argv: list[str] | None = None) -> int:
    """Run the typer app; return its exit code (usage errors are 2, one line, no traceback)."""
    try:
        app(args=argv, prog_name="sentinel", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
