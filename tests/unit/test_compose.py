"""docker/docker-compose.yml: valid against the Compose Specification's JSON
schema (tests/fixtures/compose-spec, see its SOURCE), and wired together:
Sentinel's own parser accepts the sentinel service's command and environment
(the control socket lands on the shared volume), the leaker accepts its flags,
Prometheus scrapes that service's metrics port every 5 s and loads the rules
file mounted from docker/prometheus/rules/ (promtool agrees), and Grafana's
provisioning points at the mounted dashboards and at the prometheus service.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import posixpath
import shutil
import signal
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from sentinel.config.programs import load_config
from sentinel.config.settings import parse_settings

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "docker-compose.yml"
SCHEMA = REPO / "tests" / "fixtures" / "compose-spec" / "compose-spec.json"
PROMETHEUS_YML = DOCKER / "prometheus" / "prometheus.yml"
RULES = DOCKER / "prometheus" / "rules" / "sentinel.rules.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft201909Validator:
    schema = json.loads(SCHEMA.read_text())
    # It names draft 2019-09 by the old http://...# URI, which jsonschema's
    # lookup table lacks; say the draft explicitly.
    assert "draft/2019-09" in schema["$schema"]
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def schema_errors(validator, doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(doc)]


def mounts(service: dict) -> dict[str, dict]:
    """The service's volumes in long syntax, keyed by target path."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, str):  # short syntax: SOURCE:TARGET[:MODE]
            source, target, *mode = v.split(":")
            kind = "bind" if source.startswith((".", "/")) else "volume"
            v = {"type": kind, "source": source, "target": target,
                 "read_only": "ro" in mode}
        out[v["target"]] = v
    return out


def host_path(source: str) -> Path:
    """A bind mount's source: relative paths are relative to the compose file."""
    return (COMPOSE.parent / source).resolve()


def test_valid_against_the_compose_spec(compose, validator):
    assert schema_errors(validator, compose) == []


def test_schema_rejects_what_compose_would(compose, validator):
    """Negative control: the schema is strict (unknown keys, wrong types)."""
    bad = copy.deepcopy(compose)
    bad["services"]["sentinel"]["max_rss"] = "64Mi"
    bad["services"]["prometheus"]["ports"] = "9090:9090"
    errors = schema_errors(validator, bad)
    assert any("max_rss" in e for e in errors), errors
    assert any(e.startswith("services/prometheus/ports") for e in errors), errors


