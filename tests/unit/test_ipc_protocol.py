"""The control-socket protocol without a socket: framing (``Session``), the
dispatcher against a real ``Guardian`` that has no workload, access policy,
text rendering, and the documented error-code table."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import signal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.control import protocol, verbs
from sentinel.control import server as ipc
from sentinel.control.client import status_rows, status_text
from sentinel.config.settings import Settings
from sentinel.core.guardian import Guardian
from sentinel.control.protocol import ERROR_CODES, MAX_LINE_BYTES, Peer, Session
from sentinel.control.server import AccessPolicy
from sentinel.control.verbs import Dispatcher

DOC = Path(__file__).resolve().parents[2] / "docs" / "control-socket.md"


@pytest.fixture(scope="module")
def guardian():
    """A real Guardian with no workload: every command runs, none can signal anything."""
    loop = asyncio.new_event_loop()
    g = Guardian(Settings(command=("true",), max_rss_bytes=200 * 2**20), None, set(),
                 loop=loop, version="9.9.9")
    yield g
    g.close()
    loop.close()


@pytest.fixture
def fresh(guardian):
    """The module's guardian, reset to the limit and enforcement it started with."""
    guardian.state.limit_bytes = 200 * 2**20
    guardian.state.enforcing = True
    return guardian


def reply_of(guardian, line: bytes) -> dict:
    r = Dispatcher(guardian).handle(line)
    assert r.data.endswith(b"\n") and r.data.count(b"\n") == 1
    obj = json.loads(r.data)
    assert obj["ok"] is r.ok
    return obj


def code_of(guardian, line: bytes) -> str:
    obj = reply_of(guardian, line)
    assert obj["ok"] is False, obj
    assert set(obj["error"]) == {"code", "message"} and obj["error"]["message"]
    return obj["error"]["code"]


# ------------------------------------------------------------------ commands

def test_status_reply_has_numbers_with_units(fresh):
    obj = reply_of(fresh, b"status")
    assert obj["ok"] is True and obj["command"] == "status"
    s = obj["status"]
    assert s["protocol"] == 1 and s["version"] == "9.9.9" and s["sentinel_pid"] == os.getpid()
    assert s["limit_bytes"] == 200 * 2**20 and s["measure"] == "rss"
    assert s["phase"] == "starting" and s["enforcing"] is True
    assert s["main_pid"] is None and s["pids"] == [] and s["memory"] is None
    assert s["headroom_bytes"] is None and s["kills_total"] == 0 and s["last_kill"] is None
    assert isinstance(s["uptime_seconds"], float) and s["grace_period_seconds"] == 3.0
    assert s["command"] == ["true"]


@pytest.mark.parametrize("line,code", [
    (b"", "empty_command"),
    (b" \t  ", "empty_command"),
    (b"\xff\xfestatus", "bad_encoding"),
    (b"stat\xc3", "bad_encoding"),
    (b"sta\x00tus", "bad_character"),
    (b"status\x1b[2J", "bad_character"),
    (b"status\rx", "bad_character"),
    (b"bogus", "unknown_command"),
    (b"\xc3\xa9tat", "unknown_command"),
    (b"stop now", "bad_argument"),
    (b"signal", "bad_argument"),
    (b"signal FOO", "bad_argument"),
    (b"signal 0", "bad_argument"),
    (b"signal TERM HUP", "bad_argument"),
    (b"limit 12parsecs", "bad_argument"),
    (b"limit 0", "bad_argument"),
    (b"limit -5Mi", "bad_argument"),
    (b"limit 1 2", "bad_argument"),
    (b"status yaml", "bad_argument"),
    (b"help me", "bad_argument"),
    (b"stop", "invalid_state"),
    (b"kill", "invalid_state"),
    (b"signal TERM", "invalid_state"),
])
def test_errors_have_their_code(fresh, line, code):
    assert code_of(fresh, line) == code


def test_unknown_command_names_the_commands(fresh):
    msg = reply_of(fresh, b"frobnicate")["error"]["message"]
    assert "'frobnicate'" in msg and "status" in msg and "help" in msg


def test_guardian_refusal_message_reaches_the_client(fresh):
    assert reply_of(fresh, b"stop")["error"]["message"] == "no workload is running"


def test_verbs_are_case_insensitive_and_whitespace_tolerant(fresh):
    assert reply_of(fresh, b"  STATUS  ")["command"] == "status"
    assert reply_of(fresh, b"Limit\t100Mi")["limit_bytes"] == 100 * 2**20


