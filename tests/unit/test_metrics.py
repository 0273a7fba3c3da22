"""The exporter: exact exposition text for a constructed state (a fresh registry
per test), the histograms fed by the guardian's listeners, and the HTTP side on
loopback (a port that is taken, a collector bug, a stalled client, close())."""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as text_format_families

from sentinel.config.settings import Settings
from sentinel.core.guardian import Guardian
from sentinel.logs import LOGGER_NAME
from sentinel.exporters.metrics import (
    REACTION_BUCKETS, Histogram, MetricsExporter, SentinelCollector, build_registry,
    start_exporter,
)
from sentinel.core.state import (
    PHASE_RESTARTING, PHASE_RUNNING, GuardianState, KillRecord, MemorySample,
)

MiB = 2**20
PRESSURE = str(Path(__file__).parent.parent / "fixtures" / "proc" / "pressure" / "memory")
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy


def make_state(**kw) -> GuardianState:
    args = dict(mode="run", workload="api", command=("python", "app.py"), measure="pss",
                limit_bytes=200 * MiB, grace_period_seconds=3.0, interval_seconds=0.1,
                version="1.2.3", program="api")
    args.update(kw)
    return GuardianState(**args)


def busy_state() -> GuardianState:
    st = make_state(phase=PHASE_RUNNING, main_pid=4242, started_wall=1700000000.25,
                    enforcing=False)
    st.sampling_failing = True
    st.last_sample = MemorySample(
        at_mono=1.0, measure_bytes=150 * MiB, rss_bytes=160 * MiB,
        processes=((4242, 100 * MiB), (4243, 60 * MiB)), duration_seconds=0.0004,
        pss_bytes=150 * MiB, uss_bytes=140 * MiB, cgroup_memory_current_bytes=300 * MiB,
        cgroup_memory_max_bytes=512 * MiB, cgroup_working_set_bytes=250 * MiB,
        cgroup_inactive_file_bytes=50 * MiB, cgroup_oom_kills=2,
        cgroup_memory_high_bytes=400 * MiB)
    st.kills = {("memory_limit", "SIGTERM"): 2, ("memory_limit", "SIGKILL"): 1,
                ("operator", "SIGTERM"): 1}
    st.restarts = 3
    st.last_kill = KillRecord(reason="memory_limit", started_wall=1700000100.5, started_mono=5.0,
                              measure="pss", value_bytes=201 * MiB, limit_bytes=200 * MiB,
                              pids=(4242, 4243), grace_period_seconds=3.0)
    st.sample_errors = {("smaps_rollup", "PermissionError"): 4}
    st.wakeups = {"memory_events": 5, "pressure": 1}
    st.alerts = {"leak": {"state": "firing"}, "warning": {"state": "resolved"}}
    st.growth_bytes_per_second, st.seconds_to_limit = 1048576.0, 50.0
    return st


