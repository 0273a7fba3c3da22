"""The programs file of ``sentinel run --config``: every refusal with its line and key,
a full file's values, precedence (command line > environment > file > defaults),
``diff``, and the real CLI refusing a bad file before anything starts."""

from __future__ import annotations

import grp
import os
import pwd
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

from sentinel.config.programs import PROGRAM_OPTIONS, ProgramSpec, diff, load_config
from sentinel.config.settings import OPTIONS, Settings, parse_settings
from sentinel.errors import ConfigError, UsageError
from tests.conftest import PY, REPO, SENTINEL, clean_env


def load(tmp_path: Path, text: str, argv: tuple[str, ...] = (), env: dict | None = None,
         name: str = "sentinel.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    explicit: set[str] = set()
    cli = parse_settings("run", ["--config", str(path), *argv], env or {}, explicit=explicit)
    return load_config(cli.config_path, cli, frozenset(explicit))


def refused(tmp_path: Path, text: str, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, **kw)
    err = info.value
    assert "\n" not in str(err) and err.exit_code == 2
    assert str(err).startswith(str(tmp_path / "sentinel.yaml"))
    return err


OK = "command: [true]"  # a program that exists

# (yaml, line, key, what the message says)
REFUSALS = [
    ("programs:\n  - name: web\n   command: [true]\n", 3, None,
     "column 4: not valid YAML"),
    ("", None, None, "the file is empty"),
    (f"version: 2\nprograms: [{{name: a, {OK}}}]\n", 1, "version",
     "'2' is not a version this Sentinel reads; use version: 1"),
    (f"program:\n  - {{name: a, {OK}}}\n", 1, "program", "unknown key; did you mean programs?"),
    ("settings: {}\n", 1, "programs", "missing"),
    ("programs: []\n", 1, "programs", "needs a list of programs"),
    (f"settings:\n  metrics-port: 8001\n  metrics-port: 8002\nprograms: [{{name: a, {OK}}}]\n",
     3, "settings.metrics-port", "given twice (first on line 2); keep one"),
    (f"settings:\n  metrics-port: abc\nprograms: [{{name: a, {OK}}}]\n", 2,
     "settings.metrics-port", "'abc' is not a port (0-65535; 0 turns metrics off)"),
    (f"settings:\n  workload-name: x\nprograms: [{{name: a, {OK}}}]\n", 2,
     "settings.workload-name", "not allowed in the file: each program's name is its workload"),
    (f"settings:\n  config: x.yaml\nprograms: [{{name: a, {OK}}}]\n", 2, "settings.config",
     "not allowed in the file"),
    (f"settings:\n  target-pid: 1\nprograms: [{{name: a, {OK}}}]\n", 2, "settings.target-pid",
     "not allowed in the file: a watch-mode option"),
    (f"settings:\n  output: fancy\nprograms: [{{name: a, {OK}}}]\n", 2, "settings.output",
     "'fancy' is not one of prefixed, plain"),
    (f"settings:\n  rewrite: [TERM:QUIT, TERM:INT]\nprograms: [{{name: a, {OK}}}]\n", 2,
     "settings.rewrite", "SIGTERM is rewritten twice"),
    (f"settings:\n  command: [true]\nprograms: [{{name: a, {OK}}}]\n", 2, "settings.command",
     "a program's key, not a setting; put it in a program under programs:"),
    (f"programs:\n  - name: a\n    {OK}\n    grace-period: {{a: 1}}\n", 4,
     "programs[0].grace-period", "needs a value, found a mapping"),
    (f"programs:\n  - name: a\n    {OK}\n    max-rss:\n", 4, "programs[0].max-rss",
     "needs a value, found nothing"),
    ("programs:\n  - web\n", 2, "programs[0]", "expected a mapping (key: value), found 'web'"),
    (f"programs:\n  - name: a\n    {OK}\n    max_rss: 200Mi\n", 4, "programs[0].max_rss",
     "unknown key; did you mean max-rss?"),
    (f"programs:\n  - name: a\n    {OK}\n    metrics-port: 8001\n", 4,
     "programs[0].metrics-port", "a global setting, not a program's; put it under settings:"),
    (f"programs:\n  - name: a\n    {OK}\n  - name: b\n    {OK}\n    max-rss: 20 0Mi\n", 6,
     "programs[1].max-rss", "'20 0Mi' is not a size; use e.g. 200Mi"),
    (f"programs:\n  - name: a\n    {OK}\n    restart: sometimes\n", 4, "programs[0].restart",
     "'sometimes' is not one of never, on-failure, always"),
    (f"programs:\n  - name: a\n    {OK}\n    interval: 2m\n", 4, "programs[0].interval",
     "120s is out of range; use 1ms to 60s"),
    (f"programs:\n  - name: a\n    {OK}\n    success-exit-code:\n      - 0\n      - 300\n", 6,
     "programs[0].success-exit-code", "'300' is not an exit code (0-255)"),
    (f"programs:\n  - name: a\n    {OK}\n    stop-signal: SIGFOO\n", 4,
     "programs[0].stop-signal", "'SIGFOO' is not a signal name"),
    (f"programs:\n  - name: a\n    {OK}\n    restart-delay: 1m\n", 4,
     "programs[0].restart-delay", "restart-delay 60s is longer than restart-max-delay 30s"),
    (f"programs:\n  - {OK}\n", 2, "programs[0].name", "missing; give the program a name"),
    (f"programs:\n  - name: Web\n    {OK}\n", 2, "programs[0].name", "'Web' is not a valid name"),
    (f"programs:\n  - name: 1g\n    {OK}\n", 2, "programs[0].name", "'1g' is not a valid name"),
    (f"programs:\n  - name: term\n    {OK}\n", 2, "programs[0].name",
     "'term' cannot name a program: the control commands"),
    (f"programs:\n  - name: sigusr1\n    {OK}\n", 2, "programs[0].name",
     "'sigusr1' cannot name a program"),
    (f"programs:\n  - name: none\n    {OK}\n", 2, "programs[0].name",
     "'none' cannot name a program"),
    (f"programs:\n  - name: {'a' * 64}\n    {OK}\n", 2, "programs[0].name", "at most 63"),
    (f"programs:\n  - name: a\n    {OK}\n  - name: a\n    {OK}\n", 4, "programs[1].name",
     "'a' is already the name of the program on line 2"),
    (f"programs:\n  - name: a\n    {OK}\n    main: true\n  - name: b\n    {OK}\n    main: true\n",
     7, "programs[1].main", "'a' is already the main program"),
    (f"programs:\n  - name: a\n    {OK}\n    main: false\n", 4, "programs[0].main",
     "every program says main: false"),
    (f"programs:\n  - name: a\n    {OK}\n    main: maybe\n", 4, "programs[0].main",
     "'maybe' is not true or false"),
    (f"programs:\n  - name: a\n    {OK}\n    on-give-up: continue\n", 4,
     "programs[0].on-give-up", "the main program's exit always ends the container"),
    (f"programs:\n  - name: a\n    {OK}\n    depends-on: [b, c]\n  - name: b\n    {OK}\n", 4,
     "programs[0].depends-on", "no program named 'c'; the programs are: a, b"),
    (f"programs:\n  - name: a\n    {OK}\n    depends-on: [b]\n"
     f"  - name: b\n    {OK}\n    depends-on: [c]\n"
     f"  - name: c\n    {OK}\n    depends-on: [a]\n", 10, "programs[2].depends-on",
     "a dependency cycle: a -> b -> c -> a"),
    (f"programs:\n  - name: a\n    {OK}\n    depends-on: a\n", 4, "programs[0].depends-on",
     "a dependency cycle: a -> a"),
    ("programs:\n  - name: a\n    command: []\n", 3, "programs[0].command", "empty"),
    ("programs:\n  - name: a\n    command: ''\n", 3, "programs[0].command", "empty"),
    ("programs:\n  - name: a\n", 2, "programs[0].command", "missing"),
    ("programs:\n  - name: a\n    command: \"sh -c 'oops\"\n", 3, "programs[0].command",
     "cannot split"),
    ("programs:\n  - name: a\n    command: [no-such-program-here, x]\n", 3,
     "programs[0].command", "cannot run 'no-such-program-here': not found in PATH"),
    # The program's own PATH is the one searched, as spawn would.
    ("programs:\n  - name: a\n    command: [sh]\n    env: {PATH: /nonexistent}\n", 3,
     "programs[0].command", "not found in PATH; check the command, or the program's env "
     "PATH (PATH=/nonexistent)"),
    ("programs:\n  - name: a\n    command: [./run.sh]\n", 3, "programs[0].command",
     "cannot run './run.sh': no such file"),
    (f"programs:\n  - name: a\n    {OK}\n    cwd: /no/such/dir\n", 4, "programs[0].cwd",
     "'/no/such/dir' does not exist; give an existing directory"),
    (f"programs:\n  - name: a\n    {OK}\n    env:\n      A: [1, 2]\n", 5, "programs[0].env.A",
     "needs a string, a number, a boolean or null"),
    (f"programs:\n  - name: a\n    {OK}\n    user: no-such-user\n", 4, "programs[0].user",
     "no user named 'no-such-user' here"),
    (f"programs:\n  - name: a\n    {OK}\n    user: nobody:no-such-group\n", 4,
     "programs[0].user", "no group named 'no-such-group' here"),
    (f"programs:\n  - name: a\n    {OK}\n    user: '54321'\n", 4, "programs[0].user",
     "uid 54321 has no /etc/passwd entry, so its group is unknown; give it, e.g. user: "
     "54321:54321"),
    (f"programs:\n  - name: a\n    {OK}\n    measure: working-set\n  - name: b\n    {OK}\n", 4,
     "programs[0].measure", "measure working-set measures the container's cgroup, which every "
     "program shares, so it cannot be one program's; use rss, pss or uss"),
    (f"settings:\n  measure: cgroup\nprograms:\n  - {{name: a, {OK}}}\n  - {{name: b, {OK}}}\n",
     2, "settings.measure", "measure cgroup measures the container's cgroup"),
]


@pytest.mark.parametrize("text,line,key,said", REFUSALS,
                         ids=[f"{k or 'file'}-{i}" for i, (_, _, k, _) in enumerate(REFUSALS)])
def test_refused_with_line_and_key(tmp_path, text, line, key, said):
    err = refused(tmp_path, text)
    assert (err.line, err.key) == (line, key), str(err)
    assert said in err.problem, str(err)
    where = f"{tmp_path / 'sentinel.yaml'}" + (f":{line}" if line else "")
    assert str(err) == f"{where}: " + (f"{key}: " if key else "") + err.problem


def test_unreadable_file_names_path_and_errno(tmp_path):
    missing = tmp_path / "nope.yaml"
    cli = parse_settings("run", ["--config", str(missing)], {})
    with pytest.raises(ConfigError) as info:
        load_config(cli.config_path, cli, frozenset())
    assert str(info.value) == f"{missing}: cannot read the config file: No such file or " \
                              "directory"
    assert info.value.line is None


def test_not_executable_and_directory(tmp_path):
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    err = refused(tmp_path, f"programs:\n  - name: a\n    command: [./run.sh]\n"
                            f"    cwd: {tmp_path}\n")
    assert "cannot run './run.sh': it is not executable" in err.problem and err.line == 3
    err = refused(tmp_path, f"programs:\n  - name: a\n    command: [{tmp_path}]\n")
    assert "it is a directory" in err.problem
    script.chmod(0o755)  # and then it is fine, found from the program's cwd
    config = load(tmp_path, f"programs:\n  - name: a\n    command: [./run.sh]\n"
                            f"    cwd: {tmp_path}\n")
    assert config.programs[0].cwd == str(tmp_path)


def test_user_refused_when_not_root(tmp_path, monkeypatch):
    nobody = pwd.getpwnam("nobody")
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    err = refused(tmp_path, f"programs:\n  - name: a\n    {OK}\n    user: nobody\n")
    assert (err.line, err.key) == (4, "programs[0].user")
    assert "Sentinel runs as uid 4242, not root, so it cannot run a program as another " \
           "user" in err.problem
    # Sentinel's own user is fine.
    monkeypatch.setattr(os, "geteuid", lambda: nobody.pw_uid)
    monkeypatch.setattr(os, "getegid", lambda: nobody.pw_gid)
    config = load(tmp_path, f"programs:\n  - name: a\n    {OK}\n    user: nobody\n")
    assert config.programs[0].uid == nobody.pw_uid


def test_supplementary_groups_are_the_users(tmp_path, monkeypatch):
    # nobody has no supplementary group here: the group file is os.getgrouplist's.
    asked = []
    monkeypatch.setattr(os, "getgrouplist",
                        lambda name, gid: asked.append((name, gid)) or [gid, 4243, gid])
    config = load(tmp_path, f"programs:\n  - name: a\n    {OK}\n    user: nobody:nogroup\n")
    gid = grp.getgrnam("nogroup").gr_gid
    assert asked == [("nobody", gid)] and config.programs[0].groups == tuple(sorted({gid, 4243}))


def test_one_program_may_measure_the_cgroup(tmp_path):
    config = load(tmp_path, f"programs:\n  - name: a\n    {OK}\n    measure: working-set\n")
    assert dict(config.programs[0].options)["measure"] == "working-set"


FULL = """\
version: 1
settings:
  metrics-port: 8001
  socket: sock/sentinel.socket
  log-format: json
  grace-period: 5s
  max-rss: auto:80%
  on-give-up: continue
  no-early-sigkill: yes
programs:
  - name: web
    command: ["python3", "-c", "pass"]
    env: {LOG_LEVEL: debug, UNWANTED: null, N: 007, B: yes}
    cwd: CWD
    user: nobody
    depends-on: [db, cache]
    max-rss: 200Mi
    grace-period: 3s
    restart: on-failure
    success-exit-code: [0, 3]
    stop-signal: INT
  - name: cache
    command: sleep 100
    max-restarts: 0
    on-give-up: exit
  - name: db
    command: "sh -c 'exec sleep 100'"
    depends-on: cache
    main: true
    user: "nobody:nogroup"
    max-rss: none
"""


def test_full_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load(tmp_path, FULL.replace("CWD", str(tmp_path)))
    # Start order: dependencies first, then the file's order.
    assert [p.name for p in config.programs] == ["cache", "db", "web"]
    assert config.main == "db" and config.output == "prefixed"
    cache, db, web = config.programs
    assert (cache.main, db.main, web.main) == (False, True, False)
    assert web.command == ("python3", "-c", "pass")
    assert cache.command == ("sleep", "100") and db.command == ("sh", "-c", "exec sleep 100")
    assert web.env == (("B", "yes"), ("LOG_LEVEL", "debug"), ("N", "007"), ("UNWANTED", None))
    assert web.environ({"UNWANTED": "x", "HOME": "/h", "N": "1"}) == {
        "HOME": "/h", "N": "007", "B": "yes", "LOG_LEVEL": "debug"}
    assert web.cwd == str(tmp_path) and cache.cwd is None
    assert web.depends_on == ("db", "cache") and db.depends_on == ("cache",)
    assert (web.on_give_up, cache.on_give_up, db.on_give_up) == ("continue", "exit", "exit")
    assert web.line == 11 and cache.line == 22 and db.line == 26
    # As root: names resolved, supplementary groups from the group file.
    nobody, nogroup = pwd.getpwnam("nobody"), grp.getgrnam("nogroup")
    assert (web.user, web.uid, web.gid) == ("nobody", nobody.pw_uid, nobody.pw_gid)
    assert web.groups == tuple(sorted(set(os.getgrouplist("nobody", nobody.pw_gid))))
    assert (db.user, db.uid, db.gid) == ("nobody:nogroup", nobody.pw_uid, nogroup.gr_gid)
    assert cache.uid is None and cache.groups == ()
    # Program options: the program's own over settings: over the defaults.
    c, d, w = (dict(p.options) for p in config.programs)  # cache, db, web
    assert set(w) == {"max_rss_bytes", "limit_auto_share", "measure", "grace_period_seconds",
                      "restart", "restart_delay_seconds", "restart_max_delay_seconds",
                      "max_restarts", "success_exit_codes", "memory_kill_exit_code",
                      "single_child", "interval_seconds", "max_interval_seconds",
                      "stop_signal", "clamp_high", "no_early_sigkill",
                      "oom_score_adj_margin", "pre_kill_hook",
                      "pre_kill_hook_timeout_seconds", "dry_run"} | {
                      "warn_at_share", "leak_window_seconds", "leak_min_rate_bytes_per_second",
                      "predict_within_seconds"}
    assert (w["max_rss_bytes"], w["limit_auto_share"]) == (200 * 2**20, None)
    assert (c["max_rss_bytes"], c["limit_auto_share"]) == (None, 0.8)  # auto from settings:
    assert (d["max_rss_bytes"], d["limit_auto_share"]) == (None, None)  # none: watch only
    assert (w["grace_period_seconds"], c["grace_period_seconds"]) == (3.0, 5.0)
    assert w["stop_signal"] == signal.SIGINT and c["stop_signal"] == signal.SIGTERM
    assert w["success_exit_codes"] == frozenset({0, 3}) and w["restart"] == "on-failure"
    assert (w["max_restarts"], c["max_restarts"]) == (5, 0)  # 5 in a file, 0 as written
    assert w["no_early_sigkill"] is True
    # The global settings.
    s = config.settings
    assert (s.mode, s.command, s.metrics_port, s.log_format) == ("run", (), 8001, "json")
    assert s.socket_path == str(tmp_path / "sock" / "sentinel.socket")  # absolute
    assert s.config_path == str(tmp_path / "sentinel.yaml")
    # One program's Settings.
    ws = config.program_settings(web)
    assert (ws.command, ws.workload_name, ws.max_rss_bytes, ws.grace_period_seconds,
            ws.metrics_port) == (web.command, "web", 200 * 2**20, 3.0, 8001)
    cs = config.program_settings(cache)
    assert (cs.max_rss_bytes, cs.limit_auto_share) == (None, 0.8)


def test_relative_paths_are_the_files(tmp_path, monkeypatch):
    # As docker-compose: from the file's directory, not from where Sentinel runs (a
    # reload reads the file again after Sentinel has moved to /).
    (tmp_path / "conf" / "app").mkdir(parents=True)
    monkeypatch.chdir("/")
    config = load(tmp_path / "conf", """\
        settings: {socket: run/s.sock, state-dir: state, kubeconfig: "k1:/abs/k2",
                   termination-log: ""}
        programs: [{name: a, command: [true], cwd: app/../app}]
        """)
    conf = tmp_path / "conf"
    assert config.programs[0].cwd == str(conf / "app")
    s = config.settings
    assert (s.socket_path, s.state_dir, s.kubeconfig, s.termination_log) == (
        str(conf / "run" / "s.sock"), str(conf / "state"), f"{conf / 'k1'}:/abs/k2", None)


def test_scalars_are_read_as_written(tmp_path):
    # YAML 1.1 would make `off` a boolean and `0600` an octal int; the command line's
    # grammar reads the text as written.
    config = load(tmp_path, """\
        settings: {k8s-events: off, metrics-port: 8000, socket-mode: 0660, tui: on,
                   grace-period: 1.5, log-level: "debug"}
        programs: [{name: a, command: [true], single-child: yes, memory-kill-exit-code: 0}]
        """)
    s = config.settings
    assert (s.k8s_events, s.metrics_port, s.socket_mode, s.tui, s.grace_period_seconds,
            s.log_level) == ("off", 8000, 0o660, True, 1.5, "debug")
    a = dict(config.programs[0].options)
    assert (a["single_child"], a["memory_kill_exit_code"]) == (True, 0)


def test_program_options_are_run_options():
    names = {o.flags[0][2:] for o in OPTIONS if "run" in o.modes}
    assert set(PROGRAM_OPTIONS) <= names and len(set(PROGRAM_OPTIONS)) == len(PROGRAM_OPTIONS)


def test_defaults_one_program(tmp_path):
    config = load(tmp_path, f"programs:\n  - name: a\n    {OK}\n")
    (a,) = config.programs
    assert (config.main, config.output, a.main, a.on_give_up) == ("a", "plain", True, "exit")
    assert dict(a.options)["max_restarts"] == 5 and config.settings.max_restarts == 5
    two = load(tmp_path, f"programs:\n  - {{name: a, {OK}}}\n  - {{name: b, {OK}}}\n")
    assert two.main == "a" and two.output == "prefixed"  # the first program is the main
    assert two.programs[1].on_give_up == "exit"


def test_example_file_is_valid(tmp_path, monkeypatch):
    text = (REPO / "examples" / "sentinel.yaml").read_text()
    monkeypatch.chdir(tmp_path)
    for directory in ("/app", "/shared"):
        assert directory in text
        text = text.replace(directory, str(tmp_path))
    config = load(tmp_path, text)
    assert len(config.programs) >= 3 and config.output == "prefixed"


PRECEDENCE = """\
settings:
  grace-period: 5s
  metrics-port: 8001
  max-restarts: 2
  restart: always
programs:
  - name: a
    command: [true]
  - name: b
    command: [true]
    grace-period: 9s
"""


def test_precedence_command_line_environment_file_defaults(tmp_path):
    file_only = load(tmp_path, PRECEDENCE)
    assert (file_only.settings.grace_period_seconds, file_only.settings.metrics_port) == (5, 8001)
    env = {"SENTINEL_GRACE_PERIOD": "7s", "SENTINEL_METRICS_PORT": "8002"}
    by_env = load(tmp_path, PRECEDENCE, env=env)
    assert (by_env.settings.grace_period_seconds, by_env.settings.metrics_port) == (7, 8002)
    by_cli = load(tmp_path, PRECEDENCE, argv=("--grace-period", "2s", "--max-restarts", "0",
                                              "--no-metrics"), env=env)
    s = by_cli.settings
    assert (s.grace_period_seconds, s.metrics_port, s.max_restarts, s.restart) == \
        (2, 0, 0, "always")
    a, b = (dict(p.options) for p in by_cli.programs)
    assert (a["grace_period_seconds"], a["max_restarts"]) == (2, 0)
    assert b["grace_period_seconds"] == 9  # a program's own key wins for that program
    assert by_cli.program_settings(by_cli.programs[0]).grace_period_seconds == 2
    # Not given anywhere: the defaults (max-restarts 5 in a file).
    bare = load(tmp_path, "programs: [{name: a, command: [true]}]\n")
    assert (bare.settings.grace_period_seconds, bare.settings.metrics_port) == (3.0, 8000)


def test_diff(tmp_path):
    old = load(tmp_path, """\
        settings: {metrics-port: 8001, grace-period: 5s}
        programs:
          - {name: a, command: [true]}
          - {name: b, command: [sleep, "1"]}
          - {name: c, command: [true], max-rss: 100Mi}
        """)
    new = load(tmp_path, """\
        # a comment moves every line: a line is not a definition
        settings: {metrics-port: 8002, grace-period: 5s, log-format: json}
        programs:
          - {name: a, command: [true]}
          - {name: c, command: [true], max-rss: 200Mi}
          - {name: d, command: [true]}
        """, name="new.yaml")
    d = diff(old, new)
    assert (d.added, d.removed, d.changed, d.unchanged) == (("d",), ("b",), ("c",), ("a",))
    assert d.settings_changed == ("log-format", "metrics-port")
    assert old.programs[0] == new.programs[0] and old.programs[0].line != new.programs[0].line
    same = diff(old, old)
    assert same.unchanged == ("a", "b", "c") and same.settings_changed == ()
    # A default from settings: changes every program that takes it.
    moved = load(tmp_path, """\
        settings: {metrics-port: 8001, grace-period: 6s}
        programs:
          - {name: a, command: [true]}
          - {name: b, command: [sleep, "1"], grace-period: 5s}
          - {name: c, command: [true], max-rss: 100Mi}
        """, name="moved.yaml")
    assert diff(old, moved).changed == ("a", "c") and diff(old, moved).settings_changed == ()
    assert isinstance(old.programs[0], ProgramSpec)


def test_command_line_form():
    with pytest.raises(UsageError, match="give either --config FILE or a command after --, "
                                         "not both"):
        parse_settings("run", ["--config", "x.yaml", "--", "sleep", "1"], {})
    with pytest.raises(UsageError, match="give either --config"):
        parse_settings("run", ["--", "sleep", "1"], {"SENTINEL_CONFIG": "x.yaml"})
    with pytest.raises(UsageError, match="no command given"):
        parse_settings("run", [], {})
    with pytest.raises(UsageError, match="--workload-name: with --config"):
        parse_settings("run", ["--config", "x.yaml", "--workload-name", "w"], {})
    explicit: set[str] = set()
    s = parse_settings("run", ["--config", "x.yaml", "--max-rss", "1Gi"],
                       {"SENTINEL_GRACE_PERIOD": "1s", "SENTINEL_LOG_LEVEL": ""},
                       explicit=explicit)
    assert s.command == () and s.config_path == os.path.abspath("x.yaml")
    assert explicit == {"config_path", "max_rss_bytes", "grace_period_seconds"}
    assert parse_settings("run", [], {"SENTINEL_CONFIG": "/etc/s.yaml"}).config_path == \
        "/etc/s.yaml"


def test_stop_signal_option():
    assert parse_settings("run", ["--", "true"], {}).stop_signal == signal.SIGTERM
    assert parse_settings("run", ["--stop-signal", "INT", "--", "true"], {}).stop_signal == 2
    assert parse_settings("run", ["--", "true"], {"SENTINEL_STOP_SIGNAL": "QUIT"}
                          ).stop_signal == signal.SIGQUIT
    with pytest.raises(UsageError, match="--stop-signal: 'FOO' is not a signal name"):
        parse_settings("run", ["--stop-signal", "FOO", "--", "true"], {})
    assert Settings().stop_signal == signal.SIGTERM


def run_cli(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*SENTINEL, "run", *args], cwd=tmp_path, env=clean_env(env),
                          capture_output=True, text=True, timeout=30)