def test_limit_show_set_remove(fresh):
    assert reply_of(fresh, b"limit") == {
        "ok": True, "command": "limit", "limit_bytes": 200 * 2**20, "measure": "rss",
        "message": "limit 200.0 MiB on rss"}
    assert reply_of(fresh, b"limit 1.5Gi")["limit_bytes"] == 1610612736
    assert fresh.state.limit_bytes == 1610612736
    assert reply_of(fresh, b"limit 512MB")["limit_bytes"] == 512 * 10**6
    obj = reply_of(fresh, b"limit none")
    assert obj["limit_bytes"] is None and fresh.state.limit_bytes is None
    assert reply_of(fresh, b"limit")["message"] == "no limit (watching only)"


def test_pause_resume_flip_enforcing(fresh):
    assert reply_of(fresh, b"pause")["enforcing"] is False
    assert fresh.state.enforcing is False
    assert reply_of(fresh, b"status")["status"]["enforcing"] is False
    assert reply_of(fresh, b"pause")["message"] == "enforcement already paused"
    assert reply_of(fresh, b"resume")["enforcing"] is True
    assert fresh.state.enforcing is True


def test_help_lists_every_verb(fresh):
    obj = reply_of(fresh, b"help")
    assert [c["name"] for c in obj["commands"]] == list(verbs.VERBS)
    assert obj["protocol"] == protocol.PROTOCOL_VERSION


def test_status_text_is_lines_then_one_empty_line(fresh):
    fresh.state.command = ("python", "-c", "print('a\n\nb')")  # newlines must not end it early
    try:
        r = Dispatcher(fresh).handle(b"status text")
    finally:
        fresh.state.command = ("true",)
    assert r.ok and r.data.endswith(b"\n\n") and r.data.count(b"\n\n") == 1
    text = r.data.decode()
    assert not text.startswith("{")
    assert re.search(r"^phase +starting$", text, re.M)
    assert re.search(r"^limit +200\.0 MiB on rss$", text, re.M)
    assert "\\n\\nb" in text


def test_status_dashboard_form_for_top(fresh):
    obj = reply_of(fresh, b"status dashboard")
    assert obj["status"]["phase"] == "starting"
    assert obj["dashboard"]["limit_bytes"] == 200 * 2**20
    assert isinstance(obj["dashboard"]["events"], list)


def test_internal_errors_become_a_reply(fresh, monkeypatch):
    def broken(guardian, args, socket_info):
        raise RuntimeError("boom")

    monkeypatch.setitem(verbs.VERBS, "help", dataclasses.replace(verbs.VERBS["help"],
                                                                  handler=broken))
    obj = reply_of(fresh, b"help")
    assert obj["error"]["code"] == "internal" and "Traceback" not in obj["error"]["message"]


# ------------------------------------------------------------------ framing

def drain(session: Session) -> list:
    out = []
    while (r := session.next_reply()) is not None:
        out.append(r)
    return out


def test_lines_split_across_reads_and_crlf(fresh):
    s = Session(Dispatcher(fresh))
    s.receive(b"sta")
    assert drain(s) == [] and s.partial
    s.receive(b"tus\r\nhel")
    (r,) = drain(s)
    assert json.loads(r.data)["command"] == "status" and s.partial
    s.receive(b"p\nlimit\n")
    assert [json.loads(r.data)["command"] for r in drain(s)] == ["help", "limit"]
    assert not s.partial and not s.done


def test_line_of_exactly_the_limit_is_answered(fresh):
    s = Session(Dispatcher(fresh))
    s.receive(b"x" * MAX_LINE_BYTES + b"\nhelp\n")
    first, second = drain(s)
    assert json.loads(first.data)["error"]["code"] == "unknown_command" and not first.close
    assert json.loads(second.data)["ok"] is True


@pytest.mark.parametrize("data", [b"x" * (MAX_LINE_BYTES + 1),
                                  b"x" * (MAX_LINE_BYTES + 1) + b"\n",
                                  b"status\n" + b"y" * 10000])
def test_longer_line_closes(fresh, data):
    s = Session(Dispatcher(fresh))
    s.receive(data)
    replies = drain(s)
    last = replies[-1]
    assert json.loads(last.data)["error"]["code"] == "line_too_long" and last.close
    assert s.closed and s.done and s.next_reply() is None
    s.receive(b"status\n")
    assert drain(s) == []


def test_end_of_input_answers_the_last_unterminated_line(fresh):
    s = Session(Dispatcher(fresh))
    s.receive(b"help\nstatus")
    assert len(drain(s)) == 1 and not s.done
    s.end()
    (r,) = drain(s)
    assert json.loads(r.data)["command"] == "status" and s.done


# ------------------------------------------------------------------ property

VOCAB = [b"status", b"status text", b"stop", b"kill", b"signal", b"limit", b"pause", b"resume",
         b"help", b"HELP", b"signal HUP", b"signal 99", b"limit 1Gi", b"limit none",
         b"limit 1e9", b"\x00", b"\xff", b"\r", b"\t", b" ", b"\n", b"\xe2\x80\xa8"]
