"""The pre-kill hook (``--pre-kill-hook``) and ``--dry-run``, with a real Sentinel killing
(or not) a real leaker: the hook that succeeds, fails, hangs and floods; its environment;
its PID kept out of the workload's measure; no zombie. The dry run that sends nothing and
reports everything else, in the single-command form and for one program of a file."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from tests.conftest import (PY, SENTINEL, clean_env, leaker, proc_state, wait_until,
                            zombies_of)
from tests.fakes.apiserver import FakeApiServer
from tests.integration.test_events import env_for

COMMON = ["--no-socket", "--log-format", "json", "--termination-log", ""]
LIMIT = 60 * 2**20


def events_of(s, kind: str) -> list[dict]:
    return [rec for rec in s.logs() if rec.get("event") == kind]


def wall(rec: dict) -> float:
    """A JSON log line's time (``ts``, ISO 8601 UTC with milliseconds) as Unix seconds."""
    return datetime.fromisoformat(rec["ts"].replace("Z", "+00:00")).timestamp()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def sample_value(text: str, name: str, **labels) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def session_members(sid: int) -> list[int]:
    """Live processes whose session ID is ``sid`` (/proc/<pid>/stat field 6)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(name))
    return out


def hook(script: str) -> list[str]:
    return ["--pre-kill-hook", f"sh -c '{script}'"]


# ------------------------------------------------------------------------------ the hook

def test_a_hook_that_succeeds_runs_before_the_sigterm_with_the_kill_in_its_env(
        start_sentinel, tmp_path, mode):
    env_file = tmp_path / "hook.env"
    with FakeApiServer() as api:
        kc = api.kubeconfig(tmp_path / "kubeconfig")
        s = start_sentinel([*COMMON, "--no-metrics", "--max-rss", "60Mi", "--grace-period", "2s",
                            *hook(f"env > {env_file}; echo evidence: stack of $SENTINEL_PID"),
                            "--", *leaker("--rate", "100", "--quiet")],
                           pid1=mode == "pid1", env=env_for(tmp_path, kc))
        assert s.wait() == 143
        api.wait_for(lambda: any(e["reason"] == "PreKillHook" for e in api.events()), 5,
                     "the hook's Event")
        [ev] = [e for e in api.events() if e["reason"] == "PreKillHook"]
    [crossed] = events_of(s, "limit_crossed")
    [done] = events_of(s, "pre_kill_hook")
    [term] = events_of(s, "signal_sent")
    pid = crossed["pids"][0]
    assert done["exit_code"] == 0 and done["timed_out"] is False and done["level"] == "info"
    assert done["output"] == f"evidence: stack of {pid}\n"
    assert done["kill"]["reason"] == "memory_limit"
    assert done["command"] == ["sh", "-c", f"env > {env_file}; echo evidence: stack of "
                                           "$SENTINEL_PID"]
    # The hook ended at once: its report, then the SIGTERM it held.
    assert s.logs().index(done) < s.logs().index(term)
    assert term["signal"] == "SIGTERM" and wall(term) - wall(done) < 0.5
    [line] = events_of(s, "pre_kill_hook_output")
    assert line["msg"] == f"pre-kill hook output: evidence: stack of {pid}"
    # The Kubernetes Event carries the output in its note.
    assert ev["type"] == "Normal" and ev["action"] == "PreKillHook"
    assert f"evidence: stack of {pid}" in ev["note"] and len(ev["note"].encode()) <= 1024
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    assert env["SENTINEL_PID"] == str(pid)
    assert env["SENTINEL_PIDS"] == " ".join(map(str, crossed["pids"]))
    assert env["SENTINEL_VALUE_BYTES"] == str(crossed["value_bytes"])
    assert env["SENTINEL_LIMIT_BYTES"] == str(LIMIT)
    assert env["SENTINEL_MEASURE"] == "rss"
    assert env["SENTINEL_REASON"] == "memory_limit"
    assert env["SENTINEL_PROGRAM"] == os.path.basename(PY)


def test_a_hook_that_fails_is_reported_and_the_kill_proceeds(start_sentinel, tmp_path):
    # Through the environment this time: every option also reads SENTINEL_*.
    s = start_sentinel([*COMMON, "--no-metrics", "--max-rss", "60Mi", "--grace-period", "2s",
                        "--", *leaker("--rate", "100", "--quiet")],
                       env={"SENTINEL_PRE_KILL_HOOK": "sh -c 'echo broken >&2; exit 3'"})
    assert s.wait() == 143
    [done] = events_of(s, "pre_kill_hook")
    assert done["exit_code"] == 3 and done["level"] == "warning"
    assert done["output"] == "broken\n"  # stderr too
    assert "exited with code 3" in done["msg"] and "the kill proceeds" in done["msg"]
    [term] = events_of(s, "signal_sent")
    assert term["signal"] == "SIGTERM" and wall(term) - wall(done) < 0.5


def test_a_hook_that_is_not_found_does_not_hold_the_sigterm(start_sentinel, tmp_path):
    # Checked at start-up (a missing hook is exit 2, below); here it is there then, and
    # gone by the kill (an image update, a volume unmounted).
    dump = tmp_path / "dump"
    dump.write_text("#!/bin/sh\nexit 0\n")
    dump.chmod(0o755)
    s = start_sentinel([*COMMON, "--no-metrics", "--max-rss", "60Mi", "--grace-period", "2s",
                        "--pre-kill-hook", f"{dump} --pid 1",
                        "--", *leaker("--rate", "20", "--quiet")])
    wait_until(lambda: any(r.get("event") == "spawned" for r in s.logs()), 10,
               what="the start")
    dump.unlink()
    assert s.wait() == 143
    [done] = events_of(s, "pre_kill_hook")
    assert done["exit_code"] == 127 and done["error"] and done["pid"] is None
    [term] = events_of(s, "signal_sent")
    assert wall(term) - wall(done) < 0.5


def test_a_hook_that_hangs_is_killed_at_its_timeout_and_never_delays_the_sigkill(
        start_sentinel, tmp_path, mode):
    report = tmp_path / "report.jsonl"
    s = start_sentinel([*COMMON, "--no-metrics", "--max-rss", "60Mi", "--grace-period", "2s",
                        "--pre-kill-hook-timeout", "700ms",
                        # A child in the background too: the whole group is killed.
                        *hook("echo dumping; sleep 60 & sleep 60"),
                        "--", *leaker("--rate", "100", "--quiet", "--ignore-term",
                                      "--report", str(report))],
                       pid1=mode == "pid1")
    done = wait_until(lambda: events_of(s, "pre_kill_hook"), 10, what="the hook's report")[0]
    # Reaped, not a zombie, and nothing of its session left (the background sleep too).
    # (Within 0.5 s: long before the workload's SIGKILL at 2 s would sweep orphans.)
    wait_until(lambda: not session_members(done["pid"]), 0.5, what="the hook's group gone")
    assert zombies_of(s.pid) == []
    assert s.wait() == 137
    [crossed] = events_of(s, "limit_crossed")
    term, kill = events_of(s, "signal_sent")
    assert done["timed_out"] is True and done["exit_code"] == 128 + signal.SIGKILL
    assert done["output"] == "dumping\n" and done["level"] == "warning"
    assert "timed out after" in done["msg"]
    started = term["kill"]["started"]  # the ladder's start: the crossing's sample
    assert abs(wall(crossed) - started) < 0.1
    assert 0.6 <= wall(term) - started <= 1.0, wall(term) - started  # at the timeout
    # The SIGKILL where it would have been without a hook: start + grace.
    assert term["signal"] == "SIGTERM" and kill["signal"] == "SIGKILL"
    assert 1.9 <= wall(kill) - started <= 2.4, wall(kill) - started
    # The leaker got its SIGTERM right after the hook's timeout.
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    assert [r for r in rows if r.get("event") == "sigterm"]


def test_a_hook_that_floods_its_output_is_bounded(start_sentinel, tmp_path):
    s = start_sentinel([*COMMON, "--no-metrics", "--max-rss", "60Mi", "--grace-period", "4s",
                        "--pre-kill-hook-timeout", "1500ms", "--pre-kill-hook", "yes",
                        "--", *leaker("--rate", "100", "--quiet", "--ignore-term")])
    wait_until(lambda: events_of(s, "spawned"), 10, what="the workload's start")

    def peak() -> int:  # Sentinel's own peak RSS (VmHWM), bytes
        for line in Path(f"/proc/{s.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")

    before = peak()
    done = wait_until(lambda: events_of(s, "pre_kill_hook"), 10, what="the hook's report")[0]
    after = peak()
    assert s.wait() == 137
    assert done["timed_out"] is True
    assert done["output_bytes"] > 2**20  # yes writes far more in 1.5 s
    assert done["dropped_bytes"] == done["output_bytes"] - 64 * 1024
    assert done["output"] == "y\n" * 2048  # the first 4 KiB
    assert len(events_of(s, "pre_kill_hook_output")) == 200  # the log's bound
    [cut] = events_of(s, "pre_kill_hook_output_cut")
    assert f"{64 * 1024} kept bytes" in cut["msg"]
    assert after - before < 4 * 2**20, (before, after)


def test_the_hook_never_counts_in_the_workloads_memory(start_sentinel, tmp_path):
    port = free_port()
    marker = tmp_path / "allocated"
    hog = (f"import time; b = bytearray(200 * 2**20); open({str(marker)!r}, 'w').close(); "
           "time.sleep(60)")
    s = start_sentinel([*COMMON, "--metrics-address", "127.0.0.1", "--metrics-port", str(port),
                        "--max-rss", "60Mi", "--grace-period", "5s", "--pre-kill-hook-timeout",
                        "4s", "--pre-kill-hook", f"{PY} -c \"{hog}\"", "--interval", "20ms",
                        "--", *leaker("--rate", "100", "--quiet", "--max", "70",
                                      "--ignore-term")])
    wait_until(marker.exists, 10, what="the hook's 200 MiB allocated")
    # Samples come every 20 ms; the next ones, with the hook's 200 MiB resident.
    time.sleep(0.2)
    for _ in range(5):
        text = scrape(port)
        value = sample_value(text, "sentinel_workload_memory_bytes")
        assert value is not None and value < 100 * 2**20, value
        assert sample_value(text, "sentinel_workload_processes") == 1
        time.sleep(0.05)
    assert s.wait() == 137


def test_a_hooks_child_that_leaves_its_session_is_the_hooks_and_dies_with_it(
        start_sentinel, tmp_path):
    """A hook whose child escapes with setsid and is reparented to Sentinel (its parent
    exits at once) while the hook runs on: that child's 80 MiB never count in the
    workload's measure, and it is SIGKILLed when the hook exits (not left to count in
    the next run's measure)."""
    port = free_port()
    marker = tmp_path / "stray.pid"
    stray = tmp_path / "stray.py"
    stray.write_text("import os, sys, time\n"
                     "b = bytearray(80 * 2**20)\n"
                     "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
                     "time.sleep(60)\n")
    s = start_sentinel([*COMMON, "--metrics-address", "127.0.0.1", "--metrics-port", str(port),
                        "--max-rss", "30Mi", "--grace-period", "5s", "--interval", "20ms",
                        "--pre-kill-hook-timeout", "4s", "--dry-run",
                        *hook(f"sh -c \"setsid {PY} {stray} {marker} &\"; "
                              f"while [ ! -s {marker} ]; do sleep 0.05; done; sleep 1"),
                        "--", *leaker("--rate", "100", "--quiet", "--max", "40")])
    pid = int(wait_until(lambda: marker.exists() and marker.read_text(), 10,
                         what="the stray's 80 MiB allocated"))
    assert session_members(pid) == [pid]  # its own session: out of the hook's group
    wait_until(lambda: events_of(s, "pre_kill_hook_stray"), 2, what="the stray found")

    def measure():
        return sample_value(scrape(port), "sentinel_workload_memory_bytes")
    # The first sample after it was found (a scrape may still show the one before: a
    # loaded machine), then every one while the hook runs on: without its 80 MiB.
    wait_until(lambda: (measure() or 0) < 70 * 2**20, 2, what=lambda: measure())
    for _ in range(5):
        text = scrape(port)
        value = sample_value(text, "sentinel_workload_memory_bytes")
        assert value is not None and value < 70 * 2**20, value
        assert sample_value(text, "sentinel_workload_processes") == 1
        time.sleep(0.05)
    assert proc_state(pid) not in (None, "Z"), "the stray must live while the hook runs"
    wait_until(lambda: events_of(s, "pre_kill_hook"), 10, what="the hook's end")
    wait_until(lambda: proc_state(pid) is None, 2, what="the stray killed and reaped")
    [stray_event] = events_of(s, "pre_kill_hook_stray")
    assert stray_event["pid"] == pid
    assert not events_of(s, "orphan") and not events_of(s, "orphan_unattributed")
    s.signal(signal.SIGTERM)
    assert s.wait() == 143


