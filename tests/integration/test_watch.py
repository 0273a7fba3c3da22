"""``sentinel watch`` (sidecar mode) against real processes it did not start: the test
starts the leakers, Sentinel finds, attaches, kills, and attaches again to the next."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.conftest import (
    LEAKER, PY, Running, descendants, proc_state, require, wait_until,
)
from tests.fakes.apiserver import FakeApiServer

COMMON = ["--no-metrics", "--no-socket", "--log-format", "json", "--k8s-events", "off"]


@pytest.fixture
def procs():
    """Start processes (not Sentinel's children); all killed after the test."""
    started: list[subprocess.Popen] = []

    def start(argv: list[str], **kw) -> subprocess.Popen:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             stdin=subprocess.DEVNULL, start_new_session=True, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        p.wait(5)
        p.stdout.close()


@pytest.fixture
def long_name() -> str:
    """A name longer than comm's 15 characters, unique to the test (runs may overlap)."""
    return f"memory-leaker-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def named_python(tmp_path, long_name) -> str:
    """The interpreter under a long name: argv[0] and comm say the name, exe says python."""
    link = tmp_path / long_name
    link.symlink_to(os.path.realpath(sys.executable))
    return str(link)


def expect_line(p: subprocess.Popen, needle: str, timeout: float = 10.0) -> str:
    """Read ``p``'s stdout until a line containing ``needle`` (the leaker's handshakes)."""
    import select
    import time

    deadline = time.monotonic() + timeout
    fd = p.stdout.fileno()
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"no line with {needle!r} within {timeout}s from pid {p.pid}")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise AssertionError(f"pid {p.pid} closed stdout before {needle!r}")
        buf += chunk
        for line in buf.decode(errors="replace").splitlines():
            if needle in line:
                return line


def logged(s: Running, kind: str) -> list[dict]:
    return [rec for rec in s.logs() if rec.get("event") == kind]


def wait_logged(s: Running, kind: str, count: int = 1, timeout: float = 10.0) -> list[dict]:
    return wait_until(lambda: (lambda got: got if len(got) >= count else None)(logged(s, kind)),
                      timeout, what=lambda: f"{count} {kind!r} log line(s); stderr: "
                                            f"{s.stderr()[-2000:]}")


def watch(start_sentinel, *args: str) -> Running:
    return start_sentinel([*COMMON, *args], cmd="watch")


def test_kills_sigterm_then_sigkill_and_attaches_to_each_new_target(start_sentinel, procs,
                                                                    named_python, long_name):
    s = watch(start_sentinel, "--target-name", long_name, "--max-rss", "60Mi",
              "--grace-period", "1s")
    wait_logged(s, "waiting")
    first = procs([named_python, str(LEAKER), "--rate", "100"])
    expect_line(first, "ready")
    assert first.wait(10) == -signal.SIGTERM
    second = procs([named_python, str(LEAKER), "--rate", "100", "--ignore-term"])
    expect_line(second, "ready")
    assert second.wait(10) == -signal.SIGKILL
    attached = wait_logged(s, "attached", 2)
    assert [a["pid"] for a in attached] == [first.pid, second.pid]
    sent = logged(s, "signal_sent")
    assert [(e["signal"], e["kill"]["pids"][0]) for e in sent] == [
        ("SIGTERM", first.pid), ("SIGTERM", second.pid), ("SIGKILL", second.pid)]
    gap = sent[2]["kill"]["sigkill"] - sent[1]["kill"]["started"]
    assert 0.95 <= gap <= 1.5, gap
    finished = wait_logged(s, "kill_finished", 2)
    assert [f["kill"]["signals"] for f in finished] == [["SIGTERM"], ["SIGTERM", "SIGKILL"]]
    assert [d["pid"] for d in wait_logged(s, "detached", 2)] == [first.pid, second.pid]
    # Never exits on its own: still waiting for the next one.
    wait_until(lambda: len(logged(s, "waiting")) >= 2, 5, what="waiting again")
    assert s.popen.poll() is None
    s.signal(signal.SIGTERM)
    assert s.wait(5) == 0


