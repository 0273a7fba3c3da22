"""The value grammars and the option table: accepted forms and refused inputs."""

import signal

import pytest

from sentinel.config.settings import (
    parse_duration, parse_limit, parse_rewrite, parse_settings, parse_signal, parse_size, split_command,
)
from sentinel.errors import UsageError

SIZES = [
    ("1048576", 1048576), ("1", 1), ("64k", 64_000), ("64K", 64_000), ("64Ki", 65_536),
    ("64KiB", 65_536), ("200Mi", 200 * 2**20), ("200MiB", 200 * 2**20), ("1.5Gi", 1536 * 2**20),
    ("512M", 512_000_000), ("512MB", 512_000_000), ("1G", 10**9), ("1GB", 10**9),
    ("512m", 512 * 2**20), ("1g", 2**30), ("2Ti", 2 * 2**40), (" 10Mi ", 10 * 2**20),
    ("0.5Ki", 512), ("1.0001k", 1001),  # fractions round up, as Kubernetes does
]


@pytest.mark.parametrize("text,expected", SIZES)
def test_parse_size_accepts(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "0", "0Mi", "-1", "-5Mi", "abc", "10 Mo", "1e9", "inf",
                                  "nan", "Mi", "1.5.2Gi", "9999999999Pi", "10Mi10", "0x10",
                                  "1,5Gi"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError) as info:
        parse_size(text)
    assert "200Mi" in str(info.value)  # every refusal shows valid examples


@pytest.mark.parametrize("text,expected", [("3", 3.0), ("3s", 3.0), ("1.5s", 1.5),
                                           ("250ms", 0.25), ("2m", 120.0), ("0", 0.0),
                                           (".5", 0.5), ("100us", 1e-4)])
def test_parse_duration(text, expected):
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "-1", "3 sec", "abc", "1d", "99999999h"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("text,said", [
    ("10", "'10' is 10 bytes, below the 64k floor (a missing unit? e.g. 10Mi)"),
    ("0.5", "'0.5' is 1 byte, below the 64k floor (a missing unit? e.g. 0.5Mi)"),
    ("1", "'1' is 1 byte, below the 64k floor (a missing unit? e.g. 1Mi)"),
    ("512", "'512' is 512 bytes, below the 64k floor (a missing unit? e.g. 512Mi)"),
    ("63999", "'63999' is 63999 bytes, below the 64k floor (a missing unit? e.g. 63999Mi)"),
    ("512b", "'512b' is 512 bytes, below the 64k floor (a missing unit? e.g. 512Mi)"),
    # A unit was given: the hint puts Mi on the number, never "63kMi".
    ("63k", "'63k' is 63000 bytes, below the 64k floor (a limit that small kills any process "
            "at once; did you mean 63Mi?)"),
    ("1k", "'1k' is 1000 bytes, below the 64k floor (a limit that small kills any process at "
           "once; did you mean 1Mi?)"),
])
def test_limits_below_the_floor_are_refused_with_a_sensible_hint(text, said):
    with pytest.raises(ValueError) as info:
        parse_limit(text)
    assert str(info.value) == f"{said}; use e.g. 200Mi, 1.5Gi, 512M, 512MB, 1G, 64k or 1048576"


def test_limit_floor_keeps_the_documented_forms():
    assert parse_limit("64k") == 64_000 and parse_limit("200Mi") == 200 * 2**20


def test_signals_and_rewrite():
    assert parse_signal("TERM") == signal.SIGTERM
    assert parse_signal("sigusr1") == signal.SIGUSR1
    assert parse_signal("9") == 9
    assert parse_rewrite("TERM:QUIT") == (signal.SIGTERM, signal.SIGQUIT)
    assert parse_rewrite("HUP:0") == (signal.SIGHUP, 0)
    for bad in ("FOO", "0", "65"):
        with pytest.raises(ValueError):
            parse_signal(bad)
    for bad in ("TERM", "TERM:", ":QUIT", "KILL:TERM", "STOP:0", "CHLD:USR1", "TERM:FOO"):
        with pytest.raises(ValueError):
            parse_rewrite(bad)


