"""The dashboard in a real terminal: ``sentinel run --tui`` and ``sentinel top``
driven under tmux, asserted on what the screen shows; resize, Ctrl-C and the
terminal given back; the plain fallback when stdout is not a terminal; and
what drawing costs the guardian's sampling.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from sentinel.control.client import request
from sentinel.errors import ControlError
from tests.conftest import PY, REPO, SENTINEL, descendants, leaker, wait_until

TMUX = shutil.which("tmux")
# Every Sentinel here: no exporter port, no Kubernetes, no /dev/termination-log.
QUIET = ["--no-metrics", "--k8s-events", "off", "--termination-log", ""]


class Tmux:
    """One detached tmux server (own socket) with one 'bash -i' pane."""

    def __init__(self, width: int = 120, height: int = 40) -> None:
        if TMUX is None:
            pytest.fail("tmux is required for the dashboard tests: run "
                        "scripts/install-system-deps.sh (or apt-get install -y tmux)")
        self.socket = f"sentinel-test-{uuid.uuid4().hex[:12]}"
        self.screens: list[str] = []  # every screen captured, for "never showed" checks
        self._n = 0
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TMUX", "SENTINEL_"))}
        self.tmux("-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", str(width),
                  "-y", str(height), "-c", str(REPO), "bash --norc --noprofile -i", env=env)
        self.pane_pid = int(self.tmux("display", "-p", "-t", "t", "#{pane_pid}").strip())
        # bash takes no PS1 from the environment here; split so the echo of this
        # line does not match the prompt it sets.
        self.keys("PS1='PROM''PT$ '; clear", "Enter")
        self.wait(r"^PROMPT\$\s*$", what="the shell prompt")

    def tmux(self, *args: str, env=None) -> str:
        out = subprocess.run([TMUX, "-L", self.socket, *args], capture_output=True, text=True,
                             timeout=10, env=env)
        assert out.returncode == 0, f"tmux {args}: {out.stderr}"
        return out.stdout

    def run(self, command: str) -> str:
        """Type ``command`` and Enter; returns the token that ``done()`` waits for."""
        self._n += 1
        token = f"done-{self._n}"
        self.tmux("send-keys", "-t", "t", f'{command}; echo "{token} rc=$?"', "Enter")
        return token

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "t", *keys)

    def screen(self, escapes: bool = False) -> str:
        text = self.tmux("capture-pane", "-p", "-t", "t", *(["-e"] if escapes else []))
        self.screens.append(text)
        return text

    def flag(self, name: str) -> str:
        return self.tmux("display", "-p", "-t", "t", f"#{{{name}}}").strip()

    def wait(self, pattern: str, timeout: float = 20.0, what: str = "") -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            match = re.search(pattern, screen, re.M)
            if match:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what or pattern!r}"
                                     f"; the screen:\n{screen}")
            time.sleep(0.05)

    def done(self, token: str, timeout: float = 20.0) -> int:
        # The command line echoes the token too ("echo done-1 rc=$?"): match the output.
        match = self.wait(rf"^{token} rc=(\d+)\s*$", timeout, what=f"{token}: the shell back")
        return int(match.group(1))

    def resize(self, width: int, height: int) -> None:
        self.tmux("resize-window", "-t", "t", "-x", str(width), "-y", str(height))

    def close(self) -> None:
        left = descendants(self.pane_pid)
        subprocess.run([TMUX, "-L", self.socket, "kill-server"], capture_output=True, timeout=10)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture
def term():
    t = Tmux()
    yield t
    t.close()


def sentinel_cmd(*args: str) -> str:
    return shlex.join([*SENTINEL, *args])


def read_log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def bar_line(screen: str) -> str:
    """The bar's line, or "" (e.g. the blank screen between a resize and the redraw)."""
    return next((line for line in screen.splitlines() if "░" in line or line.count("█") > 3),
                "")


# ------------------------------------------------------------------ run --tui

