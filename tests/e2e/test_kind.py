"""End to end on a kind cluster: install the chart, see the leak demo killed,
the kill recorded as an Event, and the workload restarted (make e2e).

Needs a cluster at kube context $SENTINEL_E2E_CONTEXT (default kind-sentinel,
`make kind-up`) with the image $SENTINEL_E2E_IMAGE loaded (default
sentinel:<appVersion>, `make kind-load`), and helm/kubectl in .tools/bin.
Deselected by default (marker e2e); `make e2e` runs it with `pytest -m e2e`.

Each mode gets its own namespace, removed afterwards. On a failure the pod's
description, logs and Events are printed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from sentinel.exporters.event_bodies import EVENT_MEMORY, REPORTING_CONTROLLER

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sentinel"
TOOLS = REPO / ".tools" / "bin"
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
CONTEXT = os.environ.get("SENTINEL_E2E_CONTEXT", "kind-sentinel")
IMAGE = os.environ.get("SENTINEL_E2E_IMAGE", f"sentinel:{APP_VERSION}")
RELEASE = "guard"
FULLNAME = "guard-sentinel"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def run(tool: str, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    exe = TOOLS / tool
    if not exe.exists():
        pytest.fail(f"{exe} not found; run `make k8s-tools`", pytrace=False)
    ctx = ["--kube-context", CONTEXT] if tool == "helm" else ["--context", CONTEXT]
    proc = subprocess.run([str(exe), *ctx, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{tool} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                    f"{proc.stderr[-3000:]}", pytrace=False)
    return proc


def kubectl_json(*args: str) -> dict:
    return json.loads(run("kubectl", *args, "-o", "json").stdout)


def wait_for(what: str, probe, timeout: float, diagnose=None):
    """Poll ``probe`` every 2 s until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n"
                        + (diagnose() if diagnose else ""), pytrace=False)
        time.sleep(2)


@pytest.fixture(scope="module")
def cluster():
    proc = run("kubectl", "version", "-o", "json", check=False, timeout=30)
    if proc.returncode != 0:
        pytest.fail(f"no cluster at kube context {CONTEXT}: {proc.stderr.strip()[-500:]}; "
                    "run `make kind-up kind-load` (or set SENTINEL_E2E_CONTEXT)", pytrace=False)
    minor = int(re.sub(r"\D", "", json.loads(proc.stdout)["serverVersion"]["minor"]))
    assert minor >= 29, "the chart needs Kubernetes >= 1.29"
    return CONTEXT


class Release:
    def __init__(self, namespace: str, mode: str) -> None:
        self.namespace = namespace
        self.mode = mode
        self.selector = f"app.kubernetes.io/name=sentinel,app.kubernetes.io/instance={RELEASE}"
        # the container that runs Sentinel, and the workload's
        self.sentinel_container = "leaker" if mode == "wrapper" else "sentinel"
        self.workload_container = "leaker"

    def pod(self) -> dict:
        pods = [p for p in kubectl_json("get", "pods", "-n", self.namespace, "-l", self.selector)["items"]
                if not p["metadata"].get("deletionTimestamp")]
        assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
        return pods[0]

    def diagnose(self) -> str:
        ns = ["-n", self.namespace]
        parts = [run("kubectl", "describe", "pods", *ns, "-l", self.selector, check=False).stdout]
        for container in {self.sentinel_container, self.workload_container}:
            for previous in ("", "--previous"):
                args = ["logs", *ns, "-l", self.selector, "-c", container, "--tail", "40"]
                out = run("kubectl", *args + ([previous] if previous else []), check=False)
                parts.append(f"--- logs {container} {previous}\n{out.stdout}{out.stderr}")
        parts.append(run("kubectl", "get", "events", *ns, check=False).stdout)
        return "\n".join(parts)[-12000:]


@pytest.fixture(params=["wrapper", "sidecar"])
def release(request, cluster):
    mode = request.param
    namespace = f"sentinel-e2e-{mode}-{uuid.uuid4().hex[:6]}"
    repository, _, tag = IMAGE.rpartition(":")
    run("kubectl", "create", "namespace", namespace)
    rel = Release(namespace, mode)
    try:
        # No --wait: the demo is meant to be killed, so the pod may never stay Ready.
        proc = run("helm", "install", RELEASE, str(CHART), "-n", namespace,
                   "--set", f"mode={mode}", "--set", f"image.repository={repository}",
                   "--set", f"image.tag={tag}", "--set", "image.pullPolicy=Never",
                   # 100 Mi at 25 MiB/s: a kill every few seconds of growth
                   "--set", "sentinel.maxRss=100Mi", "--set", "sentinel.k8sEvents=on",
                   "--set-json", 'workload.command=["python","leaker.py","--rate","25","--quiet"]',
                   check=False, timeout=240)
        if proc.returncode != 0:
            pytest.fail(f"helm install failed:\n{proc.stderr}\n{rel.diagnose()}", pytrace=False)
        assert "sentinel status --socket /shared/sentinel.socket" in proc.stdout  # NOTES
        yield rel
    finally:
        run("helm", "uninstall", RELEASE, "-n", namespace, "--wait", "--timeout", "120s", check=False)
        run("kubectl", "delete", "namespace", namespace, "--wait=false", check=False)


