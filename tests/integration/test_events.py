"""Kubernetes Events and the termination message, from a real ``sentinel run`` killing a
real leaker, against the fake API server (tests/fakes/apiserver.py) reached through a
kubeconfig, with the pod named by the downward-API variables."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from sentinel.exporters import events
from tests.conftest import PY, Running, leaker, wait_until
from tests.fakes.apiserver import FakeApiServer

POD = {"POD_NAME": "web-7d9f8c6b5-x2x4q", "POD_NAMESPACE": "demo",
       "POD_UID": "0b6e5b8e-1c1f-4c4b-9d3b-2f54d7c2a001"}
COMMON = ["--no-metrics", "--no-socket", "--log-format", "json", "--grace-period", "1s"]
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture
def api():
    with FakeApiServer() as server:
        yield server


def env_for(tmp_path, kubeconfig=None, **extra) -> dict:
    """No cluster but the one given: HOME without ~/.kube, KUBECONFIG empty unless set."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"HOME": str(home), "KUBECONFIG": str(kubeconfig) if kubeconfig else "",
           "KUBERNETES_SERVICE_HOST": "", "SENTINEL_K8S_EVENTS": "",
           "SENTINEL_TERMINATION_LOG": "", **POD}
    env.update(extra)
    return env


def logs_of(s: Running, kind: str) -> list[dict]:
    return [rec for rec in s.logs() if rec.get("event") == kind]


def warnings_of(s: Running) -> list[dict]:
    return [rec for rec in s.logs() if rec.get("level") == "warning"
            and rec.get("event") not in ("limit_crossed", "signal_sent", "exited",
                                         "restart_scheduled", "restart_limit", "alert")]


def run_leak(start_sentinel, tmp_path, api, *args: str, extra_env=None) -> Running:
    kc = api.kubeconfig(tmp_path / "kubeconfig") if api is not None else None
    return start_sentinel([*COMMON, "--max-rss", "60Mi", *args, "--",
                           *leaker("--rate", "100", "--quiet")],
                          env=env_for(tmp_path, kc, **(extra_env or {})))


