"""``sentinel status|stop|kill|signal|limit|pause|resume`` and ``sentinel.control.client``
against a real ``sentinel run``, and against no Sentinel at all."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading

import pytest
from typer.testing import CliRunner

from sentinel.cli import app
from sentinel.control.client import Connection, print_status_table, request
from sentinel.errors import ControlError
from tests.conftest import SENTINEL, clean_env, printer, wait_until
from tests.integration.test_socket import event_logs, start_guarded


def cli(*args: str, env: dict | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([*SENTINEL, *args], capture_output=True, text=True, env=clean_env(env),
                          timeout=timeout)


def one_error_line(out: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in out.stderr + out.stdout
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("sentinel: error: ")
    return lines[0]


@pytest.fixture
def guarded(start_sentinel, tmp_path):
    path = tmp_path / "s.sock"
    s = start_guarded(start_sentinel, path, "--max-rss", "200Mi", "--grace-period", "500ms")
    return s, str(path)


# ------------------------------------------------------------------ with a Sentinel

def test_status_table(guarded):
    s, path = guarded
    wait_until(lambda: request(path, "status")["status"]["memory"], what="a first sample")
    out = cli("status", "--socket", path)
    assert out.returncode == 0, out.stderr
    rows = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in out.stdout.splitlines()}
    assert rows["phase"] == "running"
    assert rows["limit"] == "200.0 MiB on rss"
    assert rows["workload"].startswith("python") and f"pid {s.pid}" in rows["sentinel"]
    assert rows["memory"].startswith("rss ") and " MiB" in rows["memory"]
    assert rows["socket"] == f"listening on {path} (mode 0600)"
    # Every figure from the figures table, and this host's v1 cgroup.
    assert rows["figures"].startswith("rss ") and "cgroup memory current " in rows["figures"]
    assert rows["cgroup"].startswith("v1 /sys/fs/cgroup/memory")
    assert out.stderr == ""


def test_status_json_and_the_environment_variable(guarded):
    _, path = guarded
    out = cli("status", "--json", env={"SENTINEL_SOCKET": path})
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert reply["ok"] is True and reply["status"]["phase"] == "running"


def test_limit_pause_resume(guarded):
    _, path = guarded
    assert cli("limit", "--socket", path).stdout == "limit 200.0 MiB on rss\n"
    out = cli("limit", "1.5Gi", "--socket", path)
    assert (out.returncode, out.stdout) == (0, "limit 1.5 GiB\n")
    assert request(path, "limit")["limit_bytes"] == 1610612736
    assert cli("limit", "none", "--socket", path).stdout == "no limit (watching only)\n"
    assert request(path, "limit")["limit_bytes"] is None
    assert cli("pause", "--socket", path).stdout == "enforcement paused\n"
    phase = [line.split(None, 1)[1] for line in cli("status", "--socket", path).stdout
             .splitlines() if line.startswith("phase ")]
    assert phase == ["running (enforcement PAUSED: the limit is not applied)"]
    out = cli("resume", "--socket", path, "--json")
    assert json.loads(out.stdout)["enforcing"] is True


@pytest.mark.parametrize("args,message", [
    (["limit", "banana"], "sentinel: error: limit: 'banana' is not a size; use e.g. "),
    (["signal", "FOO"], "sentinel: error: signal: 'FOO' is not a signal name"),
])
def test_bad_arguments_exit_2_before_sending(guarded, args, message):
    s, path = guarded
    out = cli(*args, "--socket", path)
    assert out.returncode == 2
    assert one_error_line(out).startswith(message)
    assert not event_logs(s, "control_command")  # nothing reached Sentinel


def test_signal_reaches_the_workload(guarded):
    s, path = guarded
    out = cli("signal", "usr2", "--socket", path)
    assert (out.returncode, out.stdout) == (0, "SIGUSR2 sent\n")
    assert s.expect("got child") == "got child SIGUSR2"


def test_stop_is_an_operator_kill_and_a_second_stop_is_refused(start_sentinel, tmp_path):
    path = str(tmp_path / "s.sock")
    s = start_guarded(start_sentinel, path, "--grace-period", "1s", cmd=printer())
    s.expect("ready child")  # it catches SIGTERM and lives on: SIGKILL ends it
    out = cli("stop", "--socket", path)
    assert (out.returncode, out.stdout) == (0, "SIGTERM sent; SIGKILL after the grace period\n")
    out = cli("stop", "--socket", path)
    assert out.returncode == 1
    assert one_error_line(out) == ("sentinel: error: the workload is already being stopped "
                                   "[invalid_state]")
    assert s.wait() == 137
    (done,) = event_logs(s, "kill_finished")
    assert done["kill"]["reason"] == "operator"
    assert done["kill"]["signals"] == ["SIGTERM", "SIGKILL"]


def test_kill(start_sentinel, tmp_path):
    path = tmp_path / "k.sock"
    s = start_guarded(start_sentinel, path, cmd=["sleep", "60"])
    out = cli("kill", "--socket", str(path))
    assert (out.returncode, out.stdout) == (0, "SIGKILL sent\n")
    assert s.wait() == 137
    assert not path.exists()


def test_refusal_with_json_prints_the_reply_and_exits_1(start_sentinel, tmp_path):
    path = tmp_path / "k.sock"
    start_guarded(start_sentinel, path, "--restart", "always", "--restart-delay", "60s",
                  "--restart-max-delay", "60s",
                  cmd=["sh", "-c", "exit 1"], wait=False)
    wait_until(lambda: _phase(path) == "restarting", 15, what="the restart back-off")
    # (stop and kill are no refusal here: they cancel the pending restart.)
    out = cli("signal", "HUP", "--socket", str(path), "--json")
    assert out.returncode == 1 and out.stderr == ""
    reply = json.loads(out.stdout)
    assert reply["error"] == {"code": "invalid_state", "message": "no workload is running"}


def _phase(path) -> str | None:
    try:
        return request(str(path), "status", timeout=1)["status"]["phase"]
    except ControlError:
        return None


def test_python_api_connection_and_text_form(guarded):
    _, path = guarded
    with Connection(path) as conn:
        assert conn.request("pause")["enforcing"] is False
        assert conn.request("limit 300Mi")["limit_bytes"] == 300 * 2**20
        text = conn.request("status text")
        assert text["ok"] and "\nphase" in text["text"] and "PAUSED" in text["text"]
        assert conn.request("bogus")["error"]["code"] == "unknown_command"
        assert conn.request("resume")["enforcing"] is True
    with pytest.raises(ValueError, match="one line"):
        request(path, "status\nkill")


# ------------------------------------------------------------------ without a Sentinel

def test_no_socket_file(tmp_path):
    path = tmp_path / "none.sock"
    out = cli("status", "--socket", str(path))
    assert out.returncode == 1
    assert one_error_line(out) == (
        f"sentinel: error: no Sentinel at {path}: the socket does not exist; is Sentinel "
        f"running with --socket {path}? (set --socket or SENTINEL_SOCKET)")


def test_stale_socket_file(tmp_path):
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))
    out = cli("stop", "--socket", str(path))
    assert out.returncode == 1
    assert "connection refused" in one_error_line(out)


@pytest.mark.parametrize("kind", ["a regular file", "a directory"])
def test_socket_path_that_is_not_a_socket(tmp_path, kind):
    """connect() says "connection refused" for these too: say what the path is instead."""
    path = tmp_path / "sentinel.socket"
    if kind == "a directory":
        path.mkdir()
    else:
        path.write_text("")
    out = cli("status", "--socket", str(path))
    assert out.returncode == 1
    assert one_error_line(out) == (
        f"sentinel: error: no Sentinel at {path}: it is {kind}, not a socket; pass the path "
        "Sentinel was started with (--socket)")


def _server(path, answer: bytes | None):
    """A listener that is not a Sentinel: answers garbage, or never answers."""
    srv = socket.socket(socket.AF_UNIX)
    try:
        srv.bind(str(path))
        srv.listen()
    except BaseException:
        srv.close()
        raise
    conns = []

    def serve():
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        conns.append(conn)
        conn.recv(100)
        if answer is not None:
            conn.sendall(answer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()

    def close():
        srv.close()
        t.join(5)
        for c in conns:
            c.close()
    return close


@pytest.mark.parametrize("answer,expect", [
    (b"HTTP/1.0 400 Bad Request\r\n\r\n", "unexpected reply on"),
    (None, "no reply from the Sentinel on"),
])
def test_something_else_on_the_socket(tmp_path, answer, expect):
    path = tmp_path / "other.sock"
    close = _server(path, answer)
    try:
        out = cli("status", "--socket", str(path), "--timeout", "0.5")
    finally:
        close()
    assert out.returncode == 1
    assert expect in one_error_line(out)


# ------------------------------------------------------------------ usage, help, version

@pytest.mark.parametrize("args,message", [
    (["signal"], "missing argument 'NAME' (see 'sentinel signal --help')"),
    (["status", "--timeout", "0"], "invalid value for '--timeout': "),
    (["status", "--bogus"], "no such option: --bogus (see 'sentinel status --help')"),
    (["limit", "1Gi", "2Gi"], "got unexpected extra argument(s) (2Gi) (see 'sentinel limit "),
    (["bogus"], "no such command 'bogus' (see 'sentinel --help')"),
    (["--bogus"], "no such option: --bogus (see 'sentinel --help')"),
])
def test_usage_errors_are_one_line_and_exit_2(args, message):
    """Not click's Usage/Try/blank/Error block: one line saying what is wrong and where
    to look, before anything is sent (no --socket here: nothing listens)."""
    out = cli(*args)
    assert out.returncode == 2
    line = one_error_line(out)
    assert line.startswith("sentinel: error: " + message), line
    assert line.endswith("--help')") and out.stdout == ""


def test_no_command_prints_the_help_and_exits_2():
    out = cli()
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("Usage: sentinel [OPTIONS] COMMAND [ARGS]...")
    assert "Commands:" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("command", [[], ["status"], ["stop"], ["kill"], ["signal"], ["limit"],
                                     ["pause"], ["resume"], ["top"], ["version"]])
def test_dash_h_is_help(command):
    long, short = cli(*command, "--help"), cli(*command, "-h")
    assert (long.returncode, short.returncode) == (0, 0)
    assert short.stdout == long.stdout and long.stdout.startswith("Usage: sentinel")
    assert "-h, --help" in long.stdout and short.stderr == ""


@pytest.mark.parametrize("mode", ["run", "watch"])
def test_dash_h_is_help_for_run_and_watch(mode):
    """Their flags belong to argparse (sentinel.entry), which answers -h itself."""
    long, short = cli(mode, "--help"), cli(mode, "-h")
    assert (long.returncode, short.returncode) == (0, 0)
    assert short.stdout == long.stdout and long.stdout.startswith(f"usage: sentinel {mode} ")


def test_version_flag_is_the_version_command():
    flag, command = cli("--version"), cli("version")
    assert (flag.returncode, command.returncode) == (0, 0)
    assert flag.stdout == command.stdout and flag.stdout.startswith("sentinel ")
    assert flag.stderr == ""


def test_cli_runner_unreachable(tmp_path):
    result = CliRunner().invoke(app, ["limit", "--socket", str(tmp_path / "x.sock")])
    assert result.exit_code == 1
    assert "no Sentinel at" in result.output and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_runner_usage():
    result = CliRunner().invoke(app, ["limit", "12parsecs", "--socket", "/nonexistent"])
    assert result.exit_code == 2 and "limit: '12parsecs'" in result.output


def test_rich_table_on_a_terminal(guarded):
    """On a terminal the table is drawn by rich; markup in a command is shown as is."""
    _, path = guarded
    status = request(path, "status")["status"]
    status["command"] = ["python", "-c", "print([1][0])"]

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
    out = text.decode()
    assert "\x1b[1m" in out  # bold labels: rich drew it
    assert "print([1][0])" in out and "phase" in out and "running" in out


# ------------------------------------------------------------------ issue 8: messages

def _free_port_v6() -> int:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        return s.getsockname()[1]


def test_bracketed_ipv6_metrics_address_is_bound_and_served(start_sentinel, tmp_path):
    import urllib.request

    port = _free_port_v6()
    path = tmp_path / "s.sock"
    s = start_sentinel(["--socket", str(path), "--k8s-events", "off", "--max-rss", "none",
                        "--metrics-address", "[::1]", "--metrics-port", str(port), "--",
                        *printer()])
    s.expect("ready child")
    wait_until(lambda: os.path.exists(path), what="the control socket")
    status = request(str(path), "status")["status"]
    assert status["components"]["metrics"] == f"on: http://[::1]:{port}/metrics"
    assert status["limit_bytes"] is None  # --max-rss none: watching only
    with urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=10) as reply:
        body = reply.read().decode()
    assert "sentinel_workload_up" in body
    assert "cannot listen" not in s.stderr()
    out = cli("status", "--socket", str(path))
    assert "none (watching only)" in out.stdout


def test_a_reply_too_long_for_the_client_says_the_clients_limit_and_the_way_out(
        start_sentinel, tmp_path):
    """A workload with a 200 KB command line makes a long status; the client's limit is
    what refuses it, and the line says so (not that the Sentinel dropped anything)."""
    path = tmp_path / "s.sock"
    big = ["x" * 100_000, "y" * 100_000]
    s = start_guarded(start_sentinel, path, cmd=["sh", "-c", "echo ready child; sleep 60", "sh",
                                                 *big])
    out = cli("status", "--socket", str(path), env={"SENTINEL_CLIENT_MAX_REPLY": "64k"})
    assert out.returncode == 1
    line = one_error_line(out)
    assert line == (f"sentinel: error: the reply to 'status' from the Sentinel on {path} is "
                    "longer than this client's limit of 62.5 KiB (a workload with a very long "
                    "command line or many processes makes a long status); raise the limit, "
                    "e.g. SENTINEL_CLIENT_MAX_REPLY=32Mi, or read the reply without it: echo "
                    f"status | nc -N -U {path}")
    assert "dropped" not in line
    # The default limit holds it, and so does a raised one.
    for env in ({}, {"SENTINEL_CLIENT_MAX_REPLY": "1Mi"}):
        ok = cli("status", "--json", "--socket", str(path), env=env)
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["status"]["command"][4:] == big
    bad = cli("status", "--socket", str(path), env={"SENTINEL_CLIENT_MAX_REPLY": "lots"})
    assert bad.returncode == 2
    assert one_error_line(bad).startswith("sentinel: error: SENTINEL_CLIENT_MAX_REPLY: 'lots' "
                                          "is not a size")
    assert s.popen.poll() is None


def test_status_of_a_real_run_lists_its_one_program(guarded):
    """The single-command form is one program named after its command: `programs` holds
    it (the same pid and figures as the top level), the human table has no programs table,
    and the program's name is accepted where a NAME may be given."""
    s, path = guarded
    status = wait_until(lambda: (r := request(path, "status")["status"])["memory"] and r,
                        what="a first sample")
    (entry,) = status["programs"]
    assert (entry["name"], entry["main"], entry["state"]) == ("python", True, "running")
    assert entry["pid"] == status["main_pid"] and entry["limit_bytes"] == 200 * 2**20
    assert status["multi"] is False and status["program"] == "python"
    out = cli("status", "python", "--socket", path)
    assert out.returncode == 0 and "PROGRAM" not in out.stdout
    out = cli("stop", "nosuch", "--socket", path)
    assert out.returncode == 2 and "no program named 'nosuch'" in one_error_line(out)