chunk = st.one_of(st.binary(max_size=600), st.sampled_from(VOCAB),
                  st.binary(min_size=MAX_LINE_BYTES - 2, max_size=MAX_LINE_BYTES + 3))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.data_too_large])
@given(chunks=st.lists(chunk, max_size=12), end=st.booleans())
def test_any_bytes_give_a_well_formed_reply_or_a_close(guardian, chunks, end):
    """Whatever arrives, in whatever pieces: never an exception; each reply is one JSON
    object with a documented code (or the status text block); a close comes only with
    line_too_long, and nothing after it."""
    session = Session(Dispatcher(guardian), Peer(1, 0, 0))
    replies = []
    for data in chunks:
        session.receive(data)
        replies += drain(session)
    if end:
        session.end()
        replies += drain(session)
        assert session.done
    lines_sent = b"".join(chunks).count(b"\n") + (1 if end else 0)
    assert len(replies) <= lines_sent + 1
    for i, r in enumerate(replies):
        if r.data.startswith(b"{"):
            assert r.data.endswith(b"\n") and r.data.count(b"\n") == 1
            obj = json.loads(r.data)
            assert isinstance(obj, dict) and obj["ok"] is r.ok
            if not r.ok:
                assert obj["error"]["code"] in ERROR_CODES and obj["error"]["message"]
            assert r.close == (not r.ok and obj["error"]["code"] == "line_too_long")
        else:
            assert r.ok and not r.close and r.data.endswith(b"\n\n")
            assert r.data.count(b"\n\n") == 1
        if r.close:
            assert i == len(replies) - 1 and session.closed
    guardian.state.limit_bytes = 200 * 2**20
    guardian.state.enforcing = True


# ------------------------------------------------------------------ access

def test_access_policy():
    me = 1000
    policy = AccessPolicy(me)
    assert policy.allows(Peer(0, 0, 0))  # root
    assert policy.allows(Peer(0, me, 4242))  # same user
    assert not policy.allows(Peer(0, 65534, 65534))
    grouped = AccessPolicy(me, gid=4242, group="ops")
    assert grouped.allows(Peer(0, 65534, 4242))  # primary group
    assert not grouped.allows(Peer(0, 65534, 65534))
    # Supplementary groups come from /proc/<pid>/status of the peer.
    own = ipc._process_groups(os.getpid())
    assert own is not None
    if own:
        assert AccessPolicy(me, gid=sorted(own)[0], group="x").allows(
            Peer(os.getpid(), 65534, 65534))
    assert "group 'ops'" in grouped.describe()


def test_resolve_group():
    assert ipc.resolve_group("0") == 0
    assert ipc.resolve_group("root") == 0
    with pytest.raises(ValueError, match="no group named"):
        ipc.resolve_group("no-such-group-here")


# ------------------------------------------------------------------ docs and rendering

def test_error_code_table_in_docs_matches_the_code():
    section = DOC.read_text().split("## Error codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \| (.+) \|$", section, re.M)
    assert [code for code, _ in rows] == list(ERROR_CODES)
    closing = {code for code, text in rows if "*closes*" in text}
    assert closing == {c for c, text in ERROR_CODES.items() if "(then closes)" in text}


def test_every_verb_is_documented():
    doc = DOC.read_text()
    for verb in verbs.VERBS:
        assert f"| `{verb}" in doc, verb


def test_status_rows_are_single_lines_and_show_units():
    status = {
        "version": "1", "sentinel_pid": 7, "pid1": True, "mode": "run", "phase": "terminating",
        "enforcing": False, "workload": "app", "main_pid": 8, "pids": [8, 9],
        "command": ["sh", "-c", "echo 'x\ny'"], "measure": "rss",
        "memory": {"measure_bytes": 300 * 2**20, "rss_bytes": 300 * 2**20,
                   "sample_age_seconds": 0.05, "pss_bytes": 5 * 2**20},
        "limit_bytes": 200 * 2**20, "headroom_bytes": -100 * 2**20, "uptime_seconds": 3725.0,
        "kills_total": 1, "kills": [{"reason": "memory_limit", "signal": "SIGTERM", "count": 1}],
        "restarts": 0, "current_kill": {"reason": "memory_limit", "started": 100.0,
                                        "signals": ["SIGTERM"], "measure": "rss",
                                        "value_bytes": 300 * 2**20, "limit_bytes": 200 * 2**20,
                                        "reaction_seconds": 0.0042},
        "grace_remaining_seconds": 2.5, "components": {"socket": "listening"},
    }
    rows = dict(status_rows(status, now=110.0))
    assert all("\n" not in text for text in rows.values())
    assert rows["phase"] == "terminating (enforcement PAUSED: the limit is not applied)"
    assert rows["headroom"] == "-100.0 MiB (over the limit)"
    assert rows["uptime"] == "1h 2m 5s"
    assert rows["figures"] == "rss 300.0 MiB, pss 5.0 MiB"
    assert "reaction 4.2 ms" in rows["stopping"] and "SIGKILL in 2.5s" in rows["stopping"]
    assert rows["workload"] == "app, pid 8 (2 processes: 8, 9)"
    assert "\\n" in rows["command"]
    assert status_text(status, now=110.0).count("\n") == len(rows) - 1


