"""The ``sentinel`` console script.

``sentinel run`` takes a fast path: parse the arguments with argparse, block
signals, spawn the workload, and only then import the guardian, exporters and
dashboard. Every other command goes to the typer app in ``sentinel.cli``.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if args and args[0] in ("run", "watch"):
            return _run_or_watch(args[0], args[1:])
        from sentinel.cli import main as cli_main

        return cli_main(args)
    except KeyboardInterrupt:
        # Ctrl-C before signals are blocked (during imports): nothing was started.
        return 130


def _run_or_watch(mode: str, args: list[str]) -> int:
    from sentinel.config.settings import die, is_true, parse_settings
    from sentinel.errors import SentinelError

    opts = args[: args.index("--")] if "--" in args else args
    debug = "--debug" in opts or is_true(os.environ.get("SENTINEL_DEBUG"))
    try:
        settings = parse_settings(mode, args)
        if mode == "watch":
            from sentinel.core.spawn import block_signals

            original_mask = block_signals()  # before the heavy imports, as in run
            from sentinel.app import serve_watch

            return serve_watch(settings, original_mask)
        return _run(settings)
    except SentinelError as exc:
        if debug:
            raise
        die(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug in Sentinel: one line, unless --debug
        if debug:
            raise
        from sentinel.errors import EXIT_INTERNAL

        die(f"internal error: {exc!r}; rerun with --debug for the traceback and report it",
            EXIT_INTERNAL)
    return 0


def _run(settings) -> int:
    from sentinel.core.spawn import block_signals, controlling_tty, prepare_parent, spawn

    if settings.measure == "cgroup":
        _require_cgroup()
    original_mask = block_signals()
    pid1, subreaper = prepare_parent(settings.pdeathsig)  # blocked: a pdeathsig waits
    if settings.tui:  # the dashboard takes the terminal: the workload writes to --tui-log
        from sentinel.ui.tui import detach_output

        detach_output(settings.tui_log)
    metrics_socket = bind_metrics_port(settings)  # before the spawn: the workload can't take it
    child = spawn(settings.command, original_mask, tty_fd=controlling_tty())
    # The workload runs. Sentinel must not pin the directory it was started in;
    # relative $KUBECONFIG entries are resolved first, as kubectl would here.
    from sentinel.exporters.events import absolute_kubeconfig_env

    absolute_kubeconfig_env()
    os.chdir("/")
    from sentinel.app import serve

    return serve(settings, child, original_mask, pid1=pid1, subreaper=subreaper,
                 metrics_socket=metrics_socket)


def bind_metrics_port(settings):
    """Bind and listen on the metrics port now, before the workload is spawned.

    The chart's liveness probe is an httpGet on this port: a workload that
    bound it first would answer the probe (or fail it) instead of Sentinel.
    Returns the listening socket (a ``_socket.socket``; ``metrics`` wraps it),
    the ``OSError`` that binding raised (the exporter reports it as one
    warning, once logging is set up), or ``None`` when there is no exporter or
    the address is a host name (a DNS lookup must not delay the spawn; the
    exporter binds it later). The socket is close-on-exec, as CPython makes
    every socket, so the workload does not inherit it. The C module
    ``_socket`` costs about 0.3 ms here; ``socket`` (with ``selectors``,
    ``enum`` classes) about 2 ms, and is imported after the spawn anyway.
    """
    if not settings.metrics_port:
        return None
    import _socket

    host = (settings.metrics_address or "").strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        family, kind, proto, _, sockaddr = _socket.getaddrinfo(
            host or None, settings.metrics_port, 0, _socket.SOCK_STREAM, 0,
            _socket.AI_PASSIVE | _socket.AI_NUMERICHOST)[0]
    except (_socket.gaierror, UnicodeError):
        return None  # a host name (or no valid name at all): the exporter says which
    except Exception as exc:  # never a reason not to start the workload
        return exc
    sock = None
    try:
        sock = _socket.socket(family, kind, proto)
        # As socketserver does (allow_reuse_address): a port in TIME_WAIT from
        # the previous container is free. Never SO_REUSEPORT: that would let
        # the workload share the port.
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(128)
    except Exception as exc:  # EADDRINUSE, EAFNOSUPPORT (IPv6 off), EMFILE...: one warning later
        if sock is not None:
            sock.close()
        return exc
    return sock


def _require_cgroup() -> None:
    from sentinel.errors import UsageError
    from sentinel.probes.tree import CgroupProbe

    if CgroupProbe.for_pid("self") is None:
        raise UsageError("--measure cgroup: no cgroup v2 memory controller for this process "
                         "(memory.current not found); use --measure rss")


if __name__ == "__main__":
    raise SystemExit(main())
