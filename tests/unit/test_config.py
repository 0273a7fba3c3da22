"""The value grammars and the option table: accepted forms and refused inputs."""

import signal

import pytest

from sentinel.config import (
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


@pytest.mark.parametrize("text", ["10", "0.5", "512", "63999", "1k"])
def test_limits_below_the_floor_are_refused_as_missing_units(text):
    with pytest.raises(ValueError) as info:
        parse_limit(text)
    assert "missing unit" in str(info.value)


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


def test_relative_paths_are_resolved_before_sentinel_moves_to_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = parse_settings("run", ["--socket", "s.sock", "--kubeconfig", "a:b", "--", "app"], {})
    assert s.socket_path == str(tmp_path / "s.sock")
    assert s.kubeconfig == f"{tmp_path / 'a'}:{tmp_path / 'b'}"


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
