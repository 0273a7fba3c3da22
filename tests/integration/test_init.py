"""What an init must do, checked with real processes, as PID 1 of a new PID namespace
and as an ordinary parent registered as child subreaper."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.conftest import (
    CHILDREN, PY, SENTINEL, clean_env, descendants, printer, proc_state, wait_until, zombies_of,
)

# Every signal a process can catch, minus SIGCHLD (Sentinel's own) and the
# job-control stops (tested on a terminal in test_jobcontrol).
FORWARDED = sorted(
    set(signal.valid_signals())
    - {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGTSTP, signal.SIGTTIN,
       signal.SIGTTOU, 32, 33}
)
FAULTS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT,
          signal.SIGTRAP, signal.SIGSYS}


def _name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


@pytest.mark.parametrize("code", [0, 1, 2, 42, 126, 127, 128, 200, 255])
def test_exit_code_passes_through(start_sentinel, mode, code):
    s = start_sentinel(["--no-metrics", "--no-socket", "--", "sh", "-c", f"exit {code}"],
                       pid1=mode == "pid1")
    assert s.wait() == code


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV, signal.SIGUSR1, signal.SIGTERM])
def test_death_by_signal_gives_128_plus_n(start_sentinel, mode, sig):
    s = start_sentinel(["--no-metrics", "--no-socket", "--", "sh", "-c", f"kill -{int(sig)} $$"],
                       pid1=mode == "pid1")
    assert s.wait() == 128 + sig


@pytest.mark.parametrize("single", [False, True], ids=["group", "single-child"])
def test_every_catchable_signal_is_forwarded(start_sentinel, mode, single):
    args = ["--no-metrics", "--no-socket"] + (["--single-child"] if single else [])
    s = start_sentinel(args + ["--", *printer("--fork")], pid1=mode == "pid1")
    roles = {s.expect("ready").split()[1] for _ in range(2)}
    assert roles == {"child", "grandchild"}
    for sig in FORWARDED:
        s.signal(sig)
        assert s.expect(f"got child {_name(sig)}") == f"got child {_name(sig)}"
    # The grandchild shares the child's process group: in group mode it gets every
    # signal too; in single-child mode none (its lines would have come in among
    # the child's, which expect() has read past and kept in s.lines).
    grand = [ln for ln in s.lines if ln.startswith("got grandchild")]
    if single:
        assert grand == []
    else:
        # A SIGCONT follows each shutdown signal (SIGTERM, SIGINT): count names, not lines.
        while {ln.split()[-1] for ln in grand} != {_name(x) for x in FORWARDED}:
            grand.append(s.expect("got grandchild"))
    names = {ln.split()[-1] for ln in s.lines if ln.startswith("got child")}
    assert {_name(x) for x in FAULTS & set(FORWARDED)} <= names  # fault signals sent by kill()


def test_rewrite_and_drop(start_sentinel, mode):
    s = start_sentinel(["--no-metrics", "--no-socket", "--rewrite", "USR1:USR2",
                        "--rewrite", "HUP:0", "--", *printer()], pid1=mode == "pid1")
    s.expect("ready child")
    s.signal(signal.SIGUSR1)
    assert s.expect("got child") == "got child SIGUSR2"
    s.signal(signal.SIGHUP)  # dropped
    s.signal(signal.SIGWINCH)  # a marker that is passed on as is
    assert s.expect("got child") == "got child SIGWINCH"
    assert not any("SIGHUP" in ln for ln in s.lines)


def test_sigterm_to_sentinel_is_forwarded_and_status_returned(start_sentinel, mode):
    s = start_sentinel(["--no-metrics", "--no-socket", "--", *printer("--exit-on", "TERM=7")],
                       pid1=mode == "pid1")
    s.expect("ready child")
    s.signal(signal.SIGTERM)
    assert s.wait() == 7
    s2 = start_sentinel(["--no-metrics", "--no-socket", "--", "sleep", "60"], pid1=mode == "pid1")
    wait_until(lambda: descendants(s2.pid), what="sleep to start")
    s2.signal(signal.SIGINT)
    assert s2.wait() == 128 + signal.SIGINT


@pytest.mark.parametrize("count", [300])
def test_orphans_are_reaped_even_in_a_burst(start_sentinel, mode, count):
    s = start_sentinel(["--no-metrics", "--no-socket", "--", PY, str(CHILDREN / "orphans.py"),
                        str(count)], pid1=mode == "pid1")
    assert s.expect("orphaned", timeout=60) == f"orphaned {count}"
    # Each orphan exited at once: without reaping, `count` zombies would stay.
    # Only the main child is left: every orphan exited and was reaped.
    wait_until(lambda: len(descendants(s.pid)) == 1 and not zombies_of(s.pid), 10,
               what="no zombies under Sentinel")


def test_leftovers_stopped_when_main_child_exits(start_sentinel, mode):
    """The main child leaves two orphans behind and exits 3: one handles SIGTERM, one
    ignores it. What only the sweep produces, as PID 1 too (where the namespace's end
    would SIGKILL both anyway): the first one's SIGTERM handler runs, Sentinel says so
    in two lines, and it exits only after the grace period, once the SIGKILL is sent."""
    import time

    s = start_sentinel(["--no-metrics", "--no-socket", "--log-format", "json",
                        "--grace-period", "0.5s", "--", PY, str(CHILDREN / "orphans.py"), "2",
                        "--linger", "--polite", "1", "--stubborn", "--exit", "3"],
                       pid1=mode == "pid1")
    orphans = [int(s.expect("orphan ").split()[1]) for _ in range(2)]
    s.expect("orphaned 2")
    exited = time.monotonic()
    code = s.wait(timeout=10)
    took = time.monotonic() - exited
    assert code == 3
    assert s.rest()[-1] == f"orphan {orphans[0]} got SIGTERM"  # its handler ran
    cleanup = [r["msg"] for r in s.logs() if r.get("event") == "cleanup"]
    assert cleanup[0].startswith("stopping 2 leftover process(es) of the workload: ")
    assert cleanup[1].startswith("SIGKILL to 1 leftover process(es) after the 0.5s grace "
                                 f"period: [{orphans[1]}]")
    assert 0.45 <= took < 5, took  # the stubborn one held Sentinel for the grace period
    if mode == "subreaper":  # in a namespace the PIDs printed are the namespace's own
        for pid in orphans:
            wait_until(lambda: proc_state(pid) is None, 5, what=f"orphan {pid} gone")


def test_arguments_that_look_like_flags_reach_the_command(start_sentinel, mode):
    args = ["--max-rss", "--help", "--", "-h", "--no-metrics", "run"]
    s = start_sentinel(["--no-metrics", "--no-socket", "--", "printf", "%s\\n", *args],
                       pid1=mode == "pid1")
    assert s.wait() == 0
    out = [s.readline(2) for _ in args]
    assert out == args


def test_environment_cwd_and_fds_are_passed_on(start_sentinel, tmp_path):
    r, w = os.pipe()
    os.set_inheritable(r, True)
    s = start_sentinel(["--no-metrics", "--no-socket", "--", *printer("--info")],
                       env={"SENTINEL_TEST_VAR": "kept"}, cwd=str(tmp_path), pass_fds=(r,))
    assert s.expect("cwd") == f"cwd {tmp_path}"
    assert s.expect("env") == "env SENTINEL_TEST_VAR=kept"
    fds = eval(s.expect("fds").split(" ", 1)[1])
    assert r in fds
    sid_line = s.expect("sid").split()
    child_pid = int(s.expect("ready child").split()[2])
    assert int(sid_line[1]) == child_pid  # its own session
    # Sentinel does not pin the directory it was started in.
    assert os.readlink(f"/proc/{s.pid}/cwd") == "/"
    os.close(r)
    os.close(w)


def _given_usr1_blocked_usr2_ignored():
    # What a parent may hand Sentinel: a blocked and an ignored signal.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def _masks(line_pair: list[str]) -> tuple[int, int]:
    status = dict(line.split(":\t") for line in line_pair)
    return int(status["SigBlk"], 16), int(status["SigIgn"], 16)


@pytest.mark.parametrize("restart", [False, True], ids=["first", "after-restart"])
def test_signal_mask_and_ignored_signals_are_exactly_what_sentinel_was_given(
        start_sentinel, restart):
    # grep, not Python: Python would ignore SIGPIPE itself at start-up. Exactly
    # SIGUSR2 ignored: not glibc's 32/33 (its posix_spawn leaves them SIG_IGN
    # unless told otherwise), not CPython's SIGPIPE/SIGXFSZ; exactly SIGUSR1 blocked.
    args = ["--no-metrics", "--no-socket"]
    if restart:
        args += ["--restart", "always", "--restart-delay", "0.01s"]
    s = start_sentinel(args + ["--", "grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"],
                       preexec_fn=_given_usr1_blocked_usr2_ignored)
    for run in range(2 if restart else 1):
        blocked, ignored = _masks([s.readline(5) or "" for _ in range(2)])
        assert blocked == 1 << (signal.SIGUSR1 - 1), (run, hex(blocked))
        assert ignored == 1 << (signal.SIGUSR2 - 1), (run, hex(ignored))
    if restart:
        s.signal(signal.SIGTERM)
        # 0: the SIGTERM came between two runs (the last one's status); 143: it reached a
        # grep that was running (forwarded). Both are right; which one is timing.
        assert s.wait() in (0, 143)
    else:
        assert s.wait() == 0


def test_parent_death_signal(start_sentinel, tmp_path):
    # A parent that starts Sentinel with --pdeathsig TERM, then dies.
    script = (
        "import subprocess, sys, os\n"
        f"p = subprocess.Popen({SENTINEL!r} + ['run', '--no-metrics', '--no-socket', "
        "'--pdeathsig', 'TERM', '--', *sys.argv[1:]])\n"
        "print('sentinel', p.pid, flush=True)\n"
        "sys.stdin.readline()\n"
        "os._exit(0)\n"
    )
    parent = subprocess.Popen([PY, "-c", script, *printer("--exit-on", "TERM=5")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        first = parent.stdout.readline().split()
        sentinel_pid = int(first[1])
        lines = []
        while not (lines and lines[-1].startswith("ready child")):
            lines.append(parent.stdout.readline())
        parent.stdin.write("die\n")
        parent.stdin.flush()
        parent.wait(5)
        got = parent.stdout.readline()
        assert got.strip() == "got child SIGTERM"
        wait_until(lambda: proc_state(sentinel_pid) in (None, "Z"), 10, what="sentinel exits")
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
        parent.stdin.close()


def test_nested_sentinels_pass_signals_and_codes(start_sentinel, mode):
    s = start_sentinel(["--no-metrics", "--no-socket", "--", *SENTINEL, "run", "--no-metrics",
                        "--no-socket", "--", *printer("--exit-on", "USR2=9")],
                       pid1=mode == "pid1")
    s.expect("ready child")
    s.signal(signal.SIGUSR1)
    assert s.expect("got child") == "got child SIGUSR1"
    s.signal(signal.SIGUSR2)
    assert s.wait() == 9


def test_missing_and_non_executable_commands(tmp_path):
    def run(*cmd):
        return subprocess.run([*SENTINEL, "run", "--no-metrics", "--no-socket", "--", *cmd],
                              capture_output=True, text=True, timeout=20)

    missing = run("definitely-not-a-command-xyz")
    assert missing.returncode == 127
    assert missing.stderr.count("\n") == 1 and "not found" in missing.stderr
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    noexec = run(str(script))
    assert noexec.returncode == 126
    assert "not executable" in noexec.stderr and "Traceback" not in noexec.stderr
    directory = run(str(tmp_path))
    assert directory.returncode == 126 and "directory" in directory.stderr
    nofile = run(str(tmp_path / "nope"))
    assert nofile.returncode == 127 and "no such file" in nofile.stderr


@pytest.mark.parametrize("argv,needle", [
    (["run", "--max-rss", "0", "--", "true"], "200Mi"),
    (["run", "--max-rss", "12 parsecs", "--", "true"], "200Mi"),
    (["run", "--grace-period", "-1", "--", "true"], "--grace-period"),
    (["run", "--nonsense", "--", "true"], "--nonsense"),
    (["run"], "no command"),
])
def test_bad_input_is_one_line_and_exit_2(argv, needle):
    p = subprocess.run([*SENTINEL, *argv], capture_output=True, text=True, timeout=20)
    assert p.returncode == 2
    assert needle in p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_help_reads_well():
    top = subprocess.run([*SENTINEL, "--help"], capture_output=True, text=True, timeout=20)
    assert top.returncode == 0 and "run" in top.stdout and "version" in top.stdout
    run = subprocess.run([*SENTINEL, "run", "--help"], capture_output=True, text=True, timeout=20)
    assert run.returncode == 0
    for flag in ("--max-rss", "--grace-period", "--rewrite", "SENTINEL_MAX_RSS", "128+N"):
        assert flag in run.stdout
    v = subprocess.run([*SENTINEL, "version"], capture_output=True, text=True, timeout=20)
    assert v.returncode == 0 and v.stdout.startswith("sentinel ")


@pytest.mark.parametrize("args,env,needle", [
    ([], {"SENTINEL_SOCKET_IDLE_TIMEOUT": "soon"}, "SENTINEL_SOCKET_IDLE_TIMEOUT: 'soon' is not "
                                                   "a duration"),
    ([], {"SENTINEL_SOCKET_MAX_CLIENTS": "0"}, "SENTINEL_SOCKET_MAX_CLIENTS: '0' is not a "
                                               "whole number >= 1"),
    (["--restart", "always", "--restart-delay", "1m"], {}, "--restart-delay 60s is longer than "
                                                           "--restart-max-delay 30s"),
    (["--metrics-address", "[::1]:9000"], {}, "--metrics-address: '[::1]:9000' holds a port"),
])
def test_bad_settings_stop_sentinel_before_the_workload_runs(tmp_path, args, env, needle):
    """Exit 2 and one line at start-up; the workload (which would leave a file) never runs."""
    marker = tmp_path / "ran"
    p = subprocess.run([*SENTINEL, "run", "--no-metrics", *args, "--", "touch", str(marker)],
                       capture_output=True, text=True, timeout=20, env=clean_env(env))
    assert p.returncode == 2, p.stderr
    [line] = p.stderr.splitlines()
    assert line.startswith("sentinel: error: ") and needle in line, line
    assert not marker.exists()


def test_the_test_helper_keeps_the_developers_settings_out(start_sentinel, monkeypatch,
                                                           tmp_path):
    """A developer's shell with SENTINEL_* settings and a kubeconfig must not change what
    a test's Sentinel does; what the test itself sets still gets through."""
    leaked_socket = tmp_path / "leaked.sock"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("not: [a kubeconfig")
    monkeypatch.setenv("SENTINEL_MAX_RSS", "64k")  # would kill the workload at once
    monkeypatch.setenv("SENTINEL_SOCKET", str(leaked_socket))
    monkeypatch.setenv("SENTINEL_LOG_FORMAT", "json")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    s = start_sentinel(["--no-metrics", "--no-socket", "--", *printer("--info", "--exit-on",
                                                                      "TERM=0")],
                       env={"SENTINEL_TEST_VAR": "kept", "SENTINEL_GRACE_PERIOD": "250ms"})
    assert s.expect("env") == "env SENTINEL_TEST_VAR=kept"
    s.expect("ready child")
    s.signal(signal.SIGTERM)
    assert s.wait() == 0  # not 143 from a 64k limit
    err = s.stderr()
    assert "(no memory limit: watching only)" in err and "limit crossed" not in err
    assert '"level": ' not in err  # human lines: no leaked SENTINEL_LOG_FORMAT
    assert str(kubeconfig) not in err and not leaked_socket.exists()