def memory_events(rel: Release, pod_name: str) -> list[dict]:
    items = kubectl_json("get", "events.v1.events.k8s.io", "-n", rel.namespace)["items"]
    return [e for e in items if e.get("reason") == EVENT_MEMORY
            and e.get("regarding", {}).get("kind") == "Pod"
            and e["regarding"].get("name") == pod_name]


def workload_status(pod: dict, container: str) -> dict:
    statuses = pod["status"].get("containerStatuses", []) + pod["status"].get("initContainerStatuses", [])
    return next(s for s in statuses if s["name"] == container)


def metrics_via(path: str):
    """A poll function: the exposition text at API server proxy ``path``, once it has Sentinel's series."""
    def probe():
        proc = run("kubectl", "get", "--raw", path, check=False)
        return proc.stdout if proc.returncode == 0 and "sentinel_build_info" in proc.stdout else None
    return probe


def test_leak_is_killed_recorded_and_restarted(release):
    rel = release
    pod_name = wait_for("the pod", lambda: kubectl_json("get", "pods", "-n", rel.namespace, "-l",
                                                        rel.selector)["items"], 120, rel.diagnose)[0]["metadata"]["name"]

    # 1. The kill, recorded as a Warning Event about this pod.
    events = wait_for("a MemoryLimitExceeded Event", lambda: memory_events(rel, pod_name), 180,
                      rel.diagnose)
    event = events[0]
    assert event["type"] == "Warning"
    assert event["reportingController"] == REPORTING_CONTROLLER
    assert event["regarding"]["namespace"] == rel.namespace
    assert event["regarding"]["uid"] == rel.pod()["metadata"]["uid"]  # from POD_UID
    assert event.get("note")

    # 2. The restart: the kubelet starts the workload's container again.
    def restarted():
        status = workload_status(rel.pod(), rel.workload_container)
        return status if status["restartCount"] >= 1 and "terminated" in status.get("lastState", {}) else None

    status = wait_for("the workload's container to restart", restarted, 180, rel.diagnose)
    terminated = status["lastState"]["terminated"]
    assert terminated["exitCode"] != 0, terminated
    if rel.mode == "wrapper":
        # Sentinel's termination log, what `kubectl describe pod` shows as Message.
        assert terminated.get("message", "").strip(), terminated

    # 3. The sidecar outlives the workload's restarts, and so does its kill counter
    #    (read through the pod proxy: the pod is not Ready while the workload backs off).
    if rel.mode == "sidecar":
        text = wait_for("the sidecar's metrics", metrics_via(
            f"/api/v1/namespaces/{rel.namespace}/pods/{pod_name}:8000/proxy/metrics"), 120, rel.diagnose)
        kills = re.findall(r'^sentinel_kills_total\{[^}]*reason="memory_limit"[^}]*\} (\S+)', text, re.M)
        assert sum(float(k) for k in kills) >= 1, text[:3000]

    # 4. A workload that stays under the limit (it stops growing at 40 MiB): the
    #    pod becomes Ready and stays so, for the Service, the socket and helm test.
    run("helm", "upgrade", RELEASE, str(CHART), "-n", rel.namespace, "--reuse-values", "--wait",
        "--timeout", "180s", "--set-json",
        'workload.command=["python","leaker.py","--rate","25","--max","40","--quiet"]', timeout=240)

    text = wait_for("Sentinel's metrics through the Service", metrics_via(
        f"/api/v1/namespaces/{rel.namespace}/services/{FULLNAME}:metrics/proxy/metrics"), 120, rel.diagnose)
    assert re.search(r"^sentinel_workload_up\{", text, re.M), text[:2000]

    def status_ok():
        proc = run("kubectl", "exec", "-n", rel.namespace, rel.pod()["metadata"]["name"], "-c",
                   rel.sentinel_container, "--", "sentinel", "status", "--socket",
                   "/shared/sentinel.socket", check=False)
        return proc if proc.returncode == 0 else None

    proc = wait_for("`sentinel status` on the control socket (as NOTES.txt shows it)", status_ok, 60,
                    rel.diagnose)
    assert "leaker" in proc.stdout, proc.stdout

    # 5. The chart's own test hook.
    proc = run("helm", "test", RELEASE, "-n", rel.namespace, "--timeout", "120s", check=False, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr + rel.diagnose()