def test_signal_numbers_are_sent_as_numbers_by_the_cli_helpers():
    from sentinel.control.client import limit_command, signal_command

    assert signal_command("usr1") == f"signal {int(signal.SIGUSR1)}"
    assert signal_command("36") == "signal 36"  # real-time signals have no name
    assert limit_command("1.5Gi") == "limit 1610612736"
    assert limit_command("None") == "limit none" and limit_command(None) == "limit"
    with pytest.raises(ValueError, match="^limit: 'x' is not a size"):
        limit_command("x")
    with pytest.raises(ValueError, match="below the 64k floor"):  # before anything is sent
        limit_command("512")


def test_tunables_come_from_the_settings():
    from sentinel.config.settings import parse_settings

    s = parse_settings("run", ["--socket-max-clients", "3", "--", "app"],
                       {"SENTINEL_SOCKET_IDLE_TIMEOUT": "250ms"})
    assert ipc._tunables(s) == {"idle_timeout": 0.25, "max_clients": 3}
    assert ipc._tunables(parse_settings("run", ["--", "app"], {})) == {}


def test_status_shows_every_figure_the_cgroup_and_the_kernels_side():
    from types import SimpleNamespace

    from sentinel.control.verbs import status_dict
    from sentinel.core.state import GuardianState, MemorySample

    MiB = 2**20
    st = GuardianState(mode="run", workload="app", command=("app",), measure="working-set",
                       limit_bytes=460 * MiB, grace_period_seconds=3.0, interval_seconds=0.1,
                       version="t", phase="running", main_pid=8)
    st.last_sample = MemorySample(
        at_mono=0.0, measure_bytes=250 * MiB, rss_bytes=160 * MiB,
        processes=((8, 160 * MiB),), duration_seconds=0.0001,
        cgroup_memory_current_bytes=300 * MiB, cgroup_memory_max_bytes=512 * MiB,
        cgroup_memory_high_bytes=500 * MiB, cgroup_working_set_bytes=250 * MiB,
        cgroup_inactive_file_bytes=50 * MiB, cgroup_oom_kills=2)
    st.cgroup = {"version": 2, "path": "/sys/fs/cgroup", "read_only": True}
    st.kills[("kernel_oom", "SIGKILL")] = 2
    st.wakeups = {"memory_events": 3}
    st.kernel_notes = {"oom_score_adj": "cannot lower Sentinel's oom_score_adj: EACCES"}
    status = json.loads(json.dumps(status_dict(SimpleNamespace(state=st, probe=None))))
    assert status["memory"]["cgroup_memory_high_bytes"] == 500 * MiB
    assert status["memory"]["cgroup_oom_kills"] == 2
    assert status["cgroup"] == {"version": 2, "path": "/sys/fs/cgroup", "read_only": True,
                                "limit_bytes": 512 * MiB, "high_bytes": 500 * MiB}
    assert status["kernel_oom_kills"] == 2 and status["wakeups"] == {"memory_events": 3}
    rows = dict(status_rows(status))
    assert rows["figures"] == (
        "rss 160.0 MiB, cgroup memory current 300.0 MiB, cgroup memory max 512.0 MiB, "
        "cgroup memory high 500.0 MiB, cgroup inactive file 50.0 MiB, cgroup working set "
        "250.0 MiB, cgroup oom kills 2")
    assert rows["limit"] == "460.0 MiB on working-set"
    assert rows["cgroup"] == "v2 /sys/fs/cgroup (read-only), limit 512.0 MiB, high 500.0 MiB"
    assert rows["kernel OOM kills"] == "2"
    assert rows["wake-ups"] == "memory_events x3"
    assert rows["kernel oom_score_adj"] == "cannot lower Sentinel's oom_score_adj: EACCES"
    assert "kernel_oom SIGKILL x2" in rows["kills"]

    st.cgroup, st.kernel_notes = {}, {"cgroup": "no cgroup memory controller is visible"}
    rows = dict(status_rows(json.loads(json.dumps(
        status_dict(SimpleNamespace(state=st, probe=None))))))
    assert rows["cgroup"] == "none visible: no cgroup memory controller is visible"
    assert "kernel cgroup" not in rows