def test_sigterm_leaves_the_target_alone_and_no_limit_means_no_kill(start_sentinel, procs,
                                                                   named_python, long_name):
    """The negative control: without --max-rss the same leaker is watched, never signalled."""
    target = procs([named_python, str(LEAKER), "--rate", "200", "--max", "80"])
    expect_line(target, "ready")
    s = watch(start_sentinel, "--target-name", long_name)
    [att] = wait_logged(s, "attached")
    assert att["pid"] == target.pid
    expect_line(target, "rss 8")  # grown past 80 MiB (its cap) while watched
    s.signal(signal.SIGTERM)
    assert s.wait(5) == 0
    assert target.poll() is None
    assert not logged(s, "signal_sent")
    assert any("the target is left alone" in r["msg"] for r in logged(s, "shutdown"))


def test_oldest_of_several_matches_and_never_itself(start_sentinel, procs):
    marker = f"watch-me-{uuid.uuid4().hex[:8]}"
    code = "import sys, time; print('ready', flush=True); time.sleep(120)"
    older = procs([PY, "-c", code, marker])
    expect_line(older, "ready")
    newer = procs([PY, "-c", code, marker])
    expect_line(newer, "ready")
    # Sentinel's own command line matches the pattern too, and must be skipped.
    s = watch(start_sentinel, "--target-cmdline", marker)
    [att] = wait_logged(s, "attached")
    assert att["pid"] == older.pid
    [cands] = logged(s, "candidates")
    assert cands["pids"] == [older.pid, newer.pid] and cands["level"] == "warning"
    assert f"pid {older.pid}" in cands["msg"] and f"pid {newer.pid}" in cands["msg"]
    assert cands["msg"].startswith(f"2 processes match command line matching {marker!r} "
                                   "equally well: ")
    assert cands["msg"].endswith("; to choose another, give --target-pid or a "
                                 "--target-cmdline that only it matches")
    older.kill()
    older.wait(5)
    attached = wait_logged(s, "attached", 2)
    assert attached[1]["pid"] == newer.pid


def test_a_whole_tree_is_killed(start_sentinel, procs, named_python, long_name):
    s = watch(start_sentinel, "--target-name", long_name, "--max-rss", "60Mi")
    wait_logged(s, "waiting")
    target = procs([named_python, str(LEAKER), "--rate", "100", "--depth", "2"])
    expect_line(target, "ready")
    assert target.wait(10) in (-signal.SIGTERM, 128 + signal.SIGTERM)
    [crossed] = wait_logged(s, "limit_crossed")
    assert len(crossed["pids"]) == 3 and crossed["pids"][0] == target.pid
    for pid in crossed["pids"][1:]:
        wait_until(lambda: proc_state(pid) in (None, "Z"), 5, what=f"descendant {pid} gone")


def test_target_pid_attaches_once(start_sentinel, procs):
    p = procs([PY, "-c", "import time; print('ready', flush=True); time.sleep(120)"])
    expect_line(p, "ready")
    s = watch(start_sentinel, "--target-pid", str(p.pid))
    [att] = wait_logged(s, "attached")
    assert att["pid"] == p.pid
    p.kill()
    p.wait(5)
    wait_until(lambda: any("not attaching again" in r["msg"] for r in logged(s, "waiting")), 5,
               what="the idle line")
    assert s.popen.poll() is None


def test_events_work_in_watch_mode(start_sentinel, procs, named_python, long_name, tmp_path):
    with FakeApiServer() as api:
        home = tmp_path / "home"
        home.mkdir()
        env = {"HOME": str(home), "KUBECONFIG": str(api.kubeconfig(tmp_path / "kubeconfig")),
               "POD_NAME": "web-0", "POD_NAMESPACE": "demo", "POD_UID": ""}
        s = start_sentinel(["--no-metrics", "--no-socket", "--log-format", "json",
                            "--target-name", long_name, "--max-rss", "60Mi"], cmd="watch",
                           env=env)
        wait_logged(s, "waiting")
        target = procs([named_python, str(LEAKER), "--rate", "100"])
        expect_line(target, "ready")
        assert target.wait(10) == -signal.SIGTERM
        api.wait_for(lambda: api.events(), 10, "the Event")
    [ev] = api.events()
    assert (ev["type"], ev["reason"], ev["action"]) == ("Warning", "MemoryLimitExceeded",
                                                         "SIGTERM")
    assert f"pids {target.pid}" in ev["note"] and long_name in ev["note"]
    assert ev["regarding"] == {"apiVersion": "v1", "kind": "Pod", "name": "web-0",
                               "namespace": "demo"}


