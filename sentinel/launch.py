"""The fast path of ``sentinel run`` and ``sentinel watch``: parse, block signals, spawn,
and only then import the guardian, exporters and dashboard.

Shared by the console script (``sentinel.entry``, which comes here without
importing typer) and the typer app (``sentinel.cli``'s ``run``/``watch``), so
that neither of those two imports the other. Nothing heavy at module level:
the workload is spawned before anything but the option table, ``core.spawn``
and ``core.kernel`` is imported (``tests/integration/test_own_resources.py``);
with ``--max-rss auto`` or ``--measure cgroup|working-set`` also
``probes.cgroup`` (with ``probes.contract``) and ``exporters.kubeenv``, and a few
reads of /proc and the cgroup's files, before the spawn.
"""

from __future__ import annotations

import os
import sys

# Imported before the spawn but used only after it: ``dataclasses`` (the option table's
# ``Settings``) imports ``inspect`` -- with ast, dis and tokenize, about 5 ms of the child's
# start -- and uses it only to describe a class that has no docstring. Until the workload
# runs, it is a module whose code has not run yet: the first attribute looked up in it
# runs it (a module ``__getattr__``, PEP 562), and ``load_deferred`` makes that happen
# right after the spawn, on the main thread, before any thread starts. Not
# ``importlib.util.LazyLoader``: its module loads at the next ``import inspect`` (the
# import system reads ``__spec__``, which a lazy module answers by loading), so
# dataclasses' own ``import inspect`` would load it at once.
DEFERRED_IMPORTS = ("inspect",)


def defer_imports(names: tuple[str, ...] = DEFERRED_IMPORTS) -> list:
    """Put a not-yet-executed module in ``sys.modules`` for each of ``names`` not imported
    yet (``import NAME`` then costs nothing; its first attribute executes it); return them,
    for ``load_deferred``. Never raises: a module that cannot be deferred is imported when
    it is needed, as usual."""
    deferred: list = []
    try:
        import importlib.util

        for name in names:
            if name in sys.modules:
                continue
            spec = importlib.util.find_spec(name)
            if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
                continue
            module = importlib.util.module_from_spec(spec)

            def execute(attr: str, module=module, spec=spec):
                del module.__dict__["__getattr__"]  # once: then it is an ordinary module
                spec.loader.exec_module(module)
                return getattr(module, attr)

            module.__getattr__ = execute  # type: ignore[attr-defined]
            sys.modules[name] = module
            deferred.append(module)
    except Exception:  # never a reason not to start the workload
        pass
    return deferred


def load_deferred(modules: list) -> None:
    """Execute the modules ``defer_imports`` put off, now (``__all__`` is looked up in them:
    any attribute the module does not hold yet would do). Never raises: a module whose code
    fails is taken out of ``sys.modules``, so that its next import runs and reports it."""
    for module in modules:
        try:
            if "__getattr__" in module.__dict__:
                getattr(module, "__all__", None)
        except Exception:
            sys.modules.pop(module.__name__, None)


def run_or_watch(mode: str, args: list[str]) -> int:
    """``sentinel run|watch ARGS``: parse ``args`` (``mode`` is "run" or "watch"), spawn or
    attach, supervise; return Sentinel's exit code (the workload's, 128+N for a signal N).
    Bad options: one line on stderr and exit 2 (``die``), a traceback only with --debug."""
    deferred = defer_imports()
    from sentinel.config.settings import die, is_true, parse_settings
    from sentinel.errors import SentinelError

    opts = args[: args.index("--")] if "--" in args else args
    debug = "--debug" in opts or is_true(os.environ.get("SENTINEL_DEBUG"))
    try:
        explicit: set[str] = set()
        settings = parse_settings(mode, args, explicit=explicit)
        if mode == "run" and settings.config_path is not None:
            load_deferred(deferred)  # no spawn to hurry: several programs start later
            config = load_config_or_exit(settings, frozenset(explicit))
            if settings.check_config:
                return check_config(config)
            return run_config(config, settings, frozenset(explicit))
        if mode == "watch":
            if settings.limit_auto_share is not None:
                from sentinel.errors import UsageError

                raise UsageError("--max-rss auto: not available in watch mode yet (the "
                                 "workload's cgroup is known only once the target is found); "
                                 "give --max-rss a size")
            from sentinel.core.spawn import block_signals

            original_mask = block_signals()  # before the heavy imports, as in run
            load_deferred(deferred)
            from sentinel.app import serve_watch

            return serve_watch(settings, original_mask)
        return _run(settings, deferred)
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