def test_a_memory_kill_becomes_one_schema_valid_event(start_sentinel, tmp_path, api):
    s = run_leak(start_sentinel, tmp_path, api)
    assert s.wait() == 143
    api.wait_for(lambda: api.events(), 5, "the Event")
    [ev] = api.events()
    [sent] = logs_of(s, "signal_sent")
    [crossed] = logs_of(s, "limit_crossed")
    assert ev["type"] == "Warning"
    assert ev["reason"] == "MemoryLimitExceeded"
    assert ev["action"] == "SIGTERM"
    assert ev["reportingController"] == "sentinel.dev/guardian"
    assert ev["reportingInstance"] == POD["POD_NAME"]
    assert ev["regarding"] == {"apiVersion": "v1", "kind": "Pod", "name": POD["POD_NAME"],
                               "namespace": "demo", "uid": POD["POD_UID"]}
    # The program it is about (here the one workload, named after its command), for
    # selectors; its note has no prefix (one program).
    assert ev["related"] == {"apiVersion": "sentinel.dev/v1", "kind": "Program",
                             "name": os.path.basename(PY), "namespace": "demo"}
    assert ev["note"].startswith("Memory limit exceeded: ")
    assert ev["metadata"]["namespace"] == "demo"
    assert ev["metadata"]["name"].startswith(POD["POD_NAME"] + ".")
    assert MICRO_TIME.match(ev["eventTime"]), ev["eventTime"]
    posted = time.mktime(time.strptime(ev["eventTime"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert abs(posted - sent["kill"]["started"]) < 2
    note = ev["note"]
    assert len(note.encode()) <= 1024
    assert f"rss {crossed['value_bytes'] / 2**20:.1f} MiB ({crossed['value_bytes']} bytes)" in note
    assert "limit 60.0 MiB (62914560 bytes)" in note
    assert f"pids {', '.join(map(str, crossed['pids']))}" in note
    assert "SIGTERM" in note and "1.0s grace period" in note
    assert "series" not in ev
    [post] = api.calls("POST")
    assert post.status == 201
    assert post.path == "/apis/events.k8s.io/v1/namespaces/demo/events"
    assert post.headers["authorization"] == f"Bearer {api.token}"
    assert not warnings_of(s)


def test_a_repeat_updates_the_series_instead_of_a_new_event(start_sentinel, tmp_path, api):
    s = run_leak(start_sentinel, tmp_path, api, "--restart", "always", "--restart-delay",
                 "100ms", "--max-restarts", "2")
    s.wait(30)
    assert len(logs_of(s, "signal_sent")) == 3
    api.wait_for(lambda: len(api.calls("PATCH")) == 2, 5, "two series PATCHes")
    [ev] = api.events()
    assert ev["series"]["count"] == 3
    assert MICRO_TIME.match(ev["series"]["lastObservedTime"])
    assert ev["series"]["lastObservedTime"] > ev["eventTime"]
    assert [r.status for r in api.requests] == [201, 200, 200]
    assert all(r.headers["content-type"] == "application/strategic-merge-patch+json"
               for r in api.calls("PATCH"))


def test_without_the_events_group_the_core_api_is_used(start_sentinel, tmp_path):
    with FakeApiServer(events_group=False) as api:
        s = run_leak(start_sentinel, tmp_path, api)
        assert s.wait() == 143
        api.wait_for(lambda: api.events(None), 5, "a core v1 Event")
    assert api.events("events.k8s.io") == []
    [ev] = api.events(None)
    assert ev["apiVersion"] == "v1" and ev["reason"] == "MemoryLimitExceeded"
    assert ev["involvedObject"]["name"] == POD["POD_NAME"] and ev["count"] == 1
    assert "limit 60.0 MiB (62914560 bytes)" in ev["message"]
    assert [(r.method, r.status) for r in api.requests] == [("POST", 404), ("GET", 404),
                                                           ("POST", 201)]


def test_forbidden_logs_the_rbac_fix_once_and_the_kills_go_on(start_sentinel, tmp_path):
    forbid = {("events.k8s.io", "create"), ("", "create")}
    with FakeApiServer(forbid=forbid) as api:
        s = run_leak(start_sentinel, tmp_path, api, "--restart", "always", "--restart-delay",
                     "100ms", "--max-restarts", "1")
        s.wait(30)
        api.wait_for(lambda: len(api.calls("POST", 403)) == 2, 5, "two refused POSTs")
    sent = logs_of(s, "signal_sent")
    assert len(sent) == 2
    assert all(e["reaction_seconds"] < 0.5 for e in sent), sent
    [warning] = warnings_of(s)
    msg = warning["msg"]
    assert "403 Forbidden" in msg and "namespace demo" in msg
    assert 'apiGroups: ["events.k8s.io", ""]' in msg and 'verbs: ["create", "patch"]' in msg
    assert "RoleBinding" in msg
    assert api.events() == []


def test_a_slow_api_server_delays_neither_the_kill_nor_the_exit(start_sentinel, tmp_path):
    with FakeApiServer(delay_seconds=10) as api:
        t0 = time.monotonic()
        s = run_leak(start_sentinel, tmp_path, api, "--restart", "always", "--restart-delay",
                     "100ms", "--max-restarts", "1", "--linger", "1s")
        s.wait(9)
        ended = time.monotonic()
        # The first POST was sent and is still waiting for its answer.
        assert api.calls("POST") and api.calls("POST")[0].status in (0, 201)
    sent = logs_of(s, "signal_sent")
    assert len(sent) == 2
    assert all(e["reaction_seconds"] < 0.5 for e in sent), sent
    # Sentinel was done once the second leaker died; the linger (1 s) and the
    # Events worker's flush bound (2 s) held the exit back, never the 10 s answer.
    last_exit = max(r["ts"] for r in logs_of(s, "exited"))
    lag = ended - t0 - (_ts(last_exit) - _ts(s.logs()[0]["ts"]))
    assert ended - t0 < 9
    assert lag < 1.0 + events.FLUSH_SECONDS + 2.0, lag
    [linger] = [w for w in warnings_of(s) if w.get("event") == "linger"]
    assert "Kubernetes Event(s) still not out after 1.0s" in linger["msg"], linger
    assert any("still busy" in w["msg"] for w in warnings_of(s))


def _ts(iso: str) -> float:
    base, frac = iso.rstrip("Z").split(".")
    return time.mktime(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + int(frac) / 1000


def test_auto_without_a_cluster_never_imports_kubernetes(tmp_path):
    env = env_for(tmp_path)
    s = Running([PY, "-X", "importtime", "-m", "sentinel", "run", *COMMON, "--max-rss", "60Mi",
                 "--", *leaker("--rate", "100", "--quiet")], pid1=False, env=env)
    try:
        assert s.wait() == 143
        err = s.stderr()
        assert "import time:" in err  # the check below can see imports at all
        assert re.search(r"\|\s+sentinel\.exporters\.events$", err, re.M)  # Events were considered ...
        assert not re.search(r"\|\s+kubernetes\b", err)  # ... without loading the client
        assert not warnings_of(s)
        assert "Kubernetes Events" not in err
    finally:
        s.kill_all()


def test_with_a_cluster_the_client_is_imported_after_the_spawn(tmp_path, api):
    """The negative control of the test above: the same check sees the import."""
    env = env_for(tmp_path, api.kubeconfig(tmp_path / "kubeconfig"))
    s = Running([PY, "-X", "importtime", "-m", "sentinel", "run", *COMMON, "--max-rss", "60Mi",
                 "--", *leaker("--rate", "100", "--quiet")], pid1=False, env=env)
    try:
        assert s.wait() == 143
        api.wait_for(lambda: api.events(), 5, "the Event")
        err = s.stderr()
        kube = [i for i, line in enumerate(err.splitlines())
                if re.search(r"\|\s+kubernetes\b", line)]
        spawned = [i for i, line in enumerate(err.splitlines()) if '"spawned"' in line]
        assert kube and spawned
        assert min(kube) > min(spawned)  # imported only once the workload ran
    finally:
        s.kill_all()


def test_on_without_a_cluster_warns_once_and_still_kills(start_sentinel, tmp_path):
    s = start_sentinel([*COMMON, "--k8s-events", "on", "--max-rss", "60Mi", "--",
                        *leaker("--rate", "100", "--quiet")], env=env_for(tmp_path))
    assert s.wait() == 143
    [warning] = warnings_of(s)
    assert warning["msg"].startswith("--k8s-events on: no cluster configured")
    assert "--kubeconfig" in warning["msg"]


def test_on_without_the_pod_name_says_which_variables_to_set(start_sentinel, tmp_path, api):
    env = env_for(tmp_path, api.kubeconfig(tmp_path / "kubeconfig"), POD_NAME="")
    s = start_sentinel([*COMMON, "--k8s-events", "on", "--max-rss", "60Mi", "--",
                        *leaker("--rate", "100", "--quiet")], env=env)
    assert s.wait() == 143
    [warning] = warnings_of(s)
    assert "POD_NAME" in warning["msg"] and "fieldRef" in warning["msg"]
    assert api.requests == []


def test_off_sends_nothing_even_with_a_cluster(start_sentinel, tmp_path, api):
    s = run_leak(start_sentinel, tmp_path, api, "--k8s-events", "off")
    assert s.wait() == 143
    assert api.requests == []


# ---------------------------------------------------------------- termination message

def test_termination_message_written_after_a_kill(start_sentinel, tmp_path):
    path = tmp_path / "termination-log"
    s = start_sentinel([*COMMON, "--max-rss", "60Mi", "--termination-log", str(path), "--",
                        *leaker("--rate", "100", "--quiet", "--ignore-term")],
                       env=env_for(tmp_path))
    assert s.wait() == 137
    [crossed] = logs_of(s, "limit_crossed")
    text = path.read_text()
    assert len(text.encode()) <= 4096
    assert text.startswith("Sentinel stopped 'python")
    assert "memory limit exceeded" in text
    assert f"({crossed['value_bytes']} bytes), limit 60.0 MiB (62914560 bytes)" in text
    assert "Sent SIGTERM, then SIGKILL after the 1.0s grace period." in text
    assert f"PIDs {', '.join(map(str, crossed['pids']))}." in text
    assert "Exit code 137." in text


def test_termination_message_not_written_without_a_kill(start_sentinel, tmp_path):
    path = tmp_path / "termination-log"
    s = start_sentinel([*COMMON, "--max-rss", "60Mi", "--termination-log", str(path), "--",
                        *leaker("--rate", "100", "--max", "5", "--exit-at-max", "--quiet")],
                       env=env_for(tmp_path))
    assert s.wait() == 0
    assert not path.exists()


def test_unwritable_termination_log_is_a_warning_not_a_crash(start_sentinel, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    path = blocker / "termination-log"  # ENOTDIR, even for root
    s = start_sentinel([*COMMON, "--max-rss", "60Mi", "--termination-log", str(path), "--",
                        *leaker("--rate", "100", "--quiet")], env=env_for(tmp_path))
    assert s.wait() == 143
    [warning] = warnings_of(s)
    assert f"cannot write the termination message to {path}" in warning["msg"]
    assert "Traceback" not in s.stderr()


@pytest.mark.skipif(os.path.exists("/dev/termination-log"),
                    reason="this machine has a /dev/termination-log (a Kubernetes container)")
def test_default_termination_log_is_never_created_outside_kubernetes(start_sentinel, tmp_path):
    env = env_for(tmp_path)
    del env["SENTINEL_TERMINATION_LOG"]
    s = start_sentinel([*COMMON, "--max-rss", "60Mi", "--",
                        *leaker("--rate", "100", "--quiet")], env=env)
    assert s.wait() == 143
    assert not os.path.exists("/dev/termination-log")
    assert not warnings_of(s)


def test_operator_stop_is_a_normal_event(start_sentinel, tmp_path, api):
    """A stop through the control socket: reason OperatorStop, type Normal."""
    sock = tmp_path / "sentinel.sock"
    kc = api.kubeconfig(tmp_path / "kubeconfig")
    s = start_sentinel(["--no-metrics", "--log-format", "json", "--socket", str(sock), "--",
                        PY, "-c", "import time; print('ready', flush=True); time.sleep(60)"],
                       env=env_for(tmp_path, kc))
    s.expect("ready")
    wait_until(sock.exists, 10, what="the control socket")
    from sentinel.control.client import request  # the control socket's client

    request(str(sock), "stop")
    assert s.wait() in (143, 128 + signal.SIGTERM)
    api.wait_for(lambda: api.events(), 5, "the Event")
    [ev] = api.events()
    assert (ev["type"], ev["reason"], ev["action"]) == ("Normal", "OperatorStop", "SIGTERM")
    assert ev["note"].startswith("Operator requested a stop")


# ---------------------------------------------------------------- a kubeconfig that cannot be used

HUMAN_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z sentinel\[\d+\] [A-Z]+ ")


@pytest.mark.parametrize("events_mode", [None, "on"])
def test_a_missing_kubeconfig_flag_is_one_warning_and_the_kill_goes_on(start_sentinel, tmp_path,
                                                                      api, events_mode):
    """The default --k8s-events auto included: the user named the file, so it is not ignored."""
    missing = tmp_path / "nonexistent"
    mode = ["--k8s-events", events_mode] if events_mode else []
    s = run_leak(start_sentinel, tmp_path, api, *mode, "--kubeconfig", str(missing))
    assert s.wait() == 143
    [warning] = warnings_of(s)
    assert f"{missing} does not exist" in warning["msg"]
    assert "no kubeconfig" not in warning["msg"] and "Fix:" in warning["msg"]
    assert warning["reason"] == "config"
    assert len(logs_of(s, "signal_sent")) == 1
    assert api.requests == []  # not the $KUBECONFIG of env_for either: the flag was meant


def test_a_malformed_kubeconfig_is_one_human_log_line(start_sentinel, tmp_path):
    broken = tmp_path / "broken"
    broken.write_text("apiVersion: v1\nclusters: [\n  name: x\nusers:\n")
    s = start_sentinel(["--no-metrics", "--no-socket", "--k8s-events", "on", "--kubeconfig",
                        str(broken), "--max-rss", "60Mi", "--",
                        *leaker("--rate", "100", "--quiet")], env=env_for(tmp_path))
    assert s.wait() == 143
    lines = s.stderr().splitlines()
    assert lines and all(HUMAN_LINE.match(line) for line in lines), lines
    [warning] = [line for line in lines if " WARNING " in line and "Kubernetes Events" in line]
    assert f"{broken} is not valid YAML (while parsing a flow sequence" in warning


def test_kubeconfig_env_is_read_by_events_itself(start_sentinel, tmp_path, api):
    """$KUBECONFIG works with no --kubeconfig and no SENTINEL_KUBECONFIG, as for kubectl."""
    env = env_for(tmp_path, api.kubeconfig(tmp_path / "kubeconfig"), SENTINEL_KUBECONFIG="")
    s = start_sentinel([*COMMON, "--max-rss", "60Mi", "--",
                        *leaker("--rate", "100", "--quiet")], env=env)
    assert s.wait() == 143
    api.wait_for(lambda: api.events(), 5, "the Event")
    assert not warnings_of(s)


def test_kubeconfig_env_naming_no_file_is_silent_under_auto(start_sentinel, tmp_path):
    s = start_sentinel([*COMMON, "--max-rss", "60Mi", "--",
                        *leaker("--rate", "100", "--quiet")],
                       env=env_for(tmp_path, tmp_path / "nonexistent"))
    assert s.wait() == 143
    assert not warnings_of(s)


# ---------------------------------------------------------------- issue 8

def test_a_246_character_pod_name_cut_at_a_dash_gets_its_event(start_sentinel, tmp_path, api):
    # The Event name is <pod>.<16 hex digits>, cut to 253: the pod name is cut at 236
    # characters, and here its 236th is a "-" (a valid pod name; not a valid cut).
    pod = "a" * 235 + "-" + "b" * 10
    s = run_leak(start_sentinel, tmp_path, api, extra_env={"POD_NAME": pod})
    assert s.wait() == 143
    api.wait_for(lambda: api.calls("POST"), 5, "the POST")
    assert [r.status for r in api.calls("POST")] == [201], [r.body for r in api.calls("POST")]
    [ev] = api.events()
    assert ev["regarding"]["name"] == pod
    assert ev["metadata"]["name"].startswith("a" * 235 + ".")
    assert not warnings_of(s)


def test_event_failures_are_served_as_a_metric(start_sentinel, tmp_path):
    from tests.integration.test_prometheus import free_port, metric, try_get

    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    go = tmp_path / "go"
    forbid = {("events.k8s.io", "create"), ("", "create")}
    with FakeApiServer(forbid=forbid) as api:
        kc = api.kubeconfig(tmp_path / "kubeconfig")
        s = start_sentinel(["--metrics-address", "127.0.0.1", "--metrics-port", str(port),
                            "--no-socket", "--log-format", "json", "--grace-period", "1s",
                            "--max-rss", "60Mi", "--restart", "always", "--restart-delay",
                            "100ms", "--", "sh", "-c",
                            f'if [ -e "{go}" ]; then exec sleep 60; fi; touch "{go}"; '
                            f'exec "{PY}" "{leaker()[1]}" --rate 100 --quiet'],
                           env=env_for(tmp_path, kc))
        forbidden = 'sentinel_k8s_event_errors_total{reason="forbidden"}'
        body = wait_until(lambda: (b := try_get(url)) and metric(b, forbidden) and b, 20,
                          what="the forbidden Event counted on /metrics")
        assert metric(body, forbidden) == 1.0
        assert metric(body, 'sentinel_k8s_event_errors_total{reason="timeout"}') == 0.0
        assert "# TYPE sentinel_k8s_event_errors_total counter" in body
        s.signal(signal.SIGTERM)
        assert s.wait() == 143


def test_the_client_loads_in_the_background_before_any_kill(start_sentinel, tmp_path, api):
    """Under a small CPU limit the client's imports take seconds: begun at the first
    Event, they would often not finish before Sentinel exits. So they start once the
    workload runs, with no Event to send."""
    kc = api.kubeconfig(tmp_path / "kubeconfig")
    s = start_sentinel(["--no-metrics", "--no-socket", "--log-format", "json", "--log-level",
                        "debug", "--", PY, "-c",
                        "import sys; print('ready', flush=True); sys.stdin.readline()"],
                       env=env_for(tmp_path, kc), stdin=subprocess.PIPE)
    s.expect("ready")
    [loaded] = wait_until(lambda: [r for r in s.logs() if r.get("reason") == "client_loaded"],
                          30, what=lambda: "the client loaded: " + s.stderr()[-2000:])
    assert "client loaded in the background" in loaded["msg"]
    [spawned] = logs_of(s, "spawned")
    assert _ts(loaded["ts"]) >= _ts(spawned["ts"])
    s.popen.stdin.close()
    assert s.wait() == 0
    assert api.calls("POST") == []  # nothing was killed, nothing was sent
