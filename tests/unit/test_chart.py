"""The Helm chart (charts/sentinel), rendered by the real helm and checked the
way a cluster would check it.

- ``helm lint --strict`` for the defaults and every ``ci/*-values.yaml``.
- ``helm template`` of each of those for every Kubernetes minor from the
  chart's ``kubeVersion`` floor to the newest that kubernetes-validate ships;
  every object validated with kubernetes-validate in strict mode (unknown
  fields are errors, as with ``kubectl apply --validate=strict``).
- ServiceMonitor and PrometheusRule against the Prometheus Operator CRDs with
  ``scripts/validate-crd.py --strict`` (CRDs in ``tests/schemas/``, see
  SOURCE.txt there); the rules with ``promtool``.
- The values schema rejects unknown keys and bad enums (``helm template``
  fails), and the templates refuse settings the schema cannot express.
- Assertions on the parsed objects: security context, RBAC, shared socket
  volume, ports and probes, selector labels, env read by Sentinel's parser.

Tools: helm from ``<repo>/.tools/bin`` (``make k8s-tools``), promtool from
Debian's ``prometheus`` (``scripts/install-system-deps.sh``). A missing tool
fails the test with the command that installs it; nothing is skipped.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes.config import incluster_config

from sentinel.exporters import events
from sentinel.config.programs import (FILE_SETTINGS_KEYS, NAME_MAX, NAME_RE, PROGRAM_KEYS,
                                      PROGRAM_OPTIONS, load_config)
from sentinel.config.settings import OPTIONS, parse_settings, parse_size
from sentinel.errors import UsageError
from tests.conftest import wait_until

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sentinel"
HELM = REPO / ".tools" / "bin" / "helm"
VALIDATE_CRD = REPO / "scripts" / "validate-crd.py"
CRD_DIR = REPO / "tests" / "schemas" / "prometheus-operator-v0.93.0"
CRDS = [CRD_DIR / "monitoring.coreos.com_servicemonitors.yaml",
        CRD_DIR / "monitoring.coreos.com_prometheusrules.yaml"]
MONITORING_API = "monitoring.coreos.com/v1"
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
# One workload (`sentinel run -- CMD`); the others run several programs (`--config`).
SINGLE_CI_VALUES = [p for p in CI_VALUES if not (yaml.safe_load(p.read_text()) or {}).get("programs")]
# With the default memory probe (poll): the eBPF probe's values add rights (see
# test_probe_ebpf_adds_exactly_the_rights_it_needs).
POLL_CI_VALUES = [p for p in CI_VALUES
                  if (yaml.safe_load(p.read_text()) or {}).get("probe", "poll") == "poll"]
# The pre-2.0.0 defaults, spelled out: with a container memory limit the defaults
# are now auto on working-set (see test_the_default_limit_follows_the_container).
RSS_200MI = ("sentinel.maxRss=200Mi", "sentinel.measure=rss")
# The docker-compose stack's files, copied into the chart by `make chart-sync`.
SYNCED_FILES = {
    REPO / "docker" / "prometheus" / "rules" / "sentinel.rules.yml": CHART / "files" / "sentinel.rules.yml",
    REPO / "docker" / "grafana" / "dashboards" / "sentinel.json": CHART / "files" / "dashboards" / "sentinel.json",
}


def _minor(version: str) -> int:
    return int(re.match(r"^v?1\.(\d+)", version).group(1))


CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())
FLOOR_MINOR = _minor(re.search(r">=\s*(\S+)", CHART_META["kubeVersion"]).group(1))
NEWEST_MINOR = _minor(kubernetes_validate.latest_version())
KUBE_VERSIONS = [f"1.{m}.0" for m in range(FLOOR_MINOR, NEWEST_MINOR + 1)]
SENTINEL_ENV_NAMES = {opt.env_name for opt in OPTIONS}


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


def helm_path() -> Path:
    if not os.access(HELM, os.X_OK):
        pytest.fail(f"helm not found at {HELM}; run `make k8s-tools` "
                    f"(sh scripts/install-k8s-tools.sh .tools/bin)", pytrace=False)
    return HELM


def helm(*args: str, chart: Path = CHART, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(helm_path()), *args], cwd=chart.parent, capture_output=True,
                          text=True, timeout=60)
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}", pytrace=False)
    return proc


def template_args(values: tuple[str, ...] = (), sets: tuple[str, ...] = (),
                  kube_version: str | None = None, api_versions: tuple[str, ...] = (),
                  release: str = "demo", namespace: str = "guarded",
                  chart: Path = CHART) -> list[str]:
    args = ["template", release, str(chart), "--namespace", namespace]
    for v in values:
        args += ["-f", str(v)]
    for s in sets:  # "json:key=[]" goes through --set-json, "str:key=1" through --set-string
        if s.startswith("json:"):
            args += ["--set-json", s[5:]]
        elif s.startswith("str:"):
            args += ["--set-string", s[4:]]
        else:
            args += ["--set", s]
    if kube_version:
        args += ["--kube-version", kube_version]
    for a in api_versions:
        args += ["--api-versions", a]
    return args


@lru_cache(maxsize=None)
def render(values: tuple[str, ...] = (), sets: tuple[str, ...] = (),
           kube_version: str | None = None, api_versions: tuple[str, ...] = (),
           release: str = "demo", namespace: str = "guarded") -> tuple[dict, ...]:
    """The objects ``helm template`` renders, parsed; cached per argument set."""
    proc = helm(*template_args(values, sets, kube_version, api_versions, release, namespace))
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def render_fails(*sets: str, values: tuple[str, ...] = ()) -> str:
    """Render with ``sets``, expect helm to refuse; return its stderr."""
    proc = helm(*template_args(values, sets), check=False)
    assert proc.returncode != 0, f"helm template accepted {sets}:\n{proc.stdout[:2000]}"
    return proc.stderr


def ci(name: str) -> tuple[str, ...]:
    path = CHART / "ci" / f"{name}-values.yaml"
    assert path.is_file(), path
    return (str(path),)


def by_kind(docs, kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs, kind: str) -> dict:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def is_hook(doc: dict) -> bool:
    return "helm.sh/hook" in (doc["metadata"].get("annotations") or {})


def pod_spec(docs) -> dict:
    return one(docs, "Deployment")["spec"]["template"]["spec"]


def all_containers(spec: dict) -> list[dict]:
    return list(spec.get("initContainers") or []) + list(spec["containers"])


def sentinel_container(spec: dict) -> dict:
    """The container that runs Sentinel: the only one that runs `sentinel ...`."""
    found = [c for c in all_containers(spec) if (c.get("command") or [""])[0] == "sentinel"]
    assert len(found) == 1, [c["name"] for c in all_containers(spec)]
    return found[0]


def env_map(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env") or []}


def literal_env(container: dict) -> dict[str, str]:
    return {k: e["value"] for k, e in env_map(container).items() if "value" in e}


# Every ci values file at every Kubernetes version, rendered once, in parallel
# (helm is a separate process, so threads are enough).
MATRIX_KEYS = [(path.name, kv) for path in CI_VALUES for kv in KUBE_VERSIONS]


def _api_versions_for(path: Path) -> tuple[str, ...]:
    return (MONITORING_API,) if "monitoring-on" in path.name else ()


@pytest.fixture(scope="module")
def matrix() -> dict[tuple[str, str], tuple[dict, ...]]:
    helm_path()
    paths = {p.name: p for p in CI_VALUES}

    def job(key):
        name, kv = key
        return key, render((str(paths[name]),), (), kv, _api_versions_for(paths[name]))

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(job, MATRIX_KEYS))


def test_ci_values_cover_the_modes_and_monitoring():
    """wrapper, plain sidecar, native sidecar, monitoring on and off each have a file."""
    loaded = {p.name: yaml.safe_load(p.read_text()) or {} for p in CI_VALUES}
    kinds = set()
    for values in loaded.values():
        mode = values.get("mode", "wrapper")
        if mode == "sidecar":
            kinds.add("native-sidecar" if values.get("sidecar", {}).get("native", True) else "sidecar")
        elif "mode" in values:
            kinds.add("wrapper")
        monitors = [values.get(k, {}).get("enabled") for k in
                    ("serviceMonitor", "prometheusRule", "grafanaDashboard")]
        if all(m is True for m in monitors):
            kinds.add("monitoring-on")
        if all(m is False for m in monitors):
            kinds.add("monitoring-off")
        if values.get("programs"):
            kinds.add("multi-program")
    assert kinds >= {"wrapper", "sidecar", "native-sidecar", "monitoring-on", "monitoring-off",
                     "multi-program"}
    assert KUBE_VERSIONS[0] == f"1.{FLOOR_MINOR}.0" and FLOOR_MINOR >= 29  # native sidecars


# --------------------------------------------------------------------------
# Real tools: helm lint, kubernetes-validate, validate-crd.py, promtool
# --------------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda p: p.name if p else "defaults")
def test_helm_lint_strict(values):
    args = ["lint", "--strict", str(CHART)] + (["-f", str(values)] if values else [])
    proc = helm(*args, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout


@pytest.mark.parametrize("key", MATRIX_KEYS, ids=[f"{n.removesuffix('-values.yaml')}-{v}" for n, v in MATRIX_KEYS])
def test_rendered_objects_validate_strictly(matrix, key):
    docs = matrix[key]
    kube_version = key[1]
    assert by_kind(docs, "Deployment") and by_kind(docs, "Service")
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue  # checked against the CRDs below
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{key[0]} at {kube_version}: {name}: {path}: {exc.message}", pytrace=False)
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{key[0]} at {kube_version}: {name}: {exc.message}", pytrace=False)


def test_chart_refuses_kubernetes_below_its_floor():
    proc = helm(*template_args(kube_version=f"1.{FLOOR_MINOR - 1}.9"), check=False)
    assert proc.returncode != 0
    assert "kubeVersion" in proc.stderr and "incompatible" in proc.stderr


def validate_crd_command() -> list[str]:
    """``scripts/validate-crd.py --strict --crd ...`` with the CRDs in tests/schemas/."""
    for path in (VALIDATE_CRD, *CRDS):
        if not path.is_file():
            pytest.fail(f"{path} is missing from the repository", pytrace=False)
    return [sys.executable, str(VALIDATE_CRD), "--strict"] + [a for crd in CRDS for a in ("--crd", str(crd))]


def test_custom_resources_validate_against_prometheus_operator_crds(matrix, tmp_path):
    docs = [d for key, rendered in matrix.items() for d in rendered if d["kind"] in CUSTOM_KINDS]
    assert {d["kind"] for d in docs} == CUSTOM_KINDS
    manifest = tmp_path / "custom-resources.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    proc = subprocess.run(validate_crd_command() + [str(manifest)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(docs)} custom resource(s) checked, 0 failed" in proc.stderr


def test_validate_crd_catches_a_bad_servicemonitor(tmp_path):
    """Negative control for the check above: an unknown field is reported."""
    sm = copy.deepcopy(one(render(ci("monitoring-on"), api_versions=(MONITORING_API,)), "ServiceMonitor"))
    sm["spec"]["endpoints"][0]["scrapeEvery"] = "15s"
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(yaml.safe_dump(sm))
    proc = subprocess.run(validate_crd_command() + [str(manifest)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and "scrapeEvery" in proc.stdout


def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.fail("promtool not found; install Debian's prometheus package: "
                    "bash scripts/install-system-deps.sh", pytrace=False)
    return path


def test_rules_file_and_prometheusrule_pass_promtool(tmp_path):
    rule = one(render(ci("monitoring-on"), api_versions=(MONITORING_API,)), "PrometheusRule")
    embedded = tmp_path / "embedded.rules.yml"
    embedded.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    for path in (CHART / "files" / "sentinel.rules.yml", embedded):
        proc = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "SUCCESS" in proc.stdout + proc.stderr


RELEASE_MATCHERS = 'namespace="guarded",service="demo-sentinel"'
# Alerts whose expression keeps the target labels (no aggregation).
KEEPS_TARGET_LABELS = {"SentinelMemoryNearLimit", "SentinelDown"}


def _scoped_unit_tests(unit_tests: dict) -> dict:
    """The compose stack's promtool tests as this release's series would look:
    every input series carries the release's namespace and Service, and has a
    twin from another release (namespace "elsewhere") that must change nothing."""
    def scope(series: str, matchers: str = RELEASE_MATCHERS) -> str:
        name, brace, rest = series.partition("{")
        return f"{name}{{{matchers},{rest}" if brace else f"{name}{{{matchers}}}"

    out = copy.deepcopy(unit_tests)
    for test in out["tests"]:
        twins = [dict(s, series=scope(s["series"], 'namespace="elsewhere",service="demo-sentinel"'))
                 for s in test.get("input_series", [])]
        for s in test.get("input_series", []):
            s["series"] = scope(s["series"])
        test["input_series"] = test.get("input_series", []) + twins
        for expr_test in test.get("promql_expr_test", []):
            for sample in expr_test.get("exp_samples", []):
                sample["labels"] = scope(sample["labels"], RELEASE_MATCHERS + ',sentinel_release="guarded/demo"')
        for alert_test in test.get("alert_rule_test", []):
            for alert in alert_test.get("exp_alerts", []):
                labels = alert.setdefault("exp_labels", {})
                labels["sentinel_release"] = "guarded/demo"
                if alert_test["alertname"] in KEEPS_TARGET_LABELS:
                    labels.update(namespace="guarded", service="demo-sentinel")
    return out


def test_prometheusrule_passes_the_compose_stacks_rule_unit_tests(tmp_path):
    """The rules as the PrometheusRule carries them (after helm's YAML round trip,
    scoped to the release) pass the promtool unit tests written for the
    docker-compose stack's file, with another release's series beside them."""
    unit_tests = REPO / "docker" / "prometheus" / "rules" / "sentinel.rules.test.yml"
    assert unit_tests.is_file(), f"{unit_tests} is missing"
    rule = one(render(ci("monitoring-on"), api_versions=(MONITORING_API,)), "PrometheusRule")
    (tmp_path / "sentinel.rules.yml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    scoped = _scoped_unit_tests(yaml.safe_load(unit_tests.read_text()))
    (tmp_path / unit_tests.name).write_text(yaml.safe_dump(scoped, sort_keys=False))
    proc = subprocess.run([promtool(), "test", "rules", unit_tests.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


# --------------------------------------------------------------------------
# Monitoring objects: same content as the docker-compose stack
# --------------------------------------------------------------------------


@pytest.mark.parametrize("source", list(SYNCED_FILES), ids=lambda p: p.name)
def test_chart_copies_match_the_docker_stack(source):
    copy_ = SYNCED_FILES[source]
    assert copy_.is_file(), f"{copy_} is missing; run `make chart-sync`"
    if source.exists():
        assert copy_.read_bytes() == source.read_bytes(), \
            f"{copy_.relative_to(REPO)} differs from {source.relative_to(REPO)}; run `make chart-sync`"


def test_prometheusrule_embeds_the_rules_file_scoped_to_the_release():
    """The file's groups, with the release in each group name and rule label, and
    the release's namespace and Service in each selector; nothing else changed."""
    rule = one(render(ci("monitoring-on"), api_versions=(MONITORING_API,)), "PrometheusRule")
    expected = yaml.safe_load((CHART / "files" / "sentinel.rules.yml").read_text())["groups"]
    assert expected and len(rule["spec"]["groups"]) == len(expected)
    for got, want in zip(rule["spec"]["groups"], expected):
        assert got["name"] == want["name"] + "/guarded/demo"
        assert len(got["rules"]) == len(want["rules"])
        for g, w in zip(got["rules"], want["rules"]):
            assert g["labels"] == {**w.get("labels", {}), "sentinel_release": "guarded/demo"}
            selectors = re.findall(r"\b(?:sentinel[_:][\w:]*|up)\{[^}]*\}", g["expr"])
            assert selectors and all(RELEASE_MATCHERS in s for s in selectors), g["expr"]
            unscoped = g["expr"].replace("{" + RELEASE_MATCHERS + "}", "").replace(RELEASE_MATCHERS + ",", "")
            assert unscoped == w["expr"]
            assert {k: v for k, v in g.items() if k not in ("expr", "labels")} == \
                {k: v for k, v in w.items() if k not in ("expr", "labels")}
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_dashboard_configmap_embeds_the_json_for_grafanas_sidecar():
    cm = one(render(ci("monitoring-on"), api_versions=(MONITORING_API,)), "ConfigMap")
    original = json.loads((CHART / "files" / "dashboards" / "sentinel.json").read_text())
    assert set(cm["data"]) == {"sentinel.json"}
    dashboard = json.loads(cm["data"]["sentinel.json"])
    # the release's own uid and title (see the two-release test), the rest as in the file
    assert dashboard["title"] == f"{original['title']} (guarded/demo)"
    assert re.fullmatch(r"sentinel-demo-[0-9a-f]{8}", dashboard["uid"])
    assert {k: v for k, v in dashboard.items() if k not in ("uid", "title")} == \
        {k: v for k, v in original.items() if k not in ("uid", "title")}
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Sentinel"}


