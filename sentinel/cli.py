"""The typer app: every command but the fast path of ``run``/``watch``.

``run`` and ``watch`` are listed here for ``sentinel --help`` and hand their
arguments to ``sentinel.launch`` (the console script, ``sentinel.entry``, goes
there directly), whose argparse parser (one option table in
``sentinel.config.settings``) owns their flags: the workload must not wait for typer's
import.
"""

from __future__ import annotations

import sys
from typing import Callable

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
    # Inherited by every command's context; run/watch set their own (none: argparse
    # answers -h/--help for them).
    context_settings={"help_option_names": ["-h", "--help"]},
)

_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True,
                "help_option_names": []}


@app.command(context_settings=_PASSTHROUGH, add_help_option=False)
def run(ctx: typer.Context) -> None:
    """Run CMD under Sentinel: sentinel run [OPTIONS] -- CMD [ARGS...] (see run --help)."""
    from sentinel.launch import run_or_watch  # not sentinel.entry: entry imports cli

    raise typer.Exit(run_or_watch("run", ctx.args))


@app.command(context_settings=_PASSTHROUGH, add_help_option=False)
def watch(ctx: typer.Context) -> None:
    """Guard a workload Sentinel did not start (sidecar mode; see watch --help)."""
    from sentinel.launch import run_or_watch  # not sentinel.entry: entry imports cli

    raise typer.Exit(run_or_watch("watch", ctx.args))


@app.command()
def version() -> None:
    """Print Sentinel's version."""
    typer.echo(f"sentinel {__version__}")


def _version_flag(value: bool) -> None:
    if value:
        version()
        raise typer.Exit()


@app.callback()
def _options(_version: bool = typer.Option(False, "--version", is_eager=True,
                                           callback=_version_flag,
                                           help="Print Sentinel's version and exit.")) -> None:
    """Sentinel's own options (``--version``), before the command."""


# --- control socket client: status, stop, kill, signal, limit, pause, resume, start,
# restart, reload ---
# Thin wrappers over sentinel.control.client (request, table, exit codes); the
# protocol is in docs/control-socket.md.


def _socket_opt():
    return typer.Option("/tmp/sentinel.socket", "--socket", envvar="SENTINEL_SOCKET",
                        metavar="PATH", help="the Sentinel's control socket")


def _json_opt():
    return typer.Option(False, "--json", help="print the raw JSON reply")


def _timeout_opt():
    return typer.Option(5.0, "--timeout", min=0.1, metavar="SECONDS",
                        help="how long to wait for the Sentinel")


def _control(socket: str, command: str | None, as_json: bool, timeout: float,
             build=None) -> None:
    from sentinel.control.client import cli_run

    error = None
    if build is not None:
        try:
            command = build()
        except ValueError as exc:
            error = str(exc)
    raise typer.Exit(cli_run(socket, command, as_json=as_json, timeout=timeout,
                             build_error=error))


def _program_arg(required: bool = False):
    help_ = ("the program (several programs, sentinel run --config)" if required else
             "the program (several programs, sentinel run --config); default: the main one")
    return typer.Argument(... if required else None, metavar="NAME",
                          help=help_, show_default=False)


def _program_line(verb: str, name: str | None) -> Callable[[], str]:
    from sentinel.control.client import program_command

    return lambda: program_command(verb, name)


@app.command("status")
def status_cmd(name: str = _program_arg(), socket: str = _socket_opt(),
               as_json: bool = _json_opt(), timeout: float = _timeout_opt()) -> None:
    """Show a running Sentinel's programs, memory, limits, kills and parts (NAME: one
    program)."""
    _control(socket, None, as_json, timeout, build=_program_line("status", name))


@app.command("stop")
def stop_cmd(name: str = _program_arg(), socket: str = _socket_opt(),
             as_json: bool = _json_opt(), timeout: float = _timeout_opt()) -> None:
    """Stop the workload (or program NAME): SIGTERM, then SIGKILL after the grace period
    (no restart)."""
    _control(socket, None, as_json, timeout, build=_program_line("stop", name))


@app.command("kill")
def kill_cmd(name: str = _program_arg(), socket: str = _socket_opt(),
             as_json: bool = _json_opt(), timeout: float = _timeout_opt()) -> None:
    """SIGKILL the workload's (or program NAME's) whole process tree now (no restart)."""
    _control(socket, None, as_json, timeout, build=_program_line("kill", name))


@app.command("signal")
def signal_cmd(name: str = typer.Argument(..., metavar="NAME",
                                          help="the signal: TERM, SIGHUP, USR1, 10, ...; "
                                               "before a SIG: the program"),
               sig: str = typer.Argument(None, metavar="SIG", show_default=False,
                                         help="with a program NAME first: the signal"),
               socket: str = _socket_opt(), as_json: bool = _json_opt(),
               timeout: float = _timeout_opt()) -> None:
    """Send one signal to the workload: sentinel signal SIG, or sentinel signal PROGRAM SIG."""
    from sentinel.control.client import signal_command

    build = (lambda: signal_command(name)) if sig is None else \
        (lambda: signal_command(sig, program=name))
    _control(socket, None, as_json, timeout, build=build)