def test_run_tui_shows_the_workload_until_the_kill_then_gives_the_terminal_back(term, tmp_path):
    log = tmp_path / "workload.log"
    token = term.run(sentinel_cmd(
        "run", "--tui", "--tui-log", str(log), *QUIET, "--no-socket", "--max-rss", "120Mi",
        "--grace-period", "2s", "--", *leaker("--rate", "40", "--ignore-term")))

    m = term.wait(r"State\s+RUNNING\s+pid (\d+)", what="the running state")
    pid = int(m.group(1))
    assert "tests/leaker.py" in Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    assert term.flag("alternate_on") == "1"  # the dashboard is on the alternate screen
    screen = term.wait(rf"^\s*{pid}\s+[\d.]+ MiB\s+100\.0%\s+\S+ \S*leaker\.py --rate 40",
                       what="the process row: PID, RSS, share, command").string
    assert "of limit 120.0 MiB" in screen
    assert "█" in bar_line(screen)
    term.wait(r"growth \+[\d.]+ MiB/s\s+time to limit [\d.]+s", what="growth and time left")

    m = term.wait(r"TERMINATING\s+SIGTERM sent \(memory_limit\), SIGKILL in ([\d.]+)s",
                  what="the grace countdown")
    assert float(m.group(1)) <= 2.0
    term.wait(r"limit_crossed\s+memory limit crossed", what="the crossing in the events")

    assert term.done(token) == 137
    assert term.flag("alternate_on") == "0"  # back on the normal screen
    assert term.flag("cursor_flag") == "1"  # cursor shown again
    screen = term.screen()
    assert "sentinel: KILLED memory_limit: SIGTERM then SIGKILL, exit code 137" in screen
    # The end state is drawn once more and stays on the normal screen: the last view
    # (state, figures, the events up to the kill's end) above the summary line.
    final = screen.split("sentinel: KILLED")[0]
    assert re.search(r"State\s+KILLED\s+memory_limit: SIGTERM then SIGKILL, exit code 137",
                     final), screen
    assert re.search(r"kill_finished\s+memory_limit stop done: SIGTERM then SIGKILL", final)
    assert "no workload process" in final
    assert screen.rstrip().endswith("PROMPT$")
    # The workload's output and Sentinel's log went to the file, never to the screen.
    assert not any("leaker[" in s for s in term.screens)
    text = read_log(log)
    assert f"leaker[{pid}] ready" in text and "memory limit crossed" in text
    assert "sent SIGKILL" in text
    # ... as log lines; the events pane (and the last view) show the event itself.
    assert not any(re.search(r"sentinel\[\d+\] WARNING +sent SIGKILL", s) for s in term.screens)


def test_resize_redraws_to_fit_and_ctrl_c_restores_the_terminal(term, tmp_path):
    log = tmp_path / "workload.log"
    token = term.run(sentinel_cmd(
        "run", "--tui", "--tui-log", str(log), *QUIET, "--no-socket", "--max-rss", "1Gi", "--",
        *leaker("--rate", "20", "--max", "10")))
    term.wait(r"RUNNING", what="the dashboard")
    assert 110 <= len(bar_line(term.screen()).rstrip()) <= 120

    term.resize(60, 20)

    def fits_narrow():
        screen = term.screen()
        lines = screen.split("\n")[:-1]  # capture-pane: one line per row, each ending in \n
        bar = bar_line(screen).rstrip()
        return len(lines) == 20 and 50 <= len(bar) <= 60 and "RUNNING" in screen \
            and all(len(line) <= 60 for line in lines) and screen
    screen = wait_until(fits_narrow, 10, what="a redraw at 60x20")
    assert "metrics:" in screen  # the footer still fits on the smaller screen

    term.resize(100, 30)
    wait_until(lambda: 90 <= len(bar_line(term.screen()).rstrip()) <= 100, 10,
               what="a redraw at 100x30")

    term.keys("C-c")  # reaches the workload, which owns the terminal's foreground
    assert term.done(token) == 130
    assert term.flag("alternate_on") == "0"
    assert term.flag("cursor_flag") == "1"
    screen = term.screen()
    assert "sentinel: EXITED exit code 130" in screen
    assert screen.rstrip().endswith("PROMPT$")
    # The shell works as before: what we type shows and runs.
    assert term.done(term.run("echo still-here")) == 0
    assert "still-here" in term.screen()