def test_servicemonitor_scrapes_the_metrics_port_as_job_sentinel():
    docs = render(ci("monitoring-on"), api_versions=(MONITORING_API,))
    sm, svc = one(docs, "ServiceMonitor"), one(docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    assert all(svc["metadata"]["labels"][k] == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["guarded"]}
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    # Prometheus Operator names the job after this Service label's value.
    assert svc["metadata"]["labels"][sm["spec"]["jobLabel"]] == "sentinel"


def test_two_releases_in_one_cluster_do_not_collide():
    """Same release name in two namespaces, and two releases in one namespace,
    all with their dashboard in Grafana's namespace: distinct dashboard uids
    (<= 40 characters, Grafana's limit), titles and ConfigMap names; rule groups
    and rule labels that carry the release."""
    sets = ("grafanaDashboard.namespace=monitoring",)
    releases = [("demo", "team-a"), ("demo", "team-b"), ("other", "team-a"), ("r" * 53, "team-a")]
    seen = {"uid": set(), "title": set(), "cm": set(), "groups": set(), "labels": set()}
    for release, namespace in releases:
        docs = render(ci("monitoring-on"), sets, api_versions=(MONITORING_API,), release=release,
                      namespace=namespace)
        cm = one(docs, "ConfigMap")
        assert cm["metadata"]["namespace"] == "monitoring"
        dashboard = json.loads(cm["data"]["sentinel.json"])
        assert len(dashboard["uid"]) <= 40 and re.fullmatch(r"[a-z0-9-]+", dashboard["uid"])
        assert f"{namespace}/{release}" in dashboard["title"]
        rule = one(docs, "PrometheusRule")
        seen["uid"].add(dashboard["uid"])
        seen["title"].add(dashboard["title"])
        seen["cm"].add(cm["metadata"]["name"])
        seen["groups"].add(tuple(g["name"] for g in rule["spec"]["groups"]))
        seen["labels"].add(tuple(r["labels"]["sentinel_release"] for g in rule["spec"]["groups"]
                                 for r in g["rules"]))
        assert len(cm["metadata"]["name"]) <= 63
    assert all(len(v) == len(releases) for v in seen.values()), seen


def test_monitoring_objects_need_the_api_or_force():
    on = ci("monitoring-on")
    assert not {d["kind"] for d in render(on)} & CUSTOM_KINDS  # CRDs not served: nothing
    forced = render(on, ("serviceMonitor.force=true", "prometheusRule.force=true"))
    assert {d["kind"] for d in forced} >= CUSTOM_KINDS
    off = render(ci("monitoring-off"), api_versions=(MONITORING_API,))
    assert not {d["kind"] for d in off} & (CUSTOM_KINDS | {"ConfigMap"})
    defaults = render(api_versions=(MONITORING_API,))
    assert not {d["kind"] for d in defaults} & (CUSTOM_KINDS | {"ConfigMap"})  # off by default


# --------------------------------------------------------------------------
# The pod
# --------------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, *POLL_CI_VALUES], ids=lambda p: p.name if p else "defaults")
def test_security_context_is_restrictive(values):
    docs = render((str(values),) if values else ())
    pods = [pod_spec(docs)] + [d["spec"] for d in by_kind(docs, "Pod")]
    for spec in pods:
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and isinstance(psc["runAsUser"], int) and psc["runAsUser"] > 0
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in all_containers(spec):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["runAsNonRoot"] is True, c["name"]
            assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, c["name"]
            assert "privileged" not in sc and "runAsUser" not in sc, c["name"]
    # sidecar mode needs only the shared PID namespace, nothing more
    for values_ in (ci("sidecar"), ci("native-sidecar")):
        assert pod_spec(render(values_))["shareProcessNamespace"] is True
    assert "shareProcessNamespace" not in pod_spec(render(ci("wrapper")))


def _container_security(docs) -> tuple[dict, dict, list[dict]]:
    """(the pod's securityContext, the Sentinel container's, the other containers')."""
    spec = pod_spec(docs)
    sentinel = sentinel_container(spec)
    others = [c["securityContext"] for c in all_containers(spec) if c is not sentinel]
    return spec["securityContext"], sentinel["securityContext"], others


POLL_SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                 "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
                 "seccompProfile": {"type": "RuntimeDefault"}}


@pytest.mark.parametrize("values", [(), ci("sidecar"), ci("native-sidecar"), ci("multi-program")],
                         ids=["wrapper", "sidecar", "native-sidecar", "multi-program"])