@app.command("limit")
def limit_cmd(ctx: typer.Context,
              size: str = typer.Argument(None, metavar="SIZE|NAME",
                                         help="new limit, e.g. 200Mi or 1.5Gi; none removes "
                                              "it; before a SIZE: the program (several "
                                              "programs)", show_default=False),
              second: str = typer.Argument(None, metavar="SIZE", show_default=False,
                                           help="with a program NAME first: its new limit"),
              socket: str = _socket_opt(), as_json: bool = _json_opt(),
              timeout: float = _timeout_opt()) -> None:
    """Show the memory limit, or set it (same sizes as --max-rss): sentinel limit SIZE, or
    sentinel limit PROGRAM SIZE."""
    from sentinel.control.client import limit_command, looks_like_size

    if second is not None and looks_like_size(size):  # 'limit 1Gi 2Gi': one size only
        ctx.fail(f"Got unexpected extra argument(s) ({second})")
    build = (lambda: limit_command(size)) if second is None else \
        (lambda: limit_command(second, program=size))
    _control(socket, None, as_json, timeout, build=build)


@app.command("pause")
def pause_cmd(name: str = _program_arg(), socket: str = _socket_opt(),
              as_json: bool = _json_opt(), timeout: float = _timeout_opt()) -> None:
    """Stop enforcing the memory limit (sampling goes on) until 'resume'."""
    _control(socket, None, as_json, timeout, build=_program_line("pause", name))


@app.command("resume")
def resume_cmd(name: str = _program_arg(), socket: str = _socket_opt(),
               as_json: bool = _json_opt(), timeout: float = _timeout_opt()) -> None:
    """Enforce the memory limit again."""
    _control(socket, None, as_json, timeout, build=_program_line("resume", name))


@app.command("start")
def start_cmd(name: str = _program_arg(required=True), socket: str = _socket_opt(),
              as_json: bool = _json_opt(), timeout: float = _timeout_opt()) -> None:
    """Start program NAME (stopped, exited or given up; several programs only)."""
    _control(socket, None, as_json, timeout, build=_program_line("start", name))


@app.command("restart")
def restart_cmd(name: str = _program_arg(required=True), socket: str = _socket_opt(),
                as_json: bool = _json_opt(), timeout: float = _timeout_opt()) -> None:
    """Stop program NAME with its ladder, then start it again (several programs only)."""
    _control(socket, None, as_json, timeout, build=_program_line("restart", name))


@app.command("reload")
def reload_cmd(socket: str = _socket_opt(), as_json: bool = _json_opt(),
               timeout: float = _timeout_opt()) -> None:
    """Re-read the config file and apply the difference (as SIGHUP; sentinel run --config)."""
    _control(socket, "reload", as_json, timeout)


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
    from sentinel.config.settings import die, parse_duration

    try:
        period = parse_duration(interval) if interval is not None else None
    except ValueError as exc:
        die(f"--interval: {exc}", 2)
    if period is not None and not 0.05 <= period <= 3600:
        die(f"--interval: {interval} is out of range; use 50ms to 1h, e.g. 250ms", 2)
    from sentinel.ui.tui import run_top

    raise typer.Exit(run_top(socket, period))


def _click_error(name: str) -> type[Exception]:
    """The ``UsageError`` or ``ClickException`` class of the click that typer uses: typer
    0.2x vendors click (``typer._click``), older ones depend on it; ``typer.BadParameter``
    is public in both and derives from them."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)


def _usage_line(exc: Exception) -> str:
    """One line for a click usage error: ``<what is wrong> (see 'sentinel <cmd> --help')``."""
    message = exc.format_message().rstrip(".")  # type: ignore[attr-defined]
    if message[:1].isupper() and message[1:2].islower():  # "Missing argument" -> "missing ..."
        message = message[0].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "sentinel"
    return f"{message} (see '{command} --help')"


def main(argv: list[str] | None = None) -> int:
    """Run the typer app; return its exit code.

    Usage errors (a missing argument, a bad value, an unknown option or command)
    are one ``sentinel: error: ...`` line on stderr and exit 2, never click's
    four-line Usage/Try/Error block or a traceback. ``typer.Exit`` codes pass
    through; ``sentinel`` alone prints the help on stderr and exits 2.
    """
    usage_error, click_exception = _click_error("UsageError"), _click_error("ClickException")
    try:
        code = app(args=argv, prog_name="sentinel", standalone_mode=False)
    except SystemExit as exc:  # die() in a command
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except usage_error as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # no command given: the help, exit 2
            exc.show()  # type: ignore[attr-defined]
            return exc.exit_code  # type: ignore[attr-defined]
        return _error(_usage_line(exc), 2)
    except click_exception as exc:
        return _error(exc.format_message(), exc.exit_code)  # type: ignore[attr-defined]
    except typer.Abort:  # EOF at a prompt
        return _error("aborted", 1)
    return code if isinstance(code, int) else 0


def _error(message: str, code: int) -> int:
    from sentinel.control.client import one_line

    sys.stderr.write(f"sentinel: error: {one_line(message)}\n")
    sys.stderr.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