def test_sentinel_service_builds_the_dockerfile_from_the_repo_root(compose):
    build = compose["services"]["sentinel"]["build"]
    context = host_path(build["context"])
    assert context == REPO
    assert (context / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    assert (REPO / ".dockerignore").exists()


def test_sentinel_parses_the_service_command_and_environment(compose):
    svc = compose["services"]["sentinel"]
    env = {k: str(v) for k, v in svc.get("environment", {}).items()}
    settings = parse_settings("run", list(svc["command"]), environ=env)
    assert settings.max_rss_bytes, "the demo must run under a memory limit"
    socket_path = settings.socket_path
    assert socket_path == env["SENTINEL_SOCKET"], \
        "Sentinel ignores SENTINEL_SOCKET: the socket would not be on the shared volume"
    volume = mounts(svc)[posixpath.dirname(socket_path)]
    assert volume["type"] == "volume" and volume["source"] in compose["volumes"]
    assert not svc.get("init", False), "init: true would put docker-init, not Sentinel, at PID 1"
    ports = [str(p).split(":")[-1] for p in svc.get("ports", [])]
    assert str(settings.metrics_port) in ports


def test_leaker_accepts_the_service_flags(compose):
    command = list(compose["services"]["sentinel"]["command"])
    workload = command[command.index("--") + 1:]
    assert workload[:2] == ["python", "leaker.py"]
    spec = importlib.util.spec_from_file_location("leaker", REPO / "tests" / "leaker.py")
    leaker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(leaker)
    args = leaker.parse_args(workload[2:])
    assert args.rate > 0 and not args.ignore_term


def test_third_party_images_are_pinned(compose):
    for name, svc in compose["services"].items():
        if "build" in svc:
            continue
        image = svc["image"]
        tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
        assert tag and tag != "latest", f"service {name}: pin {image} to a version"


def test_prometheus_scrapes_sentinel_every_5s_and_loads_the_rules(compose):
    prom = compose["services"]["prometheus"]
    m = mounts(prom)
    config_mount = m["/etc/prometheus/prometheus.yml"]
    assert host_path(config_mount["source"]) == PROMETHEUS_YML
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert config["global"]["scrape_interval"] == "5s"

    # Each rule file, resolved as Prometheus does (relative to the config
    # file), is a mount of the repository's rules file.
    rule_targets = [posixpath.join("/etc/prometheus", r) for r in config["rule_files"]]
    assert rule_targets == ["/etc/prometheus/rules/sentinel.rules.yml"]
    assert host_path(m[rule_targets[0]]["source"]) == RULES
    assert RULES.exists(), f"{RULES.relative_to(REPO)} is missing (the observability part)"

    sentinel = compose["services"]["sentinel"]
    settings = parse_settings("run", list(sentinel["command"]), environ={})
    aliases = sentinel.get("networks", {}).get("default", {}).get("aliases", [])
    targets = [t for job in config["scrape_configs"] if job["job_name"] == "sentinel"
               for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"sentinel:{settings.metrics_port}"]
    assert "sentinel" in aliases, "`compose run` containers need the alias to be scraped"


def test_promtool_accepts_the_config_and_rules():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: run scripts/install-system-deps.sh (make system-deps)")
    proc = subprocess.run([promtool, "check", "config", str(PROMETHEUS_YML)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


def test_grafana_provisioning_matches_the_mounts(compose):
    m = mounts(compose["services"]["grafana"])
    prov = m["/etc/grafana/provisioning"]
    dashboards = next(v for t, v in m.items() if t != "/etc/grafana/provisioning")
    prov_dir, dash_dir = host_path(prov["source"]), host_path(dashboards["source"])
    assert prov_dir == DOCKER / "grafana" / "provisioning"
    assert dash_dir == DOCKER / "grafana" / "dashboards"
    assert prov_dir.is_dir() and dash_dir.is_dir(), "docker/grafana/ is missing"
    assert list(dash_dir.glob("*.json")), "no dashboard in docker/grafana/dashboards"

    def provisioning(kind: str) -> list[dict]:
        files = sorted((prov_dir / kind).glob("*.y*ml"))
        assert files, f"no {kind} provisioning file in {prov_dir / kind}"
        return [yaml.safe_load(f.read_text()) for f in files]

    paths = [p["options"]["path"] for doc in provisioning("dashboards")
             for p in doc.get("providers", [])]
    assert paths and all(
        posixpath.normpath(p) == dashboards["target"]
        or posixpath.normpath(p).startswith(dashboards["target"] + "/") for p in paths), \
        f"dashboard providers read {paths}, the dashboards are mounted at {dashboards['target']}"
    urls = [d.get("url") for doc in provisioning("datasources")
            for d in doc.get("datasources", []) if d.get("type") == "prometheus"]
    assert urls == ["http://prometheus:9090"], urls


# --------------------------------------------------------------------------
# The `multi` service: several programs under one Sentinel (profile "multi")
# --------------------------------------------------------------------------

MULTI_CONFIG = DOCKER / "sentinel.multi.yaml"
CHART_MULTI_VALUES = REPO / "charts" / "sentinel" / "ci" / "multi-program-values.yaml"
CONFIG_TARGET = "/etc/sentinel/sentinel.yaml"


def test_multi_service_is_opt_in_and_runs_the_mounted_config(compose):
    services = compose["services"]
    multi = services["multi"]
    assert multi["profiles"] == ["multi"]
    # The existing stack (and `up` without a profile) is unchanged.
    assert all("profiles" not in svc for name, svc in services.items() if name != "multi")
    assert multi["command"] == ["--config", CONFIG_TARGET]  # after ENTRYPOINT `sentinel run`
    assert multi["image"] == services["sentinel"]["image"]
    assert multi["build"] == services["sentinel"]["build"]
    mount = mounts(multi)[CONFIG_TARGET]
    assert mount["type"] == "bind" and mount["read_only"] is True
    assert host_path(mount["source"]) == MULTI_CONFIG
    # Its socket on its own volume, not the single-command service's.
    env = {k: str(v) for k, v in multi.get("environment", {}).items()}
    socket_dir = posixpath.dirname(env["SENTINEL_SOCKET"])
    volume = mounts(multi)[socket_dir]
    assert volume["type"] == "volume" and volume["source"] in compose["volumes"]
    assert volume["source"] != mounts(services["sentinel"])["/shared"]["source"]


def test_multi_config_names_three_programs_with_one_main():
    config = yaml.safe_load(MULTI_CONFIG.read_text())
    assert config["version"] == 1
    programs = config["programs"]
    assert [p["name"] for p in programs] == ["web", "cache", "worker"]
    assert [p["name"] for p in programs if p.get("main")] == ["web"]
    limits = {p["name"]: parse_settings("run", ["--max-rss", p["max-rss"], "--", "true"],
                                        environ={}).max_rss_bytes for p in programs}
    assert len(set(limits.values())) == 3, "the two leakers and the steady one have their own limits"
    # The same three programs as the chart's example.
    assert programs == yaml.safe_load(CHART_MULTI_VALUES.read_text())["programs"]


def test_sentinel_loads_the_multi_config_as_the_service_runs_it(compose):
    """Sentinel's own loader, with the service's command and environment: three
    programs, web main, their limits and stop signals; the commands are leaker.py's."""
    svc = compose["services"]["multi"]
    env = {k: str(v) for k, v in svc.get("environment", {}).items()}
    args = [str(MULTI_CONFIG) if a == CONFIG_TARGET else a for a in svc["command"]]
    explicit: set[str] = set()
    settings = parse_settings("run", args, environ=env, explicit=explicit)
    config = load_config(settings.config_path, settings, frozenset(explicit))
    assert config.main == "web" and config.output == "prefixed"
    assert config.settings.metrics_port == 8001
    assert config.settings.socket_path == env["SENTINEL_SOCKET"]
    got = {p.name: config.program_settings(p) for p in config.programs}
    assert {n: s.max_rss_bytes for n, s in got.items()} == {
        "web": 64 << 20, "cache": 150 << 20, "worker": 100 << 20}
    assert got["worker"].stop_signal == signal.SIGINT and got["worker"].measure == "pss"
    assert [p.on_give_up for p in config.programs] == ["exit", "continue", "continue"]
    spec = importlib.util.spec_from_file_location("leaker", REPO / "tests" / "leaker.py")
    leaker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(leaker)
    for s in got.values():
        assert s.command[:2] == ("python", "leaker.py")
        leaker.parse_args(list(s.command[2:]))


def test_prometheus_scrapes_the_multi_service_on_its_own_port(compose):
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    port = yaml.safe_load(MULTI_CONFIG.read_text())["settings"]["metrics-port"]
    multi = compose["services"]["multi"]
    assert f"{port}:{port}" in [str(p) for p in multi["ports"]]
    sentinel_port = parse_settings("run", list(compose["services"]["sentinel"]["command"]),
                                   environ={}).metrics_port
    assert port != sentinel_port
    jobs = {job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
            for job in config["scrape_configs"]}
    assert jobs["sentinel-multi"] == [f"multi:{port}"]
    assert "multi" in multi["networks"]["default"]["aliases"]