def test_the_default_probe_adds_no_right(values):
    """probe: poll (the default): no BPF capability, no Unconfined profile, no root,
    no SENTINEL_PROBE anywhere in what is rendered."""
    text = helm(*template_args(values)).stdout
    for word in ("BPF", "PERFMON", "Unconfined", "SENTINEL_PROBE", "runAsUser: 0"):
        assert word not in text, word
    pod, sentinel, others = _container_security(render(values))
    assert sentinel == POLL_SECURITY and all(o == POLL_SECURITY for o in others)


def _chart_without_probe_values(tmp_path: Path) -> Path:
    """A copy of the chart whose values.yaml has no probe keys (an older values file)."""
    copy_dir = tmp_path / "sentinel"
    shutil.copytree(CHART, copy_dir)
    values = yaml.safe_load((copy_dir / "values.yaml").read_text())
    del values["probe"], values["probeSeccompProfile"]
    (copy_dir / "values.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    return copy_dir


@pytest.mark.parametrize("values", [(), ci("sidecar"), ci("multi-program")],
                         ids=["wrapper", "sidecar", "multi-program"])
def test_the_default_render_is_byte_identical_to_one_without_the_probe(values, tmp_path):
    """Nothing changes for default installs: `probe: poll` (the default, or given) renders
    byte for byte what the chart renders without the probe values at all (and
    manifests/, rendered before them, still matches: tests/unit/test_manifests.py)."""
    default = helm(*template_args(values)).stdout
    assert helm(*template_args(values, ("probe=poll",))).stdout == default
    older = _chart_without_probe_values(tmp_path)
    proc = subprocess.run([str(helm_path()), *template_args(values, chart=older)],
                          capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout == default


@pytest.mark.parametrize("probe", ["ebpf", "auto"])
@pytest.mark.parametrize("values, extra", [
    ((), ()),
    (ci("multi-program"), ()),
    (ci("native-sidecar"), ("KILL",)),
    (ci("sidecar"), ("KILL", "SYS_PTRACE")),  # its measure is uss: smaps_rollup of UID 10001
], ids=["wrapper", "multi-program", "native-sidecar", "sidecar"])
def test_probe_ebpf_adds_exactly_the_rights_it_needs(probe, values, extra):
    """probe: ebpf|auto changes the Sentinel container's securityContext by exactly
    BPF + PERFMON (+ KILL in sidecar mode: root signalling UID 10001), an Unconfined
    seccomp profile and UID 0 (added capabilities reach root processes only), and
    sets SENTINEL_PROBE; privilege escalation stays off, the root filesystem read-only,
    drop ALL; the pod, the workload's container (sidecar mode), the volumes and
    everything else are as with poll."""
    poll_docs, docs = render(values), render(values, (f"probe={probe}",))
    poll_pod, poll_sentinel, poll_others = _container_security(poll_docs)
    pod, sentinel, others = _container_security(docs)
    assert pod == poll_pod and others == poll_others
    assert sentinel == {**poll_sentinel, "capabilities": {"drop": ["ALL"],
                                                          "add": ["BPF", "PERFMON", *extra]},
                        "seccompProfile": {"type": "Unconfined"}, "runAsUser": 0,
                        "runAsNonRoot": False}
    assert sentinel["allowPrivilegeEscalation"] is False and sentinel["readOnlyRootFilesystem"] is True
    assert "privileged" not in sentinel
    env = literal_env(sentinel_container(pod_spec(docs)))
    assert env.pop("SENTINEL_PROBE") == probe
    assert env == literal_env(sentinel_container(pod_spec(poll_docs)))
    # BTF is read through the default /sys: no volume is added.
    assert pod_spec(docs)["volumes"] == pod_spec(poll_docs)["volumes"]
    strip = lambda d: [o for o in d if o["kind"] != "Deployment"]  # noqa: E731
    assert strip(docs) == strip(poll_docs)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSIONS[-1], strict=True)


def test_probe_ebpf_keeps_the_containers_own_capabilities_and_takes_a_localhost_profile():
    """The rights are added to what the values give (a sidecar's documented root recipe
    adds KILL and SYS_PTRACE itself), and probeSeccompProfile replaces Unconfined."""
    docs = render(ci("ebpf-probe"))
    sc = sentinel_container(pod_spec(docs))["securityContext"]
    assert sc["seccompProfile"] == {"type": "Localhost",
                                    "localhostProfile": "profiles/sentinel-bpf.json"}
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["BPF", "PERFMON"]}
    recipe = render(ci("native-sidecar"), ("probe=ebpf", "sentinel.measure=pss",
                                           "sentinel.securityContext.capabilities.add={KILL,SYS_PTRACE}"))
    sc = sentinel_container(pod_spec(recipe))["securityContext"]
    assert sc["capabilities"]["add"] == ["KILL", "SYS_PTRACE", "BPF", "PERFMON"]
    pss = render(ci("sidecar"), ("probe=ebpf", "sentinel.measure=pss"))
    assert sentinel_container(pod_spec(pss))["securityContext"]["capabilities"]["add"] == \
        ["BPF", "PERFMON", "KILL", "SYS_PTRACE"]


def test_notes_say_the_probes_rights_and_where_to_look():
    notes = lambda *sets: helm("install", "demo", str(CHART), "--dry-run=client", "--namespace",  # noqa: E731
                               "guarded", *sets).stdout.split("NOTES:", 1)[1]
    assert "eBPF" not in notes()
    text = notes("--set", "probe=ebpf")
    assert "Memory probe: ebpf (eBPF)" in text and 'Pod Security\nlevel "privileged"' in text
    assert "kubectl logs -n guarded \"$POD\" -c leaker | grep 'eBPF probe'" in text


def test_sidecar_for_a_workload_of_another_user_uses_the_documented_recipe():
    """values.yaml documents root + KILL/SYS_PTRACE for the sidecar only; it renders and validates."""
    documented = (CHART / "values.yaml").read_text()
    for line in ("runAsUser: 0", "runAsNonRoot: false", "capabilities: {drop: [ALL], add: [KILL, SYS_PTRACE]}"):
        assert f"#           {line}" in documented
    docs = render(ci("native-sidecar"), ("sentinel.securityContext.runAsUser=0",
                                         "sentinel.securityContext.runAsNonRoot=false",
                                         "sentinel.securityContext.capabilities.add={KILL,SYS_PTRACE}"))
    spec = pod_spec(docs)
    sc = sentinel_container(spec)["securityContext"]
    assert sc["runAsUser"] == 0 and sc["capabilities"] == {"drop": ["ALL"], "add": ["KILL", "SYS_PTRACE"]}
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    (workload,) = spec["containers"]
    assert workload["securityContext"]["runAsNonRoot"] is True
    assert "add" not in workload["securityContext"]["capabilities"]
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSIONS[0], strict=True)


def test_wrapper_mode_runs_the_workload_under_sentinel_run():
    spec = pod_spec(render())
    assert "initContainers" not in spec
    (c,) = spec["containers"]
    assert c["name"] == "leaker" and c["image"] == f"sentinel:{CHART_META['appVersion']}"
    assert c["command"] == ["sentinel", "run"]
    assert c["args"] == ["--", "python", "leaker.py", "--rate", "20"]
    custom = pod_spec(render(ci("wrapper")))["containers"][0]
    assert custom["args"] == ["--", "python", "leaker.py", "--rate", "50", "--depth", "1"]
    assert {"name": "APP_ENV", "value": "ci"} in custom["env"]


def test_native_sidecar_is_an_init_container_that_always_restarts():
    spec = pod_spec(render(ci("native-sidecar")))
    (sidecar,) = spec["initContainers"]
    assert sidecar["name"] == "sentinel" and sidecar["restartPolicy"] == "Always"
    assert sidecar["command"] == ["sentinel", "watch"]
    (workload,) = spec["containers"]
    assert workload["command"] == ["python", "leaker.py", "--rate", "20"]
    assert workload["image"] == sidecar["image"]  # the demo runs from Sentinel's image
    assert literal_env(sidecar)["SENTINEL_TARGET_CMDLINE"] == r"leaker\.py"


def test_plain_sidecar_is_a_second_container():
    spec = pod_spec(render(ci("sidecar")))
    assert "initContainers" not in spec
    sidecar, workload = spec["containers"]
    assert sidecar["name"] == "sentinel" and "restartPolicy" not in sidecar
    assert workload["name"] == "app" and workload["image"] == "registry.example.com/team/app:1.4.2"
    assert "command" not in workload  # the image's own ENTRYPOINT/CMD
    env = literal_env(sidecar)
    assert env["SENTINEL_TARGET_NAME"] == "leaker"
    assert not {"SENTINEL_TARGET_CMDLINE", "SENTINEL_TARGET_PID", "SENTINEL_RESTART"} & env.keys()


@pytest.mark.parametrize("values", [(), ci("wrapper"), ci("sidecar"), ci("native-sidecar")],
                         ids=["defaults", "wrapper", "sidecar", "native-sidecar"])
def test_socket_lives_on_a_shared_emptydir(values):
    spec = pod_spec(render(values))
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["shared"]
    for c in all_containers(spec):
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert mounts["shared"] == "/shared", c["name"]
        assert mounts["tmp"] == "/tmp", c["name"]  # writable scratch on a read-only root
    assert literal_env(sentinel_container(spec))["SENTINEL_SOCKET"] == "/shared/sentinel.socket"
    # the pod's counters outlive a container restart there (the emptyDir lives with the pod)
    assert literal_env(sentinel_container(spec))["SENTINEL_STATE_DIR"] == "/shared"


@pytest.mark.parametrize("values", [(), ci("wrapper"), ci("sidecar"), ci("native-sidecar")],
                         ids=["defaults", "wrapper", "sidecar", "native-sidecar"])
def test_metrics_port_probes_and_service(values):
    docs = render(values)
    spec = pod_spec(docs)
    sentinel = sentinel_container(spec)
    assert {"name": "metrics", "containerPort": 8000, "protocol": "TCP"} in sentinel["ports"]
    # port numbers, not names: see the EndpointSlice test below
    assert sentinel["readinessProbe"]["httpGet"] == {"path": "/metrics", "port": 8000}
    if sentinel["command"][1] == "run":  # wrapper: the port is bound before the spawn
        assert sentinel["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": 8000}
    else:  # sidecar: see test_sidecar_liveness_does_not_depend_on_a_port
        assert "httpGet" not in sentinel["livenessProbe"]
    others = [c for c in all_containers(spec) if c is not sentinel]
    assert all("livenessProbe" not in c and "readinessProbe" not in c for c in others)
    assert literal_env(sentinel)["SENTINEL_METRICS_PORT"] == "8000"
    (port,) = one(docs, "Service")["spec"]["ports"]
    assert port == {"name": "metrics", "port": 8000, "targetPort": 8000, "protocol": "TCP",
                    "appProtocol": "http"}
    moved_docs = render(values, ("sentinel.metrics.port=9100",))
    moved_sentinel = sentinel_container(pod_spec(moved_docs))
    assert moved_sentinel["ports"][0]["containerPort"] == 9100
    assert moved_sentinel["readinessProbe"]["httpGet"]["port"] == 9100
    assert literal_env(moved_sentinel)["SENTINEL_METRICS_PORT"] == "9100"
    (moved_port,) = one(moved_docs, "Service")["spec"]["ports"]
    assert moved_port["port"] == 8000 and moved_port["targetPort"] == 9100