def test_cli_refuses_a_bad_file_before_anything_starts(tmp_path):
    marker = tmp_path / "started"
    (tmp_path / "bad.yaml").write_text(textwrap.dedent(f"""\
        programs:
          - name: first
            command: [touch, {marker}]
          - name: second
            command: [true]
            grace-period: soon
        """))
    for args, env in ((["--config", "bad.yaml", "--no-socket", "--no-metrics"], None),
                      (["--no-socket", "--no-metrics"], {"SENTINEL_CONFIG": "bad.yaml"})):
        r = run_cli(tmp_path, *args, env=env)
        assert r.returncode == 2, r.stderr
        assert r.stderr == (f"sentinel: error: {tmp_path / 'bad.yaml'}:6: "
                            "programs[1].grace-period: 'soon' is not a duration; use e.g. "
                            "3s, 250ms, 1.5 or 2m\n")
        assert r.stdout == "" and not marker.exists()
    r = run_cli(tmp_path, "--config", "missing.yaml")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr == (f"sentinel: error: {tmp_path / 'missing.yaml'}: cannot read the "
                        "config file: No such file or directory\n")
    r = run_cli(tmp_path, "--config", "bad.yaml", "--", "touch", str(marker))
    assert r.returncode == 2 and not marker.exists()
    assert r.stderr == ("sentinel: error: give either --config FILE or a command after --, "
                        "not both\n")