def load_config_or_exit(settings, explicit: frozenset[str]):
    """The ``ProgramsConfig`` of ``settings.config_path`` (``sentinel run --config FILE``),
    with ``explicit`` the options given on the command line or as ``SENTINEL_*`` variables
    (``parse_settings``'s ``explicit``). A bad file: one line on stderr and exit 2 before
    anything starts (``SystemExit``); with ``--debug`` the ``ConfigError`` is raised."""
    from sentinel.config.programs import load_config
    from sentinel.config.settings import die
    from sentinel.errors import ConfigError

    try:
        return load_config(settings.config_path, settings, explicit)
    except ConfigError as exc:
        if settings.debug:
            raise
        die(str(exc), exc.exit_code)
        raise  # die raised SystemExit; this line is for the type checker


def check_config(config) -> int:
    """``sentinel run --config FILE --check-config``: one line on stdout that the file is
    valid, then one a program in start order; return 0. Nothing is started."""
    import shlex
    import sys

    lines = [f"{config.path}: valid, {len(config.programs)} program(s) in start order, "
             f"output {config.output}"]
    for spec in config.programs:
        facts = ["main"] if spec.main else [f"on-give-up {spec.on_give_up}"]
        if spec.depends_on:
            facts.append("after " + ", ".join(spec.depends_on))
        if spec.user:
            facts.append(f"as {spec.user} (uid {spec.uid}, gid {spec.gid})")
        lines.append(f"  {spec.name}: {shlex.join(spec.command)} ({'; '.join(facts)})")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def run_config(config, cli=None, explicit: frozenset[str] = frozenset()) -> int:
    """``sentinel run --config FILE``: run the programs of a loaded ``ProgramsConfig``
    under one init (``sentinel.core.group.Group``); return Sentinel's exit code. Each
    program's ``--max-rss auto`` is resolved against the container's cgroup first
    (``UsageError``, exit 2, before anything starts). SIGHUP and ``reload`` read the
    file again with the same command-line options (``cli``, the ``Settings`` of the
    command line and environment, and ``explicit``, the options given there)."""
    from sentinel.core.spawn import block_signals, prepare_parent

    def resolved(cfg) -> dict:
        return {spec.name: resolve_cgroup_settings(cfg.program_settings(spec))
                for spec in cfg.programs}

    program_settings = resolved(config)
    settings = config.settings
    original_mask = block_signals()
    pid1, subreaper = prepare_parent(settings.pdeathsig)
    if settings.tui:  # the dashboard takes the terminal: the programs write to --tui-log
        from sentinel.ui.tui import detach_output

        detach_output(settings.tui_log)
    metrics_socket = bind_metrics_port(settings)  # before the programs: none can take it
    from sentinel.exporters.kubeenv import absolute_kubeconfig_env  # os only

    absolute_kubeconfig_env()
    try:
        start_dir = os.getcwd()  # programs without a cwd start here; Sentinel moves to /
    except OSError:
        start_dir = "/"

    def reload_config():
        from sentinel.config.programs import load_config

        # Checked from where the first load was (a relative command is found from there,
        # as the programs are spawned there), although Sentinel now lives in /.
        try:
            os.chdir(start_dir)
        except OSError:
            pass
        try:
            new = load_config(config.path, cli if cli is not None else settings, explicit)
            return new, resolved(new)
        finally:
            os.chdir("/")

    from sentinel.app import serve_config

    return serve_config(config, program_settings, original_mask, pid1=pid1,
                        subreaper=subreaper, reload_config=reload_config,
                        metrics_socket=metrics_socket)


