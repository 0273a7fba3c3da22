"""Several programs under one Sentinel (`sentinel run --config`), with real processes.

Each test writes a config file, starts Sentinel on it (as a subreaper, and as PID 1 of
a new PID namespace where it matters), and watches what users see: each program's
prefixed output on Sentinel's stdout, the JSON log lines naming the program, exit
codes, signal order, no zombies.
"""

from __future__ import annotations

import os
import signal
import time

import yaml

from tests.conftest import PY, REPO, Running, leaker, printer, wait_until, zombies_of

CHILDREN = REPO / "tests" / "children"
COMMON = ["--log-format", "json", "--no-metrics", "--no-socket", "--k8s-events", "off"]


def write_config(tmp_path, programs: list[dict], **settings) -> str:
    path = tmp_path / "sentinel.yaml"
    path.write_text(yaml.safe_dump({"settings": settings, "programs": programs},
                                   sort_keys=False))
    return str(path)


def start(start_sentinel, tmp_path, programs, *, mode="subreaper", args=(), **settings):
    cfg = write_config(tmp_path, programs, **settings)
    return start_sentinel([*COMMON, *args, "--config", cfg], pid1=mode == "pid1")


def ready(s: Running, *names: str, timeout: float = 10.0, earlier: bool = False):
    """Wait for ``NAME | ready child PID PGID`` of each of ``names`` on Sentinel's stdout
    (in any order: the programs run side by side); return the PID, or a dict of them.
    ``earlier``: lines read already count too (read while waiting for another line)."""
    found: dict[str, int] = {}
    for line in s.lines if earlier else ():
        name, _, rest = line.partition(" | ")
        if name.strip() in names and rest.startswith("ready child"):
            found[name.strip()] = int(rest.split()[2])
    deadline = time.monotonic() + timeout
    while len(found) < len(names):
        line = s.readline(max(0.0, deadline - time.monotonic()))
        assert line is not None, f"no 'ready' from {set(names) - set(found)}: {s.lines[-20:]}"
        name, _, rest = line.partition(" | ")
        if name.strip() in names and rest.startswith("ready child"):
            found[name.strip()] = int(rest.split()[2])
    return found[names[0]] if len(names) == 1 else found


def orphans_of(s: Running, name: str = "orph") -> list[int]:
    """The PIDs ``orphans.py --linger`` printed as ``NAME | orphan PID``, up to its
    ``orphaned N`` line (some may have been read already, by ``ready``)."""
    def seen() -> list[str]:
        return [line.partition(" | ")[2] for line in s.lines
                if line.partition(" | ")[0].strip() == name]
    while not any(text.startswith("orphaned") for text in seen()):
        s.expect(f"{name} ", 10)
    return [int(text.split()[1]) for text in seen() if text.startswith("orphan ")]


def events(s: Running, kind: str, program: str | None = None) -> list[dict]:
    return [r for r in s.logs() if r.get("event") == kind
            and (program is None or r.get("program") == program)]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_only_the_program_over_its_limit_is_stopped(start_sentinel, tmp_path, mode):
    s = start(start_sentinel, tmp_path, [
        {"name": "calm", "command": printer("--exit-on", "TERM=0"), "main": True},
        {"name": "small", "command": leaker("--rate", "40", "--max", "20", "--quiet"),
         "max-rss": "200Mi"},
        {"name": "big", "command": leaker("--rate", "80", "--quiet"), "max-rss": "60Mi",
         "restart": "on-failure", "restart-delay": "100ms", "max-restarts": 1,
         "on-give-up": "continue"},
    ], mode=mode)
    calm = ready(s, "calm")
    wait_until(lambda: len(events(s, "gave_up", "big")) == 1, 20, what="big gives up")
    sent = events(s, "signal_sent")
    assert {r["program"] for r in sent} == {"big"}, sent
    assert len([r for r in sent if r["signal"] == "SIGTERM"]) == 2  # the run and its restart
    assert len(events(s, "restart_scheduled", "big")) == 1
    small = events(s, "spawned", "small")
    assert len(small) == 1 and len(events(s, "spawned", "calm")) == 1
    assert not events(s, "exited", "small") and not events(s, "exited", "calm")
    if mode == "subreaper":  # PIDs printed inside a PID namespace are not the host's
        assert alive(calm) and alive(small[0]["pid"])
    s.signal(signal.SIGTERM)
    assert s.wait() == 0  # the main program's status: calm exits 0 on SIGTERM
    assert not zombies_of(s.pid)