def test_drawing_does_not_hurt_the_sampling_cadence(term, tmp_path):
    log = tmp_path / "workload.log"
    token = term.run(sentinel_cmd(
        "run", "--tui", "--tui-log", str(log), *QUIET, "--no-socket", "--log-format", "json",
        "--interval", "20ms", "--max-interval", "20ms",  # the cadence measured: --interval's
        "--max-rss", "1Gi", "--", *leaker("--rate", "50", "--max", "20")))
    # Let it draw for 4 s (the uptime on the screen says when).
    term.wait(r"up ([4-9]|\d\d)\.\ds", timeout=20, what="4 s of drawing")
    term.keys("C-c")
    assert term.done(token) == 130
    records = [json.loads(line) for line in read_log(log).splitlines() if line.startswith("{")]
    report = next(r for r in records if r.get("event") == "dashboard" and "frames" in r)
    # About 4 frames a second were drawn (on the render thread)...
    assert report["frames"] >= 12, report
    # ...while the loop only took snapshots: a fraction of a millisecond each
    # (drawing a frame costs 2-10 ms; on the loop it would show here)...
    assert report["snapshot_p50_seconds"] < 0.001, report
    # ...and sampling every 20 ms went on. Worst cases are the machine's (a
    # shared 2-core box shows 40-80 ms gaps with or without the dashboard), so
    # the check is on the typical gap and the share of late samples.
    assert report["sample_gaps"] >= 150, report
    assert report["sample_gap_p50_seconds"] < 0.020 + 0.005, report
    assert report["sample_gaps_late"] <= 0.05 * report["sample_gaps"], report


def test_an_unusable_tui_log_stops_before_the_spawn(term, tmp_path):
    target = tmp_path / "elsewhere.log"
    link = tmp_path / "link.log"
    link.symlink_to(target)  # /tmp is shared: a planted symlink must not be followed
    marker = tmp_path / "ran"
    for log in (tmp_path / "missing" / "w.log", link):
        token = term.run(sentinel_cmd("run", "--tui", "--tui-log", str(log), *QUIET,
                                      "--no-socket", "--", "touch", str(marker)))
        assert term.done(token) == 2
        assert re.search(rf"sentinel: error: --tui-log: cannot open '{re.escape(str(log))}'",
                         term.screen())
    assert not marker.exists() and not target.exists()
    assert term.flag("alternate_on") == "0"


# ------------------------------------------------------------------ no terminal