def endpoint_slice_port(service_port: dict, pod: dict, minor: int) -> int | None:
    """The port the EndpointSlice controller of Kubernetes 1.<minor> puts in the
    slice for ``service_port`` and ``pod``, or None (no endpoint: nothing is
    scraped). A number is taken as it is; a name is looked up, as
    ``podutil.FindPort`` does, among ``spec.containers`` only before 1.33, and
    also among restartable (native sidecar) init containers from 1.33 on."""
    target = service_port["targetPort"]
    if isinstance(target, int):
        return target
    containers = list(pod["containers"])
    if minor >= 33:
        containers += [c for c in pod.get("initContainers") or []
                       if c.get("restartPolicy") == "Always"]
    for c in containers:
        for p in c.get("ports") or []:
            if p.get("name") == target and p.get("protocol", "TCP") == service_port["protocol"]:
                return p["containerPort"]
    return None


@pytest.mark.parametrize("values", [(), ci("sidecar"), ci("native-sidecar")],
                         ids=["wrapper", "sidecar", "native-sidecar"])
def test_service_reaches_the_exporter_on_every_supported_kubernetes(values):
    """Native sidecar on 1.29-1.32: a named targetPort pointing at an init
    container's port does not resolve, and the Service has no endpoint."""
    docs = render(values)
    spec = pod_spec(docs)
    (port,) = one(docs, "Service")["spec"]["ports"]
    metrics = sentinel_container(spec)["ports"][0]["containerPort"]
    for kube_version in KUBE_VERSIONS:
        assert endpoint_slice_port(port, spec, _minor(kube_version)) == metrics, kube_version
    # the probes of the native sidecar name no port either
    for c in all_containers(spec):
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            for handler in ("httpGet", "tcpSocket"):
                if handler in c.get(probe, {}):
                    assert isinstance(c[probe][handler]["port"], int), (c["name"], probe)


def liveness_command(values: tuple[str, ...], socket_path: Path) -> list[str]:
    probe = sentinel_container(pod_spec(render(values)))["livenessProbe"]
    command = list(probe["exec"]["command"])
    assert command[-2:] == ["/shared/sentinel.socket", str(probe["timeoutSeconds"])]
    return command[:-2] + [str(socket_path), "2"]


@pytest.mark.parametrize("values", [ci("sidecar"), ci("native-sidecar")],
                         ids=["sidecar", "native-sidecar"])
def test_sidecar_liveness_does_not_depend_on_a_port(values, start_sentinel, tmp_path):
    """In sidecar mode the workload shares the network namespace and may hold
    the metrics port first; the liveness probe asks Sentinel's control socket
    instead. Run for real: it passes against a live Sentinel, fails (exit 1,
    one line) against a frozen one and a gone one."""
    probe = sentinel_container(pod_spec(render(values)))["livenessProbe"]
    assert set(probe) & {"httpGet", "tcpSocket", "grpc"} == set()
    command = liveness_command(values, tmp_path / "s.sock")
    assert command[:4] == ["python3", "-I", "-S", "-c"]  # the standard library only
    sentinel = start_sentinel(["--no-metrics", "--socket", str(tmp_path / "s.sock"), "--",
                               sys.executable, str(REPO / "tests" / "children" / "signal_printer.py"),
                               "--exit-on", "TERM"])
    sentinel.expect("ready")
    wait_until(lambda: (tmp_path / "s.sock").exists(), what="the control socket")
    ok = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and not ok.stderr, ok.stderr
    os.kill(sentinel.pid, signal.SIGSTOP)  # a hung Sentinel must fail the probe
    try:
        hung = subprocess.run(command, capture_output=True, text=True, timeout=30)
    finally:
        os.kill(sentinel.pid, signal.SIGCONT)
    assert hung.returncode == 1 and hung.stderr.startswith("sentinel liveness: no answer on "), hung.stderr
    assert len(hung.stderr.splitlines()) == 1 and "Traceback" not in hung.stderr
    sentinel.signal(signal.SIGTERM)  # forwarded; Sentinel exits with its workload
    sentinel.wait()
    gone = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert gone.returncode == 1 and "sentinel liveness: no answer" in gone.stderr


def test_probes_can_be_turned_off():
    spec = pod_spec(render((), ("probes.liveness.enabled=false", "probes.readiness.enabled=false")))
    assert "livenessProbe" not in spec["containers"][0] and "readinessProbe" not in spec["containers"][0]


@pytest.mark.parametrize("values", [(), ci("sidecar")], ids=["wrapper", "sidecar"])
def test_downward_api_names_the_pod_for_events(values):
    env = env_map(sentinel_container(pod_spec(render(values))))
    for name, field in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"),
                        ("POD_UID", "metadata.uid"), ("NODE_NAME", "spec.nodeName")):
        assert env[name]["valueFrom"] == {"fieldRef": {"fieldPath": field}}


@pytest.mark.parametrize("values", [(), *[(str(p),) for p in SINGLE_CI_VALUES]],
                         ids=["defaults", *[p.name for p in SINGLE_CI_VALUES]])
def test_sentinel_reads_every_variable_and_accepts_every_value(values):
    """The chart's SENTINEL_* variables through Sentinel's own settings parser
    (several programs: test_programs_settings_and_variables_are_sentinels_own)."""
    docs = render(values)
    spec = pod_spec(docs)
    container = sentinel_container(spec)
    env = literal_env(container)
    unknown = {k for k in env if k.startswith("SENTINEL_")} - SENTINEL_ENV_NAMES
    assert not unknown, f"Sentinel reads no such variable: {sorted(unknown)}"
    mode = container["command"][1]
    settings = parse_settings(mode, list(container.get("args") or []), environ=env)
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in values:
        merge(chart_values, yaml.safe_load(Path(path).read_text()))
    s = chart_values["sentinel"]
    # null: the mode's default (auto on working-set with a container memory limit in
    # wrapper mode, else 200Mi on rss).
    kernel = mode == "run" and bool(
        ((chart_values["workload"].get("resources") or {}).get("limits") or {}).get("memory"))
    max_rss = s["maxRss"] if s["maxRss"] is not None else ("auto" if kernel else "200Mi")
    if max_rss.strip().lower().startswith("auto"):
        assert settings.max_rss_bytes is None and settings.limit_auto_share == 0.9
    else:
        assert settings.max_rss_bytes == parse_size(max_rss)
    assert settings.measure == (s["measure"] if s["measure"] is not None
                                else "working-set" if kernel else "rss")
    assert settings.socket_path == "/shared/sentinel.socket"
    assert settings.state_dir == "/shared"
    assert settings.metrics_port == s["metrics"]["port"]
    assert settings.workload_name == chart_values["workload"]["name"]
    assert settings.termination_log == container["terminationMessagePath"]
    assert oct(settings.socket_mode) == oct(int(s["socketMode"], 8))
    assert settings.probe == chart_values["probe"]
    if mode == "run":
        assert settings.command == tuple(chart_values["workload"]["command"])
        assert settings.restart == s["restart"]


def merge(base: dict, override: dict) -> dict:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


@pytest.mark.parametrize("values", [(), ci("sidecar")], ids=["wrapper", "sidecar"])
def test_termination_log_shows_in_describe_pod(values):
    spec = pod_spec(render(values))
    sentinel = sentinel_container(spec)
    assert sentinel["terminationMessagePath"] == literal_env(sentinel)["SENTINEL_TERMINATION_LOG"]
    assert sentinel["terminationMessagePolicy"] == "FallbackToLogsOnError"
    for c in all_containers(spec):
        assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_termination_grace_period_covers_sentinels_grace_period():
    assert pod_spec(render())["terminationGracePeriodSeconds"] == 30
    assert pod_spec(render(ci("wrapper")))["terminationGracePeriodSeconds"] == 45
    # 3 s grace + 1 s to exit is the least the chart accepts
    assert pod_spec(render((), ("terminationGracePeriodSeconds=4",)))["terminationGracePeriodSeconds"] == 4
    err = render_fails("terminationGracePeriodSeconds=3")
    assert "terminationGracePeriodSeconds (3) must be at least sentinel.gracePeriod (3s) plus 1 s" in err
    assert "terminationGracePeriodSeconds" in render_fails("sentinel.gracePeriod=1m",
                                                           "terminationGracePeriodSeconds=60")
    render((), ("sentinel.gracePeriod=500ms", "terminationGracePeriodSeconds=2"))
    render((), ("sentinel.gracePeriod=1.5", "terminationGracePeriodSeconds=3"))


def test_events_off_drops_rbac_and_the_token():
    docs = render(ci("monitoring-off"))
    assert not by_kind(docs, "Role") and not by_kind(docs, "RoleBinding")
    assert pod_spec(docs)["automountServiceAccountToken"] is False
    assert literal_env(sentinel_container(pod_spec(docs)))["SENTINEL_K8S_EVENTS"] == "off"
    on = render((), ("sentinel.k8sEvents=on",))
    assert literal_env(sentinel_container(pod_spec(on)))["SENTINEL_K8S_EVENTS"] == "on"
    assert pod_spec(on)["automountServiceAccountToken"] is True


# --------------------------------------------------------------------------
# RBAC, names and labels
# --------------------------------------------------------------------------


@pytest.mark.parametrize("values", [(), ci("sidecar")], ids=["wrapper", "sidecar"])
def test_rbac_is_least_privilege(values):
    docs = render(values)
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    role, binding, sa = one(docs, "Role"), one(docs, "RoleBinding"), one(docs, "ServiceAccount")
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert rules == {(("events.k8s.io",), ("events",)): {"create", "patch"},
                     (("",), ("events",)): {"create", "patch"}}
    assert all("resourceNames" not in r and "nonResourceURLs" not in r for r in role["rules"])
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": "guarded"}]
    # exactly what Sentinel's Event recorder asks for when it is refused (sentinel/exporters/k8s.py)
    documented = yaml.safe_load(events.RBAC_RULE)
    assert {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]} == {(g, r, v) for g in documented["apiGroups"]
                                        for r in documented["resources"] for v in documented["verbs"]}
    spec = pod_spec(docs)
    assert spec["serviceAccountName"] == sa["metadata"]["name"]
    assert sa["automountServiceAccountToken"] is False
    # wrapper: one container, the kubelet's mount; sidecar: see the token test below
    assert spec["automountServiceAccountToken"] is (sentinel_container(spec)["command"][1] == "run")
    for doc in docs:
        assert doc["metadata"].get("namespace") == "guarded", doc["kind"]


