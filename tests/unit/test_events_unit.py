"""Events without a Sentinel process: the bodies, the cluster and pod discovery, the
recorder (its worker against the fake API server), the fake's own checks, and the
termination message."""

from __future__ import annotations

import logging
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.exporters import events, k8s

from sentinel.exporters import termlog
from sentinel.config.settings import parse_settings
from sentinel.core.guardian import Guardian
from sentinel.core.state import Event, KillRecord
from sentinel.core.targets import TargetPermissionError
from tests.fakes.apiserver import FakeApiServer, validate_event

POD = events.PodRef("web-1", "demo", "0b6e5b8e-1c1f-4c4b-9d3b-2f54d7c2a001")


def kill_event(reason="memory_limit", signals=("SIGTERM",), pids=(12, 13), at=None,
               workload_pids=None) -> Event:
    k = KillRecord(reason=reason, started_wall=time.time(), started_mono=0.0, measure="rss",
                   value_bytes=70 * 2**20, limit_bytes=60 * 2**20, pids=tuple(pids),
                   grace_period_seconds=3.0 if signals[0] == "SIGTERM" else 0.0,
                   signals=list(signals), reaction_seconds=0.012)
    fields = {"signal": signals[-1], "reason": reason, "kill": k.to_dict()}
    if signals[-1] == "SIGTERM":
        fields["reaction_seconds"] = 0.012
    else:
        fields["pids"] = list(workload_pids or pids)
    return Event("signal_sent", "sent", at_wall=at if at is not None else time.time(),
                 fields=fields)


