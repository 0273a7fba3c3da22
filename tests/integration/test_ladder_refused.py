"""A process Sentinel may not signal (EPERM): Sentinel runs as an unprivileged user
(uid 65534) and its workload starts a setuid-root program that sets its real UID to
0, so kill(2) from Sentinel gives EPERM. Sentinel signals everything else, names
what it could not (PID and UID), never counts or reports a signal that reached no
process, and exits within the grace period plus a bound with an honest status."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sentinel.control.client import request
from sentinel.errors import EXIT_NOT_ENDED
from tests.conftest import LEAKER, PY, Running, proc_state, require, wait_until
from tests.integration.adopt import adopting, reap, reap_adopted

NOBODY = 65534
# The workload runs as nobody too: the venv's interpreter is not reachable for that
# user on every machine, the system's python3 is (the leaker needs only the stdlib).
SYSTEM_PY = "/usr/bin/python3"
GIVE_UP = 2.0  # guardian._REAP_GIVE_UP_SECONDS
SLACK = 2.0  # scheduling on a loaded 2-core machine


@pytest.fixture
def suid_setpriv():
    """A setuid-root copy of setpriv in a directory every user can read; removed after.
    Every process still running from it is killed (they run as root)."""
    require("setpriv", root=True)
    tmp = Path(tempfile.mkdtemp(prefix="sentinel-suid-"))
    tmp.chmod(0o755)
    helper = tmp / "setpriv"
    shutil.copy2(shutil.which("setpriv"), helper)
    os.chown(helper, 0, 0)
    helper.chmod(0o4755)
    try:
        with adopting():  # what a Sentinel leaves behind comes to the test, to be reaped
            yield str(helper)
            for pid in _root_sleeps():
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
                reap(pid)
            reap_adopted()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _root_sleeps() -> list[int]:
    """The live processes started by ``root_sleep`` (found by their argument)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd[:2] == [b"sleep", MARKER.encode()] and proc_state(int(entry)) != "Z":
                out.append(int(entry))
    return out


@pytest.fixture
def nobody_dir():
    """A directory uid 65534 may write (control socket, termination log)."""
    tmp = Path(tempfile.mkdtemp(prefix="sentinel-nobody-"))
    os.chown(tmp, NOBODY, NOBODY)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def start_as_nobody():
    started: list[Running] = []

    def start(args: list[str], *, pid1: bool) -> Running:
        argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                PY, "-m", "sentinel", "run", "--log-format", "json", "--k8s-events", "off",
                *args]
        r = Running(argv, pid1=pid1, env=None)
        started.append(r)
        return r

    yield start
    for r in started:
        r.kill_all()


MARKER = "60.5017"  # the root sleep's argument: how the fixture finds it afterwards


def root_sleep(helper: str) -> str:
    """Shell words for a process whose real UID is 0 (``sleep``, run by the setuid helper)."""
    return f"{helper} --reuid=0 --regid=0 --clear-groups sleep {MARKER}"


