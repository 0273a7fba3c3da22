"""The programs file of ``sentinel run --config sentinel.yaml`` (``SENTINEL_CONFIG``):
parsed, validated, and handed to the multi-program host as typed, frozen values.

The format is in docs/config.md (a full example in examples/sentinel.yaml)::

    version: 1
    settings: {metrics-port: 8000, grace-period: 5s, output: prefixed, on-give-up: exit}
    programs:
      - {name: web, command: [python3, app.py], max-rss: 200Mi, depends-on: [db]}
      - {name: db, command: postgres -D /data, restart: on-failure}

Every value goes through the same ``Opt`` conversion as on the command line, so the
grammars (sizes, durations, signals) and their messages are one. The YAML is walked
as nodes (``yaml.compose``) rather than loaded, so that every error names its line
and dotted key, and a key given twice is an error (``yaml.safe_load`` silently keeps
the last one). PyYAML is imported only when a file is loaded: the single-command
fast path never pays for it.

Layer 0: imports only the standard library, PyYAML, ``sentinel.errors`` and
``sentinel.config.settings``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from sentinel.config.settings import (OPTIONS, Opt, Settings, _convert, normalize_values,
                                      resolve_hook_command)
from sentinel.errors import ConfigError, UsageError

# The run options about one program (their Opt flags without "--"). Under `settings:`
# each is the default for every program; in a program it overrides that default.
# oom-score-adj-margin is the workload's oom_score_adj (applied to each program's
# children), so it is one too.
PROGRAM_OPTIONS: tuple[str, ...] = (
    "measure", "max-rss", "grace-period", "restart", "restart-delay", "restart-max-delay",
    "max-restarts", "success-exit-code", "memory-kill-exit-code", "single-child", "interval",
    "max-interval", "stop-signal", "clamp-high", "no-early-sigkill", "oom-score-adj-margin",
    "pre-kill-hook", "pre-kill-hook-timeout", "dry-run",
    "warn-at", "leak-window", "leak-min-rate", "predict-within",
)
# Run options that have no place in the file, and why.
NOT_IN_FILE: dict[str, str] = {
    "workload-name": "each program's name is its workload name",
    "config": "a config file cannot name another one",
    "check-config": "a command-line option",
    "target-name": "a watch-mode option", "target-cmdline": "a watch-mode option",
    "target-pid": "a watch-mode option",
}
# A program's own keys, besides the program options.
PROGRAM_KEYS: tuple[str, ...] = ("name", "command", "env", "cwd", "user", "main",
                                 "depends-on", "on-give-up")
# `settings:` keys that are not run options.
FILE_SETTINGS_KEYS: tuple[str, ...] = ("output", "on-give-up")
# `settings.webhooks`, a list of receivers (not a scalar like the keys above; the chart's
# programsSettings schema does not offer it yet, so it is kept apart from them).
WEBHOOKS_KEY = "webhooks"
# A receiver of settings.webhooks: where its URL comes from (never the URL itself: the
# file may be a ConfigMap, readable by whoever reads the namespace's config).
WEBHOOK_KEYS: tuple[str, ...] = ("name", "url-file", "url-env", "format", "events",
                                 "programs", "queue")
TOP_KEYS: tuple[str, ...] = ("version", "settings", "programs")
OUTPUTS = ("prefixed", "plain")
ON_GIVE_UP = ("exit", "continue")
# In a config file a crash loop gives up (as supervisors do); the command line's
# default (0: no cap) would restart a broken program forever.
CONFIG_MAX_RESTARTS = 5
# A Prometheus label value and a Kubernetes-friendly word (a DNS label, plus _ and .),
# starting with a letter: `limit NAME SIZE` and `signal NAME SIG` on the control socket
# and the CLI must never read a program's name as a size (1g) or a signal (term, 15).
NAME_RE = re.compile(r"^[a-z]([-a-z0-9_.]*[a-z0-9])?$")
# Words the control commands read as something else than a program.
RESERVED_NAMES = frozenset({"none", "off", "unlimited", "auto", "text", "json", "dashboard",
                            "all", "status", "stop", "kill", "signal", "limit", "pause",
                            "resume", "start", "restart", "reload", "help"})
NAME_MAX = 63
# The programs file is read whole into PID 1's memory (at start and on each reload): a
# wrong path (/dev/zero, a log file) must not balloon it.
MAX_FILE_BYTES = 1 << 20
# Options whose values are paths.
_PATH_DESTS = frozenset({"socket_path", "termination_log", "tui_log", "state_dir",
                         "cgroup_root"})
# Measures of the container's cgroup: shared by every program, so not one program's.
CGROUP_MEASURES = ("cgroup", "working-set")

_BY_NAME: dict[str, Opt] = {o.flags[0][2:]: o for o in OPTIONS if "run" in o.modes}
_PROGRAM_DESTS = frozenset(_BY_NAME[n].dest for n in PROGRAM_OPTIONS)
# Settings fields an Opt's dest turns into (normalize_values): --max-rss sets two.
_FIELDS_OF: dict[str, tuple[str, ...]] = {
    "max_rss_bytes": ("max_rss_bytes", "limit_auto_share"),
    "no_metrics": ("metrics_port",), "no_socket": ("socket_path",),
}


def _fields(dest: str) -> tuple[str, ...]:
    return _FIELDS_OF.get(dest, (dest,))


PROGRAM_FIELDS: tuple[str, ...] = tuple(sorted(f for d in _PROGRAM_DESTS for f in _fields(d)))


@dataclass(frozen=True)
class ProgramSpec:
    """One program of the file, validated. Equal specs (``line`` aside) mean "the
    definition did not change": ``reload`` leaves such a program alone."""

    name: str
    command: tuple[str, ...]
    # The environment overrides as written, sorted by key; None removes the variable.
    env: tuple[tuple[str, str | None], ...]
    cwd: str | None  # absolute, an existing directory; None: Sentinel's start directory
    user: str | None  # as written: "www-data", "1000", "app:app", "1000:1000"
    uid: int | None  # resolved from `user` (pwd, grp, os.getgrouplist); None: Sentinel's
    gid: int | None
    groups: tuple[int, ...]  # supplementary groups (with gid), () when user is None
    main: bool  # its exit ends the container with its status
    depends_on: tuple[str, ...]
    on_give_up: str  # "exit" | "continue" (always "exit" for the main program)
    # Settings field -> value of every program option for this program (the program's
    # own keys over the command line/environment over `settings:` over the defaults),
    # sorted by field name. max_rss_bytes is None while limit_auto_share is set (auto).
    options: tuple[tuple[str, object], ...]
    line: int | None = field(default=None, compare=False)  # where it is defined (1-based)

    def environ(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` (e.g. ``os.environ``) with this program's overrides applied: a
        variable set to None is removed."""
        return _apply_env(self.env, base)


@dataclass(frozen=True)
class ProgramsConfig:
    """The whole file, validated. ``settings`` is Sentinel's global ``Settings`` (the
    file's ``settings:`` under the options given on the command line or as
    ``SENTINEL_*`` variables; mode "run", command ()); ``programs`` are in start order
    (dependencies first, then the file's order)."""

    path: str
    settings: Settings
    programs: tuple[ProgramSpec, ...]
    output: str  # "prefixed" ("web   | line") | "plain"
    main: str  # the main program's name

    def program(self, name: str) -> ProgramSpec:
        """The spec named ``name``; raises ``KeyError``."""
        for spec in self.programs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def program_settings(self, spec: ProgramSpec) -> Settings:
        """The ``Settings`` one program's supervisor runs with: the global settings with
        the program's command, its name as ``workload_name`` and its program options.
        ``--max-rss auto`` is left as ``parse_settings`` leaves it (``limit_auto_share``
        set, ``max_rss_bytes`` None): ``sentinel.launch.resolve_cgroup_settings`` resolves
        it against the cgroup, as for a single command."""
        return dataclasses.replace(self.settings, command=spec.command,
                                   workload_name=spec.name, **dict(spec.options))


@dataclass(frozen=True)
class ConfigDiff:
    """What a reload changes, by program name (each in the new file's start order,
    ``removed`` in the old one's)."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]  # the definition differs: stop and start it again
    unchanged: tuple[str, ...]  # left alone
    # Global option names ("metrics-port", "output") whose value changed: a reload
    # cannot apply them; Sentinel must be restarted for those.
    settings_changed: tuple[str, ...]


def diff(old: ProgramsConfig, new: ProgramsConfig) -> ConfigDiff:
    """Compare two loads of the file (``reload``, ``SIGHUP``)."""
    before = {p.name: p for p in old.programs}
    after = {p.name: p for p in new.programs}
    # --no-metrics/--no-socket are metrics-port/socket: reported under those names.
    settings_changed = [name for name, opt in _BY_NAME.items()
                        if name not in PROGRAM_OPTIONS and name not in NOT_IN_FILE
                        and hasattr(Settings, opt.dest)
                        and getattr(old.settings, opt.dest) != getattr(new.settings, opt.dest)]
    if old.output != new.output:
        settings_changed.append("output")
    if old.settings.webhooks != new.settings.webhooks:  # receivers start once, with Sentinel
        settings_changed.append(WEBHOOKS_KEY)
    return ConfigDiff(
        added=tuple(n for n in after if n not in before),
        removed=tuple(n for n in before if n not in after),
        changed=tuple(n for n in after if n in before and after[n] != before[n]),
        unchanged=tuple(n for n in after if n in before and after[n] == before[n]),
        settings_changed=tuple(sorted(settings_changed)))


def load_config(path: str, cli: Settings, explicit: frozenset[str]) -> ProgramsConfig:
    """Read and validate the programs file at ``path``.

    ``cli`` is what ``parse_settings`` made of the command line and environment, and
    ``explicit`` the ``Opt.dest`` of the options given there (its ``explicit``
    argument): those win over the file's ``settings:``; a program's own key wins over
    them for that program. Precedence: program > command line > environment >
    ``settings:`` > defaults (``max-restarts`` defaults to 5 in a file).

    Nothing is started. Raises ``ConfigError`` (exit code 2) with one line,
    ``path:line: key: what is wrong; what to do``, for a file that cannot be read, a
    YAML syntax error, an unknown or repeated key (with a suggestion), a bad value (the
    command line's message), no programs, a bad or repeated name, two mains, an unknown
    dependency or a cycle, an empty command or one not found in the program's PATH, a
    missing cwd, an unknown user or group, ``user`` when Sentinel is not root (unless it
    is Sentinel's own), or a cgroup measure with several programs.
    """
    try:
        # O_NONBLOCK: a FIFO at the path must not hang the start (refused just below).
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:
            import stat

            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ConfigError(path, None, None, "not a regular file; give the path of a "
                                  "YAML file")
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ConfigError(path, None, None, f"larger than {MAX_FILE_BYTES // 1024} KiB; a "
                              "programs file is a few KiB (is this the right file?)")
        text = data.decode("utf-8")
    except OSError as exc:
        raise ConfigError(path, None, None, f"cannot read the config file: "
                          f"{exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, None, None, f"not UTF-8 text ({exc.reason} at byte "
                          f"{exc.start}); save it as UTF-8") from None
    return _Loader(path, cli, explicit).load(text)


def _is_signal(word: str) -> bool:
    """``word`` is a signal for ``parse_signal`` (term, sigterm, hup, rtmin+1, ...)."""
    from sentinel.config.settings import parse_signal

    try:
        parse_signal(word)
    except ValueError:
        return False
    return True


def _line(node) -> int:
    return node.start_mark.line + 1


class _Loader:
    """One walk over the composed YAML nodes; every error raised carries its line."""

    def __init__(self, path: str, cli: Settings, explicit: frozenset[str]) -> None:
        self.path, self.cli, self.explicit = path, cli, explicit
        # Relative paths in the file are the file's, as docker-compose takes them: the
        # same on a reload, after Sentinel has moved to /.
        self.base = os.path.dirname(os.path.abspath(path))

    def relative(self, path: str) -> str:
        return os.path.join(self.base, path) if path.strip() else path

    def error(self, node, key: str | None, problem: str) -> ConfigError:
        return ConfigError(self.path, None if node is None else _line(node), key, problem)

    # -- the YAML shapes ----------------------------------------------------------

    def load(self, text: str) -> ProgramsConfig:
        import yaml  # PyYAML: only with --config, never on the single-command path

        try:
            root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or exc.context or "a syntax error"
            raise ConfigError(self.path, mark.line + 1 if mark else None, None,
                              (f"column {mark.column + 1}: " if mark else "")
                              + f"not valid YAML: {problem} (check the indentation and "
                              "quoting there)") from None
        except yaml.YAMLError as exc:
            raise ConfigError(self.path, None, None, f"not valid YAML: {exc}") from None
        if root is None or (self._is_null(root)):
            raise ConfigError(self.path, None, None, "the file is empty; it needs a "
                              "programs: list (see docs/config.md)")
        top = self.mapping(root, "", TOP_KEYS)
        if "version" in top:
            k, v = top["version"]
            if not self.is_scalar(v) or v.value.strip() != "1":
                raise self.error(v, "version", f"{self.text(v)!r} is not a version this "
                                 "Sentinel reads; use version: 1 (or leave it out)")
        settings_node = top.get("settings", (None, None))[1]
        if settings_node is None or self._is_null(settings_node):
            settings_keys: dict = {}
        else:
            allowed = tuple(n for n in _BY_NAME if n not in NOT_IN_FILE) + FILE_SETTINGS_KEYS \
                + (WEBHOOKS_KEY,)
            settings_keys = self.mapping(settings_node, "settings", allowed)
        if "programs" not in top:
            raise self.error(root, "programs", "missing; list the programs to run, e.g. "
                             "programs: [{name: web, command: [python3, app.py]}]")
        pnode = top["programs"][1]
        if pnode.tag != "tag:yaml.org,2002:seq" or not pnode.value:
            raise self.error(pnode, "programs", "needs a list of programs, each with a "
                             "name and a command (see docs/config.md)")
        return self.build(settings_keys, pnode)

    @staticmethod
    def _is_null(node) -> bool:
        return node.tag == "tag:yaml.org,2002:null"

    @staticmethod
    def is_scalar(node) -> bool:
        return node.id == "scalar"

    @staticmethod
    def text(node) -> str:
        return node.value if node.id == "scalar" else f"a {node.id}"

    def mapping(self, node, where: str, allowed: tuple[str, ...]) -> dict:
        """``node``'s keys -> (key node, value node); an unknown key or one given twice is
        an error."""
        if node.id != "mapping":
            raise self.error(node, where or None, f"expected a mapping (key: value), "
                             f"found {self.text(node)!r}")
        out: dict = {}
        for knode, vnode in node.value:
            if not self.is_scalar(knode):
                raise self.error(knode, where or None, "a key must be a plain word")
            key = knode.value
            dotted = f"{where}.{key}" if where else key
            if key in out:
                raise self.error(knode, dotted, f"given twice (first on line "
                                 f"{_line(out[key][0])}); keep one")
            if key not in allowed:
                raise self.error(knode, dotted, self.unknown(key, where, allowed))
            out[key] = (knode, vnode)
        return out

    @staticmethod
    def unknown(key: str, where: str, allowed: tuple[str, ...]) -> str:
        if key in NOT_IN_FILE:
            return f"not allowed in the file: {NOT_IN_FILE[key]}"
        if where.startswith("programs[") and key in _BY_NAME:
            return "a global setting, not a program's; put it under settings:"
        if where == "settings" and key in PROGRAM_KEYS:
            return "a program's key, not a setting; put it in a program under programs:"
        import difflib

        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        dashed = key.replace("_", "-").lower()
        if dashed in allowed:
            close = [dashed]
        return "unknown key; " + (f"did you mean {close[0]}?" if close else
                                  "see docs/config.md for the keys")

    def scalar(self, node, key: str, what: str) -> str:
        if not self.is_scalar(node) or self._is_null(node):
            raise self.error(node, key, f"needs {what}, found "
                             f"{'nothing' if self.is_scalar(node) else 'a ' + node.id}")
        return node.value

    def choice(self, node, key: str, choices: tuple[str, ...]) -> str:
        value = self.scalar(node, key, "one of " + ", ".join(choices))
        if value not in choices:
            raise self.error(node, key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def boolean(self, node, key: str) -> bool:
        value = self.scalar(node, key, "true or false").strip().lower()
        if value in ("true", "yes", "on", "1"):
            return True
        if value in ("false", "no", "off", "0"):
            return False
        raise self.error(node, key, f"{node.value!r} is not true or false")

    def names(self, node, key: str) -> list[tuple[str, object]]:
        """A list of strings, or one string: [(text, node)]."""
        items = node.value if node.id == "sequence" else [node]
        return [(self.scalar(item, key, "a name"), item) for item in items]

    # -- options, with the command line's conversion ---------------------------------

    def option(self, name: str, vnode, key: str) -> dict[str, object]:
        """The Settings fields one option of the file sets (``normalize_values``)."""
        opt = _BY_NAME[name]
        try:
            if opt.repeat:
                items = vnode.value if vnode.id == "sequence" else None
                if items is None:
                    raw = self.scalar(vnode, key, "a value or a list")
                    items_raw = [(p, vnode) for p in raw.split(",") if p.strip()]
                else:
                    items_raw = [(self.scalar(i, key, "a value"), i) for i in items]
                converted = []
                for raw, inode in items_raw:
                    try:
                        converted.append(_convert(opt, raw, key))
                    except UsageError as exc:
                        raise self.error(inode, key, _problem(exc, key)) from None
                values: dict[str, object] = {opt.dest: converted}
            else:
                raw = self.scalar(vnode, key, "a value")
                if opt.dest == "webhook_url_file" and "://" not in raw:
                    raw = self.relative(raw)  # read now, from the file's directory
                values = {opt.dest: _convert(opt, raw, key)}
            if opt.dest == "kubeconfig":  # a list, as $KUBECONFIG may be
                values[opt.dest] = os.pathsep.join(
                    self.relative(p) for p in str(values[opt.dest]).split(os.pathsep))
            elif opt.dest in _PATH_DESTS:
                values[opt.dest] = self.relative(str(values[opt.dest]))
            elif opt.dest == "pre_kill_hook" and values[opt.dest]:
                # A relative hook is the file's, as paths in the file are (and checked now).
                values[opt.dest] = resolve_hook_command(tuple(values[opt.dest]), self.base)
            normalize_values(values)
            if "max_rss_bytes" in values:  # a size or none replaces an auto share too
                values.setdefault("limit_auto_share", None)
        except UsageError as exc:
            raise self.error(vnode, key, _problem(exc, key, opt.flags[0])) from None
        if "interval_seconds" in values or "max_interval_seconds" in values:
            seconds = float(values.get("interval_seconds",  # type: ignore[arg-type]
                                       values.get("max_interval_seconds", 0.1)))
            if not 0.001 <= seconds <= 60:
                raise self.error(vnode, key, f"{seconds:g}s is out of range; use 1ms to 60s")
        if values.get("socket_path") is not None and not str(values["socket_path"]).strip():
            raise self.error(vnode, key, "empty path; use e.g. /tmp/sentinel.socket, or "
                             "no-socket: true")
        return values

    # -- the whole file ----------------------------------------------------------------

    def build(self, settings_keys: dict, pnode) -> ProgramsConfig:
        file_values: dict[str, object] = {}
        where: dict[str, tuple[object, str]] = {}  # Settings field -> (node, key) in settings:
        for name, (knode, vnode) in settings_keys.items():
            if name in FILE_SETTINGS_KEYS or name == WEBHOOKS_KEY:
                continue
            for f, v in self.option(name, vnode, f"settings.{name}").items():
                file_values[f] = v
                where[f] = (knode, f"settings.{name}")
        if "max_restarts" not in file_values:
            file_values["max_restarts"] = CONFIG_MAX_RESTARTS
        # The command line and SENTINEL_* variables win over the file's settings:.
        for dest in self.explicit:
            for f in _fields(dest):
                if hasattr(Settings, f):
                    file_values[f] = getattr(self.cli, f)
                    where.pop(f, None)
        file_values = {k: v for k, v in file_values.items() if hasattr(Settings, k)}
        hooks = self.webhooks(settings_keys["webhooks"][1]) if "webhooks" in settings_keys \
            else ()
        settings = Settings(**{**file_values, "mode": "run", "command": (),
                               "config_path": self.cli.config_path,
                               "webhooks": tuple(self.cli.webhooks)
                               + tuple(spec for spec, _, _ in hooks)})
        default_give_up = "exit"
        if "on-give-up" in settings_keys:
            default_give_up = self.choice(settings_keys["on-give-up"][1],
                                          "settings.on-give-up", ON_GIVE_UP)
        several = len(pnode.value) > 1
        raw = [self.program(i, n, settings, where, default_give_up, several)
               for i, n in enumerate(pnode.value)]
        specs = self.check_programs(raw)
        self.check_webhook_programs(hooks, settings.webhook_url_file, specs)
        output = "prefixed" if len(specs) > 1 else "plain"
        if "output" in settings_keys:
            output = self.choice(settings_keys["output"][1], "settings.output", OUTPUTS)
        main = next(s.name for s in specs if s.main)
        return ProgramsConfig(path=self.path, settings=settings, programs=specs,
                              output=output, main=main)

    def webhooks(self, node) -> tuple:
        """``settings.webhooks``: a list of receivers, each with exactly one of ``url-file``
        (a file read as ``--webhook-url-file`` reads it: every URL line a receiver, with its
        line's words; relative to this file) or ``url-env`` (a variable's value), and
        optional ``name``, ``format``, ``events``, ``programs``, ``queue`` (for a file, for
        each of its lines; a word a line gives too is an error). Returns
        ``((spec, item node, "settings.webhooks[i]"), ...)``."""
        from sentinel.config import webhooks as wh

        if self._is_null(node):
            return ()
        if node.id != "sequence":
            raise self.error(node, "settings.webhooks", "needs a list of receivers, e.g. "
                             "[{url-env: SLACK_WEBHOOK_URL, format: text}]")
        out = []
        for i, item in enumerate(node.value):
            at = f"settings.webhooks[{i}]"
            if item.id != "mapping":
                raise self.error(item, at, "each receiver is a mapping, {url-env: VARIABLE} "
                                 "or {url-file: PATH}, never the URL itself (the file may be "
                                 "a ConfigMap; the value is not shown)")
            keys = self.mapping(item, at, WEBHOOK_KEYS)
            given = [k for k in ("url-file", "url-env") if k in keys]
            if len(given) != 1:
                raise self.error(item, at, "give exactly one of url-file: PATH or url-env: "
                                 "VARIABLE (never the URL itself: it carries a token)")
            vnode = keys[given[0]][1]
            value = self.scalar(vnode, f"{at}.{given[0]}", "a value")
            if "://" in value:
                what = ("a path to a file holding the URL" if given[0] == "url-file" else
                        "the name of a variable holding the URL")
                raise self.error(vnode, f"{at}.{given[0]}", f"{given[0]} takes {what}, not the "
                                 "URL (the value is not shown; a URL here is readable by "
                                 "whoever reads the file)")
            try:
                kw: dict = {}
                for key, conv in (("format", wh.check_format), ("name", wh.check_name),
                                  ("queue", wh.check_queue)):
                    if key in keys:
                        kw[key] = conv(self.scalar(keys[key][1], f"{at}.{key}", "a value"),
                                       at)
                for key, conv in (("events", wh.check_events),
                                  ("programs", wh.check_programs)):
                    if key in keys:
                        kw[key] = conv([t for t, _ in self.names(keys[key][1],
                                                                 f"{at}.{key}")], at)
                if given[0] == "url-env":
                    raw = os.environ.get(value, "")
                    if not raw.strip():
                        raise ValueError(f"{at}.url-env: ${value} is not set (or empty); set "
                                         "it to the receiver's URL, e.g. from a Secret")
                    url = wh.check_url(raw, f"{at}.url-env (${value})")
                    out.append((wh.WebhookSpec(url=url, source=at, variable=value, **kw), item, at))
                    continue
                lines = wh.parse_url_file(self.relative(value))
            except ValueError as exc:  # the checks' messages start with `at` already
                raise self.error(item, None if str(exc).startswith(at) else at,
                                 str(exc)) from None
            if "name" in kw and len(lines) > 1:
                raise self.error(keys["name"][0], f"{at}.name", f"the file has {len(lines)} "
                                 "receivers, which cannot share one name; name each on its "
                                 "line (name=...)")
            for spec in lines:
                given_twice = [k for k in kw if k in spec.words]
                if given_twice:
                    raise self.error(keys[given_twice[0]][0], f"{at}.{given_twice[0]}",
                                     f"also given on {spec.source} ({given_twice[0]}=); give "
                                     "it in one place")
                out.append((dataclasses.replace(spec, **kw), item, at))
        return tuple(out)

    def check_webhook_programs(self, hooks, url_file, specs) -> None:
        """Each receiver's ``programs`` filter names programs of this file (a typo would
        silence the receiver for good): ``hooks`` from ``webhooks``, ``url_file`` the
        receivers of ``--webhook-url-file`` (or its ``settings:`` key). A ``ConfigError``
        naming the receiver's line otherwise."""
        names = [s.name for s in specs]
        found = list(hooks) + [(spec, None, None) for spec in url_file]
        for spec, item, at in found:
            unknown = [p for p in spec.programs if p not in names]
            if not unknown:
                continue
            problem = (f"programs: {unknown[0]!r} is not a program of this file; the programs "
                       f"are: {', '.join(names)}")
            if item is None:  # a line of the URL file: named by its file and line
                raise self.error(None, None, f"{spec.source}: {problem}")
            if ":" in spec.source:  # a line of a url-file: the item, and the file's line
                problem = f"{problem} (on {spec.source})"
            raise self.error(item, at, problem)

    def program(self, i: int, node, settings: Settings, where: dict, default_give_up: str,
                several: bool) -> tuple:
        at = f"programs[{i}]"
        keys = self.mapping(node, at, PROGRAM_KEYS + PROGRAM_OPTIONS)
        if "name" not in keys:
            raise self.error(node, f"{at}.name", "missing; give the program a name, e.g. "
                             "name: web")
        name = self.scalar(keys["name"][1], f"{at}.name", "a name")
        if not NAME_RE.match(name) or len(name) > NAME_MAX:
            raise self.error(keys["name"][1], f"{at}.name", f"{name!r} is not a valid name; "
                             f"use lowercase letters, digits, '-', '_' or '.', starting with a "
                             f"letter and ending with a letter or digit, at most {NAME_MAX} "
                             "characters (e.g. web, db-1)")
        if name in RESERVED_NAMES or _is_signal(name):
            raise self.error(keys["name"][1], f"{at}.name", f"{name!r} cannot name a program: "
                             "the control commands (signal NAME SIG, limit NAME SIZE, status "
                             "NAME FORMAT) read it as a signal or a keyword; choose another "
                             "name (e.g. web, worker)")
        options = {f: getattr(settings, f) for f in PROGRAM_FIELDS}
        origin = {f: where.get(f) for f in PROGRAM_FIELDS}
        for key in PROGRAM_OPTIONS:
            if key in keys:
                knode, vnode = keys[key]
                for f, v in self.option(key, vnode, f"{at}.{key}").items():
                    options[f] = v
                    origin[f] = (knode, f"{at}.{key}")
        if options["restart_delay_seconds"] > options["restart_max_delay_seconds"]:
            knode, key = origin["restart_delay_seconds"] or origin[
                "restart_max_delay_seconds"] or (node, at)
            raise self.error(knode, key, f"restart-delay {options['restart_delay_seconds']:g}s "
                             "is longer than restart-max-delay "
                             f"{options['restart_max_delay_seconds']:g}s, which caps every "
                             "back-off; raise restart-max-delay or lower restart-delay")
        if several and options["measure"] in CGROUP_MEASURES:
            knode, key = origin["measure"] or (None, "--measure")
            raise self.error(knode, key, f"measure {options['measure']} measures the "
                             "container's cgroup, which every program shares, so it cannot "
                             "be one program's; use rss, pss or uss")
        if options.get("pre_kill_hook"):
            timeout = options["pre_kill_hook_timeout_seconds"]
            timeout = min(5.0, options["grace_period_seconds"] / 2) if timeout is None else timeout
            if timeout >= options["grace_period_seconds"]:
                knode, key = (origin["pre_kill_hook_timeout_seconds"]
                              or origin["grace_period_seconds"] or (node, at))
                raise self.error(knode, key, f"pre-kill-hook-timeout {timeout:g}s is not "
                                 "shorter than grace-period "
                                 f"{options['grace_period_seconds']:g}s; the workload would "
                                 "get no time to stop. Lower the timeout or raise grace-period")
        env = self.env(keys, at)
        cwd = self.cwd(keys, at)
        command = self.command(keys, at, node, env, cwd)
        user, uid, gid, groups = self.user(keys, at)
        main = None
        if "main" in keys:
            main = self.boolean(keys["main"][1], f"{at}.main")
        give_up = default_give_up
        if "on-give-up" in keys:
            give_up = self.choice(keys["on-give-up"][1], f"{at}.on-give-up", ON_GIVE_UP)
        depends = self.names(keys["depends-on"][1], f"{at}.depends-on") \
            if "depends-on" in keys else []
        spec = ProgramSpec(name=name, command=command, env=env, cwd=cwd, user=user, uid=uid,
                           gid=gid, groups=groups, main=bool(main),
                           depends_on=tuple(d for d, _ in depends), on_give_up=give_up,
                           options=tuple(sorted(options.items())), line=_line(node))
        return spec, keys, main, depends, at

    def env(self, keys: dict, at: str) -> tuple[tuple[str, str | None], ...]:
        if "env" not in keys:
            return ()
        node = keys["env"][1]
        if self._is_null(node):
            return ()
        if node.id != "mapping":
            raise self.error(node, f"{at}.env", "expected a mapping of variables, e.g. "
                             "env: {LOG_LEVEL: debug}")
        out: dict[str, str | None] = {}
        for knode, vnode in node.value:
            key = self.scalar(knode, f"{at}.env", "a variable name")
            dotted = f"{at}.env.{key}"
            if not key or "=" in key or "\0" in key:
                raise self.error(knode, dotted, "not a variable name (empty, or holds '=')")
            if key in out:
                raise self.error(knode, dotted, "given twice; keep one")
            if self.is_scalar(vnode) and self._is_null(vnode):
                out[key] = None  # removes the variable
            elif self.is_scalar(vnode):
                out[key] = vnode.value  # numbers and booleans as written
                if "\0" in vnode.value:
                    raise self.error(vnode, dotted, "holds a NUL character")
            else:
                raise self.error(vnode, dotted, f"needs a string, a number, a boolean or "
                                 f"null (to remove it), found {self.text(vnode)!r}")
        return tuple(sorted(out.items()))

    def cwd(self, keys: dict, at: str) -> str | None:
        if "cwd" not in keys:
            return None
        node = keys["cwd"][1]
        value = self.scalar(node, f"{at}.cwd", "a directory")
        path = os.path.normpath(self.relative(value))
        if not os.path.isdir(path):
            why = "is not a directory" if os.path.exists(path) else "does not exist"
            raise self.error(node, f"{at}.cwd", f"{value!r} {why}; give an existing "
                             "directory, or leave cwd out")
        return path

    def command(self, keys: dict, at: str, node, env, cwd) -> tuple[str, ...]:
        key = f"{at}.command"
        if "command" not in keys:
            raise self.error(node, key, "missing; give the program's command, e.g. "
                             "command: [python3, app.py]")
        cnode = keys["command"][1]
        if cnode.id == "sequence":
            words = [self.scalar(w, key, "a word") for w in cnode.value]
        else:
            import shlex

            text = self.scalar(cnode, key, "a command")
            try:
                words = shlex.split(text)
            except ValueError as exc:
                raise self.error(cnode, key, f"cannot split {text!r}: {exc}; write it as a "
                                 "list, e.g. [sh, -c, 'echo hi']") from None
        if not words or words[0] == "":
            raise self.error(cnode, key, "empty; give the program to run, e.g. "
                             "command: [python3, app.py]")
        problem = _not_runnable(words[0], _apply_env(env, os.environ).get("PATH", os.defpath),
                                cwd)
        if problem:
            raise self.error(cnode, key, problem)
        return tuple(words)

    def user(self, keys: dict, at: str) -> tuple[str | None, int | None, int | None,
                                                 tuple[int, ...]]:
        if "user" not in keys:
            return None, None, None, ()
        import grp
        import pwd

        node = keys["user"][1]
        key = f"{at}.user"
        written = self.scalar(node, key, "a user (name, uid, name:group or uid:gid)")
        name, sep, group = written.partition(":")
        entry = None
        try:
            entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        except KeyError:
            if not name.isdigit():
                raise self.error(node, key, f"no user named {name!r} here (not in the "
                                 "image's /etc/passwd); give an existing user or a uid") \
                    from None
        uid = int(name) if name.isdigit() else entry.pw_uid  # type: ignore[union-attr]
        if sep:
            try:
                gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
            except KeyError:
                raise self.error(node, key, f"no group named {group!r} here (not in the "
                                 "image's /etc/group); give an existing group or a gid") \
                    from None
        elif entry is not None:
            gid = entry.pw_gid
        else:
            raise self.error(node, key, f"uid {uid} has no /etc/passwd entry, so its group "
                             f"is unknown; give it, e.g. user: {uid}:{uid}")
        groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, gid)))) if entry \
            else (gid,)
        if os.geteuid() != 0:
            own = uid == os.geteuid() and (gid == os.getegid() or gid in os.getgroups())
            if not own:
                raise self.error(node, key, f"Sentinel runs as uid {os.geteuid()}, not "
                                 "root, so it cannot run a program as another user; run "
                                 "Sentinel as root or leave user out")
        return written, uid, gid, groups

    def check_programs(self, raw: list[tuple]) -> tuple[ProgramSpec, ...]:
        by_name: dict[str, tuple] = {}
        for item in raw:
            spec, keys, _, _, at = item
            if spec.name in by_name:
                raise self.error(keys["name"][1], f"{at}.name", f"{spec.name!r} is already "
                                 f"the name of the program on line {by_name[spec.name][0].line}"
                                 "; give each program its own name")
            by_name[spec.name] = item
        mains = [item for item in raw if item[2]]
        if len(mains) > 1:
            spec, keys, _, _, at = mains[1]
            raise self.error(keys["main"][1], f"{at}.main", f"{mains[0][0].name!r} is "
                             "already the main program (its exit ends the container); "
                             "mark only one main: true")
        if mains:
            main_name = mains[0][0].name
        else:
            candidates = [item for item in raw if item[2] is None]
            if not candidates:
                spec, keys, _, _, at = raw[0]
                raise self.error(keys["main"][1], f"{at}.main", "every program says main: "
                                 "false; one must be the main (its exit ends the container)")
            main_name = candidates[0][0].name
        for spec, keys, _, depends, at in raw:
            for dep, dnode in depends:
                if dep not in by_name:
                    raise self.error(dnode, f"{at}.depends-on", f"no program named {dep!r}; "
                                     "the programs are: " + ", ".join(by_name))
            if spec.name == main_name and "on-give-up" in keys \
                    and spec.on_give_up != "exit":
                raise self.error(keys["on-give-up"][1], f"{at}.on-give-up", "the main "
                                 "program's exit always ends the container; on-give-up: "
                                 "continue is for the other programs")
        order: list[str] = []
        state: dict[str, str] = {}

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == "done":
                return
            if state.get(name) == "visiting":
                cycle = path[path.index(name):] + [name]
                spec, keys, _, _, at = by_name[path[-1]]
                raise self.error(keys["depends-on"][1], f"{at}.depends-on", "a dependency "
                                 f"cycle: {' -> '.join(cycle)}; remove one of these "
                                 "depends-on")
            state[name] = "visiting"
            for dep in by_name[name][0].depends_on:
                visit(dep, path + [name])
            state[name] = "done"
            order.append(name)

        for spec, *_ in raw:
            visit(spec.name, [])
        specs = []
        for name in order:
            spec = by_name[name][0]
            is_main = name == main_name
            specs.append(dataclasses.replace(spec, main=is_main,
                                             on_give_up="exit" if is_main else spec.on_give_up))
        return tuple(specs)


def _apply_env(env: tuple[tuple[str, str | None], ...], base: Mapping[str, str]
               ) -> dict[str, str]:
    out = dict(base)
    for key, value in env:
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def _not_runnable(name: str, path: str, cwd: str | None) -> str:
    """Why ``name`` could not be started by spawn (as ``sentinel.core.spawn._spawn_error``
    words it), looked up in ``path`` (the program's PATH) from ``cwd``; "" when it can.
    Nothing has started yet, so these are exit 2, not 126/127."""
    import shutil

    base = cwd or os.getcwd()
    if "/" in name:
        found = os.path.join(base, name)
        if not os.path.exists(found):
            return f"cannot run {name!r}: no such file (from {base}); check the command"
    else:
        # A relative PATH entry is taken from the program's cwd, as exec would.
        dirs = [os.path.join(base, d) for d in path.split(os.pathsep)]
        found = shutil.which(name, path=os.pathsep.join(dirs))
        if found is None:
            return (f"cannot run {name!r}: not found in PATH; check the command, or the "
                    f"program's env PATH (PATH={path})")
    if os.path.isdir(found):
        return f"cannot run {name!r}: it is a directory; name the program inside it"
    if not os.access(found, os.X_OK):
        return (f"cannot run {name!r}: it is not executable (permission denied); chmod +x "
                "it or run it through its interpreter")
    return ""


def _problem(exc: UsageError, key: str, flag: str | None = None) -> str:
    """The command line's message without its "source: " prefix (the key says where)."""
    text = str(exc)
    for prefix in (f"{key}: ", f"{flag}: " if flag else None):
        if prefix and text.startswith(prefix):
            return text[len(prefix):]
    return text