def test_a_hooks_background_child_is_killed_when_the_hook_exits(start_sentinel, tmp_path):
    """``sleep 30 &`` in a hook that exits at once: the sleep (in the hook's process
    group) is SIGKILLed at the hook's exit, not left running as Sentinel's orphan."""
    marker = tmp_path / "bg.pid"
    s = start_sentinel([*COMMON, "--no-metrics", "--max-rss", "30Mi", "--grace-period", "5s",
                        "--interval", "20ms", "--dry-run",
                        *hook(f"sleep 30 & echo $! > {marker}"),
                        "--", *leaker("--rate", "100", "--quiet", "--max", "40")])
    wait_until(lambda: events_of(s, "pre_kill_hook"), 10, what="the hook's end")
    pid = int(marker.read_text())
    wait_until(lambda: proc_state(pid) is None, 2, what="the hook's sleep killed and reaped")
    s.signal(signal.SIGTERM)
    assert s.wait() == 143


# ------------------------------------------------------------------------------ bad input

def test_a_hook_timeout_not_below_the_grace_period_is_refused(tmp_path):
    out = subprocess.run([*SENTINEL, "run", "--grace-period", "2s", "--pre-kill-hook", "true",
                          "--pre-kill-hook-timeout", "2s", "--", "true"],
                         capture_output=True, text=True, env=clean_env(), timeout=30)
    assert out.returncode == 2
    assert out.stderr.startswith("sentinel: error: --pre-kill-hook-timeout: 2s is not shorter "
                                 "than the grace period 2s")
    assert "Traceback" not in out.stderr and len(out.stderr.splitlines()) == 1
    # The default, min(5s, grace/2), always fits.
    ok = subprocess.run([*SENTINEL, "run", "--no-metrics", "--no-socket", "--grace-period",
                         "2s", "--pre-kill-hook", "true", "--", "true"],
                        capture_output=True, text=True, env=clean_env(), timeout=30)
    assert ok.returncode == 0, ok.stderr
    empty = subprocess.run([*SENTINEL, "run", "--pre-kill-hook", "'unbalanced", "--", "true"],
                           capture_output=True, text=True, env=clean_env(), timeout=30)
    assert empty.returncode == 2 and "not a command line" in empty.stderr
    assert "Traceback" not in empty.stderr


