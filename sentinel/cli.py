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


@app.command("top")
def top_cmd(
    socket: str = typer.Option("/tmp/sentinel.socket", "--socket", envvar="SENTINEL_SOCKET",
                               metavar="PATH", help="the Sentinel's control socket"),
    interval: str = typer.Option(None, "--interval", metavar="DURATION",
                                 help="time between updates (default 250ms on a terminal, "
                                      "1s for plain lines)"),
) -> None:
    """Live dashboard of a running Sentinel through its control socket (works over kubectl
    exec); plain status lines when stdout is not a terminal. Ctrl-C quits."""
    from sentinel.config import die, parse_duration

    try:
        period = parse_duration(interval) if interval is not None else None
    except ValueError as exc:
        die(f"--interval: {exc}", 2)
    if period is not None and not 0.05 <= period <= 3600:
        die(f"--interval: {interval} is out of range; use 50ms to 1h, e.g. 250ms", 2)
    from sentinel.tui import run_top

    raise typer.Exit(run_top(socket, period))


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
