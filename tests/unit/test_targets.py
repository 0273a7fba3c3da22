"""Finding the target of ``sentinel watch``: name rules (15-character comm, argv[0],
exe), command-line regexes, the choice among several, and never Sentinel itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import pytest

from sentinel.core import targets
from sentinel.core.targets import Candidate, TargetSpec
from tests.conftest import PY, descendants, wait_until


def cand(pid=100, ppid=1, comm="python3", exe="/usr/bin/python3.11",
         cmdline=("python3", "app.py"), create_time=1000.0, uid=0) -> Candidate:
    return Candidate(pid, ppid, comm, exe, tuple(cmdline), create_time, uid)


@pytest.mark.parametrize("name, c, match", [
    ("python3", cand(), True),  # comm
    ("python3.11", cand(), True),  # exe basename
    ("app.py", cand(), True),  # the script argument, as pidof -x
    ("app", cand(), False),
    ("app.py", cand(cmdline=("python3", "-u", "/srv/app.py", "--port", "80")), True),
    ("app.py", cand(cmdline=("python3", "-c", "app.py")), False),  # code, not a script
    ("app.py", cand(cmdline=("python3", "-m", "app.py")), False),  # a module
    ("80", cand(cmdline=("python3", "app.py", "80")), False),  # only the first argument
    # The kernel cuts comm to 15 characters; argv[0] or exe still give the full name.
    ("memory-leaker-for-tests", cand(comm="memory-leaker-f", exe="/usr/bin/python3.11",
                                     cmdline=("/tmp/memory-leaker-for-tests", "x")), True),
    ("memory-leaker-for-tests", cand(comm="memory-leaker-f", exe="/opt/memory-leaker-for-tests",
                                     cmdline=("nginx: master process",)), True),
    # A different long name with the same first 15 characters does not match ...
    ("memory-leaker-for-prod", cand(comm="memory-leaker-f", exe="/usr/bin/python3.11",
                                    cmdline=("/tmp/memory-leaker-for-tests",)), False),
    # ... unless nothing but the cut comm is known (another user's exe, no cmdline).
    ("memory-leaker-for-prod", cand(comm="memory-leaker-f", exe=None, cmdline=()), True),
    ("memory-leaker-f", cand(comm="memory-leaker-f", exe=None, cmdline=()), True),
    ("leaker", cand(comm="memory-leaker-f", exe=None, cmdline=()), False),
])
def test_name_rules(name, c, match):
    assert TargetSpec(name=name).matches(c) is match


def test_match_quality_orders_exact_script_and_cut_names():
    spec = TargetSpec(name="my-long-worker-name.py")
    exact = cand(comm="my-long-worker-", exe="/usr/bin/python3.11",
                 cmdline=("/srv/my-long-worker-name.py",))
    script = cand(comm="python3", cmdline=("python3", "my-long-worker-name.py"))
    shebang = cand(comm="my-long-worker-", cmdline=("/usr/bin/python3", "./my-long-worker-name.py"))
    cut = cand(comm="my-long-worker-", exe=None, cmdline=())
    assert [spec.quality(c) for c in (exact, script, shebang, cut)] == [
        targets.MATCH_EXACT, targets.MATCH_SCRIPT, targets.MATCH_SCRIPT, targets.MATCH_CUT]
    assert spec.quality(cand()) == 0
    assert TargetSpec(pid=100).quality(cand()) == targets.MATCH_EXACT


def test_choose_prefers_the_best_match_and_returns_every_equally_good_root():
    spec = TargetSpec(name="worker.py")
    old_script = cand(pid=5, comm="python3", cmdline=("python3", "worker.py"), create_time=1.0)
    exact = cand(pid=6, comm="worker.py", exe="/srv/worker.py", cmdline=("/srv/worker.py",),
                 create_time=2.0)
    exact2 = cand(pid=7, comm="worker.py", exe="/srv/worker.py", cmdline=("/srv/worker.py",),
                  create_time=3.0)
    target, tied = targets.choose([old_script, exact2, exact], spec.quality)
    assert target is exact and tied == [exact, exact2]  # the older script match is weaker
    assert targets.choose([old_script], spec.quality) == (old_script, [old_script])


def test_cmdline_and_pid_specs():
    c = cand(cmdline=("python3", "-m", "gunicorn", "app:wsgi"))
    assert TargetSpec(cmdline=r"gunicorn\s+app:").matches(c)
    assert not TargetSpec(cmdline=r"^gunicorn").matches(c)
    assert not TargetSpec(cmdline=".").matches(cand(cmdline=()))  # kernel threads
    assert TargetSpec(pid=100).matches(c) and not TargetSpec(pid=101).matches(c)


def test_choose_takes_the_oldest_root_and_lists_every_root():
    master = cand(pid=10, ppid=1, create_time=5.0)
    workers = [cand(pid=11 + i, ppid=10, create_time=1.0) for i in range(3)]  # older, but kids
    other = cand(pid=50, ppid=1, create_time=7.0)
    tie = cand(pid=9, ppid=1, create_time=7.0)
    target, roots = targets.choose([other, *workers, tie, master])
    assert target is master
    assert [c.pid for c in roots] == [10, 9, 50]
    assert targets.choose([]) == (None, [])


@pytest.fixture
def long_named(tmp_path):
    link = tmp_path / "long-named-target-process"
    link.symlink_to(os.path.realpath(sys.executable))
    p = subprocess.Popen([str(link), "-c", "import time; print('ready', flush=True); "
                          "time.sleep(60)"], stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"ready\n"
    yield p
    p.kill()
    p.wait()
    p.stdout.close()


def test_scan_finds_a_real_long_named_process(long_named):
    [c] = targets.scan(TargetSpec(name="long-named-target-process"))
    assert c.pid == long_named.pid
    assert c.comm == "long-named-targ"  # what the kernel kept
    assert c.uid == os.getuid()
    assert targets.scan(TargetSpec(pid=long_named.pid)) == [c]


def test_scan_never_returns_this_process_or_its_ancestors(long_named):
    own = targets.own_lineage()
    assert os.getpid() in own and os.getppid() in own
    # The pytest process's own command line matches this pattern; it is skipped.
    everything = targets.scan(TargetSpec(cmdline="."), exclude=own)
    pids = {c.pid for c in everything}
    assert long_named.pid in pids and not pids & own
    unfiltered = {c.pid for c in targets.scan(TargetSpec(cmdline="."), exclude=set())}
    assert os.getpid() in unfiltered  # the negative control


def test_zombies_and_gone_processes_are_not_candidates():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_until(lambda: targets.candidate(p.pid) is None, 10, what="the zombie to be skipped")
    p.wait()
    assert targets.candidate(p.pid) is None


def test_permission_error_names_the_security_context_fix():
    exc = targets.TargetPermissionError(42, 1000, 65533)
    text = str(exc)
    assert text.startswith("cannot signal target pid 42: it runs as user 1000 and Sentinel "
                           "runs as user 65533 without CAP_KILL")
    assert "runAsUser: 1000" in text and "capabilities: {add: [KILL]}" in text
    assert "SYS_PTRACE" in text
    targets.check_signalable(cand(pid=os.getpid()))  # may signal itself: no error


def test_target_pid_of_itself_or_an_ancestor_is_refused_with_the_fix():
    with pytest.raises(targets.TargetIsSentinel) as self_:
        targets.check_target_pid(os.getpid())
    assert self_.value.exit_code == 2 and self_.value.pid == os.getpid()
    text = str(self_.value)
    assert text.startswith(f"--target-pid {os.getpid()} is Sentinel itself (")
    assert "A sidecar watches another container's process" in text and "\n" not in text
    with pytest.raises(targets.TargetIsSentinel, match=r"is Sentinel's parent \("):
        targets.check_target_pid(os.getppid())


def test_an_ancestor_two_levels_up_is_refused():
    """As if Sentinel were a grandchild of this process (sh -> sleep): this process is
    then an ancestor two levels up, whatever this process's own place (PID 1 or not)."""
    sh = subprocess.Popen(["sh", "-c", "sleep 60; exit 0"], start_new_session=True)
    try:
        grandchild = wait_until(lambda: (descendants(sh.pid) or [None])[0], 10,
                                what="the sleep under sh")
        with pytest.raises(targets.TargetIsSentinel) as info:
            targets.check_target_pid(os.getpid(), own_pid=grandchild)
        assert str(info.value).startswith(f"--target-pid {os.getpid()} is an ancestor of "
                                          "Sentinel, 2 levels up (")
        with pytest.raises(targets.TargetIsSentinel, match=r"is Sentinel's parent \("):
            targets.check_target_pid(sh.pid, own_pid=grandchild)
    finally:
        os.killpg(sh.pid, signal.SIGKILL)  # the sleep too: it would outlive sh
        sh.wait()