def test_run_tui_without_a_terminal_keeps_plain_logs():
    out = subprocess.run([*SENTINEL, "run", "--tui", *QUIET, "--no-socket", "--", PY, "-c",
                          "print('hello from the workload')"],
                         capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hello from the workload\n"  # the workload keeps its stdout
    assert "--tui: stdout is not a terminal, so no dashboard" in out.stderr
    assert "\x1b[" not in out.stdout and "\x1b[" not in out.stderr


def test_run_tui_with_stdout_piped_on_a_terminal_writes_no_escape_codes(term, tmp_path):
    out = tmp_path / "out"
    token = term.run(sentinel_cmd("run", "--tui", *QUIET, "--no-socket", "--", PY, "-c",
                                  "print('hello from the workload')") + f" | cat > {out}")
    assert term.done(token) == 0
    assert term.flag("alternate_on") == "0"
    assert out.read_text() == "hello from the workload\n"
    # Sentinel's log lines (stderr: the terminal) are plain: no colour codes either.
    screen = term.screen(escapes=True)
    line = next(line for line in screen.splitlines() if "stdout is not a terminal" in line)
    assert "\x1b[" not in line


# ------------------------------------------------------------------ top

@pytest.fixture
def remote(start_sentinel, tmp_path):
    """A Sentinel elsewhere: a leaker (two processes) behind a control socket."""
    sock = tmp_path / "sentinel.socket"
    s = start_sentinel([*QUIET, "--socket", str(sock), "--max-rss", "150Mi",
                        "--grace-period", "3s", "--",
                        *leaker("--rate", "30", "--ignore-term", "--depth", "1")])
    s.expect("leaker[", timeout=15)

    def status():
        try:
            reply = request(str(sock), "status", timeout=1.0)
        except ControlError:
            return None
        st = reply.get("status") or {}
        return st if reply.get("ok") and len(st.get("pids") or []) == 2 else None
    st = wait_until(status, 15, what="the control socket and both workload processes")
    return sock, st, s


def test_top_shows_a_sentinel_running_elsewhere(term, remote):
    sock, st, s = remote
    main, pids = st["main_pid"], st["pids"]
    token = term.run(sentinel_cmd("top", "--socket", str(sock)))
    term.wait(rf"State\s+RUNNING\s+pid {main}", what="the remote workload running")
    assert term.flag("alternate_on") == "1"
    # Every process of the tree, with its RSS, share and command line.
    rows = r"".join(rf"(?=[\s\S]*^\s*{pid}\s+[\d.]+ MiB\s+[\d.]+%\s+\S*python\S* "
                    rf"\S*leaker\.py)" for pid in pids)
    screen = term.wait(rows + r"[\s\S]*of limit 150.0 MiB", what="both processes").string
    assert "█" in bar_line(screen)
    term.wait(r"growth \+[\d.]+ MiB/s\s+time to limit [\d.]+s", what="growth from the polls")
    term.wait(r"TERMINATING\s+SIGTERM sent \(memory_limit\), SIGKILL in [\d.]+s",
              what="the remote grace countdown")
    # The remote Sentinel's events, with their times.
    term.wait(r"^\d\d:\d\d:\d\d  limit_crossed\s+memory limit crossed: rss [\d.]+ MiB.* > "
              r"limit 150\.0 MiB", what="the crossing in top's events")
    term.wait(r"^\d\d:\d\d:\d\d  signal_sent\s+sent SIGTERM", what="the SIGTERM in the events")
    assert s.wait(30) == 137  # the remote Sentinel finished the ladder and exited
    term.wait(r"^connection lost, retrying; last state below\. no Sentinel at ",
              what="top noticing the Sentinel is gone")
    term.keys("C-c")
    assert term.done(token) == 0
    assert term.flag("alternate_on") == "0"
    assert term.flag("cursor_flag") == "1"
    assert term.screen().rstrip().endswith("PROMPT$")


def test_top_without_a_terminal_prints_plain_lines(remote):
    sock, st, _ = remote
    proc = subprocess.Popen([*SENTINEL, "top", "--socket", str(sock), "--interval", "100ms"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    for line in lines:
        assert re.match(rf"\d{{4}}-\d\d-\d\dT[\d:]+Z python running \(pid {st['main_pid']}\) "
                        rf"rss [\d.]+ MiB of 150.0 MiB \([\d.]+%\)", line), lines
        assert "\x1b" not in line
    assert proc.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in err


def test_top_piped_into_head_ends_quietly(remote):
    sock, _, _ = remote
    out = subprocess.run(["bash", "-c", sentinel_cmd("top", "--socket", str(sock), "--interval",
                                                     "50ms") + " | head -n 2; "
                          "echo rc=${PIPESTATUS[0]}"],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.count(" running (pid ") == 2
    assert out.stdout.rstrip().endswith("rc=0")
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr


def test_top_without_a_sentinel_is_one_line_and_exit_1(tmp_path):
    out = subprocess.run([*SENTINEL, "top", "--socket", str(tmp_path / "none.socket")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert out.stderr.startswith("sentinel: error: no Sentinel at ")
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert out.stdout == ""
