"""Shared test helpers: start a real Sentinel (as PID 1 in a new PID namespace, or
as an ordinary parent that registers as subreaper), read its workload's stdout
as handshakes, parse its JSON logs, and kill every process it left on teardown.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHILDREN = REPO / "tests" / "children"
LEAKER = REPO / "tests" / "leaker.py"
PY = sys.executable
SENTINEL = [PY, "-m", "sentinel"]
MODES = ["subreaper", "pid1"]


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` from /proc/<pid>/task/*/children."""
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                kids = [int(x) for x in Path(f"/proc/{p}/task/{tid}/children").read_text().split()]
            except OSError:
                continue
            out.extend(kids)
            stack.extend(kids)
    return out


def proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from /proc/<pid>/stat (``None`` if gone)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data.rsplit(")", 1)[1].split()[0]


def zombies_of(pid: int) -> list[int]:
    return [c for c in descendants(pid) if proc_state(c) == "Z"]


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    what = what() if callable(what) else what  # computed now: e.g. the stderr so far
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


# What a developer's shell may hold that would change how a Sentinel started by a
# test behaves: its own SENTINEL_* settings (a SENTINEL_MAX_RSS, a SENTINEL_SOCKET, a
# SENTINEL_K8S_EVENTS=on), a kubeconfig or an in-cluster service account (Events would
# go to a real cluster), the downward API's pod. Dropped from every Sentinel a test
# starts; HOME is an empty directory, so ~/.kube/config is not read either.
LEAKY_VARIABLES = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT",
                   "POD_NAME", "POD_NAMESPACE", "POD_UID")
_EMPTY_HOME = tempfile.mkdtemp(prefix="sentinel-test-home-")


def clean_env(env: dict | None = None) -> dict:
    """``os.environ`` without the developer's ``SENTINEL_*`` and ``LEAKY_VARIABLES``, with
    HOME an empty directory, then ``env`` (what the test sets) on top."""
    out = {k: v for k, v in os.environ.items()
           if not k.startswith("SENTINEL_") and k not in LEAKY_VARIABLES}
    out["HOME"] = _EMPTY_HOME
    out.update(env or {})
    return out


def full_pipe() -> tuple[int, int]:
    """A pipe whose buffer is already full: the next blocking write to it waits forever.
    Returns ``(read_fd, write_fd)``; the write end is blocking again."""
    import fcntl

    r, w = os.pipe()
    flags = fcntl.fcntl(w, fcntl.F_GETFL)
    fcntl.fcntl(w, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    try:
        while True:
            os.write(w, b"x" * 4096)
    except BlockingIOError:
        pass
    fcntl.fcntl(w, fcntl.F_SETFL, flags)  # an ordinary blocking pipe, and full
    return r, w


class Running:
    """A started Sentinel: its stdout is the workload's; its stderr goes to a file."""

    def __init__(self, argv: list[str], *, pid1: bool, env: dict | None, cwd=None,
                 pass_fds=(), preexec_fn=None, stdin=subprocess.DEVNULL,
                 wrap: list[str] = ()) -> None:
        # wrap: a command that execs Sentinel in its own place (setpriv, unshare --mount).
        self.pid1 = pid1
        self.errfile = tempfile.NamedTemporaryFile(prefix="sentinel-stderr-", delete=False)
        cmd = [*wrap] + (["unshare", "--pid", "--fork", "--mount-proc"] if pid1 else []) + argv
        full_env = clean_env(env)
        self.popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.errfile,
                                      stdin=stdin, env=full_env, cwd=cwd, pass_fds=pass_fds,
                                      preexec_fn=preexec_fn, start_new_session=True)
        self.lines: list[str] = []
        self._buf = b""
        if pid1:
            self.pid = wait_until(lambda: (descendants(self.popen.pid) or [None])[0], 10,
                                  what="sentinel under unshare")
        else:
            self.pid = self.popen.pid

    # -- stdout handshakes -----------------------------------------------
    def readline(self, timeout: float = 10.0) -> str | None:
        deadline = time.monotonic() + timeout
        fd = self.popen.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                if self._buf:
                    break
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        text = line.decode(errors="replace")
        self.lines.append(text)
        return text

    def expect(self, prefix: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.readline(max(0.0, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"no line starting {prefix!r} within {timeout}s; stdout so "
                                     f"far: {self.lines[-20:]}; stderr: {self.stderr()[-2000:]}")
            if line.startswith(prefix):
                return line

    def rest(self, timeout: float = 5.0) -> list[str]:
        """Every remaining stdout line, up to EOF (call once the workload has exited)."""
        while self.readline(timeout) is not None:
            pass
        return self.lines

    # -- the end -----------------------------------------------------------
    def wait(self, timeout: float = 20.0) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"sentinel did not exit within {timeout}s; stderr: "
                                 f"{self.stderr()[-3000:]}") from None

    def stderr(self) -> str:
        return Path(self.errfile.name).read_text(errors="replace")

    def logs(self) -> list[dict]:
        """Sentinel's JSON log lines (start it with --log-format json)."""
        out = []
        for line in self.stderr().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def kill_all(self) -> None:
        pids = descendants(self.popen.pid)
        for pid in [self.popen.pid, *pids]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass
        for pid in pids:  # non-children of ours are reaped by their subreaper/init
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if self.popen.stdout:
            self.popen.stdout.close()
        self.errfile.close()
        os.unlink(self.errfile.name)


@pytest.fixture
def start_sentinel():
    """``start_sentinel(args, pid1=False, env=None, cmd="run")`` -> ``Running``; all killed after."""
    started: list[Running] = []

    def start(args: list[str], *, pid1: bool = False, env: dict | None = None,
              cmd: str = "run", **kw) -> Running:
        r = Running([*SENTINEL, cmd, *args], pid1=pid1, env=env, **kw)
        started.append(r)
        return r

    yield start
    for r in started:
        r.kill_all()


@pytest.fixture(params=MODES)
def mode(request) -> str:
    """Run a test twice: Sentinel as a subreaper, and as PID 1 of a new PID namespace."""
    if request.param == "pid1" and not shutil.which("unshare"):
        pytest.fail("unshare (util-linux) is required for the PID 1 tests")
    return request.param


def require(tool: str | None = None, *, root: bool = False) -> None:
    """Fail (never skip) when a tool or root is missing: `make test` installs the tools
    (scripts/install-system-deps.sh) and runs as root, and CI must run every test."""
    if root and os.geteuid() != 0:
        pytest.fail("this test needs root (run `make test` as root)")
    if tool and not shutil.which(tool):
        pytest.fail(f"{tool} is missing: run `bash scripts/install-system-deps.sh` "
                    "(make test does)")


def printer(*args: str) -> list[str]:
    return [PY, str(CHILDREN / "signal_printer.py"), *args]


def leaker(*args: str) -> list[str]:
    return [PY, str(LEAKER), *args]