def events(s: Running, kind: str) -> list[dict]:
    return [rec for rec in s.logs() if rec.get("event") == kind]


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def test_memory_kill_signals_the_rest_names_the_refusing_pid_and_exits_in_bound(
        suid_setpriv, nobody_dir, start_as_nobody, mode):
    termlog = nobody_dir / "termination-log"
    workload = (f"{root_sleep(suid_setpriv)} & echo root-sleep-started; "
                f"exec {SYSTEM_PY} {LEAKER} --rate 100 --ignore-term")
    s = start_as_nobody(["--no-metrics", "--no-socket", "--max-rss", "60Mi",
                         "--grace-period", "1s", "--termination-log", str(termlog),
                         "--", "sh", "-c", workload], pid1=mode == "pid1")
    code = s.wait(30)
    ended = time.time()
    err = s.stderr()
    assert "Traceback" not in err and "internal error" not in err, err[-3000:]
    assert code == 137, err[-3000:]  # the workload's status: the leaker died of SIGKILL

    refused = events(s, "signal_refused")
    assert refused, err[-3000:]
    denied_pid = refused[0]["refused"][0]["pid"]
    assert refused[0]["refused"][0]["uid"] == 0
    assert f"pid {denied_pid} (uid 0)" in refused[0]["msg"]
    assert "permission denied" in refused[0]["msg"] and "Fix:" in refused[0]["msg"]
    if mode == "subreaper":  # a host PID: it really is a process with real UID 0
        assert uid_of(denied_pid) == 0

    sent = events(s, "signal_sent")
    assert [e["signal"] for e in sent] == ["SIGTERM", "SIGKILL"]
    for e in sent:  # what each signal reached never includes the refusing process
        assert e["pids"] and denied_pid not in e["pids"]
        assert [r["pid"] for r in e["refused"]] == [denied_pid]
    leaker_pid = sent[0]["pids"][0]

    finished = events(s, "kill_finished")
    assert len(finished) == 1
    kill = finished[0]["kill"]
    assert kill["signals"] == ["SIGTERM", "SIGKILL"]
    assert kill["reached"] == {"SIGTERM": [leaker_pid], "SIGKILL": [leaker_pid]}
    assert kill["refused"] == [{"pid": denied_pid, "uid": 0}]
    assert kill["confirmed"] is False and [p["pid"] for p in kill["survivors"]] == [denied_pid]
    assert kill["exit_code"] == 137
    assert "not confirmed" in finished[0]["msg"]
    assert f"refused by pid {denied_pid} (uid 0)" in finished[0]["msg"]

    # Bounded: SIGTERM -> grace (1 s) -> SIGKILL -> reaped; the refusing leftover is
    # not waited for (it refuses every signal).
    assert ended - kill["started"] <= 1.0 + SLACK, ended - kill["started"]

    text = termlog.read_text()
    assert f"SIGTERM reached PIDs {leaker_pid}." in text
    assert f"Refused (permission denied) by pid {denied_pid} (uid 0)." in text
    assert "Not confirmed" in text


def test_operator_stop_when_the_main_process_refuses_counts_no_kill_and_exits_71(
        suid_setpriv, nobody_dir, start_as_nobody):
    # The main process refuses (it is the setuid program's root sleep); a child that
    # left the process group (setsid) is Sentinel's to signal, so the grace period is
    # kept, and SIGTERM, which goes to the group, reaches no process at all.
    sock = nobody_dir / "s.sock"
    port = _free_port()
    workload = f"setsid sleep 61 & exec {root_sleep(suid_setpriv)}"
    s = start_as_nobody(["--socket", str(sock), "--metrics-port", str(port),
                         "--metrics-address", "127.0.0.1", "--grace-period", "2s", "--",
                         "sh", "-c", workload], pid1=False)
    wait_until(lambda: sock.exists() and _metrics(port) is not None, 15,
               what=lambda: s.stderr()[-2000:])
    main_pid = wait_until(lambda: events(s, "spawned"), 10, what="the spawned line")[0]["pid"]
    wait_until(lambda: _uid_or_none(main_pid) == 0, 10, what="the main process to be root")
    reply = request(str(sock), "stop", timeout=5.0)
    assert reply.get("ok"), reply
    assert reply["message"].startswith("SIGTERM reached no process: refused by pid "
                                       f"{main_pid} (uid 0)"), reply
    stopped = time.monotonic()

    # During the grace period: the refused SIGTERM is neither counted nor claimed.
    status = request(str(sock), "status", timeout=5.0)["status"]
    kill = status["current_kill"]
    assert kill["signals"] == [] and kill["reached"] == {}
    assert kill["refused"] == [{"pid": main_pid, "uid": 0}]
    assert _kills(_metrics(port)) == {("memory_limit", "SIGTERM"): 0.0,
                                      ("memory_limit", "SIGKILL"): 0.0,
                                      ("kernel_oom", "SIGKILL"): 0.0}  # nothing counted
    assert events(s, "signal_sent") == []

    code = s.wait(2.0 + GIVE_UP + SLACK + 5)
    took = time.monotonic() - stopped
    err = s.stderr()
    assert "Traceback" not in err and "internal error" not in err, err[-3000:]
    assert code == EXIT_NOT_ENDED, err[-3000:]
    assert took <= 2.0 + GIVE_UP + SLACK, took
    sent = events(s, "signal_sent")
    assert [e["signal"] for e in sent] == ["SIGKILL"]  # only the setsid sleep got it
    assert main_pid not in sent[0]["pids"] and len(sent[0]["pids"]) == 1
    finished = events(s, "kill_finished")[0]
    assert finished["kill"]["signals"] == ["SIGKILL"] and finished["kill"]["confirmed"] is False
    assert main_pid in [p["pid"] for p in finished["kill"]["survivors"]]
    assert "exit status unknown" in finished["msg"]
    assert f"exits with code {EXIT_NOT_ENDED}" in finished["msg"]
    assert uid_of(main_pid) == 0  # really still there: Sentinel did not claim it


