"""The Prometheus rules: `promtool check rules`, `promtool test rules` (every alert
tested firing and not firing), and the conventions every alert follows."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "docker" / "prometheus" / "rules"
RULES = RULES_DIR / "sentinel.rules.yml"
RULE_TESTS = RULES_DIR / "sentinel.rules.test.yml"


def promtool(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool not found; run scripts/install-system-deps.sh (Debian package "
                    "prometheus)")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def alerts() -> dict[str, dict]:
    return {r["alert"]: r for r in rules() if "alert" in r}


def test_promtool_check_rules():
    out = promtool("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules())} rules found" in out.stdout


def test_promtool_unit_tests_pass():
    out = promtool("test", "rules", RULE_TESTS.name)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_catches_a_broken_rule(tmp_path):
    # The harness can fail: the same rules with the threshold moved break the tests.
    (tmp_path / RULES.name).write_text(RULES.read_text().replace("> 0.9", "> 0.8"))
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    out = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert out.returncode != 0
    assert "SentinelMemoryNearLimit" in out.stdout + out.stderr


def test_every_alert_is_tested_firing_and_not_firing():
    tests = yaml.safe_load(RULE_TESTS.read_text())
    assert tests["rule_files"] == [RULES.name]
    firing, quiet = set(), set()
    for group in tests["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    assert set(alerts()) == {"SentinelMemoryNearLimit", "SentinelMemoryKill",
                             "SentinelKernelOOMKill", "SentinelDown"} | {
                             "SentinelLeakSuspected", "SentinelLimitPredicted",
                             "SentinelEventsFailing"}
    assert firing == set(alerts())
    assert quiet == set(alerts())


@pytest.mark.parametrize("name", ["SentinelMemoryNearLimit", "SentinelMemoryKill",
                                  "SentinelKernelOOMKill", "SentinelDown",
                                  "SentinelLeakSuspected", "SentinelLimitPredicted",
                                  "SentinelEventsFailing"])
def test_alerts_carry_severity_summary_and_description(name):
    alert = alerts()[name]
    assert alert["labels"]["severity"] in ("warning", "critical")
    assert set(alert["annotations"]) == {"summary", "description"}


def test_the_down_alert_covers_a_missing_target_and_the_sentinel_job():
    expr = alerts()["SentinelDown"]["expr"]
    assert 'up{job="sentinel"} == 0' in expr
    assert 'absent(up{job="sentinel"})' in expr


def test_recording_rules_follow_the_level_metric_operation_form():
    for rule in rules():
        if "record" in rule:
            assert rule["record"].count(":") == 2, rule["record"]


def test_the_kernel_oom_alert_counts_only_kernel_kills(tmp_path):
    expr = alerts()["SentinelKernelOOMKill"]["expr"]
    assert 'sentinel_kills_total{reason="kernel_oom"}' in expr
    # The harness can fail: the alert on every kill reason fires for "leaky" too.
    (tmp_path / RULES.name).write_text(
        RULES.read_text().replace('sentinel_kills_total{reason="kernel_oom"}',
                                  'sentinel_kills_total{signal="SIGKILL"}'))
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    out = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert out.returncode != 0
    assert "SentinelKernelOOMKill" in out.stdout + out.stderr


@pytest.mark.parametrize("old, new, alert", [
    # The leak alert on any rule fires for "gc"'s warning too.
    ('sentinel_alert_firing{rule="leak"}', 'sentinel_alert_firing', "SentinelLeakSuspected"),
    # The prediction without Sentinel's rule (its horizon, its hysteresis) fires for "web".
    ("\n            and on (job, instance, program, workload)\n          max by (job, instance, "
     'program, workload) (sentinel_alert_firing{rule="prediction"}) == 1', " < 600",
     "SentinelLimitPredicted"),
])
def test_the_leak_and_prediction_alerts_follow_sentinels_rules(tmp_path, old, new, alert):
    # The harness can fail: each alert loosened breaks its promtool test.
    text = RULES.read_text()
    assert old in text
    (tmp_path / RULES.name).write_text(text.replace(old, new))
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    out = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert out.returncode != 0
    assert alert in out.stdout + out.stderr