SA_DIR = os.path.dirname(incluster_config.SERVICE_TOKEN_FILENAME)


@pytest.mark.parametrize("values", [ci("sidecar"), ci("native-sidecar")], ids=["sidecar", "native-sidecar"])
def test_sidecar_workload_gets_no_service_account_token(values):
    """The pod does not automount the token; Sentinel's container alone mounts a
    projected volume with what the kubelet would mount (token, ca.crt,
    namespace) at the path the kubernetes client reads."""
    spec = pod_spec(render(values))
    assert spec["automountServiceAccountToken"] is False
    sentinel = sentinel_container(spec)
    (workload,) = [c for c in spec["containers"] if c is not sentinel]
    assert all(m["mountPath"] != SA_DIR and "token" not in m["name"] for m in workload["volumeMounts"])
    (mount,) = [m for m in sentinel["volumeMounts"] if m["mountPath"] == SA_DIR]
    assert mount["readOnly"] is True
    volume = {v["name"]: v for v in spec["volumes"]}[mount["name"]]
    sources = volume["projected"]["sources"]
    token = [s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s]
    ca = [i for s in sources if "configMap" in s and s["configMap"]["name"] == "kube-root-ca.crt"
          for i in s["configMap"]["items"]]
    ns = [i for s in sources if "downwardAPI" in s for i in s["downwardAPI"]["items"]]
    assert [x["path"] for x in token] == [os.path.basename(incluster_config.SERVICE_TOKEN_FILENAME)]
    assert ca == [{"key": "ca.crt", "path": os.path.basename(incluster_config.SERVICE_CERT_FILENAME)}]
    assert ns == [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]
    assert os.path.join(SA_DIR, "namespace") == events.SA_DIR + "/namespace"
    # Events off: no token anywhere
    off = pod_spec(render(values, ("sentinel.k8sEvents=off",)))
    assert off["automountServiceAccountToken"] is False
    assert "sentinel-api-token" not in {v["name"] for v in off["volumes"]}
    assert all(m["mountPath"] != SA_DIR for c in all_containers(off) for m in c["volumeMounts"])


def test_rolebinding_binds_the_account_the_pod_uses():
    cases = [((), "demo-sentinel"), (("serviceAccount.name=custom",), "custom"),
             (("serviceAccount.create=false", "serviceAccount.name=guard"), "guard"),
             (("serviceAccount.create=false",), "default")]
    for sets, name in cases:
        for values in ((), ci("native-sidecar")):
            docs = render(values, sets)
            assert pod_spec(docs)["serviceAccountName"] == name, sets
            (subject,) = one(docs, "RoleBinding")["subjects"]
            assert subject == {"kind": "ServiceAccount", "name": name, "namespace": "guarded"}, sets


def test_existing_service_account_without_rbac():
    docs = render((), ("serviceAccount.create=false", "serviceAccount.name=guard", "rbac.create=false"))
    assert not {d["kind"] for d in docs} & {"ServiceAccount", "Role", "RoleBinding"}
    assert pod_spec(docs)["serviceAccountName"] == "guard"
    assert pod_spec(render((), ("serviceAccount.create=false",)))["serviceAccountName"] == "default"


def _chart_copy(tmp_path: Path, version: str, app_version: str) -> Path:
    dest = tmp_path / "sentinel"
    shutil.copytree(CHART, dest)
    meta = (dest / "Chart.yaml").read_text()
    meta = re.sub(r"(?m)^version: .*$", f"version: {version}", meta)
    meta = re.sub(r"(?m)^appVersion: .*$", f'appVersion: "{app_version}"', meta)
    (dest / "Chart.yaml").write_text(meta)
    return dest


def test_selector_labels_are_stable_across_chart_versions(tmp_path):
    def selectors(chart):
        docs = tuple(d for d in yaml.safe_load_all(helm(*template_args(chart=chart), chart=chart).stdout) if d)
        dep = one(docs, "Deployment")
        return (dep["spec"]["selector"]["matchLabels"], one(docs, "Service")["spec"]["selector"],
                dep["metadata"]["labels"])

    now_sel, now_svc, now_labels = selectors(CHART)
    new_sel, new_svc, new_labels = selectors(_chart_copy(tmp_path, "7.3.1", "9.9.9"))
    assert now_sel == new_sel == now_svc == new_svc == {
        "app.kubernetes.io/name": "sentinel", "app.kubernetes.io/instance": "demo"}
    # the labels that do change are the ones that carry versions
    assert new_labels["helm.sh/chart"] == "sentinel-7.3.1"
    assert new_labels["app.kubernetes.io/version"] == "9.9.9"
    assert now_labels["app.kubernetes.io/version"] == CHART_META["appVersion"]


@pytest.mark.parametrize("values", [(), ci("native-sidecar")], ids=["wrapper", "sidecar"])
def test_pod_template_carries_the_selector_and_the_test_pod_does_not(values):
    docs = render(values)
    dep = one(docs, "Deployment")
    selector = dep["spec"]["selector"]["matchLabels"]
    template_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= template_labels.items()
    (test_pod,) = [d for d in by_kind(docs, "Pod") if is_hook(d)]
    # A ReplicaSet adopts ownerless pods that match its selector.
    assert not selector.items() <= test_pod["metadata"]["labels"].items()
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert test_pod["spec"]["restartPolicy"] == "Never"
    assert test_pod["spec"]["automountServiceAccountToken"] is False


def test_helm_test_pod_scrapes_metrics_through_the_service():
    docs = render()
    (pod,) = by_kind(docs, "Pod")
    svc = one(docs, "Service")
    (c,) = pod["spec"]["containers"]
    assert c["image"] == pod_spec(docs)["containers"][0]["image"]  # no other image to pull
    assert c["args"][-1] == f"http://{svc['metadata']['name']}:8000/metrics"
    assert 'startswith("sentinel_")' in c["args"][0] and "urlopen" in c["args"][0]
    compile(c["args"][0], "helm-test", "exec")  # the script is valid Python
    assert not by_kind(render(ci("monitoring-off")), "Pod")