def test_the_main_programs_exit_ends_sentinel_with_its_status(start_sentinel, tmp_path, mode):
    s = start(start_sentinel, tmp_path, [
        {"name": "side", "command": printer()},
        {"name": "job", "command": [PY, "-c", "import time; time.sleep(0.5); raise "
                                    "SystemExit(7)"], "main": True},
    ], mode=mode)
    side = ready(s, "side")
    assert s.wait() == 7
    if mode == "subreaper":
        assert not alive(side)
    [ending] = events(s, "ending")
    assert ending["exit_code"] == 7
    assert "side" in ending["msg"]
    assert any("got child SIGTERM" in line for line in s.rest() if line.startswith("side"))


def test_shutdown_stops_programs_in_reverse_order_each_with_its_own_ladder(
        start_sentinel, tmp_path, mode):
    s = start(start_sentinel, tmp_path, [
        {"name": "first", "command": printer("--exit-on", "TERM=0")},
        {"name": "second", "command": printer("--exit-on", "INT=3"), "stop-signal": "INT"},
        {"name": "third", "command": [PY, "-c", "import signal,os,time; signal.signal("
                                      "signal.SIGTERM, signal.SIG_IGN); os.write(1, "
                                      "b'ready child %d 0\\n' % os.getpid()); time.sleep(60)"],
         "grace-period": "500ms"},
    ], mode=mode)
    ready(s, "first", "second", "third")
    t0 = time.monotonic()
    s.signal(signal.SIGTERM)
    assert s.wait() == 0  # first is the main program (the default): it exits 0
    took = time.monotonic() - t0
    sent = [(r["program"], r["signal"]) for r in events(s, "signal_sent")]
    assert sent == [("third", "SIGTERM"), ("third", "SIGKILL"), ("second", "SIGINT"),
                    ("first", "SIGTERM")], sent
    assert 0.5 <= took < 5, took
    exited = {r["program"]: r["exit_code"] for r in events(s, "exited")}
    assert exited == {"third": 137, "second": 3, "first": 0}
    [second] = events(s, "signal_sent", "second")
    assert second["msg"].startswith("sent SIGINT to the workload (shutdown)"), second["msg"]


def test_a_crash_loop_gives_up_after_its_budget_with_back_off(start_sentinel, tmp_path):
    s = start(start_sentinel, tmp_path, [
        {"name": "web", "command": printer("--exit-on", "TERM=0"), "main": True},
        {"name": "crash", "command": [PY, "-c", "raise SystemExit(3)"], "restart": "on-failure",
         "restart-delay": "100ms", "max-restarts": 3, "on-give-up": "exit"},
    ])
    ready(s, "web")
    assert s.wait() == 3  # crash gave up: on-give-up exit, with its code
    delays = [r["delay_seconds"] for r in events(s, "restart_scheduled", "crash")]
    assert delays == [0.1, 0.2, 0.4]
    assert len(events(s, "gave_up", "crash")) == 1
    assert [(r["program"], r["signal"]) for r in events(s, "signal_sent")] == \
        [("web", "SIGTERM")]


def test_orphans_are_their_programs_and_are_reaped(start_sentinel, tmp_path, mode):
    s = start(start_sentinel, tmp_path, [
        {"name": "main", "command": printer("--exit-on", "TERM=0")},
        {"name": "orph", "command": [PY, str(CHILDREN / "orphans.py"), "3", "--linger",
                                     "--polite", "3"], "max-rss": "2Gi"},
    ], mode=mode, args=("--interval", "50ms"))
    main = ready(s, "main")
    orphans = orphans_of(s)
    assert len(orphans) == 3, s.lines
    # Reparented to Sentinel, they are still orph's: its stop sweeps them, main's not.
    s.signal(signal.SIGTERM)
    assert s.wait() == 0
    out = s.rest()
    for pid in orphans:
        assert any("orph" in l and f"orphan {pid} got SIGTERM" in l for l in out), out
    if mode == "subreaper":
        assert not alive(main)
    assert not zombies_of(s.pid)


