"""The common case of ``run``/``watch``'s options is read without argparse
(``parse_known_options``): what it reads is exactly what argparse reads, and whatever it
does not read (help, errors, values that start with ``-``) is left to argparse, whose
messages stay the only ones."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.config.settings import (
    OPTIONS, build_parser, parse_known_options, parse_settings, split_command,
)
from sentinel.errors import UsageError

# Every option of each mode, in both spellings, with a valid value.
VALUES = {"--measure": "pss", "--restart": "on-failure", "--log-format": "json",
          "--log-level": "debug", "--k8s-events": "off", "--rewrite": "TERM:QUIT",
          "--success-exit-code": "3", "--memory-kill-exit-code": "9", "--pdeathsig": "TERM",
          "--metrics-port": "9100", "--metrics-address": "::1", "--socket-mode": "0660",
          "--max-rss": "200Mi", "--target-pid": "4242", "--oom-score-adj-margin": "50",
          "--max-restarts": "2", "--socket-max-clients": "4", "--probe": "ebpf"}


def _every_option(mode: str, joined: bool) -> list[str]:
    words: list[str] = []
    for opt in OPTIONS:
        if mode not in opt.modes:
            continue
        flag = opt.flags[0]
        if opt.flag:
            words.append(flag)
        else:
            value = VALUES.get(flag, "3s" if opt.metavar == "DURATION" else "x")
            words += [f"{flag}={value}"] if joined else [flag, value]
    return words


def _argparse(mode: str, opts: list[str]) -> dict:
    ns = vars(build_parser(mode).parse_args(opts))
    return {k: v for k, v in ns.items() if v is not None}


READ = [
    [],
    ["--max-rss", "200Mi"],
    ["--max-rss=200Mi", "--grace-period", "5s", "--no-metrics", "--no-socket"],
    ["--max-rss", "1Gi", "--max-rss", "2Gi"],  # the last one wins, as in argparse
    ["--rewrite", "TERM:QUIT", "--rewrite=HUP:0", "--success-exit-code", "3"],  # append
    ["--workload-name", ""],  # an empty value is a value (refused later, by name)
    ["--workload-name", "a=b", "--socket=/tmp/x=y.sock"],  # '=' inside a value
    ["--measure", "working-set", "--log-format=json"],
]


@pytest.mark.parametrize("opts", READ + [_every_option("run", False),
                                         _every_option("run", True)])
def test_what_it_reads_is_what_argparse_reads_in_run(opts):
    assert parse_known_options("run", opts) == _argparse("run", opts)


@pytest.mark.parametrize("opts", [_every_option("watch", False), _every_option("watch", True),
                                  ["--target-name", "python", "--grace-period", "1s"]])
def test_what_it_reads_is_what_argparse_reads_in_watch(opts):
    assert parse_known_options("watch", opts) == _argparse("watch", opts)


LEFT_TO_ARGPARSE = [
    (["--help"], None),
    (["-h"], None),
    (["--max-rs", "200Mi"], "unrecognized arguments"),  # no abbreviations
    (["--max-rss"], "expected one argument"),
    (["--max-rss", "--no-metrics"], "expected one argument"),
    (["--oom-score-adj-margin", "-5"], None),  # argparse decides what "-5" is
    (["--no-metrics=1"], "ignored explicit argument"),
    (["--measure", "rsss"], "invalid choice"),
    (["--target-pid", "1"], "unrecognized arguments"),  # watch only
    (["stray"], "unrecognized arguments"),
]


@pytest.mark.parametrize("opts,message", LEFT_TO_ARGPARSE)
def test_what_it_does_not_read_is_left_to_argparse(opts, message):
    assert parse_known_options("run", opts) is None
    if message is not None:
        with pytest.raises(UsageError, match=message):
            build_parser("run").parse_args(opts)


@pytest.mark.parametrize("argv", [
    ["--max-rss", "200Mi", "--", "python3", "app.py", "--max-rss", "1"],
    ["--grace-period=2s", "--restart", "always", "sleep", "10"],  # no '--'
    ["--rewrite", "TERM:QUIT", "--rewrite", "HUP:0", "--no-socket", "--", "true"],
])
def test_settings_are_the_same_either_way(argv, monkeypatch):
    fast = parse_settings("run", argv, {})
    import sentinel.config.settings as s

    monkeypatch.setattr(s, "parse_known_options", lambda mode, opts: None)
    assert parse_settings("run", argv, {}) == fast
    opts, _ = split_command(argv)
    assert parse_known_options("run", opts) is not None  # it was the fast path above


def test_help_and_errors_still_come_from_argparse(capsys):
    with pytest.raises(SystemExit) as info:
        parse_settings("run", ["--help"], {})
    assert info.value.code == 0
    assert "--max-rss SIZE" in capsys.readouterr().out
    with pytest.raises(UsageError, match=r"argument --max-rss: expected one argument "
                                         r"\(see 'sentinel run --help'\)"):
        parse_settings("run", ["--max-rss", "--", "true"], {})


# Words a user might type: every flag of the table, values (plain, empty, with '=', a
# choice, one that starts with '-'), and strays (an abbreviation, -h, a short option).
_FLAGS = sorted({f for o in OPTIONS for f in o.flags})
_VALUES = ["200Mi", "", "a=b", "json", "rss", "pss", "-5", "-x", "--", "TERM:QUIT", "3s", "x y"]
_WORDS = st.one_of(
    st.sampled_from(_FLAGS),
    st.builds(lambda f, v: f"{f}={v}", st.sampled_from(_FLAGS), st.sampled_from(_VALUES)),
    st.sampled_from(_VALUES),
    st.sampled_from(["--max-rs", "-h", "--help", "-m", "--no-metrics=1", "--tui="]),
)


@settings(max_examples=400, deadline=None)
@given(mode=st.sampled_from(["run", "watch"]), opts=st.lists(_WORDS, max_size=6))
def test_it_never_reads_differently_from_argparse(mode, opts):
    fast = parse_known_options(mode, opts)
    try:
        slow = _argparse(mode, opts)
    except (UsageError, SystemExit):  # an error, or --help: argparse's alone
        assert fast is None
        return
    assert fast is None or fast == slow