def test_command_after_double_dash_is_untouched():
    opts, cmd = split_command(["--max-rss", "1Gi", "--", "app", "--max-rss", "--", "-h"])
    assert opts == ["--max-rss", "1Gi"]
    assert cmd == ["app", "--max-rss", "--", "-h"]
    opts, cmd = split_command(["--grace-period", "1s", "python", "-c", "x"])
    assert cmd == ["python", "-c", "x"]


def test_environment_variables_and_flag_precedence():
    env = {"SENTINEL_MAX_RSS": "100Mi", "SENTINEL_GRACE_PERIOD": "5s", "SENTINEL_SINGLE_CHILD": "1",
           "SENTINEL_REWRITE": "TERM:QUIT,HUP:0", "SENTINEL_METRICS_PORT": "0"}
    s = parse_settings("run", ["--max-rss", "1Gi", "--", "app"], env)
    assert s.max_rss_bytes == 2**30  # the flag wins
    assert s.grace_period_seconds == 5.0
    assert s.single_child is True
    assert dict(s.rewrite) == {signal.SIGTERM: signal.SIGQUIT, signal.SIGHUP: 0}
    assert s.metrics_port == 0
    assert s.workload_name == "app"


@pytest.mark.parametrize("argv,env,needle", [
    (["--", "app"], {"SENTINEL_MAX_RSS": "lots"}, "SENTINEL_MAX_RSS"),
    (["--max-rss", "-3Mi", "--", "app"], {}, "--max-rss"),
    (["--restart", "sometimes", "--", "app"], {}, "restart"),
    (["--bogus", "--", "app"], {}, "--bogus"),
    (["--max-rss", "1Gi"], {}, "no command"),
    (["--interval", "0", "--", "app"], {}, "--interval"),
    (["--", "app"], {"SENTINEL_SINGLE_CHILD": "maybe"}, "SENTINEL_SINGLE_CHILD"),
    (["--rewrite", "TERM:QUIT", "--rewrite", "TERM:HUP", "--", "app"], {}, "twice"),
    (["--", ""], {}, "empty string"),
    (["--max-rss", "512", "--", "app"], {}, "missing unit"),
])
def test_bad_settings_name_the_culprit(argv, env, needle):
    with pytest.raises(UsageError) as info:
        parse_settings("run", argv, env)
    assert needle in str(info.value)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("argv,needle", [
    (["--target-name", ""], "--target-name"),
    (["--target-cmdline", " "], "--target-cmdline"),
    (["--target-pid", "0"], "not a possible PID"),
    (["--target-pid", "99999999999"], "not a possible PID"),
    ([], "exactly one"),
    (["--target-name", "a", "--target-pid", "5"], "exactly one"),
    (["--target-cmdline", "("], "regular expression"),
])
def test_bad_watch_targets(argv, needle):
    with pytest.raises(UsageError) as info:
        parse_settings("watch", argv, {})
    assert needle in str(info.value)


def test_unknown_variable_is_named_with_a_suggestion(capsys):
    parse_settings("run", ["--", "app"], {"SENTINEL_MAXRSS": "10Mi", "SENTINEL_SOCKET": "/x"})
    err = capsys.readouterr().err
    assert err == ("sentinel: warning: SENTINEL_MAXRSS is not a Sentinel variable, ignored; "
                   "did you mean SENTINEL_MAX_RSS?\n")



@pytest.mark.parametrize("name", ["SENTINEL_FOO", "SENTINEL_BAR"])
def test_an_unknown_variable_resembling_nothing_gets_no_wild_guess(capsys, name):
    parse_settings("run", ["--", "app"], {name: "1"})
    assert capsys.readouterr().err == (f"sentinel: warning: {name} is not a Sentinel variable, "
                                       "ignored; see 'sentinel run --help'\n")