def schema_errors(body: dict, group="events.k8s.io") -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(body, "1.33", strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [exc.message]
    return validate_event(body, group, body["metadata"]["namespace"])


# ---------------------------------------------------------------- bodies

@pytest.mark.parametrize("wall, text", [
    (1700000000.0, "2023-11-14T22:13:20.000000Z"),
    (1700000000.5, "2023-11-14T22:13:20.500000Z"),
    (1700000000.9999999, "2023-11-14T22:13:21.000000Z"),
])
def test_micro_time_always_has_six_digits(wall, text):
    assert events.micro_time(wall) == text


@pytest.mark.parametrize("signals, reason, ev_type, ev_reason", [
    (("SIGTERM",), "memory_limit", "Warning", "MemoryLimitExceeded"),
    (("SIGTERM", "SIGKILL"), "memory_limit", "Warning", "MemoryLimitExceeded"),
    (("SIGTERM",), "operator", "Normal", "OperatorStop"),
    (("SIGTERM", "SIGKILL"), "operator", "Warning", "OperatorStop"),
    (("SIGKILL",), "operator", "Normal", "OperatorKill"),
])
def test_kill_steps_map_to_stable_reasons_and_valid_bodies(signals, reason, ev_type, ev_reason):
    rec = events.record_for(kill_event(reason, signals), "leaker")
    assert (rec.type, rec.reason, rec.action) == (ev_type, ev_reason, signals[-1])
    body = events.events_v1_body(rec, POD, events.event_name(POD.name, rec.at_wall))
    assert schema_errors(body) == []
    core = events.core_v1_body(rec, POD, "web-1.1")
    assert schema_errors(core, None) == []


def test_sigkill_note_gives_the_grace_and_the_pids_hit():
    rec = events.record_for(kill_event(signals=("SIGTERM", "SIGKILL"), pids=(12, 13),
                                       workload_pids=(12, 13, 14)), "leaker")
    assert rec.note == ("Memory limit exceeded: rss 70.0 MiB (73400320 bytes), limit 60.0 MiB "
                        "(62914560 bytes). Sent SIGKILL to workload 'leaker' (pids 12, 13, 14): "
                        "it was still running 3.0s after SIGTERM.")


def test_other_events_and_shutdown_are_not_reported():
    assert events.record_for(Event("exited", "x"), "w") is None
    assert events.record_for(Event("limit_crossed", "x"), "w") is None
    assert events.record_for(kill_event("shutdown"), "w") is None


def test_note_stays_within_1kib_for_huge_trees_and_names():
    rec = events.record_for(kill_event(pids=range(100000, 105000)), "ünïcødé-" * 300)
    assert len(rec.note.encode()) <= events.NOTE_MAX_BYTES
    assert rec.note.endswith("…")
    body = events.events_v1_body(rec, POD, "web-1.1")
    assert schema_errors(body) == []


def test_event_names_fit_for_the_longest_pod_names():
    name = events.event_name("p" * 253, 1700000000.5)
    assert len(name) == 253 and name.endswith(f".{1700000000500000000:x}")
    assert events.event_name("web-1", 1700000000.5, 2) == f"web-1.{1700000000500000002:x}"


def test_a_pod_name_whose_cut_ends_in_a_dash_still_gives_a_valid_name():
    wall = 1796120000.123456
    suffix = f".{int(wall * 1e9):x}"
    cut = 253 - len(suffix)
    pod = "a" * (cut - 1) + "-" + "b" * (246 - cut)  # 246 characters, "-" where the cut ends
    assert len(pod) == 246 and pod[:cut].endswith("-")
    name = events.event_name(pod, wall)
    assert name == "a" * (cut - 1) + suffix
    assert validate_event({"metadata": {"name": name}}, None, "demo") == []


def test_an_unfixable_name_falls_back_to_a_uuid_as_client_go_does():
    import uuid

    name = events.event_name("UPPER_case", 1796120000.5)  # not a valid pod name at all
    assert str(uuid.UUID(name)) == name
    assert validate_event({"metadata": {"name": name}}, None, "demo") == []


_LABEL = "[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?"


@given(pod=st.from_regex(rf"\A{_LABEL}(\.{_LABEL}){{0,6}}\Z").filter(lambda n: len(n) <= 253),
       wall=st.floats(min_value=1e9, max_value=4e9), bump=st.integers(0, 3))
@settings(max_examples=300, deadline=None)
def test_every_valid_pod_name_gives_a_valid_event_name(pod, wall, bump):
    name = events.event_name(pod, wall, bump)
    assert not [e for e in validate_event({"metadata": {"name": name}}, None, "demo")
                if e.startswith("metadata.name")], name


@given(head=st.integers(200, 252), tail=st.sampled_from(["-", ".", "--", "-0-", "-0."]))
@settings(max_examples=100, deadline=None)
def test_long_pod_names_cut_anywhere_stay_valid(head, tail):
    pod = ("a" * head + tail + "z" * 253)[:253]
    name = events.event_name(pod, 1796120000.5)
    assert not [e for e in validate_event({"metadata": {"name": name}}, None, "demo")
                if e.startswith("metadata.name")], name
    assert name.startswith("a" * min(head, 200))  # the pod name is kept, not replaced


# ---------------------------------------------------------------- the fake's own checks

@pytest.mark.parametrize("change, error", [
    ({"eventTime": "2023-11-14T22:13:20+00:00"}, "eventTime"),  # isoformat() without micros
    ({"note": "x" * 1025}, "note"),
    ({"reportingController": "sentinel guardian"}, "reportingController"),
    ({"reportingController": ""}, "reportingController"),
    ({"type": "Error"}, "type"),
    ({"action": ""}, "action"),
    ({"reason": "R" * 129}, "reason"),
    ({"regarding": {"kind": "Pod", "name": "x", "namespace": "other"}}, "namespace"),
    ({"deprecatedCount": 3}, "deprecatedCount"),
    ({"series": {"count": 1, "lastObservedTime": "2023-11-14T22:13:20.000000Z"}}, "series"),
    ({"unknownField": 1}, "unknownField"),  # strict schema
    ({"metadata": {"name": "Web_1", "namespace": "demo"}}, "metadata.name"),
    # A label may not end in "-" (a long pod name cut there), nor a name exceed 253.
    ({"metadata": {"name": "web-.18a5b", "namespace": "demo"}}, "metadata.name"),
    ({"metadata": {"name": "w" * 254, "namespace": "demo"}}, "metadata.name"),
])
def test_the_fake_rejects_what_the_api_server_rejects(change, error):
    rec = events.record_for(kill_event(), "leaker")
    body = {**events.events_v1_body(rec, POD, "web-1.1"), **change}
    errs = schema_errors(body)
    assert errs and any(error in e for e in errs), errs


# ---------------------------------------------------------------- cluster and pod

def test_cluster_precedence_kubeconfig_then_service_account_then_home(tmp_path, monkeypatch):
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("t")
    (sa / "namespace").write_text("team-a\n")
    monkeypatch.setattr(k8s, "SA_DIR", str(sa))  # discovery lives in exporters.k8s
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text("{}")
    kc = tmp_path / "kc"
    kc.write_text("{}")
    env = {"HOME": str(home), "KUBERNETES_SERVICE_HOST": "10.0.0.1",
           "KUBERNETES_SERVICE_PORT": "443"}
    # --kubeconfig is taken as given (kubeconfig_problems judges it), origin kept.
    flag = events.find_cluster("/nope", env)
    assert flag == events.ClusterSource("kubeconfig", "/nope")
    assert flag.origin == events.FROM_FLAG
    # $KUBECONFIG, read from the environment itself: its existing files, merged.
    from_env = events.find_cluster(None, {**env, "KUBECONFIG": f"/nope:{kc}"})
    assert from_env == events.ClusterSource("kubeconfig", str(kc))
    assert from_env.origin == events.FROM_ENV and from_env.describe().endswith("($KUBECONFIG)")
    # The flag wins over $KUBECONFIG.
    assert events.find_cluster(str(kc), {**env, "KUBECONFIG": "/other"}).origin == \
        events.FROM_FLAG
    incluster = events.find_cluster(None, env)
    assert incluster == events.ClusterSource("incluster", "10.0.0.1:443")
    # $KUBECONFIG naming nothing that exists: the service account still serves ...
    assert events.find_cluster(None, {**env, "KUBECONFIG": "/nope"}) == incluster
    # ... but ~/.kube/config is not read (client-go's loading rules), and no error.
    assert events.find_cluster(None, {"HOME": str(home), "KUBECONFIG": "/nope"}) is None
    assert events.find_cluster(None, {"HOME": str(home)}).where == str(home / ".kube/config")
    assert events.find_cluster(None, {"HOME": str(home), "KUBECONFIG": ""}).origin == \
        events.FROM_HOME
    assert events.find_cluster(None, {"HOME": str(tmp_path)}) is None
    # In a pod, HOSTNAME and the service account's namespace name the pod.
    assert events.find_pod(incluster, {"HOSTNAME": "web-2"}) == events.PodRef("web-2", "team-a")
    assert events.find_pod(None, {"HOSTNAME": "web-2"}) is None
    assert events.find_pod(None, {"POD_NAME": "a", "POD_NAMESPACE": "b", "POD_UID": "u"}) == \
        events.PodRef("a", "b", "u")


@pytest.fixture
def guardian():
    made = []

    def make(*args: str, env=None) -> Guardian:
        settings = parse_settings("run", [*args, "--", "true"], env or {})
        g = Guardian(settings, None, set())
        made.append(g)
        return g

    yield make
    for g in made:
        g.close()
        g.loop.close()


def test_start_auto_without_a_cluster_is_silently_off(guardian, caplog, tmp_path):
    g = guardian()
    with caplog.at_level(logging.DEBUG, "sentinel"):
        assert events.start(g, g.settings, {"HOME": str(tmp_path)}) == []
    assert g.state.components["k8s-events"].startswith("off (no cluster configured")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert g.listeners == []


def test_start_on_without_a_cluster_warns_once(guardian, caplog, tmp_path):
    g = guardian("--k8s-events", "on")
    with caplog.at_level(logging.INFO, "sentinel"):
        assert events.start(g, g.settings, {"HOME": str(tmp_path)}) == []
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "--k8s-events on: no cluster configured" in warning.getMessage()


BROKEN_YAML = "apiVersion: v1\nclusters: [\n  name: x\nusers:\n"


@pytest.mark.parametrize("content, problem", [
    (None, "does not exist"),
    ("dir", "is a directory, not a file"),
    (BROKEN_YAML, "is not valid YAML (while parsing a flow sequence"),
    ("- a\n- b\n", "is not a kubeconfig (a YAML list, not a mapping"),
    ("", "is empty"),
    ("apiVersion: v1\nkind: Config\nclusters: []\n", None),
    ('{"apiVersion": "v1", "kind": "Config"}', None),  # JSON is YAML
])
def test_kubeconfig_problem_says_what_is_wrong_on_one_line(tmp_path, content, problem):
    path = tmp_path / "kc"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    got = events.kubeconfig_problem(str(path))
    if problem is None:
        assert got is None
    else:
        assert got.startswith(problem), got
        assert "\n" not in got and "  " not in got


def test_an_unreadable_kubeconfig_is_a_problem(tmp_path, monkeypatch):
    # Root reads any file, so the EACCES is made by hand.
    def refuse(path, *a, **kw):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(k8s, "open", refuse, raising=False)
    got = events.kubeconfig_problem(str(tmp_path / "kc"))
    assert got.startswith("cannot be read by user ") and "permission denied" in got


def test_relative_kubeconfig_entries_are_made_absolute_before_the_move_to_root():
    env = {"KUBECONFIG": "kc:/abs/kc::sub/kc"}
    events.absolute_kubeconfig_env(env, cwd="/work/dir")
    assert env["KUBECONFIG"] == "/work/dir/kc:/abs/kc::/work/dir/sub/kc"
    empty: dict = {}
    events.absolute_kubeconfig_env(empty, cwd="/x")
    assert empty == {}


def warnings_in(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_a_missing_kubeconfig_given_by_flag_is_one_warning_naming_it(guardian, caplog, tmp_path,
                                                                    mode):
    """Even under auto (the default), and though the pod is known: the user asked for it."""
    g = guardian("--k8s-events", mode, "--kubeconfig", "/nonexistent")
    pod = {"HOME": str(tmp_path), "POD_NAME": "web-1", "POD_NAMESPACE": "demo"}
    with caplog.at_level(logging.DEBUG, "sentinel"):
        assert events.start(g, g.settings, pod) == []
    [warning] = warnings_in(caplog)
    assert "/nonexistent does not exist" in warning
    assert "no kubeconfig" not in warning and "no cluster configured" not in warning
    assert "--kubeconfig" in warning and "Fix:" in warning and "\n" not in warning
    assert g.state.components["k8s-events"].startswith("off (")
    assert "/nonexistent does not exist" in g.state.components["k8s-events"]
    assert g.listeners == []


def test_a_malformed_kubeconfig_given_by_flag_is_one_line_even_without_the_pod(guardian, caplog,
                                                                              tmp_path):
    broken = tmp_path / "broken"
    broken.write_text(BROKEN_YAML)
    g = guardian("--kubeconfig", str(broken))
    with caplog.at_level(logging.DEBUG, "sentinel"):
        assert events.start(g, g.settings, {"HOME": str(tmp_path)}) == []
    [warning] = warnings_in(caplog)
    assert f"{broken} is not valid YAML (" in warning
    assert "\n" not in warning and "  " not in warning


def test_kubeconfig_env_naming_nothing_is_silent_under_auto_and_said_under_on(guardian, caplog,
                                                                              tmp_path):
    """kubectl skips $KUBECONFIG entries that do not exist; only --k8s-events on says so."""
    env = {"HOME": str(tmp_path), "KUBECONFIG": "/nonexistent", "POD_NAME": "web-1",
           "POD_NAMESPACE": "demo"}
    auto, on = guardian(), guardian("--k8s-events", "on")
    with caplog.at_level(logging.DEBUG, "sentinel"):
        assert events.start(auto, auto.settings, env) == []
        assert not warnings_in(caplog)
        assert events.start(on, on.settings, env) == []
    [warning] = warnings_in(caplog)
    assert "$KUBECONFIG names no existing file (/nonexistent)" in warning


def test_a_malformed_kubeconfig_from_env_is_reported_at_start_when_events_would_be_on(
        guardian, caplog, tmp_path):
    broken = tmp_path / "broken"
    broken.write_text(BROKEN_YAML)
    g = guardian()
    with caplog.at_level(logging.DEBUG, "sentinel"):
        # Without the pod Events are off anyway: the file is not even read.
        assert events.start(g, g.settings, {"HOME": str(tmp_path),
                                            "KUBECONFIG": str(broken)}) == []
        assert not warnings_in(caplog)
        assert events.start(g, g.settings, {"HOME": str(tmp_path), "KUBECONFIG": str(broken),
                                            "POD_NAME": "web-1", "POD_NAMESPACE": "demo"}) == []
    [warning] = warnings_in(caplog)
    assert f"from $KUBECONFIG: {broken} is not valid YAML" in warning and "\n" not in warning
    assert g.listeners == []


def test_a_valid_kubeconfig_given_by_flag_turns_events_on(guardian, caplog, tmp_path):
    """The negative control of the warnings above."""
    with FakeApiServer() as api:
        kc = api.kubeconfig(tmp_path / "kubeconfig")
        g = guardian("--kubeconfig", str(kc))
        with caplog.at_level(logging.DEBUG, "sentinel"):
            [rec] = events.start(g, g.settings, {"HOME": str(tmp_path), "POD_NAME": "web-1",
                                                 "POD_NAMESPACE": "demo"})
        rec.close()
    assert not warnings_in(caplog)
    assert rec.source.origin == events.FROM_FLAG and g.listeners == [rec]


# ---------------------------------------------------------------- the recorder

def recorder(api: FakeApiServer, tmp_path, **kw) -> events.EventRecorder:
    kc = api.kubeconfig(tmp_path / "kubeconfig")
    return events.EventRecorder(events.ClusterSource("kubeconfig", str(kc)), POD,
                                workload="leaker", components=kw.pop("components", {}), **kw)


def test_repeats_patch_one_series_and_different_steps_make_new_events(tmp_path):
    with FakeApiServer() as api:
        comps: dict = {}
        r = recorder(api, tmp_path, components=comps)
        for _ in range(3):
            r(kill_event())
        r(kill_event(signals=("SIGTERM", "SIGKILL")))
        r.close()
    assert r.sent_total == {"create": 2, "patch": 2} and r.errors_total == {}
    by_action = {e["action"]: e for e in api.events()}
    assert by_action["SIGTERM"]["series"]["count"] == 3
    assert "series" not in by_action["SIGKILL"]
    assert comps["k8s-events"].startswith("on: events.k8s.io/v1 Events for pod demo/web-1")


def test_a_repeat_after_the_window_or_after_expiry_is_a_new_event(tmp_path):
    with FakeApiServer() as api:
        r = recorder(api, tmp_path)
        t = time.time()
        r(kill_event(at=t))
        r(kill_event(at=t + events.SERIES_WINDOW_SECONDS + 1))  # window over: new Event
        api.wait_for(lambda: len(api.events()) == 2, 5)
        api.store.clear()  # both expired (Events live about an hour)
        r(kill_event(at=t + events.SERIES_WINDOW_SECONDS + 2))  # PATCH 404 -> create
        r.close()
    assert [(q.method, q.status) for q in api.requests] == [
        ("POST", 201), ("POST", 201), ("PATCH", 404), ("POST", 201)]
    assert r.errors_total == {}


def test_a_name_taken_is_retried_with_the_next_name(tmp_path):
    with FakeApiServer() as api:
        r = recorder(api, tmp_path)
        at = time.time()
        taken = events.event_name(POD.name, at)
        api.store[("events.k8s.io", "demo", taken)] = {"metadata": {"name": taken}}
        r(kill_event(at=at))
        r.close()
    assert [q.status for q in api.requests] == [409, 201]
    assert r.sent_total == {"create": 1}


def test_forbidden_is_counted_each_time_and_logged_once(tmp_path, caplog):
    with FakeApiServer(forbid={("events.k8s.io", "create")}) as api:
        with caplog.at_level(logging.WARNING, "sentinel"):
            r = recorder(api, tmp_path)
            r(kill_event())
            r(kill_event(signals=("SIGTERM", "SIGKILL")))
            r.close()
    assert r.errors_total == {"forbidden": 2} and r.dropped_total == 2
    [line] = [rec.getMessage() for rec in caplog.records]
    assert 'cannot create resource \\"events\\"' not in line  # the server's text, unescaped
    assert 'cannot create resource "events" in API group "events.k8s.io"' in line
    assert events.RBAC_RULE in line


def test_bad_credentials_and_missing_namespace_say_the_fix(tmp_path, caplog):
    with FakeApiServer(namespaces=("other",)) as api:
        with caplog.at_level(logging.WARNING, "sentinel"):
            r = recorder(api, tmp_path)
            r(kill_event())
            r.close()
            bad = events.EventRecorder(
                events.ClusterSource("kubeconfig", str(api.kubeconfig(
                    tmp_path / "bad", token="wrong"))), POD, workload="leaker")
            bad(kill_event())
            bad.close()
    assert r.errors_total == {"not_found": 1} and bad.errors_total == {"unauthorized": 1}
    text = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "POD_NAMESPACE" in text and "automountServiceAccountToken" in text


def test_an_unreachable_server_and_a_broken_kubeconfig_are_reported(tmp_path, caplog):
    with FakeApiServer() as api:
        kc = api.kubeconfig(tmp_path / "kubeconfig")
    with caplog.at_level(logging.WARNING, "sentinel"):  # the server is gone now
        r = events.EventRecorder(events.ClusterSource("kubeconfig", str(kc)), POD,
                                 workload="leaker")
        r(kill_event())
        r.close()
        broken = tmp_path / "broken"
        broken.write_text("clusters: [")
        b = events.EventRecorder(events.ClusterSource("kubeconfig", str(broken)), POD,
                                 workload="leaker")
        b(kill_event())
        b.close()
    assert r.errors_total == {"unreachable": 1}
    assert b.errors_total == {"config": 1} and b.dropped_total == 1
    # The YAML error spans lines; the warning is one line all the same.
    messages = warnings_in(caplog)
    assert any("cannot load the cluster configuration" in m for m in messages), messages
    assert all("\n" not in m for m in messages), messages


def test_a_slow_server_never_blocks_the_caller_and_close_is_bounded(tmp_path, caplog):
    with FakeApiServer(delay_seconds=10) as api:
        r = recorder(api, tmp_path, queue_size=2, flush_seconds=0.5, timeout=(1.0, 1.5))
        t0 = time.monotonic()
        for _ in range(6):
            r(kill_event())
        queued = time.monotonic() - t0
        api.wait_for(lambda: api.requests, 5, "the first POST")
        with caplog.at_level(logging.WARNING, "sentinel"):
            t1 = time.monotonic()
            r.close()
            closing = time.monotonic() - t1
    assert queued < 0.05, queued
    assert closing < 1.0, closing
    assert r.errors_total.get("queue_full", 0) >= 1
    assert any("still busy" in rec.getMessage() for rec in caplog.records)


def test_timeouts_are_reported_as_such(tmp_path):
    with FakeApiServer(delay_seconds=10) as api:
        r = recorder(api, tmp_path, timeout=(1.0, 0.5), flush_seconds=5)
        r(kill_event())
        r.close()
    assert r.errors_total == {"timeout": 1}


# ---------------------------------------------------------------- termination message

def test_termination_summary_is_short_and_complete():
    k = kill_event(signals=("SIGTERM", "SIGKILL")).fields["kill"]
    k["exit_code"] = 137
    text = termlog.summary(k, "leaker", 2)
    assert text == ("Sentinel stopped 'leaker': memory limit exceeded. rss 70.0 MiB (73400320 "
                    "bytes), limit 60.0 MiB (62914560 bytes). Sent SIGTERM, then SIGKILL after "
                    "the 3.0s grace period. PIDs 12, 13. Exit code 137. Kills by Sentinel so "
                    "far: 2.\n")
    huge = termlog.summary({**k, "pids": list(range(10**6, 10**6 + 60))}, "x" * 10000)
    assert len(huge.encode()) <= termlog.MAX_BYTES


def test_a_target_it_may_not_signal_is_a_warning_event():
    msg = str(TargetPermissionError(42, 1000, 7))
    rec = events.record_for(Event("attach_failed", msg), "app")
    assert (rec.type, rec.reason, rec.action) == ("Warning", "TargetNotSignalable", "Attach")
    assert rec.note == msg
    assert schema_errors(events.events_v1_body(rec, POD, "web-1.2")) == []


# ---------------------------------------------------------------- kernel OOM kills

def kernel_oom_event(limit_bytes=60 * 2**20, cgroup_limit_bytes=64 * 2**20, delta=1,
                     measure="rss") -> Event:
    """What the core emits when the kernel's OOM killer took a workload process."""
    k = KillRecord(reason="kernel_oom", started_wall=time.time(), started_mono=0.0,
                   measure=measure, value_bytes=58 * 2**20, limit_bytes=limit_bytes,
                   pids=(12,), grace_period_seconds=3.0, signals=[], exit_code=137)
    return Event("kernel_oom_kill", "the kernel killed pid 12",
                 fields={"kill": k.to_dict(), "pid": 12, "oom_kills_delta": delta,
                         "cgroup_limit_bytes": cgroup_limit_bytes})


def test_a_kernel_oom_kill_is_a_warning_with_its_own_reason_and_both_limits():
    rec = events.record_for(kernel_oom_event(), "leaker")
    assert (rec.type, rec.reason, rec.action) == ("Warning", "KernelOOMKill", "SIGKILL")
    assert rec.note == (
        "The kernel's OOM killer killed PID 12 of workload 'leaker' (SIGKILL, exit code 137) "
        "because the container's cgroup hit its memory limit (64.0 MiB (67108864 bytes)) "
        "before Sentinel's limit did (limit 60.0 MiB (62914560 bytes) on rss, last sample "
        "58.0 MiB (60817408 bytes)). Sentinel's limit sits too close to the container's (or "
        "its measure misses what the cgroup is charged: page cache, tmpfs, kernel memory): "
        "lower --max-rss, or use --max-rss auto or --measure working-set so Sentinel stops "
        "it with SIGTERM first.")
    assert schema_errors(events.events_v1_body(rec, POD, "web-1.3")) == []
    assert schema_errors(events.core_v1_body(rec, POD, "web-1.4"), None) == []


def test_a_kernel_oom_kill_above_sentinels_limit_says_so_and_counts_the_rise():
    rec = events.record_for(kernel_oom_event(limit_bytes=2**30, delta=3), "leaker")
    assert "The cgroup's oom_kill counter rose by 3." in rec.note
    assert "Sentinel's limit sits above the container's: lower --max-rss" in rec.note
    rec = events.record_for(kernel_oom_event(limit_bytes=None, cgroup_limit_bytes=None), "x")
    assert "(limit unknown)" in rec.note and "Sentinel had no limit set" in rec.note
    assert len(rec.note.encode()) <= events.NOTE_MAX_BYTES


def test_a_kernel_oom_kill_is_posted_to_the_api_server(tmp_path):
    with FakeApiServer() as api:
        r = recorder(api, tmp_path)
        r(kernel_oom_event())
        r.close()
    assert r.errors_total == {}
    [posted] = api.events()
    assert (posted["type"], posted["reason"], posted["action"]) == (
        "Warning", "KernelOOMKill", "SIGKILL")
    assert posted["regarding"]["name"] == "web-1"
    assert posted["note"].startswith("The kernel's OOM killer killed PID 12")


def test_the_termination_message_names_a_kernel_oom_kill_once(tmp_path):
    path = tmp_path / "termination-log"
    writer = termlog.TerminationLog(str(path), create=True, workload="leaker")
    ev = kernel_oom_event()
    writer(ev)
    text = path.read_text()
    assert text.startswith("KernelOOMKill: The kernel's OOM killer killed PID 12 of workload "
                           "'leaker'")
    assert "64.0 MiB (67108864 bytes)" in text and "60.0 MiB (62914560 bytes) on rss" in text
    assert "--max-rss auto or --measure working-set" in text
    assert text.endswith("Kills so far (Sentinel's and the kernel's): 1.\n")
    # A kill_finished for the same kernel kill (if the core sends one) is not a second kill.
    writer(Event("kill_finished", "done", fields={"kill": ev.fields["kill"]}))
    assert path.read_text() == text and writer.kills == 1


# ---------------------------------------------------------------- several programs
def program_event(program: str, **kw) -> Event:
    import dataclasses

    return dataclasses.replace(kill_event(**kw), program=program)


def test_with_several_programs_each_events_note_and_related_name_its_program(tmp_path):
    with FakeApiServer() as api:
        r = recorder(api, tmp_path, multi=True)
        r(program_event("web"))
        r(program_event("worker"))
        r(program_event("worker"))  # a repeat of worker's: its own series, not web's
        r.close()
    assert r.errors_total == {} and r.sent_total == {"create": 2, "patch": 1}
    by_program = {e["related"]["name"]: e for e in api.events()}  # stored: schema-valid
    assert sorted(by_program) == ["web", "worker"]
    for program, ev in by_program.items():
        assert ev["related"] == {"apiVersion": "sentinel.dev/v1", "kind": "Program",
                                 "name": program, "namespace": "demo"}
        assert ev["note"].startswith(f"{program}: Memory limit exceeded: "), ev["note"]
        assert f"workload {program!r}" in ev["note"]
        assert ev["regarding"]["kind"] == "Pod" and ev["reportingInstance"] == POD.name
    assert by_program["worker"]["series"]["count"] == 2 and "series" not in by_program["web"]


def test_one_program_names_it_in_related_only_and_sentinels_own_name_none():
    rec = events.record_for(program_event("leaker"), "leaker")
    assert rec.program == "leaker" and rec.note.startswith("Memory limit exceeded: ")
    body = events.events_v1_body(rec, POD, "web-1.abc")
    assert body["related"]["name"] == "leaker" and not schema_errors(body)
    core = events.core_v1_body(rec, POD, "web-1.abc")
    assert core["related"] == body["related"] and not schema_errors(core, group=None)
    own = events.record_for(kill_event(), "leaker", multi=True)  # Event.program == ""
    assert own.program == "" and own.note.startswith("Memory limit exceeded: ")
    assert "related" not in events.events_v1_body(own, POD, "web-1.abc")


def test_a_prefixed_note_still_fits_in_1kib():
    rec = events.record_for(program_event("p" * 200, pids=range(100000, 105000)), "w",
                            multi=True)
    assert rec.note.startswith("p" * 200 + ": ") and len(rec.note.encode()) <= 1024