def _run(settings, deferred: list | None = None) -> int:
    from sentinel.core.spawn import block_signals, controlling_tty, prepare_parent, spawn

    settings = resolve_cgroup_settings(settings)
    original_mask = block_signals()
    pid1, subreaper = prepare_parent(settings.pdeathsig)  # blocked: a pdeathsig waits
    if settings.tui:  # the dashboard takes the terminal: the workload writes to --tui-log
        from sentinel.ui.tui import detach_output

        detach_output(settings.tui_log)
    metrics_socket = bind_metrics_port(settings)  # before the spawn: the workload can't take it
    from sentinel.config.webhooks import workload_environ  # loaded with the settings

    # Without SENTINEL_WEBHOOK_URL: the workload never needs a receiver's token.
    child = spawn(settings.command, original_mask, tty_fd=controlling_tty(),
                  environ=workload_environ(settings.webhooks))
    load_deferred(deferred or [])
    # The workload runs. Sentinel must not pin the directory it was started in;
    # relative $KUBECONFIG entries are resolved first, as kubectl would here.
    from sentinel.exporters.kubeenv import absolute_kubeconfig_env  # os only

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


def resolve_cgroup_settings(settings, pid: int | str = "self", proc_root: str = "/proc",
                            environ=None):
    """Settings with ``--max-rss auto`` resolved against ``pid``'s cgroup (in run mode
    Sentinel's own, which the workload shares): ``max_rss_bytes`` becomes
    ``sentinel.probes.cgroup.auto_limit`` of its effective limit (the lowest of its
    own and its visible ancestors', ``CgroupMemory.limits``), less Sentinel's own
    footprint unless the measure is the cgroup's (which counts Sentinel already):
    ``OWN_FOOTPRINT_EVENTS_BYTES`` (56 MiB) when Kubernetes Events may be posted
    (``exporters.kubeenv.events_may_post`` on ``environ``, default ``os.environ``),
    else ``OWN_FOOTPRINT_BYTES`` (32 MiB); ``limit_auto_note`` says in one line how.
    Raises ``UsageError`` (exit 2) when ``auto``, ``--measure cgroup`` or
    ``--measure working-set`` is asked for and no cgroup memory controller is visible,
    when the cgroup has no limit, or for a share of 100 % with a cgroup measure (the
    limit would be the kernel's: it kills first). Unchanged settings when none of them
    is asked for."""
    import dataclasses

    cgroup_measure = settings.measure in ("cgroup", "working-set")
    if settings.limit_auto_share is None and not cgroup_measure \
            and settings.cgroup_root is None:
        return settings
    from sentinel.errors import UsageError
    from sentinel.probes.cgroup import (auto_limit, discover, explain_no_cgroup,
                                        is_hierarchy_root, other_members)

    what = "--max-rss auto" if settings.limit_auto_share is not None else \
        f"--measure {settings.measure}" if cgroup_measure else \
        f"--cgroup-root {settings.cgroup_root}"
    memory = discover(pid, proc_root=proc_root, cgroup_root=settings.cgroup_root)
    if memory is None:
        fix = "give --max-rss a size" if settings.limit_auto_share is not None else \
            "or use --measure rss" if cgroup_measure else "or leave --cgroup-root out"
        raise UsageError(f"{what}: " + explain_no_cgroup(
            pid, proc_root=proc_root, cgroup_root=settings.cgroup_root) + f"; {fix}")
    try:
        if settings.limit_auto_share is None and not cgroup_measure:
            return settings  # --cgroup-root checked: the figures are optional with rss
        if is_hierarchy_root(memory):
            raise UsageError(f"{what}: this process's cgroup is the hierarchy's root group "
                             f"({memory.path}), whose usage is the whole host's memory; run "
                             "Sentinel in the container's own cgroup, or use --measure rss "
                             "with a --max-rss size")
        updates: dict = {}
        if cgroup_measure:
            file = "memory.current" if memory.version == 2 else "memory.usage_in_bytes"
            if settings.measure == "working-set":
                file += " less memory.stat's " + ("inactive_file" if memory.version == 2
                                                  else "total_inactive_file")
            updates["cgroup_note"] = (f"--measure {settings.measure}: cgroup v{memory.version} "
                                      f"{memory.path} ({file})")
            if pid == "self" and proc_root == "/proc":  # before the spawn: Sentinel alone
                others = other_members(memory, {os.getpid()})
                if others:
                    shown = ", ".join(map(str, others[:10])) + (", ..." if len(others) > 10
                                                                else "")
                    updates["cgroup_warning"] = (
                        f"--measure {settings.measure}: the cgroup {memory.path} also holds "
                        f"{len(others)} process(es) that are not the workload's (pid "
                        f"{shown}); their memory counts against --max-rss too")
        if settings.limit_auto_share is None:
            return dataclasses.replace(settings, **updates)
        share = settings.limit_auto_share
        if cgroup_measure and share >= 1.0:
            raise UsageError(f"--max-rss auto:100% with --measure {settings.measure}: the "
                             "limit would be the kernel's own, which OOM-kills the workload "
                             "before Sentinel can stop it; use a share below 100 % "
                             "(the default is auto, 90 %)")
        limit, high = memory.limits()
        # The cgroup measures count Sentinel too; the tree's (rss/pss/uss) do not, so
        # Sentinel's own footprint comes off the limit for those only (as the chart does).
        own = 0 if cgroup_measure else own_footprint_bytes(settings, environ)
        value = auto_limit(limit, high, share, own, version=memory.version)
        note = auto_note(memory, limit, high, share, own, value)
    finally:
        memory.close()
    return dataclasses.replace(settings, max_rss_bytes=value, limit_auto_note=note, **updates)