def test_names_are_cut_to_63_characters():
    release = "r" * 53  # helm's longest release name
    docs = render((), ("nameOverride=" + "n" * 40,), release=release)
    names = [d["metadata"]["name"] for d in docs]
    assert all(len(n) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", n) for n in names), names
    assert one(docs, "Deployment")["metadata"]["name"] == (release + "-" + "n" * 40)[:63]
    for doc in docs:
        for value in doc["metadata"]["labels"].values():
            assert len(value) <= 63
    assert one(render((), ("fullnameOverride=guard",)), "Service")["metadata"]["name"] == "guard"
    assert one(render((), release="sentinel"), "Service")["metadata"]["name"] == "sentinel"


def test_image_reference():
    c = pod_spec(render((), ("image.repository=ghcr.io/acme/sentinel", "image.tag=1.2.3")))["containers"][0]
    assert c["image"] == "ghcr.io/acme/sentinel:1.2.3"
    digest = "sha256:" + "a" * 64
    c = pod_spec(render((), (f"image.digest={digest}",)))["containers"][0]
    assert c["image"] == f"sentinel:{CHART_META['appVersion']}@{digest}"


# --------------------------------------------------------------------------
# The values schema and the template checks
# --------------------------------------------------------------------------

REJECTED = {
    "unknown top-level key": (("replicas=2",), "additional properties 'replicas' not allowed"),
    "unknown nested key": (("sentinel.maxRSS=1Gi",), "additional properties 'maxRSS' not allowed"),
    "typo in a probe": (("probes.liveness.enable=true",), "additional properties 'enable' not allowed"),
    "typo in a security context": (("containerSecurityContext.readOnlyRootFileSystem=true",),
                                   "'readOnlyRootFileSystem' not allowed"),
    "mode": (("mode=daemon",), "/mode"),
    "measure": (("sentinel.measure=vsz",), "/sentinel/measure"),
    "restart": (("sentinel.restart=sometimes",), "/sentinel/restart"),
    "log format": (("sentinel.logFormat=xml",), "/sentinel/logFormat"),
    "log level": (("sentinel.logLevel=verbose",), "/sentinel/logLevel"),
    "k8s events": (("sentinel.k8sEvents=maybe",), "/sentinel/k8sEvents"),
    "pull policy": (("image.pullPolicy=Sometimes",), "/image/pullPolicy"),
    "service type": (("service.type=ExternalName",), "/service/type"),
    "size unit": (("sentinel.maxRss=12XB",), "/sentinel/maxRss"),
    "negative size": (("sentinel.maxRss=-5Mi",), "/sentinel/maxRss"),
    "size without a unit below 64k": (("str:sentinel.maxRss=512",), "/sentinel/maxRss"),
    "size as a YAML number": (("sentinel.maxRss=1048576",), "/sentinel/maxRss': 'anyOf' failed"),
    "size with an exponent": (("sentinel.maxRss=1e9",), "/sentinel/maxRss"),
    "size with a unit below 64k": (("sentinel.maxRss=10Ki",),
                                   'sentinel.maxRss: "10Ki" is 10240 bytes, below Sentinel\'s 64k floor'),
    "size above 2^63-1": (("sentinel.maxRss=9000Pi",), "larger than 2^63-1 bytes"),
    "duration": (("sentinel.gracePeriod=3 sec",), "/sentinel/gracePeriod"),
    "zero grace period": (("sentinel.gracePeriod=0s",), "/sentinel/gracePeriod"),
    "zero interval": (("sentinel.interval=0",), "/sentinel/interval"),
    "interval below 1ms": (("sentinel.interval=500us",), "sentinel.interval: 500us is outside Sentinel's range"),
    "interval above 60s": (("sentinel.interval=2m",), "sentinel.interval: 2m is outside Sentinel's range"),
    "size limit with a space": (("sharedVolume.sizeLimit=16 Mi",), "/sharedVolume/sizeLimit"),
    "size limit in milli-bytes": (("sharedVolume.sizeLimit=16m",), "/sharedVolume/sizeLimit"),
    "size limit as a number": (("sharedVolume.sizeLimit=16777216",), "/sharedVolume/sizeLimit"),
    "bad memory quantity": (("workload.resources.limits.memory=1GB",), "/workload/resources/limits/memory"),
    "upper-case name override": (("nameOverride=Guard",), "/nameOverride"),
    "upper-case fullname override": (("fullnameOverride=My-Guard",), "/fullnameOverride"),
    "upper-case service account": (("serviceAccount.name=Guard",), "/serviceAccount/name"),
    "upper-case pull secret": (('json:imagePullSecrets=[{"name":"RegCred"}]',), "/imagePullSecrets/0/name"),
    "upper-case dashboard namespace": (("grafanaDashboard.namespace=Monitoring",), "/grafanaDashboard/namespace"),
    "image tag as a number": (("json:image.tag=1.20",), "/image/tag': got number, want string"),
    "workload tag as a number": (("mode=sidecar", "workload.image.repository=app", "json:workload.image.tag=2"),
                                 "/workload/image/tag': got number, want string"),
    "image tag with a slash": (("image.tag=v1/2",), "/image/tag"),
    "memory limit below maxRss plus Sentinel": (("workload.resources.limits.memory=210Mi", *RSS_200MI),
        "workload.resources.limits.memory (210Mi) must be above sentinel.maxRss (200Mi) plus "
        "Sentinel's own memory in the same container (56 MiB with the Events client)"),
    "memory limit below maxRss, events off": (("workload.resources.limits.memory=220Mi", "sentinel.k8sEvents=off",
                                               *RSS_200MI),
        "plus Sentinel's own memory in the same container (32 MiB): else the kernel's OOM killer"),
    "memory limit as an exponent": (("workload.resources.limits.memory=2e8", *RSS_200MI), "raise limits.memory to at least 257Mi"),
    "cgroup measure: limit at maxRss": (("sentinel.measure=cgroup", "workload.resources.limits.memory=200Mi",
                                         "sentinel.maxRss=200Mi"),
        "workload.resources.limits.memory (200Mi) must be above sentinel.maxRss (200Mi): else"),
    "sidecar workload limit at maxRss": (("mode=sidecar", "json:workload.resources={\"limits\":{\"memory\":\"150Mi\"}}",
                                          "sentinel.maxRss=150Mi"), "must be above sentinel.maxRss (150Mi): else"),
    "sidecar's own limit below its footprint": (("mode=sidecar", "sentinel.resources.limits.memory=40Mi"),
        "sentinel.resources.limits.memory (40Mi) is below Sentinel's own footprint (56 MiB with the Events client)"),
    "privileged port": (("sentinel.metrics.port=80",), "/sentinel/metrics/port"),
    "socket mode": (("sentinel.socketMode=rw",), "/sentinel/socketMode"),
    "container name": (("workload.name=My_App",), "/workload/name"),
    "prometheus duration": (("serviceMonitor.interval=fast",), "/serviceMonitor/interval"),
    # template checks: what the schema cannot express
    "sidecar without a target": (("mode=sidecar", "sidecar.target.cmdline="),
                                 "needs exactly one of sidecar.target.name"),
    "sidecar with two targets": (("mode=sidecar", "sidecar.target.name=leaker"),
                                 "needs exactly one of sidecar.target.name"),
    "cgroup measure in a sidecar": (("mode=sidecar", "sentinel.measure=cgroup"),
                                    "sidecar sees its own container's cgroup"),
    "working-set measure in a sidecar": (("mode=sidecar", "sentinel.measure=working-set"),
                                         "sentinel.measure: working-set does not work in mode: sidecar"),
    "auto share above 100 %": (("sentinel.maxRss=auto:150%", "workload.resources.limits.memory=1Gi"),
                               "/sentinel/maxRss"),
    "auto share below 1 %": (("sentinel.maxRss=auto:0.5%", "workload.resources.limits.memory=1Gi"),
                             "/sentinel/maxRss"),
    "auto with a space before the colon": (("sentinel.maxRss=auto :85%",), "/sentinel/maxRss"),
    "auto without a memory limit": (("sentinel.maxRss=auto",),
        "sentinel.maxRss: auto is a share of the container's memory limit, and "
        "workload.resources.limits.memory is not set"),
    "auto:100% with a cgroup measure": (("sentinel.maxRss=auto:100%", "sentinel.measure=working-set",
                                         "workload.resources.limits.memory=1Gi"),
        "sentinel.maxRss: auto:100% with measure: working-set puts Sentinel's limit at the "
        "kernel's own"),
    "auto in a sidecar": (("mode=sidecar", "sentinel.maxRss=auto:85%"),
                          "sentinel.maxRss: auto does not work in mode: sidecar yet"),
    "sidecar named like the workload": (("mode=sidecar", "workload.name=sentinel"),
                                        "is the Sentinel container's name"),
    "wrapper without a command": (("json:workload.command=[]",), "mode: wrapper needs workload.command"),
    "an empty word in the command": (('json:workload.command=["python", ""]',),
                                     "at '/workload/command/1': minLength"),
    "a metrics address with a port": (("sentinel.metrics.address=127.0.0.1:9000",),
                                      "at '/sentinel/metrics/address'"),
    "a metrics address as a URL": (("sentinel.metrics.address=http://0.0.0.0",),
                                   "at '/sentinel/metrics/address'"),
    "workload on the metrics port": (('json:workload.ports=[{"name":"http","containerPort":8000}]',),
                                     "workload.ports: port 8000 is sentinel.metrics.port"),
    "probe": (("probe=bpf",), "at '/probe'"),
    "probe's seccomp profile RuntimeDefault": (("probeSeccompProfile.type=RuntimeDefault",),
                                               "at '/probeSeccompProfile'"),
    "probe's Localhost profile without its file": (("probe=ebpf", "probeSeccompProfile.type=Localhost"),
                                                   "at '/probeSeccompProfile'"),
    "sidecar workload on the metrics port": (("mode=sidecar", 'json:workload.ports=[{"containerPort":9100}]',
                                              "sentinel.metrics.port=9100"),
                                             "workload.ports: port 9100 is sentinel.metrics.port"),
}


@pytest.mark.parametrize("case", list(REJECTED), ids=list(REJECTED))
def test_bad_values_are_refused(case):
    sets, message = REJECTED[case]
    err = render_fails(*sets)
    assert message in err, err


ACCEPTED = [
    ("sentinel.maxRss=1.5Gi",), ("sentinel.maxRss=512MB",), ("str:sentinel.maxRss=1048576",),
    ("sentinel.maxRss=",), ("sentinel.gracePeriod=250ms",), ("sentinel.interval=2",),
    ("sentinel.measure=cgroup",), ("sentinel.k8sEvents=false",), ("sentinel.restart=always",),
    ("mode=sidecar", "sidecar.target.cmdline=", "sidecar.target.pid=7"),
    ("global.imageRegistry=example.com",),
    ("str:image.tag=1.20",), ("image.tag=v1.2.3-rc.1_x",), ("str:sentinel.maxRss=64000",),
    ("sentinel.maxRss=64k",), ("sentinel.maxRss=512m",), ("sentinel.maxRss=8000Pi",),
    ("sentinel.gracePeriod=.5s",), ("sentinel.interval=1ms",), ("sentinel.interval=60s",),
    ("sharedVolume.sizeLimit=1e9",), ("sharedVolume.sizeLimit=0.5Gi",), ("sharedVolume.sizeLimit=",),
    ("workload.resources.limits.memory=257Mi",),  # 200Mi + 56 MiB, just above
    ("workload.resources.limits.memory=233Mi", "sentinel.k8sEvents=off"),  # 200Mi + 32 MiB
    ("sentinel.measure=cgroup", "workload.resources.limits.memory=201Mi"),
    ("sentinel.measure=working-set", "workload.resources.limits.memory=201Mi"),
    ("sentinel.maxRss=auto", "workload.resources.limits.memory=512Mi"),
    ("sentinel.maxRss=auto:85%", "workload.resources.limits.memory=512Mi", "sentinel.measure=working-set"),
    ("sentinel.maxRss=AUTO:100%", "workload.resources.limits.memory=100Mi", "sentinel.measure=rss"),
    ("sentinel.maxRss=auto:1", "workload.resources.limits.memory=1Gi"),
    ("workload.resources.limits.memory=1", "sentinel.maxRss="),  # no limit: nothing to compare
    ("workload.resources.limits.cpu=0.5", "workload.resources.requests.cpu=100m"),
    ("mode=sidecar", "sentinel.resources.limits.memory=56Mi"),
    ("nameOverride=guard", "fullnameOverride=", "serviceAccount.create=false", "serviceAccount.name=ci.guard"),
]


@pytest.mark.parametrize("sets", ACCEPTED, ids=[" ".join(s) for s in ACCEPTED])
def test_good_values_are_accepted(sets):
    """Positive controls for the refusals above."""
    assert one(render((), sets), "Deployment")


def _chart_accepts(*sets: str) -> bool:
    return helm(*template_args((), sets), check=False).returncode == 0


def _sentinel_accepts(*args: str) -> tuple[bool, object]:
    try:
        return True, parse_settings("run", [*args, "--", "true"], environ={})
    except UsageError:
        return False, None


SIZES = ["200Mi", "1.5Gi", "512M", "512MB", "1G", "64k", "64kb", "64000", "1048576", "512m",
         "0.5Gi", " 200Mi ", "200 Mi", "8000Pi", "512", "63999", "63k", "10Ki", "1e9", "1E9",
         "0", "0Mi", "0.0Gi", "-5Mi", "12XB", "1.5.5Mi", ".5Gi", "5.Mi", "200mi", "1Ei", "0x10",
         "1_000_000", "9000Pi", "+5Mi"]
DURATIONS = ["3s", "250ms", "1.5", "2m", "1h", " 3s ", "3 s", "0s", "0", "0.0", "0ms", ".5s",
             "5.s", "1us", "500us", "1ms", "60s", "61s", "-1s", "3 sec", "1e3", "2d", "1h30m",
             "0.0001", "9000h", "3S"]


def test_values_schema_mirrors_sentinels_size_grammar():
    """Every size the chart accepts for maxRss Sentinel accepts as --max-rss, and
    the other way round (through helm: the schema and the template checks)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        chart = dict(zip(SIZES, pool.map(lambda s: _chart_accepts(f"str:sentinel.maxRss={s}"), SIZES)))
    sentinel = {s: _sentinel_accepts("--max-rss", s)[0] for s in SIZES}
    assert chart == sentinel, {s: (chart[s], sentinel[s]) for s in SIZES if chart[s] != sentinel[s]}
    assert sum(chart.values()) >= 10 and sum(not v for v in chart.values()) >= 10


def test_values_schema_mirrors_sentinels_durations_refusing_zero():
    """interval and gracePeriod: what Sentinel accepts, except a zero grace period
    (SIGKILL without warning; Sentinel takes it, the chart refuses it)."""
    def chart_job(case):
        key, text = case
        return case, _chart_accepts(f"str:sentinel.{key}={text}", "terminationGracePeriodSeconds=40000000")

    cases = [(k, d) for k in ("interval", "gracePeriod") for d in DURATIONS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        chart = dict(pool.map(chart_job, cases))
    expected = {}
    for key, text in cases:
        ok, settings = _sentinel_accepts("--interval" if key == "interval" else "--grace-period", text)
        expected[(key, text)] = ok and (key == "interval" or settings.grace_period_seconds > 0)
    assert chart == expected, {c: (chart[c], expected[c]) for c in cases if chart[c] != expected[c]}
    assert not chart[("gracePeriod", "0s")] and _sentinel_accepts("--grace-period", "0s")[0]


def test_empty_max_rss_supervises_without_a_limit():
    env = literal_env(pod_spec(render((), ("sentinel.maxRss=",)))["containers"][0])
    assert "SENTINEL_MAX_RSS" not in env
    assert literal_env(pod_spec(render())["containers"][0])["SENTINEL_MAX_RSS"] == "200Mi"


def _schema_keys(schema: dict, defs: dict, prefix: str = "") -> set[str]:
    """Dotted paths of the chart's own keys: objects closed by additionalProperties: false."""
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[1]]
    if "allOf" in schema:
        schema = {k: v for s in schema["allOf"] for k, v in _resolve(s, defs).items()}
    keys = set()
    # programsSettings' keys are the programs file's (documented in its comment block
    # and docs/config.md), dashed, empty by default.
    if schema.get("additionalProperties") is False and prefix.rsplit(".", 1)[-1] not in (
            "podSecurityContext", "containerSecurityContext", "securityContext", "resources",
            "programsSettings"):
        for name, sub in schema.get("properties", {}).items():
            path = f"{prefix}.{name}" if prefix else name
            keys.add(path)
            keys |= _schema_keys(sub, defs, path)
    return keys


