"""A real cgroup v2 memory controller, in a QEMU guest: scripts/cgroup2-vm.py.

These hosts are cgroup v1 hybrids; the guest (Debian's kernel, the project's base image as
its initramfs, Sentinel's wheels installed into it) boots in about 20 s under TCG and runs
every tests/vm/guest_*.py once (module fixture). Each scenario asserts in the guest (its
"check" lines) and this file asserts its exit and checks, plus the facts that matter most:

- guest_wrapper_sigterm: Sentinel as a wrapper inside a group with memory.max 100 MiB and
  memory.oom.group 1 stops a leaker with SIGTERM (exit 143); memory.events oom_kill stays 0.
- guest_kernel_oom (negative control): with --max-rss above memory.max the kernel kills the
  whole group, Sentinel included (SIGKILL), and oom_kill rises.
- guest_kernel_oom_reported: the workload in a child group (memory.max 100 MiB, oom.group
  1), Sentinel in a sibling with --cgroup-root naming it: the kernel's kill is reported as
  kernel_oom, Sentinel survives and exits 137.
- guest_early_sigkill: a leaker ignoring SIGTERM would reach memory.max within the grace
  period; Sentinel SIGKILLs early (oom_kill 0); with --no-early-sigkill the kernel's group
  kill takes Sentinel too.
- guest_clamp_high: --clamp-high sets the workload's memory.high to its usage at SIGTERM
  (Sentinel in a sibling group): it barely grows during the grace period, memory.high is
  "max" again afterwards; without the flag it grows on.
- guest_measure_cgroup: --measure cgroup shows memory.current/memory.max in status and
  /metrics.
- guest_wakeup: memory.events (high) wakes Sentinel (5 s --interval) before its tick.
- guest_auto: --max-rss auto stops the leaker before the kernel; without a limit, refused.

A new scenario is one file in tests/vm/ (see tests/vm/vmlib.py); it is picked up here
without changes. `make vm-test` runs this file. Cost: about 20 s of boot plus about 15 s
to build the guest's caches (.cache/vm/) once per image and source tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "scripts" / "cgroup2-vm.py"
SCENARIOS = sorted(p.stem for p in (REPO / "tests" / "vm").glob("guest_*.py"))
MiB = 2**20

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def sh(cmd: list, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def vm() -> dict:
    """One boot of the guest: {"vm": timings, "guest": ..., scenario: [records]}."""
    sh(["bash", REPO / "scripts" / "install-system-deps.sh"], timeout=900)
    sh(["bash", REPO / "scripts" / "make-base-image.sh"], timeout=900)
    t0 = time.monotonic()
    proc = sh([sys.executable, RUNNER], timeout=1100)
    results: dict = {}
    for line in proc.stdout.splitlines():
        record = json.loads(line)
        if "scenario" in record:
            results.setdefault(record.pop("scenario"), []).append(record)
        else:
            results.update(record)
    print(f"\ncgroup2 VM: {time.monotonic() - t0:.1f} s in all; {results['vm']}")
    return results


def facts(vm: dict, scenario: str) -> dict:
    """A scenario's fact lines merged into one dict (checks and the finish left out)."""
    merged: dict = {}
    for r in vm.get(scenario, []):
        if "check" not in r and "finished" not in r:
            merged.update(r)
    return merged


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_ran_and_passed_its_checks(vm, scenario):
    records = vm.get(scenario)
    assert records, f"{scenario} printed nothing in the guest (console: .cache/vm/console.log)"
    finished = [r["finished"] for r in records if "finished" in r]
    stderr = "".join(r.get("stderr", "") for r in records)
    assert finished and finished[0]["exit"] == 0 and not finished[0].get("timed_out"), \
        (finished, stderr)
    checks = [r for r in records if "check" in r]
    assert checks, f"{scenario} asserted nothing"
    failed = [r for r in checks if not r["ok"]]
    assert not failed, failed


def test_guest_has_a_cgroup_v2_kernel(vm):
    assert vm["vm"]["ended"] is True
    assert vm["guest"]["kernel"].endswith("-amd64")
    assert vm["vm"]["python"] == "3.11"


def test_sentinel_stops_the_leaker_before_the_kernel_does(vm):
    f = facts(vm, "guest_wrapper_sigterm")
    assert f["sentinel_exit"] == 143, f
    assert f["signals_sent"] == ["SIGTERM"], f
    assert f["memory_events"]["oom_kill"] == 0, f
    assert f["memory_max_bytes"] == 100 * MiB
    assert f["memory_peak_bytes"] < 100 * MiB