@pytest.mark.parametrize("term_exit,success,said", [
    # Dies of SIGTERM (143), which --success-exit-code maps to 0; the kill still fails it.
    (None, "143", "exit code 143 is reported as 137 (a memory kill is a failure, although "
                  "--success-exit-code maps 143 to 0; --memory-kill-exit-code sets the code)"),
    (0, None, "exit code 0 is reported as 137 (a memory kill is a failure; "
              "--memory-kill-exit-code sets the code)"),
    (3, "3", "exit code 3 is reported as 137 (a memory kill is a failure, although "
             "--success-exit-code maps 3 to 0; --memory-kill-exit-code sets the code)"),
])
def test_the_line_on_a_changed_exit_code_names_the_rule_that_changed_it(start_sentinel,
                                                                        term_exit, success,
                                                                        said):
    from tests.conftest import leaker

    args = ["--no-metrics", "--no-socket", "--log-format", "json", "--max-rss", "60Mi"]
    args += ["--success-exit-code", success] if success else []
    extra = ["--term-exit", str(term_exit)] if term_exit is not None else []
    s = start_sentinel([*args, "--", *leaker("--rate", "100", "--quiet", *extra)])
    assert s.wait() == 137
    [line] = [r for r in s.logs() if r.get("event") == "exit_code"]
    assert line["msg"] == said