def test_a_target_of_another_user_is_a_clear_error(procs):
    require("setpriv", root=True)
    """Target as nobody (65534); Sentinel as 65533 without CAP_KILL: it may not signal it."""
    shared = Path(tempfile.mkdtemp(prefix="sentinel-watch-"))
    try:
        shared.chmod(0o755)
        marker = f"other-user-{uuid.uuid4().hex[:8]}"
        target = procs(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", PY,
                        "-c", "import time; print('ready', flush=True); time.sleep(120)",
                        marker], cwd=shared)
        expect_line(target, "ready")
        s = Running(["setpriv", "--reuid=65533", "--regid=65533", "--clear-groups",
                     "--inh-caps=-all", PY, "-m", "sentinel", "watch", *COMMON,
                     "--target-cmdline", marker, "--max-rss", "1Mi"],
                    pid1=False, env={"HOME": str(shared)},
                    cwd=str(Path(__file__).resolve().parents[2]))
        try:
            [failed] = wait_logged(s, "attach_failed")
            msg = failed["msg"]
            assert failed["level"] == "error"
            assert msg.startswith(f"cannot signal target pid {target.pid}: it runs as user "
                                  "65534 and Sentinel runs as user 65533 without CAP_KILL")
            assert "runAsUser: 65534" in msg and "capabilities: {add: [KILL]}" in msg
            assert "SYS_PTRACE" in msg
            assert not logged(s, "attached")
            assert target.poll() is None
        finally:
            s.kill_all()
    finally:
        shutil.rmtree(shared, ignore_errors=True)


# ---------------------------------------------------------------- targets that cannot be watched

def watch_to_exit(argv_prefix: list[str], *args: str, timeout: float = 10) -> \
        subprocess.CompletedProcess:
    return subprocess.run([*argv_prefix, PY, "-m", "sentinel", "watch", *COMMON, *args],
                          capture_output=True, text=True, timeout=timeout,
                          cwd=str(Path(__file__).resolve().parents[2]))


@pytest.mark.parametrize("who", ["itself", "parent", "pid 1"])
def test_target_pid_of_sentinel_or_an_ancestor_is_a_usage_error(who):
    """It is never matched, so Sentinel would wait for it forever: exit 2 with one line."""
    if who == "itself":  # the shell's PID becomes Sentinel's through exec
        r = subprocess.run(["sh", "-c", f'exec "$0" -m sentinel watch {" ".join(COMMON)} '
                            '--target-pid $$', PY], capture_output=True, text=True, timeout=10,
                           cwd=str(Path(__file__).resolve().parents[2]))
        expected = "is Sentinel itself ("
    elif who == "parent":  # the caller's shell, here: this test
        r = watch_to_exit([], "--target-pid", str(os.getpid()))
        expected = "is Sentinel's parent ("
    else:
        # Hermetic, whatever this process's own place: in a PID namespace of its own,
        # PID 1 is a shell whose child shell runs Sentinel (it does not exec it).
        inner = shlex.join([PY, "-m", "sentinel", "watch", *COMMON, "--target-pid", "1"])
        r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c",
                            f"sh -c {shlex.quote(inner + '; exit $?')}; exit $?"],
                           capture_output=True, text=True, timeout=10,
                           cwd=str(Path(__file__).resolve().parents[2]))
        expected = "is an ancestor of Sentinel, 2 levels up ("
    assert r.returncode == 2, r.stderr
    [line] = r.stderr.splitlines()
    assert line.startswith("sentinel: error: --target-pid ") and expected in line
    assert "a sidecar watches another container's process" in line.lower()
    assert "--target-name" in line and "Traceback" not in r.stderr