EXPECTED = '''\
# HELP sentinel_workload_memory_bytes The workload tree's memory in bytes by the measure compared with the limit (rss: /proc/<pid>/statm; pss/uss: /proc/<pid>/smaps_rollup; working-set: usage - inactive_file; cgroup: the cgroup's usage), sampled every --interval and faster near the limit.
# TYPE sentinel_workload_memory_bytes gauge
sentinel_workload_memory_bytes{measure="pss",program="api",workload="api"} 1.572864e+08
# HELP sentinel_workload_rss_bytes Resident set size of the workload's process tree in bytes, summed over /proc/<pid>/statm (resident pages x page size) of each process.
# TYPE sentinel_workload_rss_bytes gauge
sentinel_workload_rss_bytes{program="api",workload="api"} 1.6777216e+08
# HELP sentinel_workload_pss_bytes Proportional set size of the workload's tree in bytes (shared pages divided among their sharers), summed over /proc/<pid>/smaps_rollup; present with --measure pss or uss.
# TYPE sentinel_workload_pss_bytes gauge
sentinel_workload_pss_bytes{program="api",workload="api"} 1.572864e+08
# HELP sentinel_workload_uss_bytes Unique set size (private pages) of the workload's tree in bytes, summed over /proc/<pid>/smaps_rollup; present with --measure pss or uss.
# TYPE sentinel_workload_uss_bytes gauge
sentinel_workload_uss_bytes{program="api",workload="api"} 1.4680064e+08
# HELP sentinel_workload_cgroup_memory_current_bytes Memory charged to the workload's cgroup in bytes (v2 memory.current, v1 memory.usage_in_bytes): anonymous memory, page cache, tmpfs and kernel memory.
# TYPE sentinel_workload_cgroup_memory_current_bytes gauge
sentinel_workload_cgroup_memory_current_bytes{program="api",workload="api"} 3.145728e+08
# HELP sentinel_workload_cgroup_memory_max_bytes The cgroup's hard memory limit in bytes (v2 memory.max, v1 memory.limit_in_bytes); absent when unlimited ("max").
# TYPE sentinel_workload_cgroup_memory_max_bytes gauge
sentinel_workload_cgroup_memory_max_bytes{program="api",workload="api"} 5.36870912e+08
# HELP sentinel_workload_cgroup_memory_high_bytes The cgroup's throttling limit in bytes (v2 memory.high); absent when "max" or on cgroup v1.
# TYPE sentinel_workload_cgroup_memory_high_bytes gauge
sentinel_workload_cgroup_memory_high_bytes{program="api",workload="api"} 4.194304e+08
# HELP sentinel_workload_cgroup_inactive_file_bytes Inactive page cache of the workload's cgroup in bytes (memory.stat), which the kernel reclaims first.
# TYPE sentinel_workload_cgroup_inactive_file_bytes gauge
sentinel_workload_cgroup_inactive_file_bytes{program="api",workload="api"} 5.24288e+07
# HELP sentinel_workload_cgroup_working_set_bytes Working set of the workload's cgroup in bytes: usage minus inactive_file, floored at 0, as the kubelet computes it.
# TYPE sentinel_workload_cgroup_working_set_bytes gauge
sentinel_workload_cgroup_working_set_bytes{program="api",workload="api"} 2.62144e+08
# HELP sentinel_workload_cgroup_oom_kills_total Processes of the workload's cgroup killed by the kernel's OOM killer (the kernel's own counter).
# TYPE sentinel_workload_cgroup_oom_kills_total counter
sentinel_workload_cgroup_oom_kills_total{program="api",workload="api"} 2.0
# HELP sentinel_memory_limit_bytes The memory limit in bytes on the measure (--max-rss); crossing it starts SIGTERM -> grace period -> SIGKILL.
# TYPE sentinel_memory_limit_bytes gauge
sentinel_memory_limit_bytes{measure="pss",program="api",workload="api"} 2.097152e+08
# HELP sentinel_workload_processes Processes in the workload's tree at the last sample (/proc/<pid>/task/<tid>/children); 0 while no workload runs.
# TYPE sentinel_workload_processes gauge
sentinel_workload_processes{program="api",workload="api"} 2.0
# HELP sentinel_workload_up 1 while the workload's main process runs (stopping included), 0 while it is restarting, exited or not found.
# TYPE sentinel_workload_up gauge
sentinel_workload_up{program="api",workload="api"} 1.0
# HELP sentinel_workload_stopped 1 while the workload's main process is stopped (state T: SIGSTOP, SIGTSTP, ...; reported by waitpid), 0 otherwise; SIGCONT resumes it.
# TYPE sentinel_workload_stopped gauge
sentinel_workload_stopped{program="api",workload="api"} 0.0
# HELP sentinel_workload_start_time_seconds Start time of the current (or last) workload process, in seconds since the Unix epoch.
# TYPE sentinel_workload_start_time_seconds gauge
sentinel_workload_start_time_seconds{program="api",workload="api"} 1.70000000025e+09
# HELP sentinel_kills_total Signals Sentinel sent to stop the workload, by reason (memory_limit, operator, shutdown) and signal (SIGTERM, SIGKILL); one stop counts its SIGTERM and, after the grace period, its SIGKILL. reason="kernel_oom" counts workload processes the kernel's OOM killer took first (SIGKILL, not Sentinel's; the cgroup's oom_kill counter rose).
# TYPE sentinel_kills_total counter
sentinel_kills_total{program="api",reason="kernel_oom",signal="SIGKILL",workload="api"} 0.0
sentinel_kills_total{program="api",reason="memory_limit",signal="SIGKILL",workload="api"} 1.0
sentinel_kills_total{program="api",reason="memory_limit",signal="SIGTERM",workload="api"} 2.0
sentinel_kills_total{program="api",reason="operator",signal="SIGTERM",workload="api"} 1.0
# HELP sentinel_wakeups_total Kernel notifications that made Sentinel sample at once instead of at its next tick, by source (memory_events: cgroup v2 memory.events; pressure: a PSI trigger; usage_threshold: cgroup v1 usage eventfd; oom_notify: cgroup v1 OOM eventfd; with --probe ebpf, ebpf_limit: the kernel's sum reached the threshold, ebpf_step: it moved by a step, ebpf_lost: records were lost).
# TYPE sentinel_wakeups_total counter
sentinel_wakeups_total{program="api",source="memory_events",workload="api"} 5.0
sentinel_wakeups_total{program="api",source="oom_notify",workload="api"} 0.0
sentinel_wakeups_total{program="api",source="pressure",workload="api"} 1.0
sentinel_wakeups_total{program="api",source="usage_threshold",workload="api"} 0.0
# HELP sentinel_memory_pressure_stall_seconds_total Time in seconds that tasks stalled waiting for memory (PSI total: kind some = at least one task, full = all non-idle tasks at once), of a program's cgroup (scope cgroup, its memory.pressure, with its program label) or the whole system (scope system, /proc/pressure/memory); read at scrape time.
# TYPE sentinel_memory_pressure_stall_seconds_total counter
sentinel_memory_pressure_stall_seconds_total{kind="some",scope="system"} 2.837291
sentinel_memory_pressure_stall_seconds_total{kind="full",scope="system"} 1.009881
# HELP sentinel_restarts_total Restarts of the workload by the restart policy (--restart).
# TYPE sentinel_restarts_total counter
sentinel_restarts_total{program="api",workload="api"} 3.0
# HELP sentinel_last_kill_timestamp_seconds When Sentinel last started stopping the workload (SIGTERM, or SIGKILL for an immediate kill), in seconds since the Unix epoch; 0 if it never did.
# TYPE sentinel_last_kill_timestamp_seconds gauge
sentinel_last_kill_timestamp_seconds{program="api",workload="api"} 1.7000001005e+09
# HELP sentinel_reaction_seconds Time in seconds from the estimated memory limit crossing (interpolated between two samples) to the SIGTERM that followed.
# TYPE sentinel_reaction_seconds histogram
sentinel_reaction_seconds_bucket{le="0.001",program="api",workload="api"} 0.0
sentinel_reaction_seconds_bucket{le="0.0025",program="api",workload="api"} 0.0
sentinel_reaction_seconds_bucket{le="0.005",program="api",workload="api"} 1.0
sentinel_reaction_seconds_bucket{le="0.01",program="api",workload="api"} 1.0
sentinel_reaction_seconds_bucket{le="0.025",program="api",workload="api"} 1.0
sentinel_reaction_seconds_bucket{le="0.05",program="api",workload="api"} 1.0
sentinel_reaction_seconds_bucket{le="0.1",program="api",workload="api"} 1.0
sentinel_reaction_seconds_bucket{le="0.25",program="api",workload="api"} 2.0
sentinel_reaction_seconds_bucket{le="0.5",program="api",workload="api"} 2.0
sentinel_reaction_seconds_bucket{le="1.0",program="api",workload="api"} 2.0
sentinel_reaction_seconds_bucket{le="+Inf",program="api",workload="api"} 2.0
sentinel_reaction_seconds_count{program="api",workload="api"} 2.0
sentinel_reaction_seconds_sum{program="api",workload="api"} 0.203
# HELP sentinel_sample_duration_seconds Time in seconds one memory sample of the workload's tree took (/proc/<pid>/statm and children for each process; smaps_rollup for pss/uss).
# TYPE sentinel_sample_duration_seconds histogram
sentinel_sample_duration_seconds_bucket{le="0.0001",program="api",workload="api"} 0.0
sentinel_sample_duration_seconds_bucket{le="0.00025",program="api",workload="api"} 0.0
sentinel_sample_duration_seconds_bucket{le="0.0005",program="api",workload="api"} 1.0
sentinel_sample_duration_seconds_bucket{le="0.001",program="api",workload="api"} 1.0
sentinel_sample_duration_seconds_bucket{le="0.0025",program="api",workload="api"} 1.0
sentinel_sample_duration_seconds_bucket{le="0.005",program="api",workload="api"} 1.0
sentinel_sample_duration_seconds_bucket{le="0.01",program="api",workload="api"} 1.0
sentinel_sample_duration_seconds_bucket{le="0.025",program="api",workload="api"} 2.0
sentinel_sample_duration_seconds_bucket{le="0.05",program="api",workload="api"} 2.0
sentinel_sample_duration_seconds_bucket{le="0.1",program="api",workload="api"} 2.0
sentinel_sample_duration_seconds_bucket{le="+Inf",program="api",workload="api"} 2.0
sentinel_sample_duration_seconds_count{program="api",workload="api"} 2.0
sentinel_sample_duration_seconds_sum{program="api",workload="api"} 0.0204
# HELP sentinel_probe_errors_total Failed reads while sampling, by probe (the /proc or cgroup file) and reason (the error's type, or its errno name such as EMFILE); vanished processes are not errors.
# TYPE sentinel_probe_errors_total counter
sentinel_probe_errors_total{probe="smaps_rollup",program="api",reason="PermissionError"} 4.0
# HELP sentinel_sampling_failing 1 while sampling the workload's memory fails (several samples in a row with a failed /proc read, e.g. EMFILE: out of file descriptors), so the limit may not be enforced; see sentinel_probe_errors_total.
# TYPE sentinel_sampling_failing gauge
sentinel_sampling_failing{program="api",workload="api"} 1.0
# HELP sentinel_log_lines_dropped_total Sentinel's own log lines dropped because stderr could not take them (a full pipe nobody reads, EPIPE, EBADF, ENOSPC); enforcement goes on.
# TYPE sentinel_log_lines_dropped_total counter
sentinel_log_lines_dropped_total{workload="api"} 0.0
# HELP sentinel_enforcement_paused 1 while enforcement of the memory limit is paused from the control socket.
# TYPE sentinel_enforcement_paused gauge
sentinel_enforcement_paused{program="api",workload="api"} 1.0
# HELP sentinel_alert_firing 1 while the alert rule fires for the program, else 0: warning (the measure above --warn-at of the limit), leak (robust growth over --leak-window at least --leak-min-rate, sustained), prediction (the limit less than --predict-within away at that growth).
# TYPE sentinel_alert_firing gauge
sentinel_alert_firing{program="api",rule="warning",workload="api"} 0.0
sentinel_alert_firing{program="api",rule="leak",workload="api"} 1.0
sentinel_alert_firing{program="api",rule="prediction",workload="api"} 0.0
# HELP sentinel_predicted_seconds_to_limit Seconds until the measure reaches the limit at its robust growth over --leak-window; absent when not growing, without a limit, or with too little history.
# TYPE sentinel_predicted_seconds_to_limit gauge
sentinel_predicted_seconds_to_limit{program="api",workload="api"} 50.0
# HELP sentinel_growth_bytes_per_second The measure's robust growth (median of pairwise slopes) over --leak-window, in bytes per second; absent with too little history of this run.
# TYPE sentinel_growth_bytes_per_second gauge
sentinel_growth_bytes_per_second{program="api",workload="api"} 1.048576e+06
# HELP sentinel_build_info Sentinel's version and mode (run or watch).
# TYPE sentinel_build_info gauge
sentinel_build_info{mode="run",version="1.2.3"} 1.0
'''


