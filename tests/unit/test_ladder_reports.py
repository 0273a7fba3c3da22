"""What the Events and the termination message say about a ladder that did not
reach every process (EPERM) or whose end was not confirmed (a process alive after
SIGKILL): built from ``KillRecord.to_dict()`` and the guardian's event fields."""

from __future__ import annotations

from sentinel.exporters import events

from sentinel.exporters import termlog
from sentinel.core.state import Event, KillRecord
from tests.unit.test_events_unit import POD, schema_errors


def _kill(**kw) -> KillRecord:
    base = dict(reason="memory_limit", started_wall=1700000000.0, started_mono=0.0,
                measure="rss", value_bytes=70 * 2**20, limit_bytes=60 * 2**20, pids=(12, 13),
                grace_period_seconds=3.0)
    return KillRecord(**{**base, **kw})


def test_a_sigterm_event_names_only_the_pids_it_reached_and_the_refusing_ones():
    k = _kill(signals=["SIGTERM"], reached={"SIGTERM": [12]}, refused={13: 0})
    ev = Event("signal_sent", "sent", fields={
        "signal": "SIGTERM", "reason": "memory_limit", "reaction_seconds": 0.012,
        "pids": [12], "refused": [{"pid": 13, "uid": 0}], "kill": k.to_dict()})
    rec = events.record_for(ev, "leaker")
    assert rec.note == ("Memory limit exceeded: rss 70.0 MiB (73400320 bytes), limit 60.0 MiB "
                        "(62914560 bytes). Sent SIGTERM to workload 'leaker' (pids 12); SIGKILL "
                        "after the 3.0s grace period unless it exits. Reaction 12 ms after the "
                        "crossing. Not sent to pids 13 (uid 0): permission denied.")


def test_a_refused_signal_is_a_warning_event_of_its_own():
    msg = ("cannot send SIGTERM to 1 process(es) of the workload: pid 13 (uid 0): permission "
           "denied")
    rec = events.record_for(Event("signal_refused", msg, fields={
        "signal": "SIGTERM", "refused": [{"pid": 13, "uid": 0}]}), "leaker")
    assert (rec.type, rec.reason, rec.action, rec.note) == ("Warning", "SignalRefused",
                                                            "SIGTERM", msg)
    assert schema_errors(events.events_v1_body(rec, POD, "web-1.3")) == []


def test_termination_message_of_an_unconfirmed_stop_says_what_reached_whom():
    k = _kill(signals=["SIGTERM", "SIGKILL"], reached={"SIGTERM": [12], "SIGKILL": [12]},
              refused={13: 0}, confirmed=False, exit_code=137,
              survivors=[{"pid": 13, "state": "S", "uid": 0, "rss_bytes": 2 * 2**20}])
    assert termlog.summary(k.to_dict(), "leaker") == (
        "Sentinel tried to stop 'leaker': memory limit exceeded. rss 70.0 MiB (73400320 bytes), "
        "limit 60.0 MiB (62914560 bytes). Sent SIGTERM, then SIGKILL after the 3.0s grace "
        "period. SIGTERM reached PIDs 12. SIGKILL reached PIDs 12. Refused (permission denied) "
        "by pid 13 (uid 0). Not confirmed: still there pid 13 (state S, rss 2.0 MiB). Exit code "
        "137.\n")


def test_termination_message_when_no_signal_reached_the_workload():
    k = _kill(reason="operator", refused={12: 0}, confirmed=False,
              survivors=[{"pid": 12, "state": "S", "uid": 0, "rss_bytes": None}])
    text = termlog.summary(k.to_dict(), "app")
    assert text.startswith("Sentinel tried to stop 'app': operator request.")
    assert "No signal reached it." in text and "Exit status unknown." in text
    assert "Sent SIGTERM" not in text


def test_process_facts_reads_state_uid_and_rss_from_a_proc_tree(tmp_path):
    from sentinel.core.supervisor import facts_text, process_facts
    from sentinel.probes.tree import PAGE_SIZE

    d = tmp_path / "123"
    d.mkdir()
    (d / "stat").write_text("123 (odd) name (x) D 1 123 123 0 -1 4194560 94 0 0 0\n")
    (d / "status").write_text("Name:\todd\nUid:\t0\t65534\t0\t0\nGid:\t0\t0\t0\t0\n")
    (d / "statm").write_text("2000 450 300 1 0 100 0\n")
    facts = process_facts(123, proc=str(tmp_path))
    assert facts == {"pid": 123, "state": "D", "uid": 0, "rss_bytes": 450 * PAGE_SIZE}
    assert facts_text(facts).startswith("pid 123 (state D uninterruptible sleep, rss ")
    assert process_facts(124, proc=str(tmp_path)) == {"pid": 124, "state": None, "uid": None,
                                                      "rss_bytes": None}
    assert facts_text(process_facts(124, proc=str(tmp_path))) == "pid 124 (gone)"


def test_status_text_shows_refused_processes_and_an_unconfirmed_stop():
    from sentinel.control.client import status_rows

    k = _kill(signals=["SIGTERM", "SIGKILL"], reached={"SIGTERM": [12], "SIGKILL": [12]},
              refused={13: 0}, confirmed=False, exit_code=137,
              survivors=[{"pid": 13, "state": "S", "uid": 0, "rss_bytes": 2 * 2**20}])
    rows = dict(status_rows({"last_kill": k.to_dict()}, now=1700000010.0))
    assert rows["last kill"].endswith(", exit code 137, refused by pid 13 (uid 0), "
                                      "NOT CONFIRMED: still there pid 13")