def test_above_memory_max_the_kernel_kills_the_group_sentinel_included(vm):
    f = facts(vm, "guest_kernel_oom")
    assert f["sentinel_exit"] == -9, f  # SIGKILL, from the kernel: Sentinel sent nothing
    assert f["signals_sent"] == [], f
    assert f["memory_events"]["oom_kill"] >= 1, f
    assert f["memory_events"]["oom_group_kill"] >= 1, f


def test_a_kernel_oom_kill_of_the_workload_is_reported_as_kernel_oom(vm):
    f = facts(vm, "guest_kernel_oom_reported")
    assert f["sentinel_exit"] == 137 and f["signals_sent"] == [], f
    assert f["memory_events"]["oom_kill"] >= 1, f
    oom = f["kernel_oom_kill"]
    assert oom["kill"]["reason"] == "kernel_oom" and oom["cgroup_limit_bytes"] == 100 * MiB


def test_sentinel_sigkills_before_memory_max_within_the_grace_period(vm):
    f = facts(vm, "guest_early_sigkill")
    assert f["sentinel_exit"] == 137 and f["signals_sent"] == ["SIGTERM", "SIGKILL"], f
    assert "hard limit 200.0 MiB" in f["early_sigkill_reason"], f
    assert f["memory_events"]["oom_kill"] == 0, f
    assert f["no_early_sentinel_exit"] == -9, f  # the negative control: Sentinel died too
    assert f["no_early_memory_events"]["oom_group_kill"] >= 1, f


def test_clamp_high_holds_the_workload_during_the_grace_period(vm):
    f = facts(vm, "guest_clamp_high")
    clamp, without = f["with_clamp"], f["without"]
    assert clamp["exit"] == 137 and clamp["high_after"] == "max", f
    assert clamp["peak"] < clamp["clamped"] + 24 * MiB, f
    assert without["clamped"] is None and without["peak"] > clamp["peak"] + 60 * MiB, f


def test_measure_cgroup_reads_the_v2_figures(vm):
    f = facts(vm, "guest_measure_cgroup")
    memory = f["status_memory"]
    assert memory["cgroup_memory_max_bytes"] == 100 * MiB, memory
    assert memory["cgroup_memory_current_bytes"] >= 20 * MiB, memory
    assert memory["measure_bytes"] == memory["cgroup_working_set_bytes"], memory
    assert f["sentinel_exit"] == 143, f


def test_memory_events_wake_sentinel_before_its_tick(vm):
    f = facts(vm, "guest_wakeup")
    assert f["sentinel_exit"] == 143, f
    assert "memory_events" in f["wakeups"], f
    assert f["crossed_after_seconds"] < 4.5, f  # the tick is every 5 s
    assert f["memory_events"]["oom_kill"] == 0, f


def test_max_rss_auto_acts_before_the_kernel_and_needs_a_limit(vm):
    f = facts(vm, "guest_auto")
    assert f["sentinel_exit"] == 143 and f["signals_sent"] == ["SIGTERM"], f
    assert f["memory_events"]["oom_kill"] == 0, f
    assert f["auto_limit_bytes"] == int(200 * MiB * 0.9) - 32 * MiB, f
    assert f["unlimited_exit"] == 2, f


def runner_error(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, RUNNER, *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_a_missing_kernel_is_one_line(tmp_path):
    proc = runner_error("--kernel", str(tmp_path / "vmlinuz-*-amd64"),
                        "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 2
    assert proc.stderr == (f"cgroup2-vm: no guest kernel matches {tmp_path}/vmlinuz-*-amd64: "
                           "install linux-image-amd64 (bash scripts/install-system-deps.sh) "
                           "or pass --kernel\n"), proc.stderr
    assert not proc.stdout


def test_a_missing_base_image_is_one_line(tmp_path):
    proc = runner_error("--image", "localhost/sentinel-base:no-such-tag",
                        "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 2
    assert proc.stderr == ("cgroup2-vm: base image localhost/sentinel-base:no-such-tag not "
                           "found: build it with bash scripts/make-base-image.sh\n"), proc.stderr


def test_an_unknown_scenario_is_one_line(tmp_path):
    proc = runner_error("--scenario", "no-such-scenario", "--cache-dir", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no scenario matches" in proc.stderr, proc.stderr


def test_a_missing_qemu_is_one_line(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("cpio", "gzip", "podman", "find", "tar"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    proc = subprocess.run([sys.executable, RUNNER, "--cache-dir", str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PATH": str(bin_dir)})
    assert proc.returncode == 2
    assert proc.stderr == ("cgroup2-vm: qemu-system-x86_64 is missing: install qemu-system-x86 "
                           "(bash scripts/install-system-deps.sh)\n"), proc.stderr
