"""spawn() for a program of a config file: its own fd 1/2 and the user it runs as.

Each case spawns in a fresh interpreter that first does what Sentinel does (a
parent hands it SIGUSR1 blocked and SIGUSR2 ignored; it blocks every signal),
then calls ``spawn`` and reports the program's exit code. The program writes to
files given as ``stdout_fd``/``stderr_fd``; the test reads them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO, require

PY = sys.executable
NOBODY = (65534, 65534, (65534, 100))  # nobody, nogroup, and "users" as a supplementary group

_SPAWN = """
import json, os, signal, sys
sys.path.insert(0, {repo!r})
from sentinel.core import kernel
from sentinel.core.spawn import block_signals, spawn
from sentinel.errors import SpawnError
args = json.loads(sys.argv[1])
kernel._GLIBC = args["glibc"]
signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGUSR1}})  # as a parent may hand it over
signal.signal(signal.SIGUSR2, signal.SIG_IGN)
original = block_signals()
out = os.open(args["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
err = os.open(args["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
user = args["user"] and (args["user"][0], args["user"][1], tuple(args["user"][2]))
environ = args["environ"]
try:
    child = spawn(tuple(args["command"]), original, environ=environ, stdout_fd=out,
                  stderr_fd=err, user=user)
except SpawnError as exc:
    print(json.dumps({{"error": str(exc), "code": exc.exit_code}}))
    sys.exit(0)
_, status = os.waitpid(child.pid, 0)
print(json.dumps({{"code": os.waitstatus_to_exitcode(status), "fds": [out, err]}}))
"""


def _spawn(tmp_path, command, *, user=None, environ=None, glibc=True):
    """Run ``command`` through spawn(); return (report, stdout text, stderr text)."""
    out, err = tmp_path / "out", tmp_path / "err"
    args = {"command": command, "user": user, "environ": environ, "glibc": glibc,
            "out": str(out), "err": str(err)}
    done = subprocess.run([PY, "-c", _SPAWN.format(repo=str(REPO)), json.dumps(args)],
                          capture_output=True, text=True, timeout=30, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    # The program's output went to the files, not to the spawning process's fds.
    assert done.stderr == ""
    return json.loads(done.stdout), out.read_text(), err.read_text()


def _status(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines())


_STATUS = ["grep", "-E", "^(Uid|Gid|Groups|SigBlk|SigIgn):", "/proc/self/status"]


def test_a_program_with_a_user_runs_as_that_user_with_the_given_mask_and_dispositions(
        tmp_path):
    require(root=True)
    # grep, not Python: Python would ignore SIGPIPE itself at start-up.
    report, out, _ = _spawn(tmp_path, _STATUS, user=NOBODY)
    assert report["code"] == 0
    status = _status(out)
    assert status["Uid"].split() == ["65534"] * 4  # real, effective, saved, filesystem
    assert status["Gid"].split() == ["65534"] * 4
    assert set(status["Groups"].split()) == {"65534", "100"}
    # Exactly what Sentinel was given: SIGUSR1 blocked, SIGUSR2 ignored; not the shim's
    # Python SIGPIPE/SIGXFSZ, not glibc's 32/33, not Sentinel's all-blocked mask.
    assert int(status["SigBlk"], 16) == 1 << (signal.SIGUSR1 - 1)
    assert int(status["SigIgn"], 16) == 1 << (signal.SIGUSR2 - 1)
    # ...the same as without a user.
    report, plain, _ = _spawn(tmp_path, _STATUS)
    assert (_status(plain)["SigBlk"], _status(plain)["SigIgn"]) == \
        (status["SigBlk"], status["SigIgn"])
    assert _status(plain)["Uid"].split() == ["0"] * 4


def test_home_user_and_logname_are_the_users_unless_the_program_sets_them(tmp_path):
    require(root=True)
    # Sentinel's own environment, as a program without env: would get it (LANG=C added).
    base = {k: v for k, v in os.environ.items() if not k.startswith("LC_")} | {"LANG": "C"}
    _, out, _ = _spawn(tmp_path, ["env"], user=NOBODY, environ=base)
    env = dict(line.split("=", 1) for line in out.splitlines())
    assert (env["HOME"], env["USER"], env["LOGNAME"]) == ("/nonexistent", "nobody", "nobody")
    # CPython's locale coercion in the shim (LANG=C) must not reach the program.
    assert "LC_CTYPE" not in env
    assert env["LANG"] == "C"
    _, out, _ = _spawn(tmp_path, ["env"], user=NOBODY,
                       environ={**base, "HOME": "/srv/app", "LC_CTYPE": "C"})
    env = dict(line.split("=", 1) for line in out.splitlines())
    assert (env["HOME"], env["USER"], env["LC_CTYPE"]) == ("/srv/app", "nobody", "C")


@pytest.mark.parametrize("command, code, says", [
    (["no-such-command-xyz"], 127, "'no-such-command-xyz': not found in PATH"),
    (["./script"], 126, "'./script': permission denied for uid 65534"),
    (["/"], 126, "'/': it is a directory"),
])
def test_an_exec_error_under_a_user_is_one_line_and_the_usual_code(tmp_path, command, code,
                                                                   says):
    require(root=True)
    (tmp_path / "script").write_text("#!/bin/sh\necho hi\n")  # nobody may not read tmp_path
    (tmp_path / "script").chmod(0o755)
    report, out, err = _spawn(tmp_path, command, user=NOBODY)
    assert report["code"] == code
    assert out == ""
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    assert err.startswith("sentinel: cannot run ") and says in err, err
    assert "Traceback" not in err


# Not Python: the interpreter may not be readable by nobody (a Python under /root).
# ls's own directory fd, pointing at /proc/<pid>/fd, is left out.
_FDS = ["sh", "-c", "ls -l /proc/self/fd; echo to stderr >&2"]


def _fds(listing: str) -> list[int]:
    fds = []
    for line in listing.splitlines():
        if " -> " in line:
            name, target = line.split(" -> ")
            if not (target.startswith("/proc/") and target.endswith("/fd")):
                fds.append(int(name.split()[-1]))
    return sorted(fds)


@pytest.mark.parametrize("glibc", [True, False], ids=["glibc", "os.posix_spawnp"])
@pytest.mark.parametrize("as_user", [False, True], ids=["root", "nobody"])
def test_stdout_and_stderr_fds_become_1_and_2_and_nothing_else_leaks(tmp_path, glibc,
                                                                     as_user):
    if as_user:
        require(root=True)
    report, out, err = _spawn(tmp_path, _FDS, glibc=glibc, user=NOBODY if as_user else None)
    assert report["code"] == 0
    # 0 is the spawning process's stdin; the files' own fds (report["fds"]) are not there.
    assert _fds(out) == [0, 1, 2]
    assert err == "to stderr\n"
    assert not set(report["fds"]) & {0, 1, 2}


def test_sentinels_own_user_needs_no_shim(tmp_path):
    # Spawned directly, as without a user: exec errors come back as SpawnError (the
    # shim would report them as the program's exit 127), and a non-root Sentinel
    # is not refused setgroups().
    own = [os.geteuid(), os.getegid(), sorted(set(os.getgroups()) | {os.getegid()})]
    report, _, _ = _spawn(tmp_path, ["no-such-command-xyz"], user=own)
    assert report["code"] == 127 and "not found in PATH" in report["error"]
    report, out, _ = _spawn(tmp_path, _STATUS, user=own)
    assert report["code"] == 0 and _status(out)["Uid"].split() == [str(os.geteuid())] * 4