def test_a_programs_hook_timeout_is_checked_in_the_file(tmp_path):
    cfg = tmp_path / "sentinel.yaml"
    cfg.write_text("version: 1\nprograms:\n  - name: web\n    command: [\"true\"]\n"
                   "    grace-period: 1s\n    pre-kill-hook: sh -c true\n"
                   "    pre-kill-hook-timeout: 3s\n")
    out = subprocess.run([*SENTINEL, "run", "--config", str(cfg), "--check-config"],
                         capture_output=True, text=True, env=clean_env(), timeout=30)
    assert out.returncode == 2
    assert "pre-kill-hook-timeout 3s is not shorter than grace-period 1s" in out.stderr
    assert "Traceback" not in out.stderr


# ------------------------------------------------------------------------------ dry run

def test_dry_run_reports_every_step_and_sends_nothing(start_sentinel, tmp_path, mode):
    report = tmp_path / "report.jsonl"
    termlog = tmp_path / "termination-log"
    port = free_port()
    sock = tmp_path / "sentinel.sock"
    s = start_sentinel(["--log-format", "json", "--metrics-address", "127.0.0.1",
                        "--metrics-port", str(port), "--socket", str(sock),
                        "--termination-log", str(termlog), "--max-rss", "60Mi",
                        "--grace-period", "1s", "--interval", "20ms", "--dry-run",
                        "--", *leaker("--rate", "100", "--quiet", "--max", "80",
                                      "--report", str(report))],
                       pid1=mode == "pid1")
    finished = wait_until(lambda: events_of(s, "kill_finished"), 10, what="the dry kill")[0]
    started = wall(finished)
    crossed = events_of(s, "limit_crossed")[0]
    leaker_pid = crossed["pids"][0]
    # Still running well after the grace period: nothing was sent.
    time.sleep(1.0)
    assert os.path.exists(f"/proc/{leaker_pid}")
    assert not [r for r in map(json.loads, report.read_text().splitlines())
                if r.get("event") == "sigterm"]
    term, kill = events_of(s, "signal_sent")
    assert term["dry_run"] is True and kill["dry_run"] is True
    assert term["msg"].startswith("would have sent SIGTERM to the workload (memory_limit)")
    assert kill["msg"].startswith("would have sent SIGKILL to 1 process(es) after the 1.0s "
                                      "grace period")
    assert 0.9 <= wall(kill) - wall(term) <= 1.4
    assert finished["dry_run"] is True and finished["kill"]["dry_run"] is True
    assert "keeps running" in finished["msg"]
    # Re-armed only below the limit: one report although it stays above (every 20 ms).
    assert time.time() - started > 1.0
    assert len(events_of(s, "limit_crossed")) == 1
    assert "DRY RUN" in events_of(s, "spawned")[0]["msg"]
    text = scrape(port)
    assert sample_value(text, "sentinel_kills_total", reason="memory_limit",
                        signal="SIGTERM") == 0
    assert sample_value(text, "sentinel_kills_total", reason="memory_limit",
                        signal="SIGKILL") == 0
    assert sample_value(text, "sentinel_dry_run_signals_total", reason="memory_limit",
                        signal="SIGTERM") == 1
    assert sample_value(text, "sentinel_dry_run_signals_total", reason="memory_limit",
                        signal="SIGKILL") == 1
    message = termlog.read_text()
    assert message.startswith("DRY RUN: Sentinel would have stopped")
    assert "dry run: no signal was sent" in message
    # Below the limit (raised), then above again (lowered): a second report.
    env = clean_env({"SENTINEL_SOCKET": str(sock)})
    for size in ("200Mi", "60Mi"):
        subprocess.run([*SENTINEL, "limit", size], env=env, check=True, capture_output=True,
                       timeout=30)
        if size == "200Mi":
            # re-armed once below 95 % of the limit for 3 s (the grace period is 1 s)
            wait_until(lambda: events_of(s, "dry_run_rearmed"), 10, what="re-armed")
    wait_until(lambda: len(events_of(s, "limit_crossed")) == 2, 5, what="a second report")
    status = subprocess.run([*SENTINEL, "status"], env=env, capture_output=True, text=True,
                            timeout=30)
    phase = next(line for line in status.stdout.splitlines() if line.startswith("phase"))
    assert "DRY RUN (memory kills are reported, no signal is sent)" in phase, status.stdout
    assert "DRY RUN, would have sent SIGTERM then SIGKILL" in status.stdout
    # The shutdown is real.
    s.signal(signal.SIGTERM)
    assert s.wait() == 143