def test_reload_restarts_only_what_changed(start_sentinel, tmp_path):
    programs = [
        {"name": "keep", "command": printer(), "main": True},
        {"name": "change", "command": printer(), "env": {"V": "1"}},
        {"name": "drop", "command": printer("--exit-on", "TERM=0")},
    ]
    s = start(start_sentinel, tmp_path, programs)
    pids = ready(s, "keep", "change", "drop")
    programs[1]["env"] = {"V": "2"}
    del programs[2]
    programs.append({"name": "new", "command": printer()})
    write_config(tmp_path, programs)
    s.signal(signal.SIGHUP)
    new_change = ready(s, "change", "new")["change"]
    assert new_change != pids["change"]
    assert alive(pids["keep"])
    wait_until(lambda: not alive(pids["drop"]), 5, what="drop stopped")
    [rec] = events(s, "reloaded")
    assert rec["added"] == ["new"] and rec["removed"] == ["drop"] and rec["changed"] == ["change"]
    s.signal(signal.SIGTERM)
    s.wait()


def test_output_is_prefixed_with_the_program_name(start_sentinel, tmp_path):
    s = start(start_sentinel, tmp_path, [
        {"name": "a", "command": [PY, "-c", "print('one'); print('two')"]},
        {"name": "bb", "command": [PY, "-c", "import sys, time; time.sleep(0.5); "
                                   "print('err', file=sys.stderr); print('part', end='')"],
         "main": True},  # a is done by then: the main program's end stops the others
    ])
    assert s.wait() == 0
    out = s.rest()
    assert "a  | one" in out and "a  | two" in out
    assert "bb | part" in out
    assert "bb | err" in s.stderr()


def test_stop_signal_is_the_ladders_first_signal_in_the_single_command_form(start_sentinel):
    s = start_sentinel([*COMMON, "--stop-signal", "INT", "--max-rss", "60Mi", "--",
                        *leaker("--rate", "80", "--quiet")])
    assert s.wait() == 130  # the leaker dies of SIGINT (KeyboardInterrupt), not SIGTERM
    [sent] = events(s, "signal_sent")
    assert sent["signal"] == "SIGINT"
    assert sent["msg"].startswith("sent SIGINT to the workload (memory_limit)"), sent["msg"]


def test_orphans_count_in_their_programs_measure_only(start_sentinel, tmp_path, mode):
    from sentinel.control.client import request

    sock = str(tmp_path / "s.sock")
    cfg = write_config(tmp_path, [
        {"name": "calm", "command": printer("--exit-on", "TERM=0")},
        {"name": "orph", "command": [PY, str(CHILDREN / "orphans.py"), "3", "--linger"]},
    ], socket=sock)
    s = start_sentinel(["--log-format", "json", "--no-metrics", "--k8s-events", "off",
                        "--interval", "50ms", "--config", cfg], pid1=mode == "pid1")
    calm = ready(s, "calm")
    orphans = orphans_of(s)

    def pids(name):
        return {p["pid"] for p in request(sock, f"status {name}")["status"]["processes"]}

    # Reparented to Sentinel (their parent exited), still counted as orph's.
    wait_until(lambda: set(orphans) <= pids("orph"), 10, what=lambda: pids("orph"))
    assert not set(orphans) & pids("calm")
    assert pids("calm") == {calm}
    s.signal(signal.SIGTERM)
    s.wait()


# ---------------------------------------------------------------- the group's edges
IGNORES_TERM = [PY, "-c", "import os, signal, time; signal.signal(signal.SIGTERM, "
                "signal.SIG_IGN); os.write(1, b'ready child %d 0\\n' % os.getpid()); "
                "time.sleep(60)"]