def test_target_pid_of_another_process_or_none_is_fine(long_named):
    targets.check_target_pid(long_named.pid)  # a child: not an ancestor
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    targets.check_target_pid(p.pid)  # gone: it may come back, so no error


def test_a_thread_is_not_a_target():
    import threading

    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        tid = t.native_id
        assert targets.thread_group_id(tid) == os.getpid() == targets.thread_group_id(os.getpid())
        with pytest.raises(targets.UsageError, match=rf"--target-pid {tid} is a thread of pid "
                                                     rf"{os.getpid()} \(.*\), not a process"):
            targets.check_target_pid(tid)
        # /proc/<tid> is readable, so without the check scan would return the thread.
        assert targets.candidate(tid) is not None
        assert targets.scan(TargetSpec(pid=tid), exclude=set()) == []
        assert [c.pid for c in targets.scan(TargetSpec(pid=os.getpid()), exclude=set())] == \
            [os.getpid()]
    finally:
        stop.set()
        t.join()


def test_describe_cuts_long_commands():
    c = cand(cmdline=("python3", "x" * 200))
    assert c.describe() == f"pid 100 ({('python3 ' + 'x' * 200)[:117]}...)"
    assert c.describe(40) == f"pid 100 ({('python3 ' + 'x' * 200)[:37]}...)"
    assert cand(cmdline=(), comm="kworker/0:1").command() == "[kworker/0:1]"