def test_target_pid_of_a_thread_is_a_usage_error_naming_its_process():
    import threading

    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        r = watch_to_exit([], "--target-pid", str(t.native_id))
    finally:
        stop.set()
        t.join()
    assert r.returncode == 2, r.stderr
    [line] = r.stderr.splitlines()
    assert f"--target-pid {t.native_id} is a thread of pid {os.getpid()}" in line
    assert f"--target-pid {os.getpid()}" in line.split("give the process:")[1]


def test_target_pid_with_no_process_waits_and_says_why(start_sentinel):
    # In a PID namespace of its own (Sentinel is its PID 1) a PID this high has no
    # process, whatever runs on the host.
    pid = 30000
    s = start_sentinel([*COMMON, "--target-pid", str(pid)], cmd="watch", pid1=True)
    [line] = wait_logged(s, "waiting")
    assert line["level"] == "info" and line["reason"] == "no_such_pid"
    assert f"no process with pid {pid} yet" in line["msg"]
    assert "a sidecar can start before its target" in line["msg"]
    assert s.popen.poll() is None
    s.signal(signal.SIGINT)
    assert s.wait(5) == 0
    assert len(logged(s, "waiting")) == 1  # said once, not at every poll
    assert "Traceback" not in s.stderr()


def test_many_matches_are_listed_compactly(start_sentinel, procs):
    marker = f"many-{uuid.uuid4().hex[:8]}"
    code = "import time; print('ready', flush=True); time.sleep(120)"
    started = []
    for _ in range(13):
        p = procs([PY, "-c", code, marker])
        expect_line(p, "ready")
        started.append(p)
    s = watch(start_sentinel, "--target-cmdline", marker)
    [att] = wait_logged(s, "attached")
    assert att["pid"] == started[0].pid  # the oldest
    [cands] = logged(s, "candidates")
    assert cands["candidates_total"] == 13
    assert cands["pids"] == [p.pid for p in started[:10]]
    msg = cands["msg"]
    assert msg.startswith(f"13 processes match command line matching {marker!r} equally well: ")
    assert " and 3 more; choosing the oldest, " in msg
    assert all(f"pid {p.pid} " not in msg for p in started[10:])


def test_match_everything_skips_sentinel_and_stays_compact(start_sentinel):
    """--target-cmdline '.*' (no limit: watching only) attaches to the oldest other
    process and lists the candidates compactly. Hermetic: in a PID namespace of its
    own, Sentinel (PID 1, exec'd by sh) and twelve sleeps are all there is."""
    script = ("for i in $(seq 12); do sleep 60 & done; "
              f"exec {PY} -m sentinel watch {' '.join(COMMON)} --target-cmdline '.*'")
    s = Running(["sh", "-c", script], pid1=True, env=None)
    try:
        [att] = wait_logged(s, "attached")
        sleeps = sorted(descendants(s.pid))
        assert len(sleeps) == 12
        # In a fresh namespace PIDs grow with age: the smallest sleep is the oldest,
        # and Sentinel (PID 1) is never a candidate.
        [cands] = logged(s, "candidates")
        assert 1 not in cands["pids"] and len(cands["pids"]) == 10
        assert att["pid"] == cands["pids"][0] == min(cands["pids"])
        assert cands["candidates_total"] == 12
        assert " and 2 more;" in cands["msg"]
        s.signal(signal.SIGTERM)
        assert s.wait(5) == 0
    finally:
        s.kill_all()


def _ancestors(pid: int) -> list[int]:
    out = []
    while pid > 1:
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        out.append(pid)
    return out


def test_relative_kubeconfig_env_is_read_from_the_start_directory(start_sentinel, procs,
                                                                 named_python, long_name,
                                                                 tmp_path):
    """Sentinel moves to / once running; a relative $KUBECONFIG is still kubectl's file."""
    with FakeApiServer() as api:
        api.kubeconfig(tmp_path / "kubeconfig")
        home = tmp_path / "home"
        home.mkdir()
        env = {"HOME": str(home), "KUBECONFIG": "kubeconfig", "POD_NAME": "web-0",
               "POD_NAMESPACE": "demo", "POD_UID": ""}
        s = start_sentinel(["--no-metrics", "--no-socket", "--log-format", "json",
                            "--target-name", long_name, "--max-rss", "60Mi"], cmd="watch",
                           env=env, cwd=str(tmp_path))
        wait_logged(s, "waiting")
        target = procs([named_python, str(LEAKER), "--rate", "100"])
        expect_line(target, "ready")
        assert target.wait(10) == -signal.SIGTERM
        api.wait_for(lambda: api.events(), 10, "the Event")