def test_a_dry_run_around_its_limit_reports_one_kill_not_a_storm(start_sentinel, tmp_path):
    """A workload oscillating around its limit (tests/children/sawtooth.py: 0 to 40 MiB
    over each 0.4 s, above a 30 MiB limit in every cycle, back to its floor after it)
    under --dry-run with a hook: a real run would have killed once, so the dry run
    reports once over 16 cycles (one limit_crossed, one kill, one hook run), not once
    per dip below the limit."""
    runs = tmp_path / "hook-runs"
    s = start_sentinel([*COMMON, "--no-metrics", "--max-rss", "30Mi", "--grace-period", "1s",
                        "--interval", "20ms", "--dry-run",
                        *hook(f"echo run >> {runs}"), "--",
                        PY, str(Path(__file__).resolve().parents[1] / "children" / "sawtooth.py"),
                        "--amplitude", "40", "--period", "0.4", "--tick"])
    s.expect("cycle 16", timeout=30)  # ~6 s: the kill's 1 s and 5 s of oscillation after it
    assert len(events_of(s, "kill_finished")) == 1, s.stderr()[-3000:]
    assert len(events_of(s, "limit_crossed")) == 1
    assert [e["signal"] for e in events_of(s, "signal_sent")] == ["SIGTERM", "SIGKILL"]
    assert len(events_of(s, "pre_kill_hook")) == 1
    assert runs.read_text() == "run\n"
    assert not events_of(s, "dry_run_rearmed")  # it never stayed below 95 % for 3 s
    s.signal(signal.SIGTERM)
    assert s.wait() == 143