# ------------------------------------------------------------------ by the name it was started as

@pytest.fixture
def script_dir(tmp_path):
    return tmp_path


def _start(argv, **kw) -> subprocess.Popen:
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, **kw)
    assert p.stdout.readline() == b"ready\n"
    return p


def _stop(*procs) -> None:
    for p in procs:
        p.kill()
        p.wait()
        p.stdout.close()


SCRIPT = "import time\nprint('ready', flush=True)\ntime.sleep(60)\n"


def test_a_script_run_by_its_interpreter_is_found_by_its_name(script_dir):
    """python3 my-long-worker-name.py: comm is the interpreter's, argv[0] is python3."""
    name = f"my-long-worker-{uuid.uuid4().hex[:8]}.py"
    (script_dir / name).write_text(SCRIPT)
    p = _start([PY, "-u", name], cwd=script_dir)
    try:
        [c] = targets.scan(TargetSpec(name=name))
        assert c.pid == p.pid and c.comm == os.path.basename(PY)[:15]
        assert TargetSpec(name=name).quality(c) == targets.MATCH_SCRIPT
    finally:
        _stop(p)


def test_a_shebang_script_with_a_long_name_is_found_by_its_name(script_dir):
    """./my-long-worker-name.py: the kernel sets comm to the name cut to 15 characters
    and runs the interpreter with the script as argument."""
    name = f"my-long-worker-{uuid.uuid4().hex[:8]}.py"
    script = script_dir / name
    script.write_text(f"#!{PY}\n{SCRIPT}")
    script.chmod(0o755)
    p = _start([str(script)])
    try:
        [c] = targets.scan(TargetSpec(name=name))
        assert c.pid == p.pid and c.comm == name[:15]
    finally:
        _stop(p)


def test_equally_good_matches_are_all_returned_oldest_first(script_dir):
    name = f"twin-{uuid.uuid4().hex[:8]}.py"
    (script_dir / name).write_text(SCRIPT)
    older = _start([PY, name], cwd=script_dir)
    newer = _start([PY, name], cwd=script_dir)
    try:
        spec = TargetSpec(name=name)
        target, tied = targets.choose(targets.scan(spec), spec.quality)
        assert target.pid == older.pid and [c.pid for c in tied] == [older.pid, newer.pid]
    finally:
        _stop(older, newer)


def test_the_age_of_a_just_started_process_is_its_real_age():
    """psutil's create_time is only as exact as /proc/stat's btime (whole seconds)."""
    import time

    t0 = time.monotonic()
    p = subprocess.Popen(["sleep", "60"])
    try:
        age = targets.age_seconds(p.pid)
        assert age is not None and 0.0 <= age <= time.monotonic() - t0 + 0.02
        assert targets.age_seconds(999_999_999) is None
    finally:
        p.kill()
        p.wait()