# ------------------------------------------------------------------ found by the name it was started as

SLEEPER = "import time\nprint('ready', flush=True)\ntime.sleep(120)\n"


def test_a_script_run_by_its_interpreter_is_found_by_its_long_name(start_sentinel, procs,
                                                                  tmp_path):
    """python3 my-long-worker-<id>.py: comm is python3's, argv[0] is python3; the name
    is the script's, longer than comm's 15 characters. Found, attached, killed."""
    name = f"my-long-worker-{uuid.uuid4().hex[:8]}.py"
    (tmp_path / name).write_text(Path(LEAKER).read_text())
    s = watch(start_sentinel, "--target-name", name, "--max-rss", "60Mi", "--grace-period", "1s")
    wait_logged(s, "waiting")
    target = procs([PY, name, "--rate", "100"], cwd=tmp_path)
    expect_line(target, "ready")
    assert target.wait(10) == -signal.SIGTERM
    [att] = wait_logged(s, "attached")
    assert att["pid"] == target.pid
    assert not logged(s, "candidates")  # one match: nothing to warn about


def test_equally_good_name_matches_are_a_warning_listing_them(start_sentinel, procs, tmp_path):
    name = f"twin-worker-{uuid.uuid4().hex[:8]}.py"
    (tmp_path / name).write_text(SLEEPER)
    older = procs([PY, name], cwd=tmp_path)
    expect_line(older, "ready")
    newer = procs([PY, "-u", name], cwd=tmp_path)
    expect_line(newer, "ready")
    s = watch(start_sentinel, "--target-name", name)
    [att] = wait_logged(s, "attached")
    assert att["pid"] == older.pid
    [cands] = logged(s, "candidates")
    assert cands["level"] == "warning" and cands["pids"] == [older.pid, newer.pid]
    assert cands["msg"].startswith(f"2 processes match name {name!r} equally well: "
                                   f"pid {older.pid} (")
    assert f"pid {newer.pid} (" in cands["msg"]
    assert f"choosing the oldest, pid {older.pid} (" in cands["msg"]


def test_the_age_of_a_just_started_target_is_its_real_age(start_sentinel, procs, tmp_path):
    """psutil's create_time rests on /proc/stat's btime (whole seconds): a target
    started a few ms ago looked up to a second old (or 0.0s, clamped)."""
    import calendar
    import time

    from sentinel.control.client import request

    marker = f"young-{uuid.uuid4().hex[:8]}"
    sock = str(tmp_path / "s.sock")
    s = start_sentinel(["--no-metrics", "--socket", sock, "--log-format", "json",
                        "--k8s-events", "off", "--target-cmdline", marker], cmd="watch")
    wait_logged(s, "waiting")
    before = time.time()
    target = procs([PY, "-c", "import time; time.sleep(120)", marker])
    after = time.time()
    [att] = wait_logged(s, "attached")
    assert att["pid"] == target.pid
    logged_at = calendar.timegm(time.strptime(att["ts"][:19], "%Y-%m-%dT%H:%M:%S")) \
        + float("0" + att["ts"][19:-1])
    # The true age when the line was written lies between these two bounds (plus the
    # 10 ms clock tick of /proc/<pid>/stat and the log's 1 ms resolution).
    low, high = logged_at - after - 0.012, logged_at - before + 0.012
    assert low <= att["age_seconds"] <= high, (low, att["age_seconds"], high)
    assert f"started {att['age_seconds']:.1f}s ago" in att["msg"]
    # The start time that status (and the metrics) report rests on the same age.
    status = request(sock, "status")["status"]
    asked = time.time()
    assert asked - after - 0.05 <= status["workload_uptime_seconds"] <= asked - before + 0.05