def test_the_line_on_a_success_exit_code_names_the_option(start_sentinel):
    s = start_sentinel(["--no-metrics", "--no-socket", "--log-format", "json",
                        "--success-exit-code", "3", "--", "sh", "-c", "exit 3"])
    assert s.wait() == 0
    [line] = [r for r in s.logs() if r.get("event") == "exit_code"]
    assert line["msg"] == "exit code 3 is reported as 0 (--success-exit-code 3)"


@pytest.mark.parametrize("relative", [False, True], ids=["absolute-command", "relative-command"])
def test_a_restarted_workload_starts_in_the_directory_of_the_first_run(start_sentinel, mode,
                                                                       tmp_path, relative):
    # Sentinel moves itself to / after the first spawn (not to pin the directory);
    # every restart must still start where the first run did (Docker's WORKDIR,
    # a relative ./app or script path).
    script = tmp_path / "app.sh"
    script.write_text("#!/bin/sh\necho \"cwd $(pwd)\"\nls app.sh >/dev/null || exit 9\nexit 3\n")
    script.chmod(0o755)
    cmd = ["./app.sh"] if relative else ["sh", str(script)]
    s = start_sentinel(["--no-metrics", "--no-socket", "--restart", "on-failure",
                        "--max-restarts", "2", "--restart-delay", "50ms", "--", *cmd],
                       cwd=str(tmp_path), pid1=(mode == "pid1"))
    assert s.wait(30) == 3  # not 9 (no app.sh in /), nor 127 (./app.sh not found)
    lines = [line for line in s.rest() if line.startswith("cwd ")]
    assert lines == [f"cwd {tmp_path}"] * 3