def text(collector: SentinelCollector) -> str:
    return generate_latest(build_registry(collector, process=False)).decode()


def samples(collector: SentinelCollector) -> dict[tuple, float]:
    """``{(name, (label pairs...)): value}`` of one exposition, as a scraper reads it."""
    out = {}
    for family in text_format_families(text(collector)):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


# ---------------------------------------------------------------- exposition
def test_exposition_of_a_busy_state_is_exact():
    c = SentinelCollector(busy_state(), pressure_path=PRESSURE)
    for v in (0.003, 0.2):
        c.reaction.observe(v)
    for v in (0.0004, 0.02):
        c.sample_duration.observe(v)
    assert text(c) == EXPECTED


def test_a_kernel_oom_kill_is_counted_under_its_own_reason():
    st = make_state(measure="working-set")
    body = text(SentinelCollector(st, pressure_path=None))
    # Pre-initialised, so increase() sees the first kernel OOM kill.
    assert ('sentinel_kills_total{program="api",reason="kernel_oom",'
            'signal="SIGKILL",workload="api"} 0.0') in body
    st.kills[("kernel_oom", "SIGKILL")] = 2
    body = text(SentinelCollector(st, pressure_path=None))
    assert ('sentinel_kills_total{program="api",reason="kernel_oom",'
            'signal="SIGKILL",workload="api"} 2.0') in body


def test_wakeups_are_counted_by_source_from_zero():
    st = make_state()
    got = samples(SentinelCollector(st, pressure_path=None))
    for source in ("memory_events", "pressure", "usage_threshold", "oom_notify"):
        assert got[("sentinel_wakeups_total",
                    (("program", "api"), ("source", source), ("workload", "api")))] == 0
    st.wakeups["memory_events"] = 3
    got = samples(SentinelCollector(st, pressure_path=None))
    assert got[("sentinel_wakeups_total", (("program", "api"), ("source", "memory_events"),
                                           ("workload", "api")))] == 3