def control(sock: str, command: str) -> dict:
    from sentinel.control.client import request

    return request(sock, command)


def start_with_socket(start_sentinel, tmp_path, programs, mode="subreaper"):
    sock = str(tmp_path / "s.sock")
    cfg = write_config(tmp_path, programs, socket=sock)
    s = start_sentinel(["--log-format", "json", "--no-metrics", "--k8s-events", "off",
                        "--config", cfg], pid1=mode == "pid1")
    wait_until(lambda: os.path.exists(sock), 10, what="the control socket")
    return s, sock


def test_a_main_program_that_cannot_be_spawned_ends_sentinel_at_once(start_sentinel,
                                                                      tmp_path):
    broken = tmp_path / "broken"
    broken.write_text("#!/nonexistent/interpreter\n")  # found and executable; exec fails
    broken.chmod(0o755)
    t0 = time.monotonic()
    s = start(start_sentinel, tmp_path, [
        {"name": "web", "command": [str(broken)]},
        {"name": "worker", "command": printer()},
    ])
    assert s.wait(10) == 127
    assert time.monotonic() - t0 < 5
    assert not events(s, "spawned", "worker")  # never started, so nothing to wait for


def test_the_main_programs_code_survives_its_exit_during_the_shutdown(start_sentinel,
                                                                       tmp_path, mode):
    s = start(start_sentinel, tmp_path, [
        {"name": "web", "command": [PY, "-c", "import os, time; os.write(1, b'ready child "
                                    "%d 0\\n' % os.getpid()); time.sleep(1); raise "
                                    "SystemExit(3)"]},
        {"name": "worker", "command": IGNORES_TERM, "grace-period": "2500ms"},
    ], mode=mode)
    ready(s, "web", "worker")
    s.signal(signal.SIGTERM)  # worker is stopped first; web exits 3 during its grace
    assert s.wait() == 3
    assert [(r["program"], r["signal"]) for r in events(s, "signal_sent")] == \
        [("worker", "SIGTERM"), ("worker", "SIGKILL")]


def test_no_program_is_restarted_once_the_shutdown_began(start_sentinel, tmp_path):
    s = start(start_sentinel, tmp_path, [
        {"name": "web", "command": printer("--exit-on", "TERM=0")},
        {"name": "crash", "command": [PY, "-c", "import time; time.sleep(0.2); raise "
                                      "SystemExit(1)"], "restart": "on-failure",
         "restart-delay": "50ms", "max-restarts": 0},
        {"name": "worker", "command": IGNORES_TERM, "grace-period": "1500ms"},
    ])
    ready(s, "web", "worker")
    s.signal(signal.SIGTERM)
    assert s.wait() == 0
    logs = s.logs()
    began = next(i for i, r in enumerate(logs) if r.get("event") == "shutdown")
    assert not [r for r in logs[began:] if r.get("event") == "spawned"], logs[began:]


def test_a_crash_loop_that_exits_0_still_gives_up(start_sentinel, tmp_path):
    s = start(start_sentinel, tmp_path, [
        {"name": "web", "command": printer("--exit-on", "TERM=0")},
        {"name": "loop", "command": ["true"], "restart": "always", "restart-delay": "50ms",
         "max-restarts": 2, "on-give-up": "exit"},
    ])
    assert s.wait() == 0
    [ending] = events(s, "ending")
    assert "loop gave up" in ending["msg"]
    assert len(events(s, "spawned", "loop")) == 3


def test_a_stopped_program_changed_by_a_reload_can_be_started(start_sentinel, tmp_path):
    programs = [{"name": "web", "command": printer("--exit-on", "TERM=0")},
                {"name": "worker", "command": printer("--exit-on", "TERM=0"),
                 "env": {"V": "1"}}]
    s, sock = start_with_socket(start_sentinel, tmp_path, programs)
    ready(s, "web", "worker")
    assert control(sock, "stop worker")["ok"]
    wait_until(lambda: events(s, "program_ended"), 5, what="worker stopped")
    programs[1]["env"] = {"V": "2"}
    write_config(tmp_path, programs, socket=sock)
    assert control(sock, "reload")["ok"]
    assert not events(s, "spawned", "worker")[1:]  # a stopped program stays stopped
    reply = control(sock, "start worker")
    assert reply["ok"], reply
    ready(s, "worker")
    s.signal(signal.SIGTERM)
    assert s.wait() == 0