def _resolve(schema: dict, defs: dict) -> dict:
    return defs[schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema


def test_values_yaml_documents_every_key():
    """Every key of the chart's own has a comment right above it (or a block above its group)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    keys = _schema_keys(schema, schema["definitions"]) - {"global"}
    lines = (CHART / "values.yaml").read_text().splitlines()
    found, undocumented, stack = set(), [], []
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z][\w]*):", line)
        if not m:
            continue
        depth = len(m.group(1)) // 2
        stack[depth:] = [m.group(2)]
        path = ".".join(stack)
        if path not in keys:
            continue
        found.add(path)
        prev = lines[i - 1].strip() if i else ""
        if not prev.startswith("#"):
            undocumented.append(path)
    assert not undocumented, f"values.yaml keys without a comment: {undocumented}"
    assert keys == found, f"schema keys missing from values.yaml: {sorted(keys - found)}"


def test_notes_show_status_metrics_and_events():
    proc = helm("install", "demo", str(CHART), "--dry-run=client", "--namespace", "guarded")
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "kubectl exec -n guarded \"$POD\" -c leaker -- sentinel status --socket /shared/sentinel.socket" in notes
    assert "http://demo-sentinel.guarded.svc:8000/metrics" in notes
    assert "kubectl events -n guarded --for pod/\"$POD\"" in notes
    assert f"Warning {events.EVENT_MEMORY}" in notes and "kubectl describe pod" in notes
    assert "helm test demo -n guarded" in notes
    assert "-l app.kubernetes.io/name=sentinel,app.kubernetes.io/instance=demo" in notes
    sidecar = helm("install", "demo", str(CHART), "--dry-run=client", "--namespace", "guarded",
                   "-f", ci("native-sidecar")[0], "--set", "serviceMonitor.enabled=true").stdout
    assert "-c sentinel -- sentinel status" in sidecar and "native sidecar" in sidecar
    assert "no ServiceMonitor was created" in sidecar


@pytest.mark.parametrize("sets, max_rss, measure", [
    ((), "200Mi", "rss"),  # wrapper, no container limit: nothing to take a share of
    (("workload.resources.limits.memory=512Mi",), "auto", "working-set"),
    (("workload.resources.limits.memory=512Mi", "sentinel.maxRss=300Mi"), "300Mi", "working-set"),
    (("workload.resources.limits.memory=512Mi", "sentinel.measure=pss"), "auto", "pss"),
    (("mode=sidecar", "json:workload.resources={\"limits\":{\"memory\":\"512Mi\"}}"),
     "200Mi", "rss"),  # a sidecar cannot see the workload's cgroup
], ids=["wrapper", "wrapper with a limit", "explicit size", "explicit measure", "sidecar"])
def test_the_default_limit_follows_the_container(sets, max_rss, measure):
    env = literal_env(sentinel_container(pod_spec(render(sets=sets))))
    assert (env["SENTINEL_MAX_RSS"], env["SENTINEL_MEASURE"]) == (max_rss, measure)


def test_notes_name_the_effective_limit():
    proc = helm("install", "demo", str(CHART), "--dry-run=client", "--namespace", "guarded",
                "--set", "workload.resources.limits.memory=512Mi", check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Limit: auto of working-set;" in proc.stdout


# --------------------------------------------------------------------------
# Several programs (programs, programsSettings: `sentinel run --config`)
# --------------------------------------------------------------------------

PROGRAMS_PATH = "/etc/sentinel/sentinel.yaml"
# Run options that are about one program: with programs, in the file, never variables.
PROGRAM_OPTION_VARIABLES = {"SENTINEL_MAX_RSS", "SENTINEL_MEASURE", "SENTINEL_INTERVAL",
                            "SENTINEL_GRACE_PERIOD", "SENTINEL_RESTART", "SENTINEL_WORKLOAD_NAME"}


def programs_file(docs) -> tuple[dict, str]:
    """The rendered ConfigMap's sentinel.yaml, parsed, and its text."""
    cm = one([d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-programs")],
             "ConfigMap")
    assert set(cm["data"]) == {"sentinel.yaml"}
    text = cm["data"]["sentinel.yaml"]
    return yaml.safe_load(text), text


def load_as_sentinel(docs, tmp_path: Path):
    """The rendered pod's programs file through Sentinel's own loader, as the container
    runs it: its args and SENTINEL_* variables, the ConfigMap's file at the mounted path
    (here in tmp_path)."""
    _, text = programs_file(docs)
    path = tmp_path / "sentinel.yaml"
    path.write_text(text)
    container = sentinel_container(pod_spec(docs))
    args = [str(path) if a == PROGRAMS_PATH else a for a in container["args"]]
    explicit: set[str] = set()
    settings = parse_settings("run", args, environ=literal_env(container), explicit=explicit)
    assert settings.config_path == str(path)
    return load_config(settings.config_path, settings, frozenset(explicit))


def test_programs_render_the_config_file_in_a_configmap():
    docs = render(ci("multi-program"))
    config, _ = programs_file(docs)
    values = yaml.safe_load((CHART / "ci" / "multi-program-values.yaml").read_text())
    assert config["version"] == 1
    assert [p["name"] for p in config["programs"]] == ["web", "cache", "worker"]
    assert config["programs"] == values["programs"]  # as written, in order
    assert [p["name"] for p in config["programs"] if p.get("main")] == ["web"]
    sizes = {p["name"]: p["max-rss"] for p in config["programs"]}
    assert sizes == {"web": "64Mi", "cache": "150Mi", "worker": "100Mi"}
    # programsSettings over the chart's own program defaults (sentinel.*).
    assert config["settings"] == {"output": "prefixed", "on-give-up": "continue",
                                  "restart": "on-failure", "restart-delay": "2s",
                                  "max-restarts": 5, "grace-period": "3s", "interval": "100ms"}
    assert not programs_file_configmaps(render())  # none without programs


def programs_file_configmaps(docs) -> list[dict]:
    return [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-programs")]


def test_programs_run_sentinel_with_the_mounted_config():
    docs = render(ci("multi-program"))
    spec = pod_spec(docs)
    (c,) = spec["containers"]
    assert c["name"] == "app"
    assert c["command"] == ["sentinel", "run"]
    assert c["args"] == ["--config", PROGRAMS_PATH]  # workload.command is ignored
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "programs"]
    assert mount == {"name": "programs", "mountPath": "/etc/sentinel", "readOnly": True}
    (volume,) = [v for v in spec["volumes"] if v["name"] == "programs"]
    assert volume["configMap"]["name"] == "demo-sentinel-programs"
    assert programs_file_configmaps(docs)[0]["metadata"]["name"] == "demo-sentinel-programs"
    # The single workload keeps `sentinel run -- CMD` and no programs volume.
    single = pod_spec(render(ci("wrapper")))
    assert single["containers"][0]["args"][0] == "--"
    assert "programs" not in {v["name"] for v in single["volumes"]}


def test_a_programs_change_rolls_the_pods():
    docs = render(ci("multi-program"))
    _, text = programs_file(docs)
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    # The ConfigMap's block scalar adds the final newline; the checksum is of the file.
    assert annotations["checksum/programs"] == hashlib.sha256(text.rstrip("\n").encode()).hexdigest()
    changed = one(render(ci("multi-program"), ("programs[1].max-rss=160Mi",)), "Deployment")
    assert changed["spec"]["template"]["metadata"]["annotations"]["checksum/programs"] \
        != annotations["checksum/programs"]
    settings = one(render(ci("multi-program"), ("programsSettings.output=plain",)), "Deployment")
    assert settings["spec"]["template"]["metadata"]["annotations"]["checksum/programs"] \
        != annotations["checksum/programs"]
    with_own = one(render(ci("multi-program"), ("podAnnotations.team=platform",)), "Deployment")
    assert with_own["spec"]["template"]["metadata"]["annotations"] == {
        "team": "platform", "checksum/programs": annotations["checksum/programs"]}
    assert "annotations" not in one(render(), "Deployment")["spec"]["template"]["metadata"]


def test_programs_settings_and_variables_are_sentinels_own(tmp_path):
    """With programs, the SENTINEL_* variables carry only Sentinel's own settings
    (a variable would override every program's default: command line > environment
    > file), and Sentinel's own loader reads the rendered file as the chart means it."""
    docs = render(ci("multi-program"))
    env = literal_env(sentinel_container(pod_spec(docs)))
    assert not PROGRAM_OPTION_VARIABLES & env.keys(), sorted(PROGRAM_OPTION_VARIABLES & env.keys())
    assert not {k for k in env if k.startswith("SENTINEL_")} - SENTINEL_ENV_NAMES
    config = load_as_sentinel(docs, tmp_path)
    assert config.settings.socket_path == "/shared/sentinel.socket"
    assert config.settings.state_dir == "/shared" and config.settings.metrics_port == 8000
    assert config.output == "prefixed" and config.main == "web"
    assert [p.name for p in config.programs] == ["web", "cache", "worker"]
    got = {p.name: config.program_settings(p) for p in config.programs}
    assert {n: s.max_rss_bytes for n, s in got.items()} == {
        "web": parse_size("64Mi"), "cache": parse_size("150Mi"), "worker": parse_size("100Mi")}
    assert {n: s.measure for n, s in got.items()} == {"web": "rss", "cache": "rss", "worker": "pss"}
    assert {n: s.grace_period_seconds for n, s in got.items()} == {"web": 3.0, "cache": 2.0, "worker": 3.0}
    assert {n: s.restart for n, s in got.items()} == {"web": "never", "cache": "on-failure",
                                                       "worker": "on-failure"}
    assert got["worker"].stop_signal == signal.SIGINT and got["cache"].restart_delay_seconds == 2.0
    assert {n: s.command[:2] for n, s in got.items()} == dict.fromkeys(got, ("python", "leaker.py"))
    assert [p.on_give_up for p in config.programs] == ["exit", "continue", "continue"]
    # The programs' commands are leaker.py's (in the image) with flags it accepts.
    import importlib.util
    spec = importlib.util.spec_from_file_location("leaker", REPO / "tests" / "leaker.py")
    leaker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(leaker)
    for s in got.values():
        leaker.parse_args(list(s.command[2:]))


# A value for every key the schema allows in a program and in programsSettings.
EVERY_PROGRAM_KEY = {
    "name": "a.b_c", "command": "python -c 'import time; time.sleep(9)'",
    "env": {"A": 1, "B": True, "C": None, "D": "x"}, "cwd": "/tmp", "main": True,
    "depends-on": [], "on-give-up": "exit", "measure": "uss", "max-rss": "100Mi",
    "grace-period": 1.5, "stop-signal": 15, "restart": "always", "restart-delay": "500ms",
    "restart-max-delay": "10s", "max-restarts": 0, "success-exit-code": [0, 3],
    "memory-kill-exit-code": 137, "single-child": True, "interval": "50ms", "max-interval": "2s",
    "clamp-high": True, "no-early-sigkill": True, "oom-score-adj-margin": 100,
    "pre-kill-hook": "sh -c true", "pre-kill-hook-timeout": "500ms", "dry-run": True,
    "warn-at": "85%", "leak-window": "10m", "leak-min-rate": "1Mi/s", "predict-within": "none",
}
EVERY_SETTINGS_KEY = {"output": "plain", "on-give-up": "continue", "measure": "pss",
                      "max-rss": "none", "stop-signal": "QUIT", "max-restarts": 3, "clamp-high": False}


def test_every_schema_key_is_one_sentinel_loads(tmp_path):
    """The schema's program keys are the programs file's own (no camelCase twin, none
    missing), and a value of each that the chart accepts, Sentinel's loader accepts."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    program = schema["definitions"]["program"]
    assert set(program["properties"]) == set(PROGRAM_KEYS) | set(PROGRAM_OPTIONS)
    assert program["required"] == ["name", "command"]
    assert set(schema["properties"]["programsSettings"]["properties"]) == \
        set(FILE_SETTINGS_KEYS) | set(PROGRAM_OPTIONS)
    assert program["properties"]["name"] == {"$ref": "#/definitions/programName"}
    assert schema["definitions"]["programName"]["pattern"] == NAME_RE.pattern
    assert schema["definitions"]["programName"]["maxLength"] == NAME_MAX
    # user only when Sentinel runs as root: the test's loader would refuse it otherwise.
    assert set(EVERY_PROGRAM_KEY) | {"user"} == set(program["properties"])
    second = {"name": "b", "command": ["python", "-V"], "depends-on": ["a.b_c"],
              "success-exit-code": 2}
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"programs": [EVERY_PROGRAM_KEY, second],
                                      "programsSettings": EVERY_SETTINGS_KEY}))
    config = load_as_sentinel(render((str(values),)), tmp_path)
    a, b = (config.program_settings(p) for p in config.programs)
    assert (a.measure, a.max_rss_bytes, a.stop_signal, a.success_exit_codes) == \
        ("uss", parse_size("100Mi"), 15, frozenset({0, 3}))
    assert (b.measure, b.max_rss_bytes, b.stop_signal, b.max_restarts) == ("pss", None, signal.SIGQUIT, 3)
    assert config.output == "plain" and config.programs[1].on_give_up == "continue"
    assert dict(config.programs[0].env) == {"A": "1", "B": "true", "C": None, "D": "x"}


def test_programs_defaults_come_from_the_chart_under_programs_settings():
    config, _ = programs_file(render(ci("multi-program"), (
        "sentinel.gracePeriod=5s", "sentinel.maxRss=300Mi", "sentinel.measure=uss",
        "programsSettings.grace-period=4s", "terminationGracePeriodSeconds=60")))
    s = config["settings"]
    assert (s["grace-period"], s["max-rss"], s["measure"]) == ("4s", "300Mi", "uss")
    config, _ = programs_file(render(ci("multi-program"), ("sentinel.maxRss=",)))
    assert config["settings"]["max-rss"] == "none"
    # null (the default): no max-rss or measure default at all, not the single
    # workload's auto on working-set (refused with several programs).
    config, _ = programs_file(render(ci("multi-program")))
    assert "max-rss" not in config["settings"] and "measure" not in config["settings"]


PROGRAMS_JSON = 'json:programs=[{"name":"a","command":["python","leaker.py"]}]'

PROGRAMS_REJECTED = {
    "sidecar with programs": ((), ("mode=sidecar", PROGRAMS_JSON),
        "programs: several programs need mode: wrapper (Sentinel runs them as PID 1 from the "
        "programs file)"),
    "an unknown program key": ((), ('json:programs=[{"name":"a","command":["x"],"max_rss":"1Gi"}]',),
                               "at '/programs/0': additional properties 'max_rss' not allowed"),
    "a bad restart value": ((), ('json:programs=[{"name":"a","command":["x"],"restart":"sometimes"}]',),
                            "at '/programs/0/restart': value must be one of 'never', 'on-failure', 'always'"),
    "a program without a command": ((), ('json:programs=[{"name":"a"}]',),
                                    "at '/programs/0': missing property 'command'"),
    "an empty command": ((), ('json:programs=[{"name":"a","command":[]}]',), "at '/programs/0/command'"),
    "an upper-case name": ((), ('json:programs=[{"name":"Web","command":["x"]}]',), "at '/programs/0/name'"),
    "a name of 64 characters": ((), ('json:programs=[{"name":"' + "a" * 64 + '","command":["x"]}]',),
                                "at '/programs/0/name'"),
    "a cgroup measure in a program": ((), ('json:programs=[{"name":"a","command":["x"],"measure":"working-set"}]',),
                                      "at '/programs/0/measure'"),
    "a bad size": ((), ('json:programs=[{"name":"a","command":["x"],"max-rss":"12XB"}]',),
                   "at '/programs/0/max-rss'"),
    "a zero grace period": ((), ('json:programs=[{"name":"a","command":["x"],"grace-period":"0s"}]',),
                            "at '/programs/0/grace-period'"),
    "a bad on-give-up": ((), ('json:programs=[{"name":"a","command":["x"],"on-give-up":"retry"}]',),
                         "at '/programs/0/on-give-up'"),
    "a global option in programsSettings": ((), (PROGRAMS_JSON, "programsSettings.metrics-port=9000"),
                                            "additional properties 'metrics-port' not allowed"),
    "a bad output": ((), (PROGRAMS_JSON, "programsSettings.output=json"), "at '/programsSettings/output'"),
    "two programs of one name": ((), ('json:programs=[{"name":"a","command":["x"]},{"name":"a","command":["y"]}]',),
                                 'programs[1].name: "a" is the name of an earlier program'),
    "two mains": ((), ('json:programs=[{"name":"a","command":["x"],"main":true},'
                       '{"name":"b","command":["y"],"main":true}]',),
                  "programs: a, b are all main: true; at most one program is main"),
    "an unknown dependency": ((), ('json:programs=[{"name":"a","command":["x"],"depends-on":["db"]}]',),
                              'programs[0] (a): depends-on names "db", which is not a program here'),
    "a cgroup measure for every program": ((), (PROGRAMS_JSON, "sentinel.measure=cgroup"),
        "sentinel.measure: cgroup measures the whole container, shared by every program"),
    "auto without a memory limit": ((), ('json:programs=[{"name":"a","command":["x"],"max-rss":"auto"}]',),
        "programs[0] (a): max-rss auto is a share of the container's memory limit, and "
        "workload.resources.limits.memory is not set"),
    "a size below 64k": ((), ('json:programs=[{"name":"a","command":["x"],"max-rss":"10Ki"}]',),
                         "programs[0] (a): max-rss \"10Ki\" is 10240 bytes, below Sentinel's 64k floor"),
    "memory limit below the programs' sum": (ci("multi-program"), ("workload.resources.limits.memory=370Mi",),
        "workload.resources.limits.memory (370Mi) must be above the sum of the programs' max-rss "
        "(web 64Mi, cache 150Mi, worker 100Mi) plus Sentinel's own memory in the same container "
        "(56 MiB with the Events client): else the kernel's OOM killer stops a program before "
        "Sentinel does, and no kill is recorded; raise limits.memory to at least 371Mi"),
    "grace periods longer than the pod's": (ci("multi-program"), ("terminationGracePeriodSeconds=8",),
        "terminationGracePeriodSeconds (8) must be at least the sum of the programs' grace periods "
        "(8s) plus 1 s"),
}


@pytest.mark.parametrize("case", list(PROGRAMS_REJECTED), ids=list(PROGRAMS_REJECTED))
def test_bad_programs_are_refused(case):
    values, sets, message = PROGRAMS_REJECTED[case]
    err = render_fails(*sets, values=values)
    assert message in err, err


PROGRAMS_ACCEPTED = [
    (ci("multi-program"), ("workload.resources.limits.memory=371Mi",)),  # 314Mi + 56 MiB, just above
    (ci("multi-program"), ("workload.resources.limits.memory=347Mi", "sentinel.k8sEvents=off")),
    (ci("multi-program"), ("terminationGracePeriodSeconds=9",)),  # 3 s + 2 s + 3 s + 1 s
    (ci("multi-program"), ("json:workload.command=[]",)),  # ignored with programs
    (ci("multi-program"), ("programs[1].max-rss=auto:50%",)),  # auto: not summed
    (ci("multi-program"), ("programs[2].max-rss=none", "workload.resources.limits.memory=271Mi")),
    ((), ('json:programs=[{"name":"web.1_a","command":"python -m http.server 8080"}]',)),
]


@pytest.mark.parametrize("values, sets", PROGRAMS_ACCEPTED, ids=[" ".join(s) for _, s in PROGRAMS_ACCEPTED])
def test_good_programs_are_accepted(values, sets):
    """Positive controls for the refusals above."""
    assert programs_file(render(values, sets))[0]["programs"]


def test_notes_list_the_programs():
    proc = helm("install", "demo", str(CHART), "--dry-run=client", "--namespace", "guarded",
                "-f", ci("multi-program")[0])
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "Sentinel guards 3 programs from /etc/sentinel/sentinel.yaml (ConfigMap demo-sentinel-programs)" in notes
    assert "web (main): 64Mi" in notes and "cache: 150Mi" in notes and "worker: 100Mi" in notes
    assert "-c app -- sentinel status --socket /shared/sentinel.socket" in notes