def test_operator_kill_of_a_workload_that_refuses_everything_is_not_claimed(
        suid_setpriv, nobody_dir, start_as_nobody):
    sock = nobody_dir / "s.sock"
    s = start_as_nobody(["--socket", str(sock), "--no-metrics", "--grace-period", "30s", "--",
                         "sh", "-c", f"exec {root_sleep(suid_setpriv)}"], pid1=False)
    wait_until(lambda: sock.exists(), 15, what=lambda: s.stderr()[-2000:])
    main_pid = wait_until(lambda: events(s, "spawned"), 10, what="the spawned line")[0]["pid"]
    wait_until(lambda: _uid_or_none(main_pid) == 0, 10, what="the main process to be root")
    killed = time.monotonic()
    reply = request(str(sock), "kill", timeout=5.0)
    assert reply.get("ok") and reply["message"].startswith(
        f"SIGKILL reached no process: refused by pid {main_pid} (uid 0)"), reply
    assert s.wait(GIVE_UP + SLACK) == EXIT_NOT_ENDED  # nothing to wait for: at once
    assert time.monotonic() - killed <= SLACK
    assert events(s, "signal_sent") == []
    finished = events(s, "kill_finished")[0]
    assert finished["kill"]["signals"] == [] and finished["kill"]["confirmed"] is False
    assert "no signal reached it" in finished["msg"]
    assert uid_of(main_pid) == 0  # still running: Sentinel claimed nothing


def test_leftover_that_refuses_after_the_main_child_exits_is_named_and_not_waited_for(
        suid_setpriv, start_as_nobody):
    # Two leftovers: a root sleep that refuses, and one of Sentinel's own that ends at
    # its SIGTERM; once it has, only the refusing one is left: nothing to wait for.
    workload = f"{root_sleep(suid_setpriv)} & sleep 60 & sleep 0.5; exit 3"
    s = start_as_nobody(["--no-metrics", "--no-socket", "--grace-period", "5s", "--",
                         "sh", "-c", workload], pid1=False)
    started = time.monotonic()
    code = s.wait(20)
    err = s.stderr()
    assert "Traceback" not in err and "internal error" not in err, err[-3000:]
    assert code == 3, err[-3000:]  # the workload's own status
    assert time.monotonic() - started < 5.0  # the 5 s grace is not waited for
    refused = events(s, "signal_refused")
    assert refused and refused[0]["refused"][0]["uid"] == 0
    pid = refused[0]["refused"][0]["pid"]
    survivors = events(s, "survivors")
    assert survivors and f"pid {pid} (state S sleeping" in survivors[0]["msg"]
    assert "permission denied" in survivors[0]["msg"]
    assert uid_of(pid) == 0


def _free_port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


def _metrics(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return r.read().decode()
    except OSError:
        return None


def _kills(text: str | None) -> dict:
    """``sentinel_kills_total`` samples: (reason, signal) -> value."""
    assert text is not None, "no /metrics answer"
    return {(smp.labels["reason"], smp.labels["signal"]): smp.value
            for fam in text_string_to_metric_families(text) if fam.name == "sentinel_kills"
            for smp in fam.samples if smp.name == "sentinel_kills_total"}


def _uid_or_none(pid: int) -> int | None:
    try:
        return uid_of(pid)
    except OSError:
        return None