def test_yaml_is_imported_only_to_load_a_file():
    # The single-command path imports settings only; the programs module keeps PyYAML
    # inside load_config so that even importing it costs nothing.
    code = ("import sys; import sentinel.launch, sentinel.config.programs; "
            "print('yaml' in sys.modules)")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True,
                         env=clean_env(), cwd=REPO).stdout
    assert out.split() == ["False"]


def test_cli_check_config(tmp_path):
    marker = tmp_path / "started"
    (tmp_path / "ok.yaml").write_text(textwrap.dedent(f"""\
        programs:
          - name: web
            command: [touch, {marker}]
            depends-on: [db]
          - name: db
            command: sh -c 'exec true'
            on-give-up: continue
        """))
    r = run_cli(tmp_path, "--config", "ok.yaml", "--check-config")
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == (f"{tmp_path / 'ok.yaml'}: valid, 2 program(s) in start order, output "
                        "prefixed\n"
                        "  db: sh -c 'exec true' (on-give-up continue)\n"
                        f"  web: touch {marker} (main; after db)\n")
    assert not marker.exists()
    r = run_cli(tmp_path, "--check-config", "--", "touch", str(marker))
    assert r.returncode == 2 and not marker.exists()
    assert r.stderr == ("sentinel: error: --check-config: give the file to check, e.g. "
                        "sentinel run --config sentinel.yaml --check-config\n")