def test_dry_run_for_one_program_of_a_file(start_sentinel, tmp_path):
    cfg = tmp_path / "sentinel.yaml"
    dry_report, real_report = tmp_path / "dry.jsonl", tmp_path / "real.jsonl"
    lk = [PY, str(Path(__file__).resolve().parents[1] / "leaker.py"), "--rate", "100",
          "--quiet", "--max", "80"]
    cfg.write_text(json.dumps({"version": 1, "programs": [
        {"name": "dry", "command": [*lk, "--report", str(dry_report)], "max-rss": "60Mi",
         "grace-period": "1s", "dry-run": "true", "main": True},
        {"name": "real", "command": [*lk, "--report", str(real_report)], "max-rss": "60Mi",
         "grace-period": "1s", "restart": "never",
         "on-give-up": "continue"}]}))
    s = start_sentinel([*COMMON, "--no-metrics", "--config", str(cfg)])
    wait_until(lambda: {e.get("program") for e in events_of(s, "kill_finished")}
               >= {"dry", "real"}, 15, what="both kills over")
    sent = events_of(s, "signal_sent")
    dry = [e for e in sent if e["program"] == "dry"]
    real = [e for e in sent if e["program"] == "real"]
    assert [e["signal"] for e in dry] == ["SIGTERM", "SIGKILL"]
    assert all(e["dry_run"] is True and e["msg"].startswith("would have sent") for e in dry)
    assert [e["signal"] for e in real] == ["SIGTERM"]
    assert all("dry_run" not in e and e["msg"].startswith("sent") for e in real)
    assert [r for r in map(json.loads, real_report.read_text().splitlines())
            if r.get("event") == "sigterm"]
    assert not [r for r in map(json.loads, dry_report.read_text().splitlines())
                if r.get("event") == "sigterm"]
    dry_pid = [e for e in events_of(s, "spawned") if e["program"] == "dry"][0]["pid"]
    assert os.path.exists(f"/proc/{dry_pid}")
    s.signal(signal.SIGTERM)
    assert s.wait() == 143