def test_a_program_removed_and_added_back_during_its_grace_period(start_sentinel, tmp_path):
    worker = {"name": "worker", "command": IGNORES_TERM, "grace-period": "1500ms"}
    programs = [{"name": "web", "command": printer("--exit-on", "TERM=0")}, worker]
    s, sock = start_with_socket(start_sentinel, tmp_path, programs)
    old = ready(s, "web", "worker")["worker"]
    write_config(tmp_path, programs[:1], socket=sock)
    assert control(sock, "reload")["ok"]  # worker: SIGTERM (ignored), SIGKILL in 1.5 s
    write_config(tmp_path, programs, socket=sock)
    reply = control(sock, "reload")  # back before its old run ended
    assert reply["ok"], reply
    new = ready(s, "worker", timeout=10)
    assert new != old
    killed = [p for r in events(s, "signal_sent") if r["signal"] == "SIGKILL" for p in r["pids"]]
    assert killed == [old]
    st = control(sock, "status worker")["status"]
    assert st["main_pid"] == new and st["phase"] == "running"
    time.sleep(0.3)  # the new run is not touched by the old one's ladder
    assert alive(new)
    s.signal(signal.SIGTERM)
    s.wait()


def test_a_reload_during_a_programs_leftover_sweep(start_sentinel, tmp_path):
    leaver = {"name": "leaver", "command": ["sh", "-c", "sh -c 'trap \"\" TERM; sleep 30' & "
                                            "sleep 0.3; exit 0"], "grace-period": "1500ms"}
    programs = [{"name": "web", "command": printer("--exit-on", "TERM=0")}, leaver]
    s, sock = start_with_socket(start_sentinel, tmp_path, programs)
    ready(s, "web")
    wait_until(lambda: events(s, "exited", "leaver"), 5, what="leaver's main exits")
    write_config(tmp_path, programs[:1], socket=sock)
    reply = control(sock, "reload")  # its leftover ignores SIGTERM: the sweep lasts 1.5 s
    assert reply["ok"], reply
    assert "removed leaver" in reply["message"]
    wait_until(lambda: "leaver" not in [p["name"] for p in
                                       control(sock, "status")["status"]["programs"]], 5,
               what="leaver removed once its sweep ended")
    s.signal(signal.SIGTERM)
    assert s.wait() == 0


def test_daemons_that_left_their_session_are_stopped_when_sentinel_ends(start_sentinel,
                                                                         tmp_path):
    daemon = [PY, "-c", "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if "
              "os.fork() == 0:\n        os.write(1, b'daemon %d\\n' % os.getpid())\n"
              "        time.sleep(60)\n    os._exit(0)\nos.wait()\nos.write(1, b'ready child "
              "%d 0\\n' % os.getpid())\ntime.sleep(60)"]
    s = start(start_sentinel, tmp_path, [
        {"name": "web", "command": printer("--exit-on", "TERM=0")},
        {"name": "forker", "command": daemon},
    ])
    def daemon() -> int | None:
        for line in s.lines:
            name, _, text = line.partition(" | ")
            if name.strip() == "forker" and text.startswith("daemon "):
                return int(text.split()[1])
        return None

    while (pid := daemon()) is None:  # its line and its parent's "ready", in any order
        s.expect("forker ", 10)
    ready(s, "web", earlier=True)  # its SIGTERM handler is set: it exits 0 on the shutdown
    assert alive(pid)
    s.signal(signal.SIGTERM)
    assert s.wait() == 0
    wait_until(lambda: not alive(pid), 5, what="the daemon stopped")
    assert any(r.get("event") == "cleanup" and pid in r.get("pids", []) for r in s.logs())