def own_footprint_bytes(settings, environ=None) -> int:
    """Sentinel's own memory for ``--max-rss auto`` with a tree measure, in bytes:
    ``OWN_FOOTPRINT_EVENTS_BYTES`` when the Kubernetes Events client may be loaded
    (``--k8s-events on``, or ``auto`` with a cluster configured), else
    ``OWN_FOOTPRINT_BYTES``; the chart's ``sentinel.footprintMiB`` rule."""
    from sentinel.exporters.kubeenv import events_may_post
    from sentinel.probes.cgroup import OWN_FOOTPRINT_BYTES, OWN_FOOTPRINT_EVENTS_BYTES

    return OWN_FOOTPRINT_EVENTS_BYTES if events_may_post(
        settings.k8s_events, settings.kubeconfig, environ) else OWN_FOOTPRINT_BYTES


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f}".removesuffix(".0") + " MiB"


def auto_note(memory, limit: int | None, high: int | None, share: float, own: int,
              value: int) -> str:
    """One line on how ``--max-rss auto`` was resolved: the cgroup (version, path), the
    limit taken and the group it came from, the share, Sentinel's own footprint taken
    off, the result. Logged once at start-up and kept in ``kernel_notes["auto"]``."""
    from sentinel.probes.cgroup import ANCESTOR_NOT_VISIBLE, share_text

    def source(path: str | None) -> str:
        if path is None or path == memory.path:
            return "its own"
        if path == ANCESTOR_NOT_VISIBLE:
            return "an ancestor not visible here (v1 hierarchical_memory_limit)"
        return f"{path} (a parent)"

    use_high = high is not None and (limit is None or high < limit)
    if use_high:
        base = (f"memory.high {_mib(high or 0)} from {source(memory.high_source)} (a "
                "throttle, not a kill limit: the kernel slows the workload at memory.high "
                "and OOM-kills only at memory.max"
                + (f", {_mib(limit)}" if limit is not None else ", unlimited") + ")")
    else:
        name = "memory.max" if memory.version == 2 else "memory.limit_in_bytes"
        base = f"{name} {_mib(limit or 0)} from {source(memory.limit_source)}"
    own_text = f"less Sentinel's own {_mib(own)}" if own else \
        "nothing off for Sentinel (the cgroup measure counts it)"
    return (f"--max-rss auto: cgroup v{memory.version} {memory.path}: {base}; "
            f"{share_text(share)} of it, {own_text}: limit {_mib(value)} ({value} bytes)")
