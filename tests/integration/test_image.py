"""The container image, built and run for real with podman, no registry:

scripts/make-base-image.sh (debootstrap + podman import, skipped when the
image exists) -> `make bpf` and wheels built here into dist/wheelhouse, libbpf1's
.debs into dist/wheelhouse/debs (scripts/image-debs.sh) -> `podman build` of
docker/Dockerfile with no network -> `podman run --network none`.

Asserts what a user of `docker run IMAGE --max-rss 64Mi -- python leaker.py`
sees: Sentinel is PID 1, the leaker is stopped with SIGTERM and the container
exits 143; --ignore-term ends in SIGKILL and 137; without a limit nothing is
killed; `podman stop` is forwarded; the user is not root; the socket and
metrics work on a named volume as docker-compose.yml uses them. Under
`--memory 100m`: the in-container cgroup view (v1, read-only, the host's cgroup
namespace; recorded in tests/fixtures/cgroup/views/), Sentinel's SIGTERM before
the kernel, and the kernel's kill (137) when Sentinel's limit is above the
container's. `--probe ebpf` (issue 12): under podman's defaults one line says why it
did not load and polling stops the leaker; with the rights it loads and the kernel
wakes Sentinel; a wheel without the BPF object is refused at build time; the chart's
probe: ebpf securityContext, applied as containerd applies it (runc) and as a sidecar
pod (podman), loads the probe, and the same without root or without KILL does not work.

Slow (about 30 s with the base image cached, plus about 45 s to debootstrap
it once). The session fixture runs scripts/install-system-deps.sh, which
returns at once when podman and friends are installed.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "localhost/sentinel-base:bookworm"
WHEELHOUSE = REPO / "dist" / "wheelhouse"
UID = 10001

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def sh(cmd: list[str], *, timeout: float, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=timeout, check=False, **kw)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def podman(*args, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return sh(["podman", *args], timeout=timeout, check=check)


def json_logs(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


@pytest.fixture(scope="session")
def image():
    """Build the image once per session (tests elsewhere may ask for it too); remove it
    afterwards.

    dist/wheelhouse is rebuilt from scratch (a stale sentinel wheel would be
    installed instead of the tree's code). A lock keeps two test runs in the
    same tree from rebuilding it under each other.
    """
    t0 = time.monotonic()
    sh(["bash", REPO / "scripts" / "install-system-deps.sh"], timeout=900)
    sh(["bash", REPO / "scripts" / "make-base-image.sh"], timeout=900)
    t_base = time.monotonic()
    tag = f"localhost/sentinel:test-{uuid.uuid4().hex[:8]}"
    WHEELHOUSE.parent.mkdir(exist_ok=True)
    with open(WHEELHOUSE.parent / ".image-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        shutil.rmtree(WHEELHOUSE, ignore_errors=True)
        # The eBPF probe's object goes into the wheel (the build refuses a wheel without it).
        sh(["make", "-C", REPO, "--no-print-directory", "bpf"], timeout=300)
        # The host's Python builds the wheels: it must be the image's minor
        # version (bookworm's python3 is 3.11), or the build stops with the
        # Dockerfile's "is not for cp3NN" error.
        sh([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
            "--wheel-dir", WHEELHOUSE, REPO, "pip"], timeout=600)
        # libbpf1 and libelf1 as .debs: the build installs them with dpkg, no network.
        sh(["bash", REPO / "scripts" / "image-debs.sh", WHEELHOUSE / "debs"], timeout=300)
        debs = sorted(p.name.split("_")[0] for p in (WHEELHOUSE / "debs").glob("*.deb"))
        assert debs == ["libbpf1", "libelf1"], debs
        t_wheels = time.monotonic()
        # --layers=false: no cached intermediate images left behind.
        podman("build", "--quiet", "--layers=false", "--network", "none", "--pull=never",
               "--build-arg", f"BASE={BASE_IMAGE}", "-f", REPO / "docker" / "Dockerfile",
               "-t", tag, REPO, timeout=600)
    t_build = time.monotonic()
    print(f"\nimage: base {t_base - t0:.1f}s, wheels {t_wheels - t_base:.1f}s, "
          f"build {t_build - t_wheels:.1f}s")
    yield tag
    podman("rmi", "--force", tag, check=False)


@pytest.fixture
def container_name(image):
    """A unique container name, removed (with its anonymous volumes) afterwards."""
    name = f"sentinel-test-{uuid.uuid4().hex[:8]}"
    yield name
    podman("rm", "--force", "--volumes", name, check=False)


def run(image: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return podman("run", "--rm", "--network", "none", image, *args, timeout=timeout, check=False)


def test_leaker_is_stopped_with_sigterm_and_the_container_exits_143(image):
    start = time.monotonic()
    proc = run(image, "--max-rss", "64Mi", "--log-format", "json", "--",
               "python", "leaker.py", "--rate", "50")
    elapsed = time.monotonic() - start
    logs = json_logs(proc.stderr)
    assert proc.returncode == 143, proc.stdout + proc.stderr
    startup = [e for e in logs if e.get("event") == "startup"]
    assert startup and startup[0]["msg"].startswith("running as PID 1"), proc.stderr
    sent = [e["signal"] for e in logs if e.get("event") == "signal_sent"]
    assert sent == ["SIGTERM"], proc.stderr
    assert "got SIGTERM" in proc.stdout  # the leaker's own word
    # 64 MiB at 50 MiB/s: a couple of seconds, far from a hang.
    assert elapsed < 30


def test_sentinel_is_pid_1_and_not_root(image):
    script = ("import json, os; print(json.dumps(open('/proc/1/cmdline').read().split('\\0'))); "
              "print(os.getuid(), os.getgid(), os.getppid())")
    proc = run(image, "--no-metrics", "--no-socket", "--", "python", "-c", script)
    assert proc.returncode == 0, proc.stderr
    cmdline, ids = proc.stdout.splitlines()[:2]
    # The console script's shebang names the venv's python with -I; the
    # kernel puts the interpreter and that flag first, then the script as
    # found on PATH (a link to /opt/sentinel/bin/sentinel).
    assert json.loads(cmdline)[:4] == ["/opt/sentinel/bin/python", "-I", "/usr/local/bin/sentinel",
                                       "run"], cmdline
    uid, gid, ppid = map(int, ids.split())
    assert (uid, gid) == (UID, UID)
    assert ppid == 1, "the workload's parent is not PID 1 (Sentinel)"
    config_user = podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()
    assert config_user == f"{UID}:{UID}"


def test_ignored_sigterm_ends_in_sigkill_and_137(image):
    proc = run(image, "--max-rss", "64Mi", "--grace-period", "1s", "--log-format", "json",
               "--", "python", "leaker.py", "--rate", "50", "--ignore-term")
    logs = json_logs(proc.stderr)
    assert proc.returncode == 137, proc.stdout + proc.stderr
    assert [e["signal"] for e in logs if e.get("event") == "signal_sent"] == \
        ["SIGTERM", "SIGKILL"], proc.stderr


def test_without_a_limit_nothing_is_killed(image):
    """Negative control: the same leaker, no --max-rss, runs to its own end."""
    proc = run(image, "--log-format", "json", "--",
               "python", "leaker.py", "--rate", "50", "--max", "80", "--exit-at-max")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not [e for e in json_logs(proc.stderr) if e.get("event") == "signal_sent"]


def test_podman_stop_is_forwarded_and_socket_and_metrics_work_on_a_volume(image, container_name):
    """As docker-compose.yml runs it: socket on a named volume (owned by the
    image's /shared), metrics on :8000; `stop` sends SIGTERM to PID 1."""
    volume = f"{container_name}-shared"
    podman("volume", "create", volume)
    try:
        podman("run", "--detach", "--name", container_name, "--network", "none",
               "--volume", f"{volume}:/shared", "--env", "SENTINEL_SOCKET=/shared/sentinel.socket",
               image, "--", "python", "leaker.py", "--rate", "20", "--max", "10")
        deadline = time.monotonic() + 30
        while "ready" not in podman("logs", container_name).stdout:
            assert time.monotonic() < deadline, podman("logs", container_name).stderr
            time.sleep(0.2)
        probe = (
            "import os, stat, time, urllib.request\n"
            "deadline = time.monotonic() + 20\n"
            "while True:\n"
            "    try:\n"
            "        body = urllib.request.urlopen('http://127.0.0.1:8000/metrics', timeout=2).read().decode()\n"
            "        st = os.stat('/shared/sentinel.socket')\n"
            "        break\n"
            "    except OSError:\n"
            "        if time.monotonic() > deadline: raise\n"
            "        time.sleep(0.2)\n"
            "print(stat.S_ISSOCK(st.st_mode), st.st_uid)\n"
            "print(sum(line.startswith('sentinel_') for line in body.splitlines()))\n"
        )
        out = podman("exec", container_name, "python", "-c", probe, timeout=60).stdout.split()
        assert out[0] == "True" and int(out[1]) == UID, out
        assert int(out[2]) > 0, "no sentinel_ metric on :8000"
        podman("stop", "--time", "10", container_name, timeout=60)
        code = podman("inspect", "--format", "{{.State.ExitCode}}", container_name).stdout
        assert int(code) == 143, podman("logs", container_name).stderr
        assert "got SIGTERM" in podman("logs", container_name).stdout
    finally:
        podman("rm", "--force", container_name, check=False)
        podman("volume", "rm", "--force", volume, check=False)


def test_wheels_for_another_python_are_refused_in_one_line(image, tmp_path):
    """Bad input: a wheelhouse built by another Python minor version. The
    build stage checks tags before anything else, so this context needs
    nothing but the wheelhouse."""
    wheelhouse = tmp_path / "dist" / "wheelhouse"
    wheelhouse.mkdir(parents=True)
    (wheelhouse / "pyyaml-6.0-cp39-cp39-manylinux_2_17_x86_64.whl").write_bytes(b"")
    proc = podman("build", "--quiet", "--layers=false", "--network", "none", "--pull=never",
                  "--build-arg", f"BASE={BASE_IMAGE}", "-f", REPO / "docker" / "Dockerfile",
                  "-t", f"localhost/sentinel:refused-{uuid.uuid4().hex[:8]}", tmp_path,
                  timeout=300, check=False)
    assert proc.returncode != 0
    assert "wheelhouse: pyyaml-6.0-cp39-cp39-manylinux_2_17_x86_64.whl is not for cp311, " \
        "the Python of BASE" in proc.stderr, proc.stderr


ENV_SCRIPT = ("import json, os, shutil, sys; print(json.dumps({'prefix': sys.prefix, "
              "'executable': os.path.realpath(sys.executable), 'env': dict(os.environ), "
              "'sentinel': shutil.which('sentinel')}))")


def test_workload_gets_the_base_images_python_and_none_of_sentinels_environment(image):
    """`python`/`python3` on the workload's PATH are the base image's interpreter
    (where a derived image's `pip install` goes), Sentinel's packages are not
    importable there, and the workload's environment is the base image's own:
    no PATH entry, PYTHON* variable or VIRTUAL_ENV of Sentinel's."""
    base = json.loads(podman("run", "--rm", "--network", "none", BASE_IMAGE, "python3", "-c",
                             ENV_SCRIPT).stdout)
    for interpreter in ("python3", "python"):
        proc = run(image, "--no-metrics", "--no-socket", "--", interpreter, "-c", ENV_SCRIPT)
        assert proc.returncode == 0, proc.stderr
        seen = json.loads(proc.stdout)
        assert seen["prefix"] == base["prefix"] and not seen["prefix"].startswith("/opt/sentinel")
        assert seen["executable"] == base["executable"], (interpreter, seen["executable"])
        env = seen["env"]
        assert env["PATH"] == base["env"]["PATH"], env["PATH"]
        assert "/opt/sentinel" not in env["PATH"]
        ours = {k for k in env if (k.startswith("PYTHON") or k == "VIRTUAL_ENV") and k not in base["env"]}
        assert not ours, f"Sentinel's variables reach the workload: {sorted(ours)}"
        # what differs from the base image is only what podman sets per container
        assert set(env) - set(base["env"]) <= {"HOSTNAME", "HOME", "container"}, sorted(env)
        assert seen["sentinel"] == "/usr/local/bin/sentinel"  # still on PATH for `kubectl exec`
    proc = run(image, "--no-metrics", "--no-socket", "--", "python3", "-c", "import sentinel")
    assert proc.returncode == 1 and "No module named 'sentinel'" in proc.stderr, proc.stderr


def test_sentinel_ignores_python_variables_meant_for_the_workload(image):
    """A PYTHONPATH or PYTHONHOME set for the workload (docker run -e) passes to
    it unchanged and does not break Sentinel, which runs isolated (-I)."""
    proc = podman("run", "--rm", "--network", "none", "--env", "PYTHONPATH=/nonexistent/app",
                  "--env", "PYTHONHOME=/nonexistent/home", image, "--no-metrics", "--no-socket",
                  "--", "/bin/sh", "-c", 'echo "$PYTHONPATH $PYTHONHOME"', check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "/nonexistent/app /nonexistent/home"


# -- The in-container view: podman's --memory on this cgroup v1 hybrid host (issue 9) ----

VIEW = REPO / "tests" / "vm" / "cgroup_view.py"
RECORDED_VIEW = REPO / "tests" / "fixtures" / "cgroup" / "views" / "podman-v1-memory100m.jsonl"


# The leaker, then the kernel's own counter (memory.oom_control's oom_kill; podman's
# OOMKilled flag is false after a real kill here). The shell traps SIGTERM (a no-op:
# Sentinel signals the whole group) so it lives to print the counter.
LEAK_THEN_OOM_CONTROL = ("sh", "-c", "trap : TERM; python leaker.py --rate 50; rc=$?; "
                         "cat /sys/fs/cgroup/memory/memory.oom_control; exit $rc")


def run_limited(image: str, *args: str, user: str | None = None, cwd: Path | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
    """``podman run --rm --network none --memory 100m`` with tests/vm on /vm (no swap on
    these hosts: the limit is the memory.limit_in_bytes a kernel OOM kill enforces).
    ``cwd``: this podman's conmon leaves an empty file "oom" in its working directory
    after a kernel OOM kill; keep it out of the tree."""
    return sh(["podman", "run", "--rm", "--network", "none", "--memory", "100m",
               *(["--user", user] if user else []), "--volume", f"{VIEW.parent}:/vm:ro",
               image, *args], timeout=timeout, check=False, cwd=cwd)


@pytest.mark.parametrize("user, write_error", [("10001:10001", "EACCES"), ("0:0", "EROFS")])
def test_in_container_view_is_cgroup_v1_read_only_under_a_host_namespace(image, user, write_error):
    """What Sentinel sees in a container here (tests/vm/cgroup_view.py, as its workload):
    v1 lines in /proc/self/cgroup with the container's path, and a "0::" line too although
    no cgroup2 is mounted inside; a read-only memory mount whose root is that same path
    (podman's host cgroup namespace on v1: path minus root is "/", the group's directory is
    the mount point); the 100 MiB limit; a write refused (EROFS for root, EACCES first for
    the image's user). tests/fixtures/cgroup/views/ keeps these views for discovery's tests."""
    proc = run_limited(image, "--no-metrics", "--no-socket", "--", "python",
                       "/vm/cgroup_view.py", user=user)
    assert proc.returncode == 0, proc.stderr
    view = json.loads(proc.stdout)["cgroup_view"]
    assert view["uid"] == int(user.split(":")[0])
    memory = [line for line in view["proc_self_cgroup"] if line.split(":")[1] == "memory"]
    assert len(memory) == 1, view["proc_self_cgroup"]
    path = memory[0].split(":", 2)[2]
    assert "/libpod-" in path, path
    assert f"0::{path}" in view["proc_self_cgroup"]
    fstypes = [line.split(" - ", 1)[1].split(" ")[0] for line in view["mountinfo"]]
    assert "cgroup2" not in fstypes, view["mountinfo"]
    mounts = [line.split(" ") for line in view["mountinfo"]
              if "memory" in line.split(" - ", 1)[1].split(" ")[2].split(",")]
    assert len(mounts) == 1, view["mountinfo"]
    root, point, options = mounts[0][3], mounts[0][4], mounts[0][5]
    assert (root, point) == (path, "/sys/fs/cgroup/memory"), mounts[0]
    assert "ro" in options.split(","), options
    files = view["files"]
    assert files["/sys/fs/cgroup/memory/memory.limit_in_bytes"].strip() == str(100 * 2**20)
    assert "oom_kill 0" in files["/sys/fs/cgroup/memory/memory.oom_control"]
    assert view["open_for_write"] == {"/sys/fs/cgroup/memory/memory.limit_in_bytes": write_error}
    # The recorded view for this user has the same shape (controllers, mounts, files).
    recorded = [json.loads(line)["cgroup_view"] for line in RECORDED_VIEW.read_text().splitlines()]
    same_user = [r for r in recorded if r["uid"] == view["uid"]]
    assert len(same_user) == 1
    shape = (lambda v: ([line.split(":")[:2] for line in v["proc_self_cgroup"]],
                        [line.split(" ")[4:6] for line in v["mountinfo"]],
                        sorted(v["files"]), v["open_for_write"]))
    assert shape(same_user[0]) == shape(view)


def test_in_a_100m_container_sentinel_stops_the_leaker_before_the_kernel(image, tmp_path):
    proc = run_limited(image, "--max-rss", "60Mi", "--log-format", "json", "--",
                       *LEAK_THEN_OOM_CONTROL, cwd=tmp_path)  # a regression is an OOM kill
    logs = json_logs(proc.stderr)
    assert proc.returncode == 143, proc.stdout + proc.stderr
    assert [e["signal"] for e in logs if e.get("event") == "signal_sent"] == ["SIGTERM"]
    assert "got SIGTERM" in proc.stdout
    assert "oom_kill 0" in proc.stdout, proc.stdout  # the kernel never had to act


def test_with_sentinels_limit_above_the_containers_the_kernel_kills_137(image, tmp_path):
    """Negative control: --max-rss 200Mi in a 100 MiB container. The kernel's OOM killer
    takes the leaker (v1 has no oom.group: Sentinel, PID 1, survives and reports it), the
    container exits 137, the kernel's oom_kill counter says 1, Sentinel sent nothing."""
    proc = run_limited(image, "--max-rss", "200Mi", "--log-format", "json", "--",
                       *LEAK_THEN_OOM_CONTROL, cwd=tmp_path)
    logs = json_logs(proc.stderr)
    assert proc.returncode == 137, proc.stdout + proc.stderr
    assert not [e for e in logs if e.get("event") == "signal_sent"], proc.stderr
    assert "oom_kill 1" in proc.stdout, proc.stdout


# -- --probe ebpf in the image (issue 12) --------------------------------------------------

EBPF_RUN = ("--probe", "ebpf", "--max-rss", "64Mi", "--log-format", "json", "--log-level", "debug",
            "--", "python", "leaker.py", "--rate", "50")


def ebpf_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """Every line on stderr that speaks of the eBPF probe's loading (JSON or not)."""
    return [line for line in proc.stderr.splitlines() if "eBPF probe" in line and "loaded" in line]


def test_the_kernels_btf_is_readable_in_a_container(image):
    """The CO-RE object is relocated against /sys/kernel/btf/vmlinux: podman's read-only
    /sys shows it to the image's user, no mount needed (the chart relies on the same)."""
    proc = run(image, "--no-metrics", "--no-socket", "--", "python", "-c",
               "print(open('/sys/kernel/btf/vmlinux', 'rb').read(2).hex())")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "9feb", proc.stdout  # BTF_MAGIC 0xeB9F, little-endian


def test_probe_ebpf_under_podmans_defaults_says_why_in_one_line_and_polls(image):
    """No capabilities and podman's seccomp profile: bpf(2) is refused. One WARNING
    names the rights that would allow it; polling /proc stops the leaker as before."""
    proc = run(image, *EBPF_RUN)
    assert proc.returncode == 143, proc.stdout + proc.stderr
    lines = ebpf_lines(proc)
    assert len(lines) == 1, lines
    (event,) = [e for e in json_logs(proc.stderr) if e.get("event") == "ebpf"]
    assert event["loaded"] is False and event["level"] == "warning", event
    assert event["msg"].startswith("eBPF probe not loaded: ") and \
        event["msg"].endswith("; polling /proc instead"), event["msg"]
    for right in ("CAP_BPF", "CAP_PERFMON", "seccomp", "CAP_SYS_ADMIN"):
        assert right in event["msg"], event["msg"]
    logs = json_logs(proc.stderr)
    assert [e["signal"] for e in logs if e.get("event") == "signal_sent"] == ["SIGTERM"]
    assert not [e for e in logs if str(e.get("source", "")).startswith("ebpf_")], proc.stderr
    assert "got SIGTERM" in proc.stdout


@pytest.mark.parametrize("rights", [
    ("--cap-add", "SYS_ADMIN"),
    ("--cap-add", "BPF", "--cap-add", "PERFMON", "--security-opt", "seccomp=unconfined"),
], ids=["sys-admin", "bpf-perfmon-unconfined"])
def test_probe_ebpf_loads_with_the_rights_and_the_kernel_wakes_sentinel(image, rights):
    """With the rights (README: eBPF probe) the object loads from the wheel through the
    image's libbpf.so.1, the kernel follows the leaker (in the container's PID
    namespace) and its records wake Sentinel, which stops it with SIGTERM: 143."""
    proc = podman("run", "--rm", "--network", "none", *rights, image, *EBPF_RUN,
                  timeout=60, check=False)
    assert proc.returncode == 143, proc.stdout + proc.stderr
    lines = ebpf_lines(proc)
    assert len(lines) == 1 and "eBPF probe loaded in " in lines[0], lines
    logs = json_logs(proc.stderr)
    (event,) = [e for e in logs if e.get("event") == "ebpf"]
    assert event["loaded"] is True, event
    woken = [e["source"] for e in logs if e.get("event") == "wakeup"
             and str(e.get("source", "")).startswith("ebpf_")]
    assert woken, "the kernel never woke Sentinel: " + proc.stderr[-3000:]
    assert [e["signal"] for e in logs if e.get("event") == "signal_sent"] == ["SIGTERM"]
    assert "got SIGTERM" in proc.stdout


def test_a_wheel_without_the_bpf_object_is_refused_in_one_line(image, tmp_path):
    """Bad input: the sentinel_guard wheel built before `make bpf`. The build stage
    stops with one line (after pip, before any image is made)."""
    wheelhouse = tmp_path / "dist" / "wheelhouse"
    shutil.copytree(WHEELHOUSE, wheelhouse)
    (wheel,) = wheelhouse.glob("sentinel_guard-*.whl")
    stripped = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(stripped, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("sentinel.bpf.o"):
                continue
            if info.filename.endswith(".dist-info/RECORD"):
                data = b"".join(line for line in data.splitlines(keepends=True)
                                if b"sentinel.bpf.o" not in line)
            dst.writestr(info, data)
    stripped.replace(wheel)
    proc = podman("build", "--quiet", "--layers=false", "--network", "none", "--pull=never",
                  "--build-arg", f"BASE={BASE_IMAGE}", "-f", REPO / "docker" / "Dockerfile",
                  "-t", f"localhost/sentinel:refused-{uuid.uuid4().hex[:8]}", tmp_path,
                  timeout=300, check=False)
    assert proc.returncode != 0
    refusals = [line for line in proc.stderr.splitlines() if line.startswith("wheelhouse: ")]
    assert refusals == ["wheelhouse: the sentinel_guard wheel has no eBPF object "
                        "(sentinel/probes/bpf/sentinel.bpf.o, for --probe ebpf): run make bpf "
                        "before building the wheel (make image does both), then rebuild "
                        "dist/wheelhouse"], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def runc_rootfs(image, tmp_path_factory) -> Path:
    """The image's filesystem, exported once, for runc bundles (see below)."""
    rootfs = tmp_path_factory.mktemp("runc") / "rootfs"
    rootfs.mkdir()
    ctr = podman("create", image).stdout.strip()
    try:
        sh(["bash", "-o", "pipefail", "-c", 'podman export "$0" | tar -x -C "$1"', ctr, rootfs],
           timeout=120)
    finally:
        podman("rm", "--force", ctr, check=False)
    return rootfs


def chart_probe_security(*sets: str) -> tuple[dict, dict]:
    """(the Sentinel container's securityContext, the pod's) as the chart renders them
    with probe: ebpf and ``sets`` (real helm, .tools/bin after
    scripts/install-k8s-tools.sh)."""
    sh(["sh", REPO / "scripts" / "install-k8s-tools.sh", REPO / ".tools" / "bin"], timeout=600)
    args = [a for s in ("probe=ebpf", *sets) for a in ("--set", s)]
    out = sh([REPO / ".tools" / "bin" / "helm", "template", "demo", REPO / "charts" / "sentinel",
              *args], timeout=60).stdout
    (deployment,) = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = [c for c in pod.get("initContainers", []) + pod["containers"]
                    if c["command"][0] == "sentinel"]
    return container["securityContext"], pod["securityContext"]


@pytest.mark.parametrize("as_user, loads", [(None, True), (UID, False)],
                         ids=["the-charts-rights", "the-same-as-uid-10001"])
def test_the_charts_probe_rights_load_the_probe_as_kubernetes_applies_them(
        runc_rootfs, tmp_path, as_user, loads):
    """The chart's probe: ebpf securityContext, applied as the kubelet's runtime applies
    it: runc with containerd's capability sets for capabilities.add after drop ALL
    (bounding, effective, permitted; never ambient: kubernetes/kubernetes#56374),
    no_new_privs for allowPrivilegeEscalation: false, the read-only root, no seccomp
    filter for Unconfined. The probe loads and the leaker is stopped. Negative control:
    the same rights as UID 10001 (the chart's user without the probe): the execve drops
    both capabilities, one EPERM line, polling stops the leaker; hence runAsUser 0."""
    sc, pod = chart_probe_security()
    assert sc["seccompProfile"] == {"type": "Unconfined"} and sc["capabilities"]["drop"] == ["ALL"]
    caps = [f"CAP_{c}" for c in sc["capabilities"]["add"]]
    uid = as_user if as_user is not None else sc.get("runAsUser", pod["runAsUser"])
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    sh(["runc", "spec", "--bundle", bundle], timeout=30)
    spec = json.loads((bundle / "config.json").read_text())
    spec["root"] = {"path": str(runc_rootfs), "readonly": sc["readOnlyRootFilesystem"]}
    spec["process"].update(
        terminal=False, cwd="/app", user={"uid": uid, "gid": pod["runAsGroup"]},
        noNewPrivileges=not sc["allowPrivilegeEscalation"],
        capabilities={"bounding": caps, "effective": caps, "permitted": caps},
        args=["/usr/local/bin/sentinel", "run", "--probe", "ebpf", "--max-rss", "64Mi",
              "--no-socket", "--no-metrics", "--log-format", "json", "--",
              "python", "leaker.py", "--rate", "50"])
    assert "seccomp" not in spec.get("linux", {})  # runc spec's default: Unconfined
    (bundle / "config.json").write_text(json.dumps(spec))
    name = f"sentinel-test-{uuid.uuid4().hex[:8]}"
    try:
        proc = sh(["runc", "run", "--bundle", bundle, name], timeout=60, check=False)
    finally:
        sh(["runc", "delete", "--force", name], timeout=30, check=False)
    assert proc.returncode == 143, proc.stdout + proc.stderr
    (event,) = [e for e in json_logs(proc.stderr) if e.get("event") == "ebpf"]
    assert event["loaded"] is loads, event
    if not loads:
        assert event["reason"] == "EPERM" and "CAP_BPF" in event["msg"], event


@pytest.mark.parametrize("drop_kill", [False, True], ids=["the-charts-rights", "without-kill"])
def test_the_charts_sidecar_probe_rights_load_the_probe_and_stop_the_workload(image, drop_kill):
    """mode: sidecar with probe: ebpf, as podman can stand for the pod: a pause-like
    first container holds the shared PID namespace (shareProcessNamespace), the workload
    runs as UID 10001 in a second container, and `sentinel watch` in a third with the
    chart's rendered securityContext (root, drop ALL, add BPF PERFMON KILL, Unconfined,
    no_new_privs, read-only root). The probe loads and the leaker is stopped (143).
    Negative control, the same without KILL: root may not signal UID 10001, Sentinel
    says so (and waits, never attaching) and the leaker runs to its own end (exit 0)."""
    sc, pod = chart_probe_security("mode=sidecar")
    add = [c for c in sc["capabilities"]["add"] if not (drop_kill and c == "KILL")]
    assert sc["capabilities"]["add"] == ["BPF", "PERFMON", "KILL"] and sc["runAsUser"] == 0
    assert sc["seccompProfile"] == {"type": "Unconfined"}
    rights = ["--user", f"{sc['runAsUser']}:{pod['runAsGroup']}", "--cap-drop", "ALL",
              *[a for c in add for a in ("--cap-add", c)], "--security-opt", "seccomp=unconfined",
              *(["--security-opt", "no-new-privileges"] if not sc["allowPrivilegeEscalation"] else []),
              *(["--read-only"] if sc["readOnlyRootFilesystem"] else [])]
    tag = uuid.uuid4().hex[:8]
    pause, workload, sentinel = (f"sentinel-test-{tag}-{n}" for n in ("pause", "workload", "sentinel"))
    try:
        podman("run", "--detach", "--name", pause, "--network", "none", "--entrypoint", "sleep",
               image, "infinity")
        podman("run", "--detach", "--name", sentinel, "--pid", f"container:{pause}",
               "--network", "none", *rights, "--entrypoint", "sentinel", image, "watch",
               "--target-cmdline", r"leaker\.py", "--probe", "ebpf", "--max-rss", "64Mi",
               "--log-format", "json", "--no-socket", "--no-metrics")
        podman("run", "--detach", "--name", workload, "--pid", f"container:{pause}",
               "--network", "none", "--entrypoint", "python", image, "leaker.py", "--rate", "50",
               "--max", "120", "--exit-at-max")
        code = int(podman("wait", workload, timeout=60).stdout.strip())
        logs = json_logs(podman("logs", sentinel).stderr)
    finally:
        podman("rm", "--force", "--time", "0", sentinel, workload, pause, check=False)
    sent = [e["signal"] for e in logs if e.get("event") == "signal_sent"]
    loads = [e["loaded"] for e in logs if e.get("event") == "ebpf"]
    if drop_kill:  # it never attaches, so it never loads the probe either
        assert code == 0 and not sent and not loads, logs
        assert any("without CAP_KILL" in e["msg"] for e in logs), logs
    else:
        assert code == 143 and sent == ["SIGTERM"], logs
        assert loads == [True], logs