@pytest.mark.parametrize("mode,argv", [("run", ["--", "app"]), ("watch", ["--target-pid", "1"])])
@pytest.mark.parametrize("name", ["", " "])
def test_an_empty_workload_name_is_refused(mode, argv, name):
    # (An empty SENTINEL_WORKLOAD_NAME means unset, as for every variable.)
    with pytest.raises(UsageError) as info:
        parse_settings(mode, ["--workload-name", name, *argv], {})
    assert str(info.value).startswith("--workload-name: empty") and info.value.exit_code == 2


def test_relative_paths_are_resolved_before_sentinel_moves_to_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = parse_settings("run", ["--socket", "s.sock", "--kubeconfig", "a:b", "--", "app"], {})
    assert s.socket_path == str(tmp_path / "s.sock")
    assert s.kubeconfig == f"{tmp_path / 'a'}:{tmp_path / 'b'}"


# ------------------------------------------------------------------ issue 8: messages

@pytest.mark.parametrize("argv,env", [
    (["--max-rss", "none", "--", "app"], {}),
    (["--max-rss", "None", "--", "app"], {"SENTINEL_MAX_RSS": "1Gi"}),  # the flag wins
    (["--", "app"], {"SENTINEL_MAX_RSS": "none"}),
    (["--", "app"], {"SENTINEL_MAX_RSS": "unlimited"}),
])
def test_max_rss_none_means_no_limit(argv, env):
    assert parse_settings("run", argv, env).max_rss_bytes is None
    assert parse_settings("watch", ["--target-pid", "12345", *argv[:-2]], env).max_rss_bytes \
        is None


def test_a_bad_max_rss_still_names_none():
    with pytest.raises(UsageError) as info:
        parse_settings("run", ["--max-rss", "nope", "--", "app"], {})
    assert str(info.value).startswith("--max-rss: 'nope' is not a size; use e.g. 200Mi")
    assert str(info.value).endswith(", or none (watch only)")


@pytest.mark.parametrize("var,raw,said", [
    ("SENTINEL_SOCKET_IDLE_TIMEOUT", "soon", "'soon' is not a duration"),
    ("SENTINEL_SOCKET_LINE_TIMEOUT", "0", "'0' is not a positive duration"),
    ("SENTINEL_SOCKET_WRITE_TIMEOUT", "-1s", "'-1s' is not a duration"),
    ("SENTINEL_SOCKET_MAX_CLIENTS", "0", "'0' is not a whole number >= 1"),
    ("SENTINEL_SOCKET_MAX_CLIENTS", "many", "'many' is not a whole number >= 1"),
])
def test_bad_socket_variables_are_usage_errors_like_every_other(var, raw, said):
    for mode, argv in (("run", ["--", "app"]), ("watch", ["--target-pid", "12345"])):
        with pytest.raises(UsageError) as info:
            parse_settings(mode, argv, {var: raw})
        assert str(info.value).startswith(f"{var}: {said}")
        assert info.value.exit_code == 2 and "\n" not in str(info.value)


def test_socket_variables_and_flags_are_settings():
    s = parse_settings("run", ["--socket-max-clients", "4", "--", "app"],
                       {"SENTINEL_SOCKET_IDLE_TIMEOUT": "2s", "SENTINEL_SOCKET_MAX_CLIENTS": "9",
                        "SENTINEL_SOCKET_LINE_TIMEOUT": "250ms",
                        "SENTINEL_SOCKET_WRITE_TIMEOUT": "1m"})
    assert (s.socket_idle_timeout_seconds, s.socket_line_timeout_seconds,
            s.socket_write_timeout_seconds, s.socket_max_clients) == (2.0, 0.25, 60.0, 4)
    defaults = parse_settings("run", ["--", "app"], {})
    assert defaults.socket_idle_timeout_seconds is None and defaults.socket_max_clients is None


