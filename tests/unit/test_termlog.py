"""The termination message with several programs (sentinel.exporters.termlog): it names
the program whose kill or exit ended the container, then the others' kills briefly,
within the kubelet's 4096 bytes. Real files; events as the supervisors emit them."""

from __future__ import annotations

import time

from sentinel.core.state import Event, GuardianState, KillRecord
from sentinel.exporters import termlog


def state(program: str) -> GuardianState:
    return GuardianState(mode="run", workload=program, command=(program,), measure="rss",
                         limit_bytes=2**26, grace_period_seconds=3.0, interval_seconds=0.1,
                         version="t", program=program)


class Host:
    """Several programs, the first the main one."""

    multi = True

    def __init__(self, *names: str) -> None:
        self.programs = [type("P", (), {"state": state(n)})() for n in names]

    def program(self, name=None):
        return self.programs[0] if name is None else \
            next(p for p in self.programs if p.state.program == name)


def finished(program: str, reason: str = "memory_limit", code: int = 137) -> Event:
    k = KillRecord(reason=reason, started_wall=time.time(), started_mono=0.0, measure="rss",
                   value_bytes=70 * 2**20, limit_bytes=60 * 2**20, pids=(12,),
                   grace_period_seconds=3.0, signals=["SIGTERM", "SIGKILL"], exit_code=code,
                   confirmed=True, reached={"SIGTERM": [12], "SIGKILL": [12]})
    return Event("kill_finished", "done", fields={"kill": k.to_dict()}, program=program)


def writer(tmp_path, host) -> termlog.TerminationLog:
    return termlog.TerminationLog(str(tmp_path / "termination-log"), create=True,
                                  workload="api", host=host)


def test_the_program_that_ended_the_container_comes_first_and_the_others_briefly(tmp_path):
    w = writer(tmp_path, Host("api", "web", "worker"))
    w(finished("worker"))
    text = (tmp_path / "termination-log").read_text()
    assert text.startswith("worker: Sentinel stopped 'worker': memory limit exceeded."), text
    w(finished("api"))  # the main program's kill: its exit ends the container
    text = (tmp_path / "termination-log").read_text()
    assert text.startswith("api: Sentinel stopped 'api': memory limit exceeded."), text
    assert text.endswith(" Other programs: worker: 1 kill(s), last memory limit exceeded "
                         "(SIGTERM then SIGKILL, exit code 137).\n"), text
    w(finished("worker"))  # killed again while the main program's exit ends the container
    assert (tmp_path / "termination-log").read_text().startswith("api: "), text
    assert "worker: 2 kill(s)" in (tmp_path / "termination-log").read_text()
    w(finished("web", reason="shutdown", code=143))  # stopped because the container ends
    text = (tmp_path / "termination-log").read_text()
    assert text.startswith("api: Sentinel stopped 'api'"), text
    assert "web: 1 kill(s), last shutdown (SIGTERM then SIGKILL, exit code 143)" in text
    assert "worker: 2 kill(s)" in text and text.count("\n") == 1


def test_a_non_main_kill_is_the_cause_when_the_main_program_was_only_shut_down(tmp_path):
    w = writer(tmp_path, Host("api", "worker"))
    w(finished("worker"))  # worker gave up: the container ends, api is shut down
    w(finished("api", reason="shutdown", code=143))
    text = (tmp_path / "termination-log").read_text()
    assert text.startswith("worker: Sentinel stopped 'worker': memory limit exceeded."), text
    assert "Other programs: api: 1 kill(s), last shutdown" in text


def test_the_main_programs_exit_is_named_once_something_was_killed(tmp_path):
    path = tmp_path / "termination-log"
    w = writer(tmp_path, Host("api", "worker"))
    w(Event("exited", "workload pid 5 exited with code 3", fields={"exit_code": 3},
            program="api"))
    assert not path.exists()  # no kill: left as it was, as with one program
    w(finished("worker"))
    w(Event("exited", "workload pid 5 exited with code 3", fields={"exit_code": 3},
            program="api"))
    text = path.read_text()
    assert text.startswith("api: Main program 'api' exited with code 3; the container ends "
                           "with it. Other programs: worker: 1 kill(s)"), text


def test_many_long_programs_stay_within_4096_bytes_with_the_cause_whole(tmp_path):
    names = ["api"] + [f"program-{n:03d}-" + "x" * 200 for n in range(40)]
    w = writer(tmp_path, Host(*names))
    for name in names[1:]:
        w(finished(name))
    w(finished("api"))
    data = (tmp_path / "termination-log").read_bytes()
    assert len(data) <= termlog.MAX_BYTES
    text = data.decode()
    assert text.startswith("api: Sentinel stopped 'api'") and "Exit code 137." in text
    assert "Other programs: program-039-" in text and text.endswith("...\n")


def test_one_program_writes_exactly_what_it_did_before(tmp_path):
    one = type("G", (), {"multi": False})()
    w = writer(tmp_path, one)
    ev = finished("")
    w(ev)
    assert (tmp_path / "termination-log").read_text() == termlog.summary(
        ev.fields["kill"], "api", 1)
