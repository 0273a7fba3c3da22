"""The terminal dashboard's snapshot and renderer (sentinel/ui/dashboard.py): a
GuardianState in, text out. (The Grafana dashboard: tests/unit/test_grafana_dashboard.py.)

Each view is rendered on a fixed 100-column ``rich`` console and asserted on
as the user reads it: percentages, time left, state, PIDs, events.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from rich.console import Console

from sentinel.ui import dashboard
from sentinel.ui.dashboard import (
    ProcessNames, StatusAdapter, format_line, fmt_duration, fmt_rate, headroom_style, render,
    snapshot, sparkline, state_line,
)
from sentinel.core.state import (
    PHASE_EXITED, PHASE_RESTARTING, PHASE_RUNNING, PHASE_TERMINATING, REASON_MEMORY, Event,
    GuardianState, KillRecord, MemorySample,
)

MiB = 2**20
NOW = 1_800_000_000.0  # a fixed wall clock
MONO = 5000.0  # a fixed monotonic clock


def make_state(*, value_mib: float = 150, limit_mib: float | None = 200, rate_mib: float = 10,
               seconds: float = 10, interval: float = 0.1, processes=None) -> GuardianState:
    """A running workload whose measure grew linearly at ``rate_mib`` MiB/s up to now."""
    st = GuardianState(mode="run", workload="leaker.py",
                       command=("python", "tests/leaker.py", "--rate", "10"), measure="rss",
                       limit_bytes=int(limit_mib * MiB) if limit_mib else None,
                       grace_period_seconds=3.0, interval_seconds=interval, version="0.1.0")
    st.phase = PHASE_RUNNING
    st.main_pid = 4242
    st.started_wall = NOW - seconds
    n = round(seconds / interval)
    for i in range(n + 1):
        t = NOW - seconds + i * interval
        st.history.append((t, int((value_mib - rate_mib * (NOW - t)) * MiB)))
    procs = processes or ((4242, int(value_mib * 0.8 * MiB)), (4243, int(value_mib * 0.2 * MiB)))
    st.last_sample = MemorySample(at_mono=MONO, measure_bytes=int(value_mib * MiB),
                                  rss_bytes=sum(r for _, r in procs), processes=tuple(procs),
                                  duration_seconds=0.0001)
    st.events.append(Event("spawned", "started 'python tests/leaker.py' as pid 4242",
                           at_wall=NOW - seconds))
    st.components["metrics"] = "listening on 0.0.0.0:8000"
    st.components["socket"] = "off: --no-socket"
    return st


def snap_of(st: GuardianState, **kw) -> dict:
    return snapshot(st, None, now_wall=NOW, now_mono=MONO, **kw)


def text_of(snap: dict, width: int = 100, height: int | None = None, **kw) -> str:
    console = Console(record=True, width=width, color_system=None, file=io.StringIO())
    console.print(render(snap, width=width, height=height, **kw))
    return console.export_text()


def hhmmss(wall: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(wall))


# ------------------------------------------------------------------ snapshot

def test_snapshot_figures_growth_and_time_left():
    snap = snap_of(make_state(value_mib=150, limit_mib=200, rate_mib=10))
    assert snap["measure_bytes"] == 150 * MiB
    assert snap["limit_bytes"] == 200 * MiB
    assert snap["growth_bytes_per_second"] == pytest.approx(10 * MiB, rel=0.01)
    assert snap["seconds_to_limit"] == pytest.approx(5.0, rel=0.01)  # 50 MiB at 10 MiB/s
    assert snap["phase"] == "running" and snap["main_pid"] == 4242
    assert snap["sample_gap_max_seconds"] == pytest.approx(0.1, abs=1e-6)
    json.loads(json.dumps(snap))  # plain JSON: it travels over the control socket


def test_sample_gap_with_a_short_history_is_the_real_gap():
    # Fewer than 50 samples: each gap is between two different samples.
    snap = snap_of(make_state(seconds=1.0, interval=0.1))
    assert snap["sample_gap_max_seconds"] == pytest.approx(0.1, abs=1e-6)


def test_snapshot_growth_ignores_the_previous_run():
    st = make_state(value_mib=20, rate_mib=0, seconds=2)
    # The run before the restart grew fast and ended inside the rate window:
    # its samples must not count in this run's rate.
    older = [(NOW - 2.9 + i * 0.1, int((100 + i * 50) * MiB)) for i in range(5)]
    st.history.extendleft(reversed(older))
    st.started_wall = NOW - 2.0
    snap = snap_of(st)
    assert snap["growth_bytes_per_second"] == pytest.approx(0.0, abs=1.0)
    assert snap["seconds_to_limit"] is None


def test_snapshot_lists_processes_by_rss_and_caps_them():
    procs = tuple((1000 + i, (i + 1) * MiB) for i in range(30))
    snap = snap_of(make_state(processes=procs), max_processes=5)
    assert [p["pid"] for p in snap["processes"]] == [1029, 1028, 1027, 1026, 1025]
    assert snap["process_count"] == 30
    assert snap["rss_bytes"] == sum(r for _, r in procs)


def test_snapshot_events_are_the_latest():
    st = make_state()
    for i in range(40):
        st.events.append(Event("signal_forwarded", f"event {i}", at_wall=NOW - 40 + i))
    snap = snap_of(st, max_events=5)
    assert [e["message"] for e in snap["events"]] == [f"event {i}" for i in range(35, 40)]


def test_snapshot_history_is_downsampled_keeping_peaks():
    st = make_state(seconds=59, interval=0.1)
    st.history.append((NOW + 0.05, 999 * MiB))  # one spike
    snap = snap_of(st)
    assert len(snap["history"]) <= dashboard.HISTORY_POINTS
    assert max(v for _, v in snap["history"]) == 999 * MiB


# ------------------------------------------------------------------ render

def test_render_running_view():
    text = text_of(snap_of(make_state(value_mib=150, limit_mib=200, rate_mib=10)))
    assert "RUNNING" in text and "pid 4242" in text
    assert "rss 150.0 MiB of limit 200.0 MiB  75.0%  headroom 50.0 MiB" in text
    assert "growth +10.0 MiB/s  time to limit 5.0s" in text
    assert "sampling every 100 ms" in text
    # The bar: 75% of it filled.
    bar = next(line for line in text.splitlines() if "█" in line and "░" in line)
    filled, empty = bar.count("█"), bar.count("░")
    assert filled / (filled + empty) == pytest.approx(0.75, abs=0.02)
    assert bar.rstrip().endswith("75.0%")
    # Processes by RSS, with their share of the total.
    assert "Processes (2)" in text
    assert "4242  120.0 MiB  80.0%" in text and "4243   30.0 MiB  20.0%" in text
    # Events with their time, components, and the uptime.
    assert f"{hhmmss(NOW - 10)}  spawned" in text
    assert "metrics: listening on 0.0.0.0:8000" in text and "socket: off" in text
    assert "up 10.0s" in text
    assert all(len(line) <= 100 for line in text.splitlines())


def test_render_shows_command_lines_when_known():
    snap = snap_of(make_state())
    snap["processes"][0]["command"] = "python tests/leaker.py --rate 10"
    assert "4242  120.0 MiB  80.0%  python tests/leaker.py --rate 10" in text_of(snap)


def test_render_terminating_counts_down_the_grace_period():
    st = make_state(value_mib=210, limit_mib=200)
    st.phase = PHASE_TERMINATING
    st.current_kill = KillRecord(reason=REASON_MEMORY, started_wall=NOW - 1.5,
                                 started_mono=MONO - 1.5, measure="rss",
                                 value_bytes=210 * MiB, limit_bytes=200 * MiB, pids=(4242,),
                                 grace_period_seconds=3.0, signals=["SIGTERM"])
    st.grace_deadline_mono = MONO + 1.5
    text = text_of(snap_of(st))
    assert "TERMINATING" in text
    assert "SIGTERM sent (memory_limit), SIGKILL in 1.5s unless it exits" in text
    assert "105.0%" in text and "over by 10.0 MiB" in text
    growth = next(line for line in text.splitlines() if line.startswith("growth "))
    assert growth.startswith("growth +10.0 MiB/s  over the limit  sampling every")
    assert "time to limit" not in text  # there is no time to a limit already crossed
    st.current_kill.signals.append("SIGKILL")
    assert "KILLING" in text_of(snap_of(st))


def test_render_killed_after_the_ladder():
    st = make_state()
    st.phase = PHASE_EXITED
    st.main_pid = None
    st.last_exit_code = 137
    st.last_kill = KillRecord(reason=REASON_MEMORY, started_wall=NOW - 1, started_mono=MONO - 1,
                              measure="rss", value_bytes=201 * MiB, limit_bytes=200 * MiB,
                              pids=(4242,), grace_period_seconds=3.0,
                              signals=["SIGTERM", "SIGKILL"], exit_code=137)
    text = text_of(snap_of(st))
    assert "KILLED" in text and "memory_limit: SIGTERM then SIGKILL, exit code 137" in text
    assert "no workload process" in text


def test_render_exited_on_its_own_is_not_killed():
    st = make_state()
    st.phase, st.main_pid, st.last_exit_code = PHASE_EXITED, None, 3
    # A kill from an earlier run (before this run started) is not this run's end.
    st.last_kill = KillRecord(reason=REASON_MEMORY, started_wall=NOW - 100,
                              started_mono=MONO - 100, measure="rss", value_bytes=1,
                              limit_bytes=1, pids=(1,), grace_period_seconds=3.0,
                              signals=["SIGTERM"], exit_code=143)
    label, detail, _ = state_line(snap_of(st))
    assert (label, detail) == ("EXITED", "exit code 3")


def test_render_a_stopped_workload():
    st = make_state()
    st.stopped, st.stop_signal = True, "SIGTSTP"
    text = text_of(snap_of(st))
    assert "STOPPED" in text and "pid 4242, stopped by SIGTSTP (state T)" in text
    assert "RUNNING" not in text
    st.stopped, st.stop_signal = False, None
    assert state_line(snap_of(st))[0] == "RUNNING"


def test_render_restarting():
    st = make_state()
    st.phase, st.main_pid, st.restarts, st.last_exit_code = PHASE_RESTARTING, None, 2, 1
    text = text_of(snap_of(st))
    assert "RESTARTING" in text and "restart 2; last run exited with code 1" in text
    assert "restarts 2" in text


def test_render_paused_enforcement_and_no_limit():
    st = make_state(limit_mib=None)
    st.enforcing = False
    text = text_of(snap_of(st))
    assert "enforcement paused" in text
    assert "no limit: watching only" in text
    assert "%" not in text.split("Processes")[0]  # no percentage without a limit


def test_render_fits_the_given_height():
    procs = tuple((1000 + i, (i + 1) * MiB) for i in range(30))
    st = make_state(processes=procs)
    for i in range(30):
        st.events.append(Event("signal_forwarded", f"event {i}", at_wall=NOW - 30 + i))
    for height in (14, 20, 40):
        text = text_of(snap_of(st), width=80, height=height)
        lines = text.rstrip("\n").split("\n")
        assert len(lines) <= height, (height, text)
        assert "shown by RSS" in text
        assert lines[-1].startswith("metrics:")  # the footer survives
        assert all(len(line) <= 80 for line in lines)
    assert "event 29" in text_of(snap_of(st), width=80, height=40)  # the newest events stay


def test_render_banner_and_hint():
    text = text_of(snap_of(make_state()), banner="connection lost: refused", hint="Ctrl-C: quit")
    assert text.splitlines()[0].startswith("connection lost: refused")
    assert "Ctrl-C: quit" in text


def test_headroom_colours():
    assert headroom_style(0.5) == "green"
    assert headroom_style(0.8) == "yellow"
    assert headroom_style(0.95) == "red"
    assert headroom_style(1.2) == "bold red"
    bar = dashboard._bar(0.95, 20)
    assert bar.plain == "█" * 19 + "░" and bar.style == "red"


def test_sparkline_scales_to_the_limit_and_leaves_silences_blank():
    limit = 100
    history = [(float(t), 100) for t in range(0, 5)] + [(float(t), 50) for t in range(10, 15)]
    line = sparkline(history, 15, limit, now=15.0, span_seconds=15.0).plain
    assert line[:5] == "█████"  # at the limit: a full block
    assert line[5:10] == "     "  # a 5 s silence (restart back-off) stays blank
    assert set(line[10:15]) == {"▅"}  # half the limit
    # Fewer samples than cells: the value is held between samples.
    sparse = sparkline([(0.0, 100), (1.0, 100)], 20, limit, now=1.0, span_seconds=1.0).plain
    assert sparse.strip() == "█" * 20


def test_format_line_is_plain():
    line = format_line(snap_of(make_state()))
    assert "\x1b" not in line and "\n" not in line
    assert "leaker.py running (pid 4242) rss 150.0 MiB of 200.0 MiB (75.0%)" in line
    assert "growth +10.0 MiB/s limit in 5.0s procs 2 kills 0 restarts 0" in line
    assert line.startswith(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW)))


def test_formats():
    assert fmt_duration(0.42) == "0.4s"
    assert fmt_duration(245) == "4m05s"
    assert fmt_duration(7300) == "2h01m"
    assert fmt_duration(None) == "n/a"
    assert fmt_rate(-2 * MiB) == "-2.0 MiB/s"
    assert fmt_rate(512) == "+512 B/s"


# ------------------------------------------------------------------ names and the socket

def test_process_names_reads_command_lines_and_caches_by_pid():
    dashboard.load_psutil()
    code = "import sys; print('ready', flush=True); sys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n"  # past exec: its arguments are set
        names = ProcessNames()
        assert names.get(child.pid) == f"{sys.executable} -c {code}"
    finally:
        child.stdin.close()
        child.wait(10)
        child.stdout.close()
    assert names.get(child.pid).startswith(sys.executable)  # cached while in the tree
    names.prune(set())
    assert names.get(child.pid) == "?"  # read again once pruned: gone


def test_status_adapter_makes_do_with_a_plain_status_reply():
    from sentinel.control.verbs import status_dict

    st = make_state(value_mib=100, limit_mib=200)
    adapter = StatusAdapter(names=None)
    for i in range(12):  # 12 polls, 0.25 s apart, the measure growing 4 MiB/s
        st.last_sample = MemorySample(at_mono=MONO, measure_bytes=(100 + i) * MiB,
                                      rss_bytes=(100 + i) * MiB,
                                      processes=((4242, (100 + i) * MiB),), duration_seconds=0.0)
        reply = {"ok": True, "status": status_dict(SimpleNamespace(state=st))}
        # status_dict reads the real clock; keep its ages on this test's clock.
        reply["status"]["workload_uptime_seconds"] = 10 + i * 0.25
        snap = adapter.update(json.loads(json.dumps(reply)), now_wall=NOW + i * 0.25)
    assert snap["measure_bytes"] == 111 * MiB and snap["limit_bytes"] == 200 * MiB
    assert snap["growth_bytes_per_second"] == pytest.approx(4 * MiB, rel=0.01)
    assert snap["seconds_to_limit"] == pytest.approx(89 / 4, rel=0.01)
    assert len(snap["history"]) == 12
    assert snap["processes"] == [{"pid": 4242, "rss_bytes": 111 * MiB}]
    text = text_of(snap)
    assert "RUNNING" in text and "55.5%" in text and "4242" in text
    assert "Events (not in this Sentinel's status reply)" in text


def test_sentinel_top_from_a_plain_status_reply_shows_a_stopped_workload():
    from sentinel.control.verbs import status_dict

    st = make_state()
    st.stopped, st.stop_signal = True, "SIGSTOP"
    reply = json.loads(json.dumps({"ok": True, "status": status_dict(SimpleNamespace(state=st))}))
    assert reply["status"]["stopped"] is True and reply["status"]["stop_signal"] == "SIGSTOP"
    assert state_line(StatusAdapter(names=None).update(reply, now_wall=NOW))[0] == "STOPPED"


def test_status_adapter_takes_a_dashboard_reply_as_is():
    snap = snap_of(make_state())
    reply = json.loads(json.dumps({"ok": True, "status": {}, "dashboard": snap}))
    assert StatusAdapter().update(reply) == reply["dashboard"]


def test_the_control_socket_serves_the_snapshot_to_top():
    from sentinel.control.verbs import Dispatcher

    st = make_state()
    st.events.append(Event("limit_crossed", "memory limit crossed: rss 201.0 MiB"))
    reply = json.loads(Dispatcher(SimpleNamespace(state=st)).handle(b"status dashboard").data)
    assert reply["ok"] and reply["status"]["main_pid"] == 4242
    snap = StatusAdapter().update(reply)
    assert [e["kind"] for e in snap["events"]] == ["spawned", "limit_crossed"]
    assert len(snap["history"]) == 101 and snap["growth_bytes_per_second"] > 0
    assert {p["pid"] for p in snap["processes"]} == {4242, 4243}
    assert "limit_crossed     memory limit crossed" in text_of(snap)
    # A form it does not know is refused with the usage, which top falls back on.
    bad = json.loads(Dispatcher(SimpleNamespace(state=st)).handle(b"status bogus").data)
    assert bad["error"]["code"] == "bad_argument" and "dashboard" in bad["error"]["message"]


def test_the_pid1_process_does_not_load_rich_for_the_socket_or_the_dashboard_modules():
    code = ("import sys, sentinel.ui.dashboard, sentinel.ui.tui, sentinel.control.server; "
            "print(sorted(m for m in ('rich', 'psutil') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_sparkline_under_a_high_limit_shows_the_growth():
    """30 -> 50 MiB under an 8 GiB limit: drawn to the limit it is one flat row of the
    lowest block; drawn on its own range it rises from the lowest to the full block."""
    history = [(float(t), (30 + 2 * t) * MiB) for t in range(11)]
    line = sparkline(history, 11, 8 * 2**30, now=10.0, span_seconds=10.0).plain
    assert line[0] == "▁" and line[-1] == "█"
    assert list(line) == sorted(line) and len(set(line)) >= 6  # it climbs
    # A steady workload's page-level jitter stays flat: not a climb to the top.
    steady = [(float(t), 30 * MiB + (t % 2) * 4096) for t in range(11)]
    assert set(sparkline(steady, 11, 8 * 2**30, now=10.0, span_seconds=10.0).plain) == {"█"}
    # Without a limit, the same own-range scale.
    assert sparkline(history, 11, None, now=10.0, span_seconds=10.0).plain == line


def test_render_says_the_sparklines_range_when_it_is_not_the_limit():
    far = text_of(snap_of(make_state(value_mib=50, limit_mib=8192, rate_mib=2, seconds=10)))
    spark = next(line for line in far.splitlines() if line.startswith("last "))
    assert spark.startswith("last 10.0s 30.0 MiB-50.0 MiB ▁")
    assert spark.rstrip().endswith("█")
    near = text_of(snap_of(make_state(value_mib=150, limit_mib=200)))
    assert next(line for line in near.splitlines() if line.startswith("last ")) \
        .startswith("last 10.0s ▃")  # to the limit: 50 MiB of 200 MiB, a quarter


# ------------------------------------------------------------------ the kernel's side

def kernel_state() -> GuardianState:
    """A workload under working-set with every cgroup figure, a kernel OOM kill and notes."""
    st = make_state()
    st.measure = "working-set"
    st.last_sample = MemorySample(
        at_mono=MONO, measure_bytes=250 * MiB, rss_bytes=160 * MiB,
        processes=((4242, 100 * MiB), (4243, 60 * MiB)), duration_seconds=0.0001,
        cgroup_memory_current_bytes=300 * MiB, cgroup_memory_max_bytes=512 * MiB,
        cgroup_working_set_bytes=250 * MiB, cgroup_inactive_file_bytes=50 * MiB,
        cgroup_oom_kills=1)
    st.cgroup = {"version": 1, "path": "/sys/fs/cgroup/memory/pod1/ctr", "read_only": True}
    st.kills[("kernel_oom", "SIGKILL")] = 1
    st.wakeups = {"memory_events": 0, "pressure": 4}
    st.kernel_notes = {"pressure": "PSI trigger window raised to 2 s (no CAP_SYS_RESOURCE)",
                       "mrelease": "process_mrelease unavailable: EPERM"}
    return st


def test_snapshot_carries_every_figure_from_the_table_and_the_kernels_side():
    snap = snap_of(kernel_state())
    assert [(f["name"], f["label"], f["unit"]) for f in snap["figures"]] == [
        ("rss_bytes", "rss", "bytes"),
        ("cgroup_memory_current_bytes", "cgroup memory current", "bytes"),
        ("cgroup_memory_max_bytes", "cgroup memory max", "bytes"),
        ("cgroup_inactive_file_bytes", "cgroup inactive file", "bytes"),
        ("cgroup_working_set_bytes", "cgroup working set", "bytes"),
        ("cgroup_oom_kills", "cgroup oom kills", "count")]
    assert snap["cgroup"] == {"version": 1, "path": "/sys/fs/cgroup/memory/pod1/ctr",
                              "read_only": True, "limit_bytes": 512 * MiB, "high_bytes": None}
    assert snap["kernel_oom_kills"] == 1
    assert snap["wakeups"] == {"memory_events": 0, "pressure": 4}
    assert snap["kernel_notes"]["mrelease"] == "process_mrelease unavailable: EPERM"
    json.dumps(snap)  # served as is by `status dashboard`


def test_render_shows_every_figure_the_cgroup_kernel_oom_kills_and_notes():
    text = text_of(snap_of(kernel_state()), width=200)
    assert ("figures rss 160.0 MiB  cgroup memory current 300.0 MiB  cgroup memory max 512.0 "
            "MiB  cgroup inactive file 50.0 MiB  cgroup working set 250.0 MiB  cgroup oom "
            "kills 1") in text
    assert ("cgroup v1 /sys/fs/cgroup/memory/pod1/ctr (read-only), limit 512.0 MiB  kernel "
            "OOM kills 1  wake-ups pressure x4") in text
    assert "kernel mrelease: process_mrelease unavailable: EPERM" in text
    assert "kernel pressure: PSI trigger window raised to 2 s (no CAP_SYS_RESOURCE)" in text
    assert text.index("working-set 250.0 MiB of limit") < text.index("figures rss")


def test_render_says_why_no_cgroup_is_visible():
    st = make_state()
    st.kernel_notes = {"cgroup": "no cgroup memory controller is visible for process self"}
    text = text_of(snap_of(st), width=200)
    assert ("cgroup none visible: no cgroup memory controller is visible for process self  "
            "kernel OOM kills 0") in text
    assert "kernel cgroup:" not in text  # said once, on the cgroup line


def test_status_adapter_takes_the_kernels_side_from_a_plain_status_reply():
    from sentinel.control.verbs import status_dict

    st = kernel_state()
    status = json.loads(json.dumps(status_dict(SimpleNamespace(state=st, probe=None))))
    snap = StatusAdapter().update({"status": status}, now_wall=NOW)
    assert [f["name"] for f in snap["figures"]] == [f["name"] for f in snap_of(st)["figures"]]
    assert snap["kernel_oom_kills"] == 1 and snap["cgroup"]["version"] == 1
    assert "kernel OOM kills 1" in text_of(snap, width=200)


def test_a_kernel_oom_kill_is_named_as_such_when_the_workload_is_gone():
    st = kernel_state()
    st.phase, st.main_pid, st.last_exit_code = PHASE_EXITED, None, 137
    st.last_kill = KillRecord(reason="kernel_oom", started_wall=NOW - 1, started_mono=MONO - 1,
                              measure="working-set", value_bytes=250 * MiB,
                              limit_bytes=460 * MiB, pids=(4242,), grace_period_seconds=3.0,
                              exit_code=137)
    st.events.append(Event("kernel_oom_kill", "the kernel killed pid 4242", at_wall=NOW - 1))
    label, detail, _ = state_line(snap_of(st))
    assert (label, detail) == ("KILLED", "kernel OOM kill (SIGKILL by the kernel, before "
                                         "Sentinel's limit), exit code 137")
    text = text_of(snap_of(st), width=200)
    assert "kernel_oom_kill   the kernel killed pid 4242" in text
    assert "kernel OOM kills 1" in text


def test_render_says_when_the_kernel_follows_the_tree():
    st = kernel_state()
    st.probe_info = {"probe": "ebpf", "followed": 3, "records": {"limit": 2}, "lost": 5,
                     "threshold_bytes": 99 * MiB}
    text = text_of(snap_of(st), width=200)
    assert ("probe eBPF: the kernel follows 3 process(es), wakes Sentinel at 99.0 MiB  "
            "5 record(s) lost") in text
    # from a status reply too (sentinel top over the socket)
    from sentinel.control.verbs import status_dict

    status = json.loads(json.dumps(status_dict(SimpleNamespace(state=st, probe=None))))
    snap = StatusAdapter().update({"status": status}, now_wall=NOW)
    assert "probe eBPF: the kernel follows 3 process(es)" in text_of(snap, width=200)
    st.probe_info = {}
    assert "probe eBPF" not in text_of(snap_of(st), width=200)  # polling: no line