def test_the_early_sigkill_still_applies_while_the_hook_runs(start_sentinel, tmp_path):
    """A leaker at 150 MiB/s in a v1 group limited to 256 MiB, a 10 s grace period and a
    hook that hangs for 9 s: the hard limit comes within ~1.3 s, during the hook, and
    Sentinel SIGKILLs before the kernel would (no SIGTERM at all: the hook held it)."""
    from tests.conftest import require
    from tests.integration.test_kernel_side import _race

    require(root=True)
    s, code, kernel_kills = _race(start_sentinel, tmp_path, "--pre-kill-hook", "sleep 60",
                                  "--pre-kill-hook-timeout", "9s")
    assert code == 137
    assert kernel_kills == 0, s.stderr()[-3000:]
    sent = events_of(s, "signal_sent")
    assert [e["signal"] for e in sent] == ["SIGKILL"], sent
    kill = sent[-1]["kill"]
    assert kill["early_sigkill_reason"] and kill["sigkill"] - kill["started"] < 5.0
    # The hook is not left running once the workload is gone.
    [started] = events_of(s, "pre_kill_hook_started")
    wait_until(lambda: proc_state(started["pid"]) in (None, "Z"), 2, what="the hook killed")


def test_a_programs_hook_in_a_file_is_no_programs_process(start_sentinel, tmp_path):
    """With several programs the hook (in its own session) is neither attributed to a
    program nor reported as an unattributed orphan; its report names its program."""
    cfg = tmp_path / "sentinel.yaml"
    lk = [PY, str(Path(__file__).resolve().parents[1] / "leaker.py"), "--quiet"]
    cfg.write_text(json.dumps({"version": 1, "programs": [
        {"name": "web", "command": [*lk, "--rate", "100"], "max-rss": "60Mi",
         "grace-period": "2s", "pre-kill-hook": "sh -c 'echo web $SENTINEL_PROGRAM; sleep 0.5'",
         "main": True},
        {"name": "idle", "command": [*lk, "--rate", "1", "--max", "1"]}]}))
    s = start_sentinel([*COMMON, "--no-metrics", "--config", str(cfg)])
    assert s.wait(20) == 143
    [done] = events_of(s, "pre_kill_hook")
    assert done["program"] == "web" and done["output"] == "web web\n"
    assert not events_of(s, "orphan_unattributed") and not events_of(s, "orphan")