def test_pressure_is_read_at_scrape_time_from_the_cgroup_and_the_system(tmp_path):
    group = tmp_path / "pod" / "ctr"
    group.mkdir(parents=True)
    (group / "memory.pressure").write_text(
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=1500000\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=250000\n")
    st = make_state()
    st.cgroup = {"version": 2, "path": str(group), "read_only": True}
    c = SentinelCollector(st, pressure_path=PRESSURE)
    got = samples(c)
    name = "sentinel_memory_pressure_stall_seconds_total"
    assert got[(name, (("kind", "some"), ("program", "api"), ("scope", "cgroup")))] == 1.5
    assert got[(name, (("kind", "full"), ("program", "api"), ("scope", "cgroup")))] == 0.25
    assert got[(name, (("kind", "some"), ("scope", "system")))] == 2.837291
    (group / "memory.pressure").write_text("some avg10=0 avg60=0 avg300=0 total=3000000\n")
    got = samples(c)  # read again at the next scrape; a line that is gone is left out
    assert got[(name, (("kind", "some"), ("program", "api"), ("scope", "cgroup")))] == 3.0
    assert (name, (("kind", "full"), ("program", "api"), ("scope", "cgroup"))) not in got


def test_unreadable_pressure_is_absent_never_a_scrape_error(tmp_path):
    st = make_state()
    # v1 has no memory.pressure; a gone v2 group neither; no PSI on the host either.
    st.cgroup = {"version": 2, "path": str(tmp_path / "gone"), "read_only": False}
    body = text(SentinelCollector(st, pressure_path=str(tmp_path / "no-psi")))
    assert "sentinel_memory_pressure" not in body
    assert 'sentinel_workload_up{program="api",workload="api"} 0.0' in body
    st.cgroup = {"version": 1, "path": str(tmp_path), "read_only": False}
    (tmp_path / "memory.pressure").write_text("some total=9000000\n")  # never read on v1
    body = text(SentinelCollector(st, pressure_path=None))
    assert "sentinel_memory_pressure" not in body


def test_the_hosts_pressure_is_exported_by_default():
    # This machine has PSI (/proc/pressure/memory): the default reads the real file.
    got = samples(SentinelCollector(make_state()))
    assert got[("sentinel_memory_pressure_stall_seconds_total",
                (("kind", "some"), ("scope", "system")))] >= 0


def test_values_are_read_at_scrape_time_not_cached():
    st = busy_state()
    c = SentinelCollector(st)
    registry = build_registry(c, process=False)
    assert ('sentinel_restarts_total{program="api",'
            'workload="api"} 3.0') in generate_latest(registry).decode()
    st.restarts = 4
    st.kills[("shutdown", "SIGTERM")] = 1
    st.limit_bytes = 300 * MiB
    body = generate_latest(registry).decode()
    assert 'sentinel_restarts_total{program="api",workload="api"} 4.0' in body
    assert ('sentinel_kills_total{program="api",reason="shutdown",'
            'signal="SIGTERM",workload="api"} 1.0') in body
    assert ('sentinel_memory_limit_bytes{measure="pss",program="api",'
            'workload="api"} 3.145728e+08') in body


def test_a_fresh_state_has_zero_kill_series_and_no_memory():
    st = make_state(measure="rss", limit_bytes=None)
    body = text(SentinelCollector(st))
    # rate()/increase() need the series before the first kill.
    assert ('sentinel_kills_total{program="api",reason="memory_limit",'
            'signal="SIGTERM",workload="api"} 0.0') in body
    assert ('sentinel_kills_total{program="api",reason="memory_limit",'
            'signal="SIGKILL",workload="api"} 0.0') in body
    assert 'sentinel_workload_up{program="api",workload="api"} 0.0' in body
    assert 'sentinel_workload_processes{program="api",workload="api"} 0.0' in body
    assert 'sentinel_last_kill_timestamp_seconds{program="api",workload="api"} 0.0' in body
    for absent in ("sentinel_workload_memory_bytes", "sentinel_workload_rss_bytes",
                   "sentinel_memory_limit_bytes", "sentinel_workload_start_time_seconds",
                   "sentinel_workload_pss_bytes", "sentinel_workload_cgroup"):
        assert absent not in body


def test_a_stale_sample_is_not_shown_while_the_workload_restarts():
    st = busy_state()
    st.phase, st.main_pid = PHASE_RESTARTING, None
    body = text(SentinelCollector(st))
    assert "sentinel_workload_memory_bytes" not in body
    assert "sentinel_workload_rss_bytes" not in body
    assert 'sentinel_workload_up{program="api",workload="api"} 0.0' in body
    assert 'sentinel_workload_processes{program="api",workload="api"} 0.0' in body
    assert ('sentinel_workload_start_time_seconds{program="api",'
            'workload="api"} 1.70000000025e+09') in body


def test_a_stopped_workload_shows_as_stopped():
    st = busy_state()
    st.stopped, st.stop_signal = True, "SIGSTOP"
    assert ('sentinel_workload_stopped{program="api",'
            'workload="api"} 1.0') in text(SentinelCollector(st))
    st.phase, st.main_pid = PHASE_RESTARTING, None  # a stale flag never outlives its process
    assert ('sentinel_workload_stopped{program="api",'
            'workload="api"} 0.0') in text(SentinelCollector(st))


def test_only_measured_figures_appear():
    st = busy_state()
    st.last_sample = MemorySample(at_mono=1.0, measure_bytes=10 * MiB, rss_bytes=10 * MiB,
                                  processes=((4242, 10 * MiB),), duration_seconds=0.0001)
    body = text(SentinelCollector(st))
    assert 'sentinel_workload_rss_bytes{program="api",workload="api"} 1.048576e+07' in body
    for absent in ("pss_bytes", "uss_bytes", "cgroup_memory_current", "cgroup_memory_max",
                   "cgroup_working_set"):
        assert absent not in body


def test_the_current_kill_counts_as_the_last_kill():
    st = busy_state()
    st.current_kill = KillRecord(reason="operator", started_wall=1700000200.0, started_mono=9.0,
                                 measure="pss", value_bytes=None, limit_bytes=None, pids=(1,),
                                 grace_period_seconds=3.0)
    assert samples(SentinelCollector(st))[
        ("sentinel_last_kill_timestamp_seconds", (("program", "api"), ("workload", "api")))] \
        == 1700000200.0


def test_labels_are_escaped_and_never_carry_pids():
    st = busy_state()
    st.workload = 'we"ird\\name\n'
    body = text(SentinelCollector(st))
    assert 'workload="we\\"ird\\\\name\\n"' in body
    for pid in ("4242", "4243"):
        assert pid not in body


def test_openmetrics_exposition_parses():
    from prometheus_client.openmetrics.exposition import generate_latest as om_latest

    c = SentinelCollector(busy_state())
    c.reaction.observe(0.01)
    families = {f.name: f for f in text_string_to_metric_families(
        om_latest(build_registry(c, process=True)).decode())}
    assert families["sentinel_kills"].type == "counter"
    assert families["sentinel_reaction_seconds"].type == "histogram"
    assert families["sentinel_reaction_seconds"].unit == "seconds"
    assert families["sentinel_build"].type == "info"
    assert families["sentinel_workload_rss_bytes"].unit == "bytes"


def test_registries_are_independent_and_carry_process_metrics():
    a, b = SentinelCollector(make_state(workload="a")), SentinelCollector(make_state(workload="b"))
    ra, rb = build_registry(a), build_registry(b)  # neither touches the global registry
    body_a, body_b = generate_latest(ra).decode(), generate_latest(rb).decode()
    assert 'workload="a"' in body_a and 'workload="b"' not in body_a
    assert 'workload="b"' in body_b and 'workload="a"' not in body_b
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_open_fds", "python_info"):
        assert name in body_a
    from prometheus_client import REGISTRY

    assert "sentinel_workload_up" not in generate_latest(REGISTRY).decode()


# ---------------------------------------------------------------- histograms
def test_histogram_buckets_are_le_and_cumulative():
    h = Histogram((0.001, 0.01, 0.1))
    for v in (0.0005, 0.001, 0.0011, 0.01, 5.0):
        h.observe(v)
    buckets, total = h.buckets()
    assert buckets == [("0.001", 2), ("0.01", 4), ("0.1", 4), ("+Inf", 5)]
    assert total == pytest.approx(5.0126)


def test_reaction_buckets_span_a_millisecond_to_a_second():
    assert REACTION_BUCKETS[0] == 0.001 and REACTION_BUCKETS[-1] == 1.0
    assert list(REACTION_BUCKETS) == sorted(REACTION_BUCKETS)


def test_a_scrape_sees_counts_and_sum_of_the_same_moment():
    h = Histogram(REACTION_BUCKETS)
    stop = threading.Event()

    def writer():
        while not stop.is_set():
            h.observe(0.5)

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(2000):
            buckets, total = h.buckets()
            assert total == pytest.approx(0.5 * buckets[-1][1])
    finally:
        stop.set()
        t.join()


# ---------------------------------------------------------------- the exporter
@pytest.fixture
def guardian():
    g = Guardian(Settings(command=("true",), workload_name="app", max_rss_bytes=64 * MiB),
                 None, set(), version="9.9.9")
    yield g
    g.close()
    g.loop.close()


@pytest.fixture
def warnings_seen():
    """Records of the ``sentinel`` logger (whether or not logs.setup() ran)."""
    records: list[logging.LogRecord] = []

    class ListHandler(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger(LOGGER_NAME)
    handler, old_level = ListHandler(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.fixture
def exporters():
    made: list[MetricsExporter] = []
    yield made
    for e in made:
        e.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings_for(port: int, address: str = "127.0.0.1") -> Settings:
    return Settings(command=("true",), workload_name="app", metrics_address=address,
                    metrics_port=port)


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with OPENER.open(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_serves_on_the_given_port_and_says_so(guardian, exporters, warnings_seen):
    port = free_port()
    e = start_exporter(guardian, settings_for(port))
    exporters.append(e)
    assert e.url == f"http://127.0.0.1:{port}/metrics"
    assert guardian.state.components["metrics"] == f"on: {e.url}"
    status, body = get(e.url)
    assert status == 200
    assert 'sentinel_build_info{mode="run",version="9.9.9"} 1.0' in body
    assert "process_resident_memory_bytes" in body
    assert [r.getMessage() for r in warnings_seen if r.levelno >= logging.WARNING] == []


def test_listeners_feed_the_histograms(guardian, exporters):
    e = start_exporter(guardian, settings_for(free_port()))
    exporters.append(e)
    guardian.emit("signal_sent", "sent SIGTERM", signal="SIGTERM", reason="memory_limit",
                  reaction_seconds=0.004)
    guardian.emit("signal_sent", "sent SIGTERM", signal="SIGTERM", reason="operator",
                  reaction_seconds=None)  # an operator stop has no reaction time
    guardian.emit("signal_sent", "sent SIGKILL", signal="SIGKILL", reason="memory_limit")
    for listener in guardian.sample_listeners:
        listener(MemorySample(at_mono=1.0, measure_bytes=1, rss_bytes=1, processes=(),
                              duration_seconds=0.0003))
    _, body = get(e.url)
    assert 'sentinel_reaction_seconds_bucket{le="0.0025",program="app",workload="app"} 0.0' in body
    assert 'sentinel_reaction_seconds_bucket{le="0.005",program="app",workload="app"} 1.0' in body
    assert 'sentinel_reaction_seconds_count{program="app",workload="app"} 1.0' in body
    assert ('sentinel_sample_duration_seconds_bucket{le="0.0005",'
            'program="app",workload="app"} 1.0') in body
    assert 'sentinel_sample_duration_seconds_count{program="app",workload="app"} 1.0' in body


def test_a_port_that_is_taken_gives_one_warning_and_leaves_metrics_off(
        guardian, exporters, warnings_seen, capfd):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        e = start_exporter(guardian, settings_for(port))
        exporters.append(e)
    assert e.url is None
    status = guardian.state.components["metrics"]
    assert status.startswith("off:") and str(port) in status and "in use" in status
    warnings = [r.getMessage() for r in warnings_seen if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"port {port}" in warnings[0]
    assert "--metrics-port/SENTINEL_METRICS_PORT" in warnings[0]
    assert "\n" not in warnings[0]
    assert guardian.listeners == [] and guardian.sample_listeners == []
    assert "Traceback" not in capfd.readouterr().err
    e.close()  # a no-op, but callable like any started part


def test_an_address_not_on_this_host_names_the_address_flag(guardian, exporters, warnings_seen):
    e = start_exporter(guardian, settings_for(free_port(), address="192.0.2.1"))  # TEST-NET-1
    exporters.append(e)
    assert e.url is None
    assert guardian.state.components["metrics"].startswith("off: cannot listen on 192.0.2.1:")
    (warning,) = [r.getMessage() for r in warnings_seen if r.levelno >= logging.WARNING]
    assert "--metrics-address/SENTINEL_METRICS_ADDRESS" in warning


def test_a_collector_bug_fails_the_scrape_not_sentinel(guardian, exporters, warnings_seen, capfd):
    e = start_exporter(guardian, settings_for(free_port()))
    exporters.append(e)
    guardian.state.kills = {("memory_limit",): 1}  # malformed: no signal name
    for _ in range(3):
        status, body = get(e.url)
        assert status == 500
        assert "collecting metrics failed" in body
    warnings = [r.getMessage() for r in warnings_seen if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "reported once" in warnings[0]
    assert "Traceback" not in capfd.readouterr().err
    guardian.state.kills = {("memory_limit", "SIGTERM"): 1}
    status, body = get(e.url)
    assert status == 200
    assert ('sentinel_kills_total{program="app",reason="memory_limit",'
            'signal="SIGTERM",workload="app"} 1.0') in body


def test_a_stalled_client_does_not_block_other_scrapes(guardian, exporters):
    e = start_exporter(guardian, settings_for(free_port()))
    exporters.append(e)
    port = int(e.url.rsplit(":", 1)[1].split("/")[0])
    stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        stalled[0].sendall(b"GET /metrics HTTP/1.1\r\n")  # and never the end of the headers
        t0 = time.monotonic()
        status, _ = get(e.url, timeout=2)
        assert status == 200
        assert time.monotonic() - t0 < 1.0
    finally:
        for s in stalled:
            s.close()


def test_close_is_prompt_frees_the_port_and_unsubscribes(guardian):
    port = free_port()
    e = start_exporter(guardian, settings_for(port))
    assert get(e.url)[0] == 200
    thread = e._thread
    t0 = time.monotonic()
    e.close()
    assert time.monotonic() - t0 < 0.25  # no polling interval to wait out
    assert not thread.is_alive()
    assert e.url is None
    assert guardian.listeners == [] and guardian.sample_listeners == []
    with socket.socket() as s:
        # SO_REUSEADDR passes the scrape's TIME_WAIT, never a listening socket.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))  # nothing listens there any more
        s.listen()
    e.close()  # idempotent


# ---------------------------------------------------------------- issue 8
class _Carrier:
    """What ``guardian.pod_state`` offers the collector (a ``statefile.StateFile``):
    ``carried_for(program)``, here the counters of program "api" only."""

    def __init__(self, carried) -> None:
        self.carried = carried

    def carried_for(self, program: str):
        return self.carried if program == "api" else None


def test_counters_of_earlier_containers_are_added():
    from sentinel.exporters.statefile import Carried

    g = type("G", (), {})()
    g.pod_state = _Carrier(Carried(kills={("memory_limit", "SIGTERM"): 5,
                                          ("operator", "SIGKILL"): 1},
                                   restarts=2, last_kill_wall=1600000000.0))
    st = make_state()
    st.kills = {("memory_limit", "SIGTERM"): 1}
    st.restarts = 1
    got = samples(SentinelCollector(st, guardian=g))
    p, w = ("program", "api"), ("workload", "api")
    assert got[("sentinel_kills_total",
                (p, ("reason", "memory_limit"), ("signal", "SIGTERM"), w))] == 6.0
    assert got[("sentinel_kills_total", (p, ("reason", "operator"), ("signal", "SIGKILL"), w))] \
        == 1.0
    assert got[("sentinel_restarts_total", (p, w))] == 3.0
    # No kill in this container: the last kill is the carried one ...
    assert got[("sentinel_last_kill_timestamp_seconds", (p, w))] == 1600000000.0
    # ... until this container kills.
    st.last_kill = KillRecord(reason="memory_limit", started_wall=1700000000.0, started_mono=1.0,
                              measure="rss", value_bytes=1, limit_bytes=1, pids=(1,),
                              grace_period_seconds=3.0)
    got = samples(SentinelCollector(st, guardian=g))
    assert got[("sentinel_last_kill_timestamp_seconds", (p, w))] == 1700000000.0


def test_event_errors_are_served_by_reason_when_events_are_on():
    from sentinel.exporters.events import ERROR_REASONS

    st = make_state()
    assert not any(k[0].startswith("sentinel_k8s") for k in samples(SentinelCollector(st)))
    g = type("G", (), {})()
    g.k8s_events = type("R", (), {"errors_total": {"forbidden": 3}})()
    got = {labels: v for (name, labels), v in samples(SentinelCollector(st, guardian=g)).items()
           if name == "sentinel_k8s_event_errors_total"}
    assert got[(("reason", "forbidden"),)] == 3.0
    # Every reason exists from the start, so increase() sees the first failure.
    assert sorted(r for ((_, r),) in got) == sorted(ERROR_REASONS)
    assert sum(got.values()) == 3.0


def test_a_workload_name_that_is_not_utf8_is_escaped():
    import os

    name = os.fsdecode(b"leak\xff")  # what Python makes of a file name with byte 0xff
    body = text(SentinelCollector(make_state(workload=name, program=name)))
    assert 'sentinel_workload_up{program="leak\\\\xff",workload="leak\\\\xff"} 0.0' in body


def test_scrapes_are_counted_once_sent_and_probes_are_not(guardian, exporters):
    e = start_exporter(guardian, settings_for(free_port()))
    exporters.append(e)
    since = time.monotonic()
    assert e.pending_reports(since) is None  # nobody scrapes: nothing to wait for
    req = urllib.request.Request(e.url, headers={"User-Agent": "kube-probe/1.31"})
    with OPENER.open(req, timeout=5) as resp:
        resp.read()
    assert e.scrapes_total == 0 and e.pending_reports(since) is None
    assert get(e.url)[0] == 200
    wait = time.monotonic() + 5
    while e.scrapes_total < 1 and time.monotonic() < wait:
        time.sleep(0.01)
    assert e.scrapes_total == 1
    later = time.monotonic()
    assert e.pending_reports(later) == "a scrape of /metrics"  # a scraper was seen
    assert get(e.url.replace("/metrics", "/favicon.ico"))[0] == 200
    assert e.pending_reports(later) is not None  # not a scrape
    assert get(e.url)[0] == 200
    wait = time.monotonic() + 5
    while e.pending_reports(later) is not None and time.monotonic() < wait:
        time.sleep(0.01)
    assert e.pending_reports(later) is None and e.scrapes_total == 2


def test_the_scrape_failure_warning_is_one_line(guardian, exporters, warnings_seen):
    e = start_exporter(guardian, settings_for(free_port()))
    exporters.append(e)

    class Broken:
        def collect(self):
            raise RuntimeError("first line\nsecond line")

    e.registry.register(Broken())
    assert get(e.url)[0] == 500
    (warning,) = [r.getMessage() for r in warnings_seen if r.levelno >= logging.WARNING]
    assert "\n" not in warning and "first line" in warning and "second line" in warning


def test_a_prebound_socket_is_served(guardian, exporters, warnings_seen):
    from sentinel.launch import bind_metrics_port

    port = free_port()
    sock = bind_metrics_port(settings_for(port))
    assert sock is not None and not isinstance(sock, OSError)
    assert not __import__("os").get_inheritable(sock.fileno())  # close-on-exec
    with socket.socket() as rival, pytest.raises(OSError) as taken:
        rival.bind(("127.0.0.1", port))
    assert taken.value.errno == 98  # EADDRINUSE
    e = start_exporter(guardian, settings_for(port), sock)
    exporters.append(e)
    assert e.url == f"http://127.0.0.1:{port}/metrics"
    assert get(e.url)[0] == 200
    # A failed early bind is reported by the exporter, once, as a bind failure.
    err = bind_metrics_port(settings_for(port))
    assert isinstance(err, OSError)
    off = start_exporter(guardian, settings_for(port), err)
    exporters.append(off)
    assert off.url is None
    (warning,) = [r.getMessage() for r in warnings_seen if r.levelno >= logging.WARNING]
    assert f"port {port}" in warning and "--metrics-port/SENTINEL_METRICS_PORT" in warning
    # A host name is left to the exporter (no DNS lookup before the spawn).
    assert bind_metrics_port(settings_for(port, address="localhost")) is None
    assert bind_metrics_port(settings_for(0)) is None


def test_a_scraper_long_gone_is_not_waited_for(guardian, exporters):
    from sentinel.exporters.metrics import SCRAPER_RECENT_SECONDS

    e = start_exporter(guardian, settings_for(free_port()))
    exporters.append(e)
    assert get(e.url)[0] == 200
    wait = time.monotonic() + 5
    while e.scrapes_total < 1 and time.monotonic() < wait:
        time.sleep(0.01)
    later = time.monotonic()
    assert e.pending_reports(later) == "a scrape of /metrics"  # scraped just now
    e.last_scrape_started_mono = later - SCRAPER_RECENT_SECONDS - 1  # one curl, long ago
    assert e.pending_reports(later) is None


def test_metrics_responses_carry_a_content_length(guardian, exporters):
    e = start_exporter(guardian, settings_for(free_port()))
    exporters.append(e)
    with OPENER.open(e.url, timeout=5) as resp:
        body = resp.read()
        assert int(resp.headers["Content-Length"]) == len(body) > 0


# ---------------------------------------------------------------- several programs
class FakeHost:
    """A host of several programs (what ``sentinel.core.group.Group`` offers exporters):
    Sentinel's own ``state``, ``multi``, ``programs`` (objects with ``.state``),
    ``program(name)``, ``listeners``, ``sample_listeners``, ``emit``, ``loop``."""

    multi = True

    def __init__(self, *programs: GuardianState) -> None:
        self.state = make_state(workload="", program="", command=(), measure="rss",
                                limit_bytes=None)
        self.programs = [type("P", (), {"state": st})() for st in programs]
        self.listeners: list = []
        self.sample_listeners: list = []
        self.loop = None
        self.emitted: list = []

    def program(self, name=None):
        for p in self.programs:
            if name is None or p.state.program == name:
                return p
        from sentinel.errors import UnknownProgram
        raise UnknownProgram(name, tuple(p.state.program for p in self.programs))

    def emit(self, kind, message, level=logging.INFO, **fields):
        from sentinel.core.state import Event
        event = Event(kind, message, fields=fields)
        self.emitted.append(event)
        for listener in list(self.listeners):
            listener(event)
        return event


def two_programs() -> FakeHost:
    web = make_state(workload="web", program="web", measure="rss", limit_bytes=100 * MiB,
                     phase=PHASE_RUNNING, main_pid=10, started_wall=1700000000.0)
    web.last_sample = MemorySample(at_mono=1.0, measure_bytes=60 * MiB, rss_bytes=60 * MiB,
                                   processes=((10, 60 * MiB),), duration_seconds=0.0002)
    web.kills = {("memory_limit", "SIGTERM"): 1}
    web.last_kill = KillRecord(reason="memory_limit", started_wall=1700000050.0, started_mono=2.0,
                               measure="rss", value_bytes=101 * MiB, limit_bytes=100 * MiB,
                               pids=(10,), grace_period_seconds=3.0)
    worker = make_state(workload="worker", program="worker", measure="pss", limit_bytes=None,
                        phase=PHASE_RESTARTING, enforcing=False)
    worker.restarts = 2
    worker.sample_errors = {("smaps_rollup", "PermissionError"): 1}
    web.alerts = {"prediction": {"state": "firing"}}
    web.growth_bytes_per_second, web.seconds_to_limit = 2048.0, 600.0
    worker.growth_bytes_per_second = -10.0  # shrinking: no time to a limit it has not
    return FakeHost(web, worker)


EXPECTED_TWO = '''\
sentinel_workload_memory_bytes{measure="rss",program="web",workload="web"} 6.291456e+07
sentinel_workload_rss_bytes{program="web",workload="web"} 6.291456e+07
sentinel_memory_limit_bytes{measure="rss",program="web",workload="web"} 1.048576e+08
sentinel_workload_processes{program="web",workload="web"} 1.0
sentinel_workload_processes{program="worker",workload="worker"} 0.0
sentinel_workload_up{program="web",workload="web"} 1.0
sentinel_workload_up{program="worker",workload="worker"} 0.0
sentinel_workload_stopped{program="web",workload="web"} 0.0
sentinel_workload_stopped{program="worker",workload="worker"} 0.0
sentinel_workload_start_time_seconds{program="web",workload="web"} 1.7e+09
sentinel_kills_total{program="web",reason="kernel_oom",signal="SIGKILL",workload="web"} 0.0
sentinel_kills_total{program="web",reason="memory_limit",signal="SIGKILL",workload="web"} 0.0
sentinel_kills_total{program="web",reason="memory_limit",signal="SIGTERM",workload="web"} 1.0
sentinel_kills_total{program="worker",reason="kernel_oom",signal="SIGKILL",workload="worker"} 0.0
sentinel_kills_total{program="worker",reason="memory_limit",signal="SIGKILL",workload="worker"} 0.0
sentinel_kills_total{program="worker",reason="memory_limit",signal="SIGTERM",workload="worker"} 0.0
sentinel_wakeups_total{program="web",source="memory_events",workload="web"} 0.0
sentinel_wakeups_total{program="web",source="oom_notify",workload="web"} 0.0
sentinel_wakeups_total{program="web",source="pressure",workload="web"} 0.0
sentinel_wakeups_total{program="web",source="usage_threshold",workload="web"} 0.0
sentinel_wakeups_total{program="worker",source="memory_events",workload="worker"} 0.0
sentinel_wakeups_total{program="worker",source="oom_notify",workload="worker"} 0.0
sentinel_wakeups_total{program="worker",source="pressure",workload="worker"} 0.0
sentinel_wakeups_total{program="worker",source="usage_threshold",workload="worker"} 0.0
sentinel_restarts_total{program="web",workload="web"} 0.0
sentinel_restarts_total{program="worker",workload="worker"} 2.0
sentinel_last_kill_timestamp_seconds{program="web",workload="web"} 1.70000005e+09
sentinel_last_kill_timestamp_seconds{program="worker",workload="worker"} 0.0
sentinel_reaction_seconds_count{program="web",workload="web"} 1.0
sentinel_reaction_seconds_sum{program="web",workload="web"} 0.004
sentinel_reaction_seconds_count{program="worker",workload="worker"} 0.0
sentinel_reaction_seconds_sum{program="worker",workload="worker"} 0.0
sentinel_sample_duration_seconds_count{program="web",workload="web"} 1.0
sentinel_sample_duration_seconds_sum{program="web",workload="web"} 0.0002
sentinel_sample_duration_seconds_count{program="worker",workload="worker"} 0.0
sentinel_sample_duration_seconds_sum{program="worker",workload="worker"} 0.0
sentinel_probe_errors_total{probe="smaps_rollup",program="worker",reason="PermissionError"} 1.0
sentinel_sampling_failing{program="web",workload="web"} 0.0
sentinel_sampling_failing{program="worker",workload="worker"} 0.0
sentinel_log_lines_dropped_total{workload=""} 0.0
sentinel_enforcement_paused{program="web",workload="web"} 0.0
sentinel_enforcement_paused{program="worker",workload="worker"} 1.0
sentinel_alert_firing{program="web",rule="warning",workload="web"} 0.0
sentinel_alert_firing{program="web",rule="leak",workload="web"} 0.0
sentinel_alert_firing{program="web",rule="prediction",workload="web"} 1.0
sentinel_alert_firing{program="worker",rule="warning",workload="worker"} 0.0
sentinel_alert_firing{program="worker",rule="leak",workload="worker"} 0.0
sentinel_alert_firing{program="worker",rule="prediction",workload="worker"} 0.0
sentinel_predicted_seconds_to_limit{program="web",workload="web"} 600.0
sentinel_growth_bytes_per_second{program="web",workload="web"} 2048.0
sentinel_growth_bytes_per_second{program="worker",workload="worker"} -10.0
sentinel_build_info{mode="run",version="1.2.3"} 1.0
'''


def test_several_programs_each_have_their_series_and_sentinels_own_have_none():
    host = two_programs()
    c = SentinelCollector(host.state, guardian=host, pressure_path=None)
    c.reaction_for("web").observe(0.004)
    c.sample_duration_for("web").observe(0.0002)
    series = [line for line in text(c).splitlines()
              if not line.startswith("#") and "_bucket{" not in line]
    assert "\n".join(series) + "\n" == EXPECTED_TWO
    # Every family is one block: HELP/TYPE once, its series together (the text format).
    helps = [line.split()[2] for line in text(c).splitlines() if line.startswith("# HELP")]
    assert len(helps) == len(set(helps))


def test_the_exporter_files_histograms_under_the_program_they_are_about(exporters):
    host = two_programs()
    e = start_exporter(host, settings_for(free_port()))
    exporters.append(e)
    from sentinel.core.state import Event

    worker = host.program("worker").state
    for listener in host.listeners:
        listener(Event("signal_sent", "sent SIGTERM", program="worker",
                       fields={"signal": "SIGTERM", "reaction_seconds": 0.02}))
    worker.last_sample = MemorySample(at_mono=2.0, measure_bytes=1, rss_bytes=1, processes=(),
                                      duration_seconds=0.003)
    for listener in host.sample_listeners:  # as a supervisor does: last_sample, then listeners
        listener(worker.last_sample)
    _, body = get(e.url)
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for f in text_format_families(body) for s in f.samples}
    for name, program, value in (("sentinel_reaction_seconds_count", "worker", 1),
                                 ("sentinel_reaction_seconds_count", "web", 0),
                                 ("sentinel_sample_duration_seconds_count", "worker", 1),
                                 ("sentinel_sample_duration_seconds_count", "web", 0)):
        assert got[(name, (("program", program), ("workload", program)))] == value, name
    assert got[("sentinel_reaction_seconds_sum", (("program", "worker"),
                                                  ("workload", "worker")))] == 0.02


def test_each_program_gets_its_own_carried_counters_from_the_state_file(tmp_path):
    import json

    from sentinel.exporters import statefile

    (tmp_path / statefile.FILE_NAME).write_text(json.dumps({
        "schema": 1, "pod_uid": None, "counters": {
            "kills": [{"labels": {"program": "worker", "reason": "memory_limit",
                                  "signal": "SIGTERM"}, "value": 5}],
            "restarts": [{"labels": {"program": "web"}, "value": 7}]}}))
    host = two_programs()
    host.pod_state = statefile.StateFile(str(tmp_path), host.state, pod_uid=None, host=host)
    host.pod_state.load()
    got = samples(SentinelCollector(host.state, guardian=host, pressure_path=None))
    kills = "sentinel_kills_total"
    for program, n in (("web", 1), ("worker", 5)):  # web: its own kill; worker: carried
        assert got[(kills, (("program", program), ("reason", "memory_limit"),
                            ("signal", "SIGTERM"), ("workload", program)))] == n
    assert got[("sentinel_restarts_total", (("program", "web"), ("workload", "web")))] == 7
    assert got[("sentinel_restarts_total", (("program", "worker"), ("workload", "worker")))] == 2
