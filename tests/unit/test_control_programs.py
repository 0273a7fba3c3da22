"""The control socket, the CLI client and the dashboard with several programs.

A small host stands in for ``sentinel.core.group.Group`` (several programs from a
config file): real ``GuardianState`` objects, programs whose commands follow the
supervisor's own table of state x command (``sentinel.core.supervisor.check``) and
record each call, ``program(name)`` raising the real ``UnknownProgram``. Everything
goes through the real ``ControlServer`` on a real Unix socket (its loop in a thread,
as the guardian's loop runs it), the real client and the real CLI (``CliRunner``).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import threading
import time

import pytest
from typer.testing import CliRunner

from sentinel.cli import app
from sentinel.control.client import request, status_text
from sentinel.control.server import ControlServer
from sentinel.core import sampler
from sentinel.core.state import Event, GuardianState, MemorySample
from sentinel.core.supervisor import ProgramState, check
from sentinel.errors import StateError, UnknownProgram

MiB = 2**20


class Program:
    """One supervised program as the control socket sees a ``Supervisor``: ``state``,
    ``program_state``, ``settings`` and the command methods (each recorded in ``calls``;
    refused with a ``StateError`` where the supervisor's table refuses it)."""

    def __init__(self, name: str, *, pid: int | None, limit: int | None, value: int,
                 growth: float = 0.0, kills: int = 0, restarts: int = 0,
                 state: ProgramState = ProgramState.RUNNING) -> None:
        now = time.time()
        self.state = GuardianState(
            mode="run", workload=name, command=(name, "--serve"), measure="rss",
            limit_bytes=limit, grace_period_seconds=3.0, interval_seconds=0.1, version="",
            phase="running" if pid else "exited", main_pid=pid, started_wall=now - 60,
            program=name, restarts=restarts)
        if kills:
            self.state.kills[("memory_limit", "SIGTERM")] = kills
        # Two seconds of samples growing at ``growth`` bytes/s, the last one now.
        for i in range(21):
            t = now - 2.0 + i * 0.1
            self.state.history.append((t, int(value - growth * (2.0 - i * 0.1))))
        self.state.last_sample = MemorySample(
            at_mono=time.monotonic(), measure_bytes=value, rss_bytes=value,
            processes=((pid, value),) if pid else (), duration_seconds=0.0001)
        self.program_state = state
        self.settings = None
        self.calls: list[tuple] = []

    def _act(self, command: str, *args) -> None:
        check(command, self.program_state)
        self.calls.append((command, *args))

    def stop(self) -> str:
        self._act("stop")
        self.program_state = ProgramState.STOPPING
        return "SIGTERM sent; SIGKILL after the grace period"

    def kill(self) -> str:
        self._act("kill")
        return "SIGKILL sent"

    def send_signal(self, sig: int) -> str:
        self._act("signal", sig)
        return f"{signal.Signals(sig).name} sent"

    def set_limit(self, limit_bytes: int | None) -> str:
        self._act("limit", limit_bytes)
        self.state.limit_bytes = limit_bytes
        return "limit set"

    def pause(self) -> str:
        self._act("pause")
        self.state.enforcing = False
        return "enforcement paused"

    def resume(self) -> str:
        self._act("resume")
        self.state.enforcing = True
        return "enforcement resumed"


class Host:
    """Several programs under one Sentinel: the host interface of ``Group``."""

    multi = True

    def __init__(self, loop, programs: list[Program], main: str | None) -> None:
        self.loop = loop
        self.programs = programs
        self.main = main
        self.state = GuardianState(mode="run", workload="", command=(), measure="rss",
                                   limit_bytes=None, grace_period_seconds=3.0,
                                   interval_seconds=0.1, version="9.9.9", pid1=True)
        self.state.components["metrics"] = "serving on 127.0.0.1:8000"
        self.calls: list[tuple] = []
        self.listeners: list = []
        self.sample_listeners: list = []

    def program(self, name: str | None = None) -> Program:
        name = self.main if name is None else name
        for p in self.programs:
            if p.state.program == name:
                return p
        raise UnknownProgram(name, tuple(p.state.program for p in self.programs))

    def start_program(self, name: str) -> str:
        p = self.program(name)
        if p.program_state in (ProgramState.RUNNING, ProgramState.STOPPING):
            raise StateError(f"{name} is already running", state=p.program_state.value,
                             command="start")
        self.calls.append(("start", name))
        p.program_state = ProgramState.RUNNING
        return f"{name} started"

    def restart_program(self, name: str) -> str:
        self.program(name)
        self.calls.append(("restart", name))
        return f"{name}: SIGTERM sent; started again once it exits"

    def reload(self) -> str:
        self.calls.append(("reload",))
        return "config reloaded: 1 program changed (worker), 2 untouched"


@pytest.fixture
def served(tmp_path):
    """A three-program host behind a real control socket; its loop runs in a thread."""
    loop = asyncio.new_event_loop()
    web = Program("web", pid=101, limit=200 * MiB, value=150 * MiB, growth=10 * MiB,
                  restarts=1)
    worker = Program("worker", pid=102, limit=100 * MiB, value=40 * MiB, kills=2)
    shipper = Program("shipper", pid=None, limit=None, value=5 * MiB,
                      state=ProgramState.EXITED)
    host = Host(loop, [web, worker, shipper], main="web")
    path = str(tmp_path / "s.sock")
    server = ControlServer(host, path)
    server.start()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield host, path
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    server.close()
    loop.close()


def ask(path: str, line: str) -> dict:
    return request(path, line)


def refused(path: str, line: str) -> dict:
    reply = ask(path, line)
    assert reply["ok"] is False, reply
    return reply["error"]


def calls(host) -> dict:
    return {p.state.program: p.calls for p in host.programs if p.calls}


# ------------------------------------------------------------------ status


def test_status_lists_each_program_and_keeps_the_main_programs_keys_on_top(served):
    host, path = served
    s = ask(path, "status")["status"]
    assert [p["name"] for p in s["programs"]] == ["web", "worker", "shipper"]
    web, worker, shipper = s["programs"]
    assert (web["main"], worker["main"], shipper["main"]) == (True, False, False)
    assert (web["state"], worker["state"], shipper["state"]) == ("running", "running", "exited")
    assert (web["pid"], worker["pid"], shipper["pid"]) == (101, 102, None)
    assert worker["limit_bytes"] == 100 * MiB and worker["measure_bytes"] == 40 * MiB
    assert worker["memory"]["rss_bytes"] == 40 * MiB and shipper["memory"] is None
    assert (worker["kills_total"], web["restarts"]) == (2, 1)
    assert worker["kills"] == [{"reason": "memory_limit", "signal": "SIGTERM", "count": 2}]
    assert shipper["limit_bytes"] is None and shipper["enforcing"] is True
    assert web["sampling"] == {"failing": False, "failure": None, "failing_since": None}
    # The top level is the main program's, as with one program; Sentinel's parts once.
    assert (s["multi"], s["program"], s["workload"], s["main_pid"]) == (True, "web", "web", 101)
    assert s["limit_bytes"] == 200 * MiB and s["memory"]["rss_bytes"] == 150 * MiB
    assert s["restarts"] == 1 and s["kills_total"] == 0
    assert (s["version"], s["pid1"]) == ("9.9.9", True)
    assert s["components"]["metrics"] == "serving on 127.0.0.1:8000"
    assert s["socket"]["path"] == path
    assert not {"components", "version", "pid1", "socket"} & set(web)  # once, at the top


def test_status_name_gives_one_program(served):
    host, path = served
    s = ask(path, "status worker")["status"]
    assert [p["name"] for p in s["programs"]] == ["worker"]
    assert (s["program"], s["main_pid"], s["limit_bytes"]) == ("worker", 102, 100 * MiB)
    assert s["kills_total"] == 2 and s["version"] == "9.9.9"
    text = ask(path, "status worker text")["text"]
    assert re.search(r"^workload +worker, pid 102$", text, re.M)
    assert ask(path, "status worker dashboard")["dashboard"]["main_pid"] == 102
    error = refused(path, "status nosuch")
    assert error["code"] == "unknown_program"
    assert error["message"] == "no program named 'nosuch'; the programs are: web, worker, shipper"
    assert refused(path, "status text worker")["code"] == "bad_argument"


def test_status_text_ends_with_a_table_of_programs(served):
    host, path = served
    text = ask(path, "status text")["text"]
    lines = text.splitlines()
    assert "" not in lines  # the text form ends at its one empty line
    head = lines.index(next(line for line in lines if line.startswith("PROGRAM")))
    assert lines[head].split() == ["PROGRAM", "STATE", "PID", "MEMORY", "KILLS", "RESTARTS"]
    table = [line.split() for line in lines[head + 1:]]
    assert table == [
        ["web", "*", "running", "101", "rss", "150.0", "MiB", "/", "200.0", "MiB", "0", "1"],
        ["worker", "running", "102", "rss", "40.0", "MiB", "/", "100.0", "MiB", "2", "0"],
        ["shipper", "exited", "-", "rss", "-", "/", "no", "limit", "0", "0"]]
    assert re.search(r"^program +web \(the main program\); 3 listed below$", text, re.M)


# ------------------------------------------------------------------ commands


@pytest.mark.parametrize("line", ["stop", "kill", "signal TERM", "limit 300Mi", "limit none"])
def test_a_nameless_command_that_acts_is_refused_with_the_names(served, line):
    host, path = served
    error = refused(path, line)
    assert error["code"] == "bad_argument"
    assert "several programs run here" in error["message"]
    assert error["message"].endswith(": web, worker, shipper")
    assert calls(host) == {}


def test_stop_kill_signal_act_on_the_named_program_only(served):
    host, path = served
    reply = ask(path, "stop worker")
    assert reply == {"ok": True, "command": "stop", "program": "worker",
                     "message": "SIGTERM sent; SIGKILL after the grace period"}
    assert ask(path, "kill worker")["program"] == "worker"
    reply = ask(path, "signal web HUP")
    assert (reply["program"], reply["signal"], reply["message"]) == ("web", "SIGHUP",
                                                                    "SIGHUP sent")
    assert calls(host) == {"worker": [("stop",), ("kill",)], "web": [("signal", signal.SIGHUP)]}
    # The program's state refuses what does not fit it: invalid_state, named.
    error = refused(path, "stop worker")
    assert error == {"code": "invalid_state", "message": "the workload is already being stopped"}
    assert refused(path, "kill shipper")["code"] == "invalid_state"
    assert refused(path, "stop nosuch")["code"] == "unknown_program"
    assert calls(host) == {"worker": [("stop",), ("kill",)], "web": [("signal", signal.SIGHUP)]}


def test_signal_words_a_program_name_is_never_read_as_the_signal(served):
    host, path = served
    error = refused(path, "signal worker")
    assert error["code"] == "bad_argument" and "which signal to send to 'worker'" in \
        error["message"]
    assert refused(path, "signal worker FOO")["code"] == "bad_argument"
    error = refused(path, "signal nosuch TERM")
    assert error["code"] == "unknown_program" and "web, worker, shipper" in error["message"]
    assert ask(path, "signal worker 10")["signal"] == "SIGUSR1"
    assert calls(host) == {"worker": [("signal", signal.SIGUSR1)]}


def test_limit_shows_each_programs_and_sets_only_the_named_one(served):
    host, path = served
    shown = ask(path, "limit")
    assert shown["program"] == "web" and shown["limit_bytes"] == 200 * MiB
    assert shown["programs"] == [
        {"program": "web", "limit_bytes": 200 * MiB, "measure": "rss"},
        {"program": "worker", "limit_bytes": 100 * MiB, "measure": "rss"},
        {"program": "shipper", "limit_bytes": None, "measure": "rss"}]
    assert shown["message"] == ("web: limit 200.0 MiB on rss; worker: limit 100.0 MiB on rss; "
                                "shipper: no limit (watching only)")
    assert ask(path, "limit worker") == {"ok": True, "command": "limit", "program": "worker",
                                         "limit_bytes": 100 * MiB, "measure": "rss",
                                         "message": "limit 100.0 MiB on rss"}
    reply = ask(path, "limit worker 300Mi")
    assert (reply["program"], reply["limit_bytes"]) == ("worker", 300 * MiB)
    assert ask(path, "limit shipper none")["limit_bytes"] is None
    assert refused(path, "limit worker banana")["code"] == "bad_argument"
    assert refused(path, "limit nosuch 1Gi")["code"] == "unknown_program"
    assert calls(host) == {"worker": [("limit", 300 * MiB)], "shipper": [("limit", None)]}
    assert host.program("web").state.limit_bytes == 200 * MiB


def test_pause_and_resume_default_to_the_main_program(served):
    host, path = served
    reply = ask(path, "pause")
    assert (reply["program"], reply["enforcing"]) == ("web", False)
    assert ask(path, "pause worker")["program"] == "worker"
    assert ask(path, "resume")["program"] == "web"
    assert calls(host) == {"web": [("pause",), ("resume",)], "worker": [("pause",)]}
    assert host.program("worker").state.enforcing is False
    assert ask(path, "status")["status"]["programs"][1]["enforcing"] is False


def test_start_restart_reload_go_to_the_host(served):
    host, path = served
    assert ask(path, "start shipper") == {"ok": True, "command": "start", "program": "shipper",
                                          "message": "shipper started"}
    error = refused(path, "start web")
    assert error == {"code": "invalid_state", "message": "web is already running"}
    assert ask(path, "restart worker")["program"] == "worker"
    assert ask(path, "reload")["message"].startswith("config reloaded")
    assert refused(path, "start nosuch")["code"] == "unknown_program"
    assert refused(path, "restart")["code"] == "bad_argument"  # restart needs its NAME
    assert refused(path, "reload worker")["code"] == "bad_argument"
    assert host.calls == [("start", "shipper"), ("restart", "worker"), ("reload",)]


def test_help_lists_the_program_verbs():
    from sentinel.control.verbs import VERBS

    assert [VERBS[v].usage for v in ("stop", "signal", "limit", "start", "restart", "reload")] \
        == ["stop [NAME]", "signal [NAME] SIG", "limit [NAME] [SIZE|none]", "start NAME",
            "restart NAME", "reload"]


# ------------------------------------------------------------------ the CLI


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output
    return result


def test_cli_status_shows_a_table_of_programs(served):
    host, path = served
    out = cli("status", "--socket", path)
    assert out.exit_code == 0, out.output
    rows = out.output.splitlines()
    assert any(re.fullmatch(r"worker +running +102 +rss 40\.0 MiB / 100\.0 MiB +2 +0", r)
               for r in rows), out.output
    assert any(re.fullmatch(r"web \* +running +101 +rss 150\.0 MiB / 200\.0 MiB +0 +1", r)
               for r in rows), out.output
    reply = json.loads(cli("status", "worker", "--socket", path, "--json").output)
    assert [p["name"] for p in reply["status"]["programs"]] == ["worker"]


def test_cli_commands_take_the_program_and_exit_with_documented_codes(served):
    host, path = served
    out = cli("stop", "--socket", path)
    assert out.exit_code == 2 and "several programs run here" in out.output
    out = cli("stop", "nosuch", "--socket", path)
    assert out.exit_code == 3 and "no program named 'nosuch'" in out.output
    assert "[unknown_program]" in out.output
    out = cli("stop", "worker", "--socket", path)
    assert (out.exit_code, out.output) == (0, "SIGTERM sent; SIGKILL after the grace period\n")
    assert cli("stop", "worker", "--socket", path).exit_code == 1  # invalid_state
    assert cli("signal", "web", "usr2", "--socket", path).output == "SIGUSR2 sent\n"
    assert cli("limit", "worker", "300Mi", "--socket", path).exit_code == 0
    assert cli("pause", "worker", "--socket", path).output == "enforcement paused\n"
    assert cli("start", "shipper", "--socket", path).output == "shipper started\n"
    out = cli("start", "web", "--socket", path)
    assert out.exit_code == 1 and "web is already running [invalid_state]" in out.output
    assert cli("restart", "worker", "--socket", path).exit_code == 0
    assert cli("reload", "--socket", path).output.startswith("config reloaded")
    assert calls(host) == {"worker": [("stop",), ("limit", 300 * MiB), ("pause",)],
                           "web": [("signal", signal.SIGUSR2)]}
    assert host.calls == [("start", "shipper"), ("restart", "worker"), ("reload",)]


def test_cli_limit_two_sizes_is_a_usage_error_and_a_bad_size_is_caught_before_sending(served):
    host, path = served
    out = cli("limit", "worker", "12parsecs", "--socket", path)
    assert out.exit_code == 2 and "limit: '12parsecs' has an unknown unit" in out.output
    out = cli("limit", "1Gi", "2Gi", "--socket", path)
    assert out.exit_code == 2 and "unexpected extra argument" in out.output
    assert cli("signal", "worker", "FOO", "--socket", path).exit_code == 2
    assert calls(host) == {}


# ------------------------------------------------------------------ the dashboard


def test_the_dashboard_has_a_row_per_program_with_the_samplers_growth(served):
    from sentinel.control.snapshot import host_snapshot
    from sentinel.ui.dashboard import format_line, program_rows, render
    from rich.console import Console

    host, _ = served
    web = host.program("web")
    web.state.events.append(Event("limit_crossed", "rss above the limit", program="web"))
    host.state.events.append(Event("reloaded", "config reloaded", program=""))
    snap = host_snapshot(host)
    expected = sampler.growth_rate(sampler.recent_points(list(web.state.history),
                                                         time.time()))
    assert snap["programs"][0]["growth_bytes_per_second"] == pytest.approx(expected, rel=1e-3)
    assert expected == pytest.approx(10 * MiB, rel=0.01)
    assert snap["programs"][0]["seconds_to_limit"] == pytest.approx(5.0, rel=0.02)
    assert snap["seconds_to_limit"] == pytest.approx(5.0, rel=0.02)  # the panels: web
    rows = program_rows(snap)
    assert [r["name"] for r in rows] == ["web *", "worker", "shipper"]
    assert [r["to_limit"] for r in rows] == ["5.0s", "not growing", "n/a"]
    assert rows[0]["memory"] == "rss 150.0 MiB / 200.0 MiB" and rows[1]["kills"] == "2"
    assert [e["program"] for e in snap["events"]] == ["web", ""]

    console = Console(width=120, record=True, color_system=None)
    console.print(render(snap, width=120))
    text = console.export_text()
    assert "Programs (3; * main, shown below)" in text
    assert re.search(r"worker +running +102 +rss 40\.0 MiB / 100\.0 MiB .*2 +0", text), text
    assert re.search(r"limit_crossed +web: rss above the limit", text)
    assert re.search(r"reloaded +sentinel: config reloaded", text)
    assert "| web * running pid 101 rss 150.0 MiB / 200.0 MiB kills 0 restarts 1; worker" \
        in format_line(snap)


def test_status_text_of_one_program_has_no_program_table():
    from types import SimpleNamespace

    from sentinel.control.verbs import status_dict

    p = Program("app", pid=8, limit=200 * MiB, value=50 * MiB)
    text = status_text(status_dict(SimpleNamespace(state=p.state, probe=None)))
    assert "PROGRAM" not in text and not re.search(r"^program ", text, re.M)


# ------------------------------------------------------------------ one program


@pytest.fixture
def single(tmp_path):
    """A real Guardian (one program named 'app', no process) behind a real socket."""
    from sentinel.config.settings import parse_settings
    from sentinel.core.guardian import Guardian

    loop = asyncio.new_event_loop()
    g = Guardian(parse_settings("run", ["--max-rss", "200Mi", "--", "app"], {}), None, set(),
                 loop=loop, version="9.9.9")
    path = str(tmp_path / "g.sock")
    server = ControlServer(g, path)
    server.start()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield g, path
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    server.close()
    g.close()
    loop.close()


def test_one_program_is_listed_and_named_commands_take_its_name(single):
    g, path = single
    s = ask(path, "status")["status"]
    assert (s["multi"], s["program"]) == (False, "app")
    (entry,) = s["programs"]
    assert (entry["name"], entry["main"], entry["state"], entry["pid"]) == (
        "app", True, "starting", None)
    assert entry["limit_bytes"] == s["limit_bytes"] == 200 * MiB
    assert ask(path, "status app")["status"]["programs"] == [entry]
    # Replies keep their shape; the program's own name is accepted, another is bad usage.
    assert ask(path, "limit app 300Mi") == {"ok": True, "command": "limit",
                                            "limit_bytes": 300 * MiB, "measure": "rss",
                                            "message": "limit 300.0 MiB"}
    assert ask(path, "pause app") == {"ok": True, "command": "pause", "enforcing": False,
                                      "message": "enforcement paused"}
    assert refused(path, "stop app") == {"code": "invalid_state",
                                         "message": "no workload is running"}
    error = refused(path, "stop web")
    assert error["code"] == "bad_argument" and "no program named 'web'" in error["message"]
    assert refused(path, "status web")["code"] == "bad_argument"
    for line in ("start app", "restart app", "reload"):
        assert refused(path, line)["code"] == "invalid_state", line
    assert refused(path, "start web")["code"] == "bad_argument"
    assert ask(path, "limit") == {"ok": True, "command": "limit", "limit_bytes": 300 * MiB,
                                  "measure": "rss", "message": "limit 300.0 MiB on rss"}
    out = cli("reload", "--socket", path)
    assert out.exit_code == 1 and "needs a config file" in out.output


def test_without_a_main_program_status_shows_the_first_and_commands_need_a_name(served):
    host, path = served
    host.main = None  # a config whose programs are all auxiliary
    s = ask(path, "status")["status"]
    assert s["program"] == "web" and not any(p["main"] for p in s["programs"])
    error = refused(path, "pause")
    assert error["code"] == "bad_argument"
    assert error["message"] == ("pause: no main program; name one (pause [NAME]): web, "
                                "worker, shipper")
    assert ask(path, "pause shipper")["program"] == "shipper"


def test_on_a_terminal_rich_draws_the_programs_table(served):
    import os

    from sentinel.control.client import print_status_table

    host, path = served
    status = ask(path, "status")["status"]
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=True) as tty:
            print_status_table(status, file=tty)
        text = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal side is closed and drained
                break
            if not chunk:
                break
            text += chunk
    finally:
        os.close(master)
    out = re.sub(r"\x1b\[[0-9;]*m", "", text.decode())
    assert "\x1b[1m" in text.decode()  # rich drew it
    assert re.search(r"PROGRAM +STATE +PID +MEMORY +KILLS +RESTARTS", out), out
    assert re.search(r"worker +running +102 +rss 40\.0 MiB / 100\.0 MiB +2 +0", out), out
