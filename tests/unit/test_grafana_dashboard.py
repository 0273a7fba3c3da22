"""The Grafana dashboard and provisioning: the committed JSON is exactly the
generator's output, its panels are what the issue asks for, and every metric a
panel or a rule names is one the exporter serves. (Whether each expression
returns data from a real Prometheus is tests/integration/test_prometheus.py.)"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from sentinel.exporters.metrics import SentinelCollector, build_registry
from tests.unit.test_metrics import busy_state

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "docker" / "grafana"
GENERATOR = GRAFANA / "generate_dashboard.py"
DASHBOARD = GRAFANA / "dashboards" / "sentinel.json"
RULES = REPO / "docker" / "prometheus" / "rules" / "sentinel.rules.yml"
COMPOSE = REPO / "docker" / "docker-compose.yml"


def load_generator():
    sys.path.insert(0, str(GRAFANA))
    try:
        import generate_dashboard
    finally:
        sys.path.remove(str(GRAFANA))
    return generate_dashboard


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panel(title: str) -> dict:
    (found,) = [p for p in dashboard()["panels"] if p["title"] == title]
    return found


def exprs(p: dict) -> list[str]:
    return [t["expr"] for t in p["targets"]]


def all_exprs() -> list[str]:
    d = dashboard()
    return [e for p in d["panels"] for e in exprs(p)] + [a["expr"] for a in
                                                        d["annotations"]["list"]]


def test_committed_json_is_the_generators_output():
    assert DASHBOARD.read_text() == load_generator().render(), \
        "run: python docker/grafana/generate_dashboard.py"


def test_generator_check_mode_agrees():
    out = subprocess.run([sys.executable, str(GENERATOR), "--check"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_generator_check_mode_catches_a_stale_file(tmp_path, monkeypatch):
    gen = load_generator()
    stale = tmp_path / "sentinel.json"
    stale.write_text(DASHBOARD.read_text().replace('"Sentinel"', '"Sentinel (old)"', 1))
    monkeypatch.setattr(gen, "OUT", stale)
    assert gen.main(["--check"]) == 1


def test_program_is_a_templated_variable_every_query_uses():
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    w = variables["program"]
    assert w["type"] == "query" and w["multi"] and w["includeAll"]
    assert w["query"]["query"] == "label_values(sentinel_workload_up, program)"
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for expr in all_exprs():
        assert 'program=~"$program"' in expr, expr


def test_sums_keep_programs_apart_and_joins_take_one_series_per_sentinel():
    # Several programs under one Sentinel (sentinel run --config): a sum that dropped
    # ``program`` would add their kills up; a group_left join on (job, instance) onto
    # one series per program would be many-to-many, an error in Prometheus.
    for expr in all_exprs():
        for by in re.findall(r"sum by \(([^)]*)\)", expr):
            assert "program" in by.split(", "), expr
        if "group_left" in expr:
            assert "group_left () max by (job, instance) (" in expr, expr


def test_every_panel_reads_the_templated_data_source():
    d = dashboard()
    for p in d["panels"]:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))


def test_memory_against_limit_is_a_stepped_graph():
    p = panel("Memory against limit")
    assert p["type"] == "timeseries"
    assert p["fieldConfig"]["defaults"]["custom"]["lineInterpolation"] == "stepAfter"
    assert p["fieldConfig"]["defaults"]["unit"] == "bytes"
    assert [e.split("{")[0] for e in exprs(p)] == ["sentinel_workload_memory_bytes",
                                                   "sentinel_memory_limit_bytes"]


def test_kills_and_restarts_are_bars_and_annotations():
    p = panel("Kills and restarts")
    assert p["fieldConfig"]["defaults"]["custom"]["drawStyle"] == "bars"
    assert any("sentinel_kills_total" in e for e in exprs(p))
    assert any("sentinel_restarts_total" in e for e in exprs(p))
    annotations = {a["name"]: a for a in dashboard()["annotations"]["list"]}
    assert "sentinel_last_kill_timestamp_seconds" in annotations["Kills"]["expr"]
    assert "sentinel_restarts_total" in annotations["Restarts"]["expr"]


def test_reaction_time_percentiles():
    quantiles = [re.match(r"histogram_quantile\(([0-9.]+), ", e).group(1)
                 for e in exprs(panel("Reaction time (limit crossing -> SIGTERM)"))]
    assert quantiles == ["0.5", "0.9", "0.99"]


def test_sentinels_own_cpu_and_rss():
    assert exprs(panel("Sentinel CPU"))[0].startswith("rate(process_cpu_seconds_total[")
    assert exprs(panel("Sentinel RSS"))[0].startswith("process_resident_memory_bytes ")


def test_panels_do_not_overlap():
    taken = set()
    for p in dashboard()["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                 for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, p["title"]
        taken |= cells


def served_metric_names() -> set[str]:
    body = generate_latest(build_registry(SentinelCollector(busy_state()))).decode()
    return {line.split("{")[0].split(" ")[0] for line in body.splitlines()
            if line and not line.startswith("#")}


def named_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:sentinel|process)_[a-z_]+)\b", expr))


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_every_metric_named_is_served(source):
    if source == "dashboard":
        texts = all_exprs()
    else:
        texts = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"]
                 for r in g["rules"]]
    served = served_metric_names()
    named = set().union(*(named_metrics(t) for t in texts))
    assert named, texts
    assert named <= served, named - served


def test_provisioning_points_at_compose_prometheus_and_dashboards_mount():
    prov = GRAFANA / "provisioning"
    (ds,) = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    assert ds["isDefault"] is True
    (provider,) = yaml.safe_load((prov / "dashboards" / "sentinel.yml").read_text())["providers"]
    assert provider["type"] == "file"
    grafana = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]
    mounts = {Path(v["source"]).name: v["target"] for v in grafana["volumes"]}
    assert mounts["dashboards"] == provider["options"]["path"]
    assert mounts["provisioning"] == "/etc/grafana/provisioning"


def test_kernel_oom_kills_and_memory_pressure_have_panels():
    (kernel,) = exprs(panel("Kernel OOM kills"))
    assert 'sentinel_kills_total{program=~"$program", reason="kernel_oom"}' in kernel
    assert panel("Kernel OOM kills")["fieldConfig"]["defaults"]["custom"]["drawStyle"] == "bars"
    (psi,) = exprs(panel("Memory pressure (PSI)"))
    assert psi.startswith("rate(sentinel_memory_pressure_stall_seconds_total[")
    assert panel("Memory pressure (PSI)")["fieldConfig"]["defaults"]["unit"] == "percentunit"
