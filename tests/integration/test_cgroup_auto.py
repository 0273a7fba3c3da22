"""``--max-rss auto`` and ``--measure cgroup|working-set`` at start-up: resolved against a
fixture cgroup (``--cgroup-root``), refused with one line and exit 2 where there is no
cgroup or no limit; and a limit from ``auto`` that really stops a leaker."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sentinel.config.settings import parse_settings
from sentinel.launch import own_footprint_bytes, resolve_cgroup_settings
from sentinel.errors import UsageError
from sentinel.exporters import k8s
from sentinel.exporters.kubeenv import events_may_post
from sentinel.probes.cgroup import OWN_FOOTPRINT_BYTES, OWN_FOOTPRINT_EVENTS_BYTES
from tests.conftest import SENTINEL, clean_env, leaker

MiB = 1024 * 1024


def v1_group(tmp_path: Path, limit: str, usage: str = "10485760") -> Path:
    """A directory that stands for a v1 memory cgroup (the --cgroup-root PATH may be the
    cgroup's directory itself)."""
    d = tmp_path / "memcg"
    d.mkdir()
    (d / "memory.usage_in_bytes").write_text(usage + "\n")
    (d / "memory.limit_in_bytes").write_text(limit + "\n")
    (d / "memory.stat").write_text("total_inactive_file 0\n")
    (d / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    return d


def v2_proc(tmp_path: Path, max_text: str, high_text: str = "max\n") -> Path:
    """A fake /proc whose self/cgroup and mountinfo point at a v2 cgroup in tmp_path."""
    proc, cg = tmp_path / "proc", tmp_path / "cg"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text("0::/kubepods/pod1/ctr\n")
    (proc / "self" / "mountinfo").write_text(
        f"30 25 0:26 /kubepods/pod1/ctr {cg} ro,nosuid - cgroup2 cgroup2 rw\n")
    cg.mkdir()
    for name, text in (("memory.current", "1000\n"), ("memory.max", max_text),
                       ("memory.high", high_text), ("memory.stat", "inactive_file 0\n"),
                       ("memory.events", "oom_kill 0\n")):
        (cg / name).write_text(text)
    return proc


def settings(*argv: str):
    return parse_settings("run", [*argv, "--", "app"], {})


def test_auto_resolves_to_the_share_of_the_limit_less_sentinels_own(tmp_path):
    proc = v2_proc(tmp_path, "1073741824\n")
    s = resolve_cgroup_settings(settings("--max-rss", "auto:50%"), proc_root=str(proc))
    assert s.max_rss_bytes == 512 * MiB - OWN_FOOTPRINT_BYTES
    assert resolve_cgroup_settings(settings("--max-rss", "auto"), proc_root=str(proc)) \
        .max_rss_bytes == int(1024 * MiB * 0.9) - OWN_FOOTPRINT_BYTES


@pytest.mark.parametrize("measure", ["cgroup", "working-set"])
def test_with_a_cgroup_measure_sentinels_own_is_not_taken_off_twice(tmp_path, measure):
    proc = v2_proc(tmp_path, "1073741824\n")
    s = resolve_cgroup_settings(settings("--max-rss", "auto:50%", "--measure", measure),
                                proc_root=str(proc))
    assert s.max_rss_bytes == 512 * MiB  # the cgroup's usage counts Sentinel already


def test_auto_takes_memory_high_when_lower(tmp_path):
    proc = v2_proc(tmp_path, "1073741824\n", "536870912\n")
    s = resolve_cgroup_settings(settings("--max-rss", "auto:100%"), proc_root=str(proc))
    assert s.max_rss_bytes == 512 * MiB - OWN_FOOTPRINT_BYTES


def test_auto_without_a_limit_is_refused(tmp_path):
    proc = v2_proc(tmp_path, "max\n")
    with pytest.raises(UsageError, match='no memory limit \\(memory.max is "max"\\)'):
        resolve_cgroup_settings(settings("--max-rss", "auto"), proc_root=str(proc))


def test_nothing_to_resolve_leaves_settings_alone(tmp_path):
    s = settings("--max-rss", "200Mi")
    assert resolve_cgroup_settings(s, proc_root=str(tmp_path / "none")) is s


def no_cluster(tmp_path: Path) -> dict:
    """An environment without a cluster: no service host, no $KUBECONFIG, an empty HOME."""
    (tmp_path / "home").mkdir(exist_ok=True)
    return {"HOME": str(tmp_path / "home")}


@pytest.mark.parametrize("argv, env, own", [
    (["--k8s-events", "off"], {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, OWN_FOOTPRINT_BYTES),
    (["--k8s-events", "on"], {}, OWN_FOOTPRINT_EVENTS_BYTES),
    ([], {}, OWN_FOOTPRINT_BYTES),  # auto, no cluster: the client is never loaded
    ([], {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, OWN_FOOTPRINT_EVENTS_BYTES),
    (["--kubeconfig", "/nope"], {}, OWN_FOOTPRINT_EVENTS_BYTES),
])
def test_sentinels_own_is_56_mib_when_events_may_be_posted(tmp_path, argv, env, own):
    proc = v2_proc(tmp_path, "1073741824\n")
    environ = {**no_cluster(tmp_path), **env}
    s = resolve_cgroup_settings(settings("--max-rss", "auto:50%", *argv), proc_root=str(proc),
                                environ=environ)
    assert s.max_rss_bytes == 512 * MiB - own
    assert own_footprint_bytes(s, environ) == own


def test_events_may_post_whenever_a_cluster_is_found(tmp_path):
    # The cheap pre-spawn guess is a superset of find_cluster (events' real discovery).
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    kc = home / ".kube" / "config"
    envs = [{"HOME": str(tmp_path)}, {"HOME": str(home)}, {"HOME": str(tmp_path),
            "KUBECONFIG": f"/nope:{kc}"}, {"HOME": str(home), "KUBECONFIG": "/nope"},
            {"HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "1"}]
    kc.write_text("{}\n")
    seen = set()
    for env in envs:
        found = k8s.find_cluster(None, env) is not None
        assert events_may_post("auto", None, env) >= found, env
        seen.add(found)
    assert seen == {True, False}
    assert events_may_post("off", "/x", envs[1]) is False


@pytest.mark.parametrize("measure", ["cgroup", "working-set"])
def test_auto_100_percent_with_a_cgroup_measure_is_refused(tmp_path, measure):
    proc = v2_proc(tmp_path, "1073741824\n")
    with pytest.raises(UsageError, match=f"auto:100% with --measure {measure}: the limit would "
                       "be the kernel's own"):
        resolve_cgroup_settings(settings("--max-rss", "auto:100%", "--measure", measure),
                                proc_root=str(proc))
    s = resolve_cgroup_settings(settings("--max-rss", "auto:99.5%", "--measure", measure),
                                proc_root=str(proc))
    assert s.max_rss_bytes == int(1024 * MiB * 0.995)


def test_the_note_says_how_auto_was_resolved(tmp_path):
    proc = v2_proc(tmp_path, "1073741824\n")
    s = resolve_cgroup_settings(settings("--max-rss", "auto:85.5%"), proc_root=str(proc),
                                environ=no_cluster(tmp_path))
    value = int(1024 * MiB * 0.855) - 32 * MiB
    assert s.limit_auto_note == (
        f"--max-rss auto: cgroup v2 {tmp_path / 'cg'}: memory.max 1024 MiB from its own; "
        f"85.5% of it, less Sentinel's own 32 MiB: limit {value / MiB:.1f} MiB ({value} bytes)")
    high = resolve_cgroup_settings(
        settings("--max-rss", "auto", "--measure", "cgroup"),
        proc_root=str(v2_proc(tmp_path / "h", "max\n", "536870912\n"))).limit_auto_note
    assert "memory.high 512 MiB from its own (a throttle, not a kill limit: the kernel " \
           "slows the workload at memory.high and OOM-kills only at memory.max, unlimited)" \
           in high and "nothing off for Sentinel" in high


def test_the_note_names_the_parent_the_limit_comes_from(tmp_path):
    proc, cg = tmp_path / "proc", tmp_path / "cg"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text("0::/kubepods.slice/ctr\n")
    (proc / "self" / "mountinfo").write_text(f"30 25 0:26 / {cg} ro - cgroup2 cgroup2 rw\n")
    (cg / "kubepods.slice" / "ctr").mkdir(parents=True)
    (cg / "kubepods.slice" / "memory.max").write_text(f"{512 * MiB}\n")
    for name, text in (("memory.current", "1000\n"), ("memory.max", "max\n"),
                       ("memory.high", "max\n")):
        (cg / "kubepods.slice" / "ctr" / name).write_text(text)
    s = resolve_cgroup_settings(settings("--max-rss", "auto", "--measure", "working-set"),
                                proc_root=str(proc))
    assert s.max_rss_bytes == int(512 * MiB * 0.9)
    assert f"memory.max 512 MiB from {cg / 'kubepods.slice'} (a parent)" in s.limit_auto_note


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SENTINEL, "run", "--no-metrics", "--no-socket", *argv],
                          capture_output=True, text=True, timeout=60, env=clean_env(None))


def one_line_exit_2(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    return p.stderr


def test_cli_auto_without_a_limit_is_one_line_and_exit_2(tmp_path):
    root = v1_group(tmp_path, "9223372036854771712")  # v1's "unlimited"
    err = one_line_exit_2(run("--max-rss", "auto", "--cgroup-root", str(root), "--", "true"))
    assert "sentinel: error: --max-rss auto: the container has no memory limit " \
           "(memory.limit_in_bytes is unlimited); set resources.limits.memory" in err


@pytest.mark.parametrize("argv, said", [
    (["--max-rss", "auto"], "--max-rss auto: no cgroup memory controller is visible"),
    (["--measure", "working-set"], "--measure working-set: no cgroup memory controller"),
    (["--measure", "cgroup", "--max-rss", "100Mi"], "--measure cgroup: no cgroup memory"),
])
def test_cli_no_visible_cgroup_is_one_line_and_exit_2(tmp_path, argv, said):
    err = one_line_exit_2(run(*argv, "--cgroup-root", str(tmp_path / "nowhere"), "--", "true"))
    assert said in err and "--cgroup-root" in err and "it does not exist" in err


def test_cli_bad_share_is_one_line_and_exit_2():
    err = one_line_exit_2(run("--max-rss", "auto:150%", "--", "true"))
    assert "--max-rss: 'auto:150%': the share must be 1-100 %" in err


def test_cli_auto_in_watch_mode_is_refused_clearly():
    p = subprocess.run([*SENTINEL, "watch", "--target-pid", "1", "--max-rss", "auto"],
                       capture_output=True, text=True, timeout=60, env=clean_env(None))
    err = one_line_exit_2(p)
    assert "not available in watch mode yet" in err


@pytest.mark.parametrize("max_rss, code", [("auto:50%", 143), ("none", 0)])
def test_an_auto_limit_stops_a_leaker_and_without_one_it_runs_out(tmp_path, max_rss, code):
    # 50 % of 200 MiB less Sentinel's 32 MiB: 68 MiB. The leaker stops at 120 MiB and exits 0
    # unless stopped (SIGTERM: 143). The negative control has no limit.
    root = v1_group(tmp_path, str(200 * MiB))
    p = run("--max-rss", max_rss, "--cgroup-root", str(root), "--grace-period", "2s",
            "--log-format", "json", "--", *leaker("--rate", "300", "--max", "120",
                                                  "--exit-at-max", "--quiet"))
    assert p.returncode == code, p.stderr
    if code:
        assert f'"limit_bytes": {68 * MiB}' in p.stderr, p.stderr[-2000:]
        # Said once at start, after logging is set up: how auto was resolved.
        assert p.stderr.count(f"--max-rss auto: cgroup v1 {root}: memory.limit_in_bytes "
                              "200 MiB from its own; 50% of it, less Sentinel's own 32 MiB: "
                              f"limit 68 MiB ({68 * MiB} bytes)") == 1, p.stderr[-2000:]


def test_the_kubeconfig_fix_up_after_the_spawn_imports_only_os():
    # launch runs it right after the spawn: it must not pull in event bodies, the core's
    # state and the probe contract as exporters.k8s does.
    code = ("import sys\nbefore = set(sys.modules)\n"
            "from sentinel.exporters.kubeenv import absolute_kubeconfig_env\n"
            "print(sorted(m for m in set(sys.modules) - before if m.startswith('sentinel')))")
    p = subprocess.run([SENTINEL[0], "-c", code], capture_output=True, text=True, timeout=60,
                       env=clean_env(None))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "['sentinel', 'sentinel.exporters', 'sentinel.exporters.kubeenv']"
    assert k8s.absolute_kubeconfig_env is absolute_kubeconfig_env_of_kubeenv()


def absolute_kubeconfig_env_of_kubeenv():
    from sentinel.exporters.kubeenv import absolute_kubeconfig_env

    return absolute_kubeconfig_env