def test_a_relative_pre_kill_hook_is_the_files_and_is_checked_before_the_start(tmp_path):
    hook = tmp_path / "hook.sh"
    hook.write_text("#!/bin/sh\necho dump\n")
    hook.chmod(0o755)
    cfg = load(tmp_path, f"programs:\n  - name: a\n    {OK}\n    pre-kill-hook: ./hook.sh -v\n")
    assert cfg.program_settings(cfg.programs[0]).pre_kill_hook == (str(hook), "-v")
    err = refused(tmp_path, f"programs:\n  - name: a\n    {OK}\n    pre-kill-hook: ./nope.sh\n")
    assert (err.line, err.key) == (4, "programs[0].pre-kill-hook"), str(err)
    assert "no such file" in err.problem
    hook.chmod(0o644)
    err = refused(tmp_path, f"programs:\n  - name: a\n    {OK}\n    pre-kill-hook: ./hook.sh\n")
    assert "is not executable" in err.problem
    err = refused(tmp_path, f"programs:\n  - name: a\n    {OK}\n    pre-kill-hook: no-such-dumper\n")
    assert "not found in PATH" in err.problem


def test_a_missing_pre_kill_hook_on_the_command_line_is_exit_2(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "sentinel", "run", "--no-metrics", "--no-socket",
                          "--max-rss", "1Gi", "--pre-kill-hook", "./nope.sh", "--", "true"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert out.returncode == 2, out.stderr
    assert "nope.sh" in out.stderr and "no such file" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("what", ["/dev/zero", "fifo", "huge"])
def test_a_file_that_is_not_a_programs_file_is_refused_without_reading_it_all(tmp_path, what):
    if what == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)
    elif what == "huge":
        path = tmp_path / "huge.yaml"
        path.write_text("# " + "x" * (2 << 20) + "\n")
    else:
        path = Path(what)
    cli = parse_settings("run", ["--config", str(path)], {})
    with pytest.raises(ConfigError) as info:
        load_config(cli.config_path, cli, frozenset())
    assert ("not a regular file" if what != "huge" else "larger than 1024 KiB") in str(info.value)