def _help(mode: str, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        parse_settings(mode, ["--help"], {})
    assert info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_help_lists_the_socket_variables(capsys):
    for mode in ("run", "watch"):
        text = _help(mode, capsys)
        for var in ("SENTINEL_SOCKET_IDLE_TIMEOUT", "SENTINEL_SOCKET_LINE_TIMEOUT",
                    "SENTINEL_SOCKET_WRITE_TIMEOUT", "SENTINEL_SOCKET_MAX_CLIENTS"):
            assert f"[${var}]" in text, (mode, var)


def test_watch_help_shows_only_what_applies_to_watch(capsys):
    run, watch = _help("run", capsys), _help("watch", capsys)
    for flag in ("--single-child", "--memory-kill-exit-code", "--success-exit-code",
                 "--restart", "--rewrite", "--pdeathsig", "--max-restarts"):
        assert flag in run and flag not in watch, flag
    for code in ("126 not executable", "127 not found", "137", "128+N"):
        assert code in run and code not in watch, code
    assert "Exit codes: 0 after SIGTERM or SIGINT (the target is left alone)" in watch
    assert "(default: the --target-* value)" in watch and "command's basename" not in watch
    assert "file for Sentinel's log while the dashboard is up" in watch
    assert "file for the workload's output" in run
    # Run-only variables are not read in watch mode either.
    s = parse_settings("watch", ["--target-pid", "12345"], {"SENTINEL_SINGLE_CHILD": "1"})
    assert s.single_child is False


@pytest.mark.parametrize("raw,address", [("[::1]", "::1"), ("::1", "::1"), (" [::] ", "::"),
                                         ("[fe80::1%lo]", "fe80::1%lo"),
                                         ("127.0.0.1", "127.0.0.1"), ("localhost", "localhost")])
def test_metrics_address_takes_the_bracketed_form_sentinel_prints(raw, address):
    assert parse_settings("run", ["--metrics-address", raw, "--", "app"], {}).metrics_address \
        == address


@pytest.mark.parametrize("raw,said", [
    ("[::1]:9000", "'[::1]:9000' holds a port; give the address alone (e.g. [::1]) and the "
                   "port with --metrics-port 9000"),
    ("[1.2.3.4]", "'[1.2.3.4]' is not a bracketed IPv6 address; use e.g. [::1], ::, 0.0.0.0 "
                  "or a host name"),
    ("[::1", "'[::1' is not a bracketed IPv6 address"),
])
def test_bad_bracketed_metrics_addresses(raw, said):
    with pytest.raises(UsageError) as info:
        parse_settings("run", ["--metrics-address", raw, "--", "app"], {})
    assert str(info.value).startswith(f"--metrics-address: {said}")


@pytest.mark.parametrize("argv,env,said", [
    (["--restart-delay", "1m"], {}, "--restart-delay 60s is longer than --restart-max-delay "
                                    "30s, which caps every back-off; raise --restart-max-delay "
                                    "(e.g. --restart-max-delay 120s) or lower --restart-delay"),
    (["--restart-max-delay", "500ms"], {}, "--restart-delay 1s is longer than "
                                           "--restart-max-delay 0.5s"),
    ([], {"SENTINEL_RESTART_DELAY": "10s", "SENTINEL_RESTART_MAX_DELAY": "5s"},
     "--restart-delay 10s is longer than --restart-max-delay 5s"),
])
def test_restart_delay_above_its_cap_is_refused(argv, env, said):
    with pytest.raises(UsageError) as info:
        parse_settings("run", [*argv, "--restart", "always", "--", "app"], env)
    assert str(info.value).startswith(said)
    ok = parse_settings("run", ["--restart-delay", "30s", "--", "app"], {})
    assert ok.restart_delay_seconds == ok.restart_max_delay_seconds == 30.0
def test_state_dir_and_linger(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = parse_settings("run", ["--state-dir", "shared", "--linger", "2.5s", "--", "true"], {})
    assert s.state_dir == str(tmp_path / "shared")  # Sentinel moves to / after the spawn
    assert s.linger_seconds == 2.5
    s = parse_settings("run", ["--", "true"], {"SENTINEL_STATE_DIR": "/shared",
                                               "SENTINEL_LINGER": "0"})
    assert (s.state_dir, s.linger_seconds) == ("/shared", 0.0)
    s = parse_settings("run", ["--", "true"], {})
    assert (s.state_dir, s.linger_seconds) == (None, None)  # off; linger decided in a pod
    with pytest.raises(UsageError, match="--linger: '5 minutes' is not a duration"):
        parse_settings("run", ["--linger", "5 minutes", "--", "true"], {})
    with pytest.raises(UsageError, match="unrecognized arguments: --linger"):
        parse_settings("watch", ["--linger", "1s", "--target-pid", "1"], {})


# -- --max-rss auto, --measure working-set, --cgroup-root (issue 9) ---------------
@pytest.mark.parametrize("argv, env, share", [
    (["--max-rss", "auto"], {}, 0.90),
    (["--max-rss", "auto:85%"], {}, 0.85),
    (["--max-rss", "AUTO:100%"], {}, 1.0),
    (["--max-rss", "auto:1%"], {}, 0.01),
    (["--max-rss", " auto: 87.5% "], {}, 0.875),
    ([], {"SENTINEL_MAX_RSS": "auto:85%"}, 0.85),
    (["--max-rss", "auto"], {"SENTINEL_MAX_RSS": "1Gi"}, 0.90),  # the flag wins
])
def test_max_rss_auto_is_a_share_with_no_size_until_resolved(argv, env, share):
    s = parse_settings("run", [*argv, "--", "app"], env)
    assert s.limit_auto_share == pytest.approx(share)
    assert s.max_rss_bytes is None


def test_a_size_leaves_no_auto_share():
    s = parse_settings("run", ["--max-rss", "1Gi", "--", "app"], {"SENTINEL_MAX_RSS": "auto"})
    assert (s.max_rss_bytes, s.limit_auto_share) == (2**30, None)


@pytest.mark.parametrize("raw, said", [
    ("auto:0%", "the share must be 1-100 %"), ("auto:0.85", "is not auto or auto:N%"),
    ("auto:85", "is not auto or auto:N%"), ("auto:0.5%", "the share must be 1-100 %"),
    ("auto:101%", "the share must be 1-100 %"), ("auto:", "is not auto or auto:N%"),
    ("auto:85%%", "is not auto or auto:N%"), ("automatic", "is not auto or auto:N%"),
    ("auto:-5%", "is not auto or auto:N%"),
])
def test_bad_auto_shares_are_one_line(raw, said):
    for argv, env, name in ((["--max-rss", raw], {}, "--max-rss"),
                            ([], {"SENTINEL_MAX_RSS": raw}, "SENTINEL_MAX_RSS")):
        with pytest.raises(UsageError) as info:
            parse_settings("run", [*argv, "--", "app"], env)
        assert str(info.value).startswith(f"{name}: {raw!r}") and said in str(info.value)
        assert "\n" not in str(info.value) and "e.g. auto:85%" in str(info.value)


@pytest.mark.parametrize("measure", ["rss", "pss", "uss", "working-set", "cgroup"])
def test_measures_by_flag_and_variable(measure):
    assert parse_settings("run", ["--measure", measure, "--", "app"], {}).measure == measure
    assert parse_settings("run", ["--", "app"], {"SENTINEL_MEASURE": measure}).measure == measure


def test_a_bad_measure_lists_working_set():
    with pytest.raises(UsageError, match="'ws' is not one of rss, pss, uss, working-set, cgroup"):
        parse_settings("run", ["--", "app"], {"SENTINEL_MEASURE": "ws"})


def test_cgroup_root_by_flag_and_variable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_settings("run", ["--cgroup-root", "cg", "--", "app"], {}).cgroup_root == \
        str(tmp_path / "cg")
    assert parse_settings("watch", ["--target-pid", "12345"],
                          {"SENTINEL_CGROUP_ROOT": "/host/cgroup"}).cgroup_root == "/host/cgroup"
    assert parse_settings("run", ["--", "app"], {}).cgroup_root is None
    with pytest.raises(UsageError, match="--cgroup-root: empty path"):
        parse_settings("run", ["--cgroup-root", " ", "--", "app"], {})
