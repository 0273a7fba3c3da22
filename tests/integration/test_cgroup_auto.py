"""``--max-rss auto`` and ``--measure cgroup|working-set`` at start-up: resolved against a
fixture cgroup (``--cgroup-root``), refused with one line and exit 2 where there is no
cgroup or no limit; and a limit from ``auto`` that really stops a leaker."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sentinel.config.settings import parse_settings
from sentinel.launch import resolve_cgroup_settings
from sentinel.errors import UsageError
from sentinel.probes.cgroup import OWN_FOOTPRINT_BYTES
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
    assert said in err and "--cgroup-root" in err


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