def test_a_failure_its_policy_does_not_restart_is_a_give_up(start_sentinel, tmp_path):
    programs = [{"name": "web", "command": printer("--exit-on", "TERM=0")},
                {"name": "job", "command": ["sh", "-c", "exit 4"], "on-give-up": "continue"}]
    s, sock = start_with_socket(start_sentinel, tmp_path, programs)
    ready(s, "web")
    wait_until(lambda: events(s, "gave_up", "job"), 5, what="job gives up")
    [entry] = [p for p in control(sock, "status")["status"]["programs"] if p["name"] == "job"]
    assert entry["state"] == "given_up"
    s.signal(signal.SIGTERM)
    assert s.wait() == 0


def test_a_reload_checks_relative_commands_from_the_start_directory(start_sentinel, tmp_path):
    app = tmp_path / "app.sh"
    app.write_text("#!/bin/sh\necho \"ready child $$ 0\"\nexec sleep 60\n")
    app.chmod(0o755)
    programs = [{"name": "web", "command": printer("--exit-on", "TERM=0")},
                {"name": "app", "command": ["./app.sh"]}]
    sock = str(tmp_path / "s.sock")
    cfg = write_config(tmp_path, programs, socket=sock)
    s = start_sentinel(["--log-format", "json", "--no-metrics", "--k8s-events", "off",
                        "--config", cfg], cwd=tmp_path)
    ready(s, "web", "app")
    programs.append({"name": "more", "command": ["./app.sh"]})
    write_config(tmp_path, programs, socket=sock)
    reply = control(sock, "reload")
    assert reply["ok"], reply
    ready(s, "more")
    s.signal(signal.SIGTERM)
    assert s.wait() == 0


def test_a_sigterm_before_the_main_program_started_is_143(start_sentinel, tmp_path):
    # The main program (web) starts last; the first one sends Sentinel a SIGTERM, which
    # is read between two starts (the others give it time to arrive).
    fillers = [{"name": f"f{i}", "command": ["sleep", "60"]} for i in range(8)]
    s = start(start_sentinel, tmp_path, [
        {"name": "web", "command": printer("--exit-on", "TERM=0"), "main": True,
         "depends-on": ["db", *[f["name"] for f in fillers]]},
        {"name": "db", "command": ["sh", "-c", "kill -TERM $PPID; exec sleep 60"]},
        *fillers,
    ])
    assert s.wait() == 143
    assert not events(s, "spawned", "web")


def test_prefixed_output_is_counted_and_its_drops_are_visible(start_sentinel, tmp_path):
    from tests.integration.test_prometheus import free_port, get

    sock = str(tmp_path / "s.sock")
    port = free_port()
    talker = [PY, "-u", "-c", "import sys, time\nfor i in range(100000):\n    print('line', i)"
              "\n    time.sleep(0.005)"]
    cfg = write_config(tmp_path, [{"name": "web", "command": printer("--exit-on", "TERM=0")},
                                  {"name": "talker", "command": talker}],
                       socket=sock, **{"metrics-port": port, "metrics-address": "127.0.0.1"})
    s = start_sentinel(["--log-format", "json", "--k8s-events", "off", "--config", cfg])
    ready(s, "web")
    wait_until(lambda: os.path.exists(sock), 10, what="the control socket")

    def output():
        return control(sock, "status")["status"]["output"]
    wait_until(lambda: output()["talker"]["stdout"]["lines_relayed"] >= 20, 10,
               what=lambda: output())
    s.popen.stdout.close()  # nobody reads Sentinel's stdout any more: EPIPE from now on
    wait_until(lambda: output()["talker"]["stdout"]["lines_dropped"] >= 5, 10,
               what=lambda: output())
    body = get(f"http://127.0.0.1:{port}/metrics")
    assert 'sentinel_output_lines_dropped_total{program="talker",stream="stdout"}' in body
    assert 'sentinel_output_lines_total{program="web",stream="stdout"} 1.0' in body  # ready
    s.signal(signal.SIGTERM)
    assert s.wait() == 0  # a gone stdout harmed no program and no exit code
