"""The kernel's side of issue 9 on the real kernel (root, cgroup v1 memory and freezer):
process_mrelease on a frozen, SIGKILLed victim (freed at once only with the call),
oom_score_adj on a real child and on ourselves, v1 usage-threshold and OOM eventfds
waking a Wakeups epoll inside a running asyncio loop.

Every group is created at the top of its hierarchy with a unique name (never inside or
above the group this test runs in, which /proc/self/cgroup names) and removed in a
finally (docs/kernel.md, "Own v1 memory group").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from sentinel.core import kernel
from sentinel.probes import wakeups
from tests.conftest import wait_until

V1 = Path("/sys/fs/cgroup")
MiB = 1 << 20

# Touches N MiB of private anonymous memory, says "ready", then waits for stdin to close.
HOLDER = """
import mmap, sys
n = int(sys.argv[1]) << 20
m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for i in range(0, n, 4096):
    m[i] = 1
print("ready", flush=True)
sys.stdin.read()
"""

# Grows by 1 MiB steps (touched) up to a cap in MiB, at about 100 MiB/s (so a wake-up
# delayed by a loaded machine still comes long before the cap), then waits.
GROWER = """
import mmap, sys, time
cap = int(sys.argv[1])
chunks = []
print("ready", flush=True)
sys.stdin.readline()
for i in range(cap):
    m = mmap.mmap(-1, 1 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for j in range(0, 1 << 20, 4096):
        m[j] = 1
    chunks.append(m)
    time.sleep(0.01)
print("capped", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def v1_group(controller: str):
    """A new top-level v1 group of ``controller``; removed (retrying while busy) afterwards."""
    path = V1 / controller / f"sentinel-test-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    try:
        yield path
    finally:
        deadline = time.monotonic() + 10
        while True:
            try:
                path.rmdir()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def start_in(groups, script: str, *args: str) -> subprocess.Popen:
    """Start ``python -c script args`` inside every group (the shell joins them, then execs)."""
    joins = "; ".join(f"echo $$ > {g}/cgroup.procs" for g in groups)
    return subprocess.Popen(["sh", "-c", f'{joins}; exec "$0" -c "$@"', sys.executable,
                             script, *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def usage(group: Path) -> int:
    return int((group / "memory.usage_in_bytes").read_text())


def finish(child: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        child.kill()
    child.stdin.close()
    child.stdout.close()
    child.wait()


@pytest.mark.parametrize("mrelease", [True, False], ids=["with-mrelease", "without"])
def test_process_mrelease_frees_a_frozen_victim_at_once(mrelease):
    with v1_group("memory") as mem, v1_group("freezer") as frz:
        child = start_in([mem, frz], HOLDER, "256")
        pidfd = None
        try:
            assert child.stdout.readline() == "ready\n"
            assert usage(mem) >= 256 * MiB
            pidfd = kernel.pidfd_open(child.pid)
            assert pidfd is not None
            (frz / "freezer.state").write_text("FROZEN")
            wait_until(lambda: (frz / "freezer.state").read_text().strip() == "FROZEN",
                       what="the freezer group to freeze")
            assert kernel.pidfd_signal(pidfd, signal.SIGKILL) is True
            if mrelease:
                assert kernel.process_mrelease(pidfd) == kernel.MRELEASE_RELEASED
                wait_until(lambda: usage(mem) < 64 * MiB, timeout=1.0,
                           what=lambda: f"usage to drop, still {usage(mem)} bytes")
            else:
                # Negative control: frozen, the victim cannot free its own memory.
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:
                    assert usage(mem) >= 256 * MiB
                    time.sleep(0.05)
            (frz / "freezer.state").write_text("THAWED")
            assert child.wait(timeout=10) == -signal.SIGKILL
            # Reaped: the pidfd names a process that no longer exists, never a new one.
            assert kernel.process_mrelease(pidfd) == kernel.MRELEASE_ALREADY
            assert kernel.pidfd_signal(pidfd, signal.SIGKILL) is False
            assert usage(mem) < 64 * MiB
        finally:
            with contextlib.suppress(OSError):
                (frz / "freezer.state").write_text("THAWED")
            finish(child)
            if pidfd is not None:
                os.close(pidfd)


def test_pidfd_open_of_a_reaped_process_is_none():
    child = subprocess.Popen(["true"])
    child.wait()
    assert kernel.pidfd_open(child.pid) is None


def test_process_mrelease_on_a_live_process_is_not_dying_not_unavailable():
    # EINVAL: the process is not dying (a fact about this victim, not the kernel's
    # lack of the call). Classified apart from ENOSYS/EPERM, never raised.
    child = subprocess.Popen(["sleep", "60"])
    pidfd = kernel.pidfd_open(child.pid)
    try:
        assert kernel.process_mrelease(pidfd) == kernel.MRELEASE_NOT_DYING
        assert child.poll() is None
    finally:
        os.close(pidfd)
        child.kill()
        child.wait()


def test_process_mrelease_on_a_non_pidfd_is_an_error():
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        assert kernel.process_mrelease(fd) == kernel.MRELEASE_ERROR  # EBADF
    finally:
        os.close(fd)


def test_raise_oom_score_adj_on_a_real_child():
    child = subprocess.Popen(["sleep", "60"])
    try:
        assert kernel.raise_oom_score_adj(child.pid, 800) is None
        assert Path(f"/proc/{child.pid}/oom_score_adj").read_text() == "800\n"
        assert kernel.raise_oom_score_adj(child.pid, 2000) == (
            "oom_score_adj 2000 is out of range -1000..1000")
    finally:
        child.kill()
        child.wait()
    assert kernel.raise_oom_score_adj(child.pid, 800) == (
        f"could not set oom_score_adj of pid {child.pid}: the process is gone")


def test_lowering_our_own_oom_score_adj_needs_cap_sys_resource():
    # In a child Python, so this test process keeps its own score.
    code = ("from sentinel.core import kernel; import sys; "
            "r = kernel.lower_own_oom_score_adj(-900); "
            "print(repr(r)); print(open('/proc/self/oom_score_adj').read().strip())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2]).stdout.split("\n")
    result, value = out[0], out[1]
    effective = int(next(line for line in Path("/proc/self/status").read_text().splitlines()
                         if line.startswith("CapEff:")).split()[1], 16)
    if effective & (1 << 24):  # CAP_SYS_RESOURCE: the kernel lets it through
        assert (result, value) == ("None", "-900")
    else:  # root without CAP_SYS_RESOURCE, as here and in default containers: EACCES
        assert "needs CAP_SYS_RESOURCE" in result
        assert value == "0"


def test_v1_usage_threshold_wakes_the_loop_before_the_hard_cap():
    with v1_group("memory") as mem:
        (mem / "memory.limit_in_bytes").write_text(str(400 * MiB))
        child = start_in([mem], GROWER, "300")
        threshold = None
        try:
            assert child.stdout.readline() == "ready\n"
            base = usage(mem)
            # Armed far away first, then re-armed 64 MiB above the start, as a changed
            # limit would: the wake-up must come from the re-armed registration.
            threshold = wakeups.UsageThreshold(str(mem), base + 1024 * MiB)
            assert threshold.unavailable is None
            w = wakeups.Wakeups()
            assert w.add(threshold) is None
            first_fd = threshold.fd
            assert threshold.rearm(base + 64 * MiB) is None
            assert threshold.fd != first_fd and w.sources == [threshold]

            async def main():
                loop = asyncio.get_running_loop()
                woke: asyncio.Future = loop.create_future()

                def on_wake(wake):
                    if not woke.done():
                        woke.set_result((wake, usage(mem)))
                w.attach(loop, on_wake)
                child.stdin.write("go\n")
                child.stdin.flush()
                try:
                    return await asyncio.wait_for(woke, 20)
                finally:
                    w.close()

            wake, at = asyncio.run(main())
            assert wake == wakeups.Wakeup("usage_threshold", f"{mem}/memory.usage_in_bytes",
                                          f"memory.usage_in_bytes crossed {base + 64 * MiB} bytes")
            # Woken near the threshold (the kernel checks every ~128 pages), long
            # before the child's 300 MiB cap.
            assert base + 64 * MiB <= at < base + 128 * MiB
            assert child.poll() is None
        finally:
            if threshold is not None:
                threshold.close()
            finish(child)


def first_wakeup(source, timeout: float, then=None) -> wakeups.Wakeup:
    """The first ``Wakeup`` of ``source`` in a real asyncio loop (``Wakeups`` attached
    with ``loop.add_reader``); ``then()`` runs once attached. The Wakeups is closed
    afterwards, and with it the source (closing it again is harmless). Raises
    ``TimeoutError`` after ``timeout`` seconds."""
    w = wakeups.Wakeups()
    assert w.add(source) is None

    async def main():
        loop = asyncio.get_running_loop()
        woke: asyncio.Future = loop.create_future()
        w.attach(loop, lambda wake: woke.done() or woke.set_result(wake))
        if then is not None:
            then()
        try:
            return await asyncio.wait_for(woke, timeout)
        finally:
            w.close()

    return asyncio.run(main())


def test_v1_oom_notification_wakes_on_a_real_kernel_oom_kill():
    with v1_group("memory") as mem:
        (mem / "memory.limit_in_bytes").write_text(str(64 * MiB))
        with contextlib.suppress(OSError):  # no swap headroom: the kernel kills, not swaps
            (mem / "memory.memsw.limit_in_bytes").write_text(str(64 * MiB))
        child = start_in([mem], GROWER, "200")
        notify = wakeups.OomNotify(str(mem))
        try:
            assert child.stdout.readline() == "ready\n"
            assert notify.unavailable is None and notify.oom_kill == 0
            def go() -> None:
                child.stdin.write("go\n")
                child.stdin.flush()

            wake = first_wakeup(notify, 20, then=go)
            assert (wake.kind, wake.path, wake.reason) == (
                "oom_control", f"{mem}/memory.oom_control", "memory cgroup OOM")
            assert child.wait(timeout=10) == -signal.SIGKILL
            oom_kill = wakeups.parse_flat_keyed((mem / "memory.oom_control").read_text())
            assert oom_kill["oom_kill"] == 1
        finally:
            notify.close()
            finish(child)


def test_event_control_unavailable_names_the_reason(tmp_path):
    threshold = wakeups.UsageThreshold(str(tmp_path), 1 << 30)
    assert threshold.fd == -1
    assert threshold.unavailable == (f"cgroup v1 usage threshold unavailable: {tmp_path}/"
                                     "cgroup.event_control does not exist")
    notify = wakeups.OomNotify(str(tmp_path))
    assert notify.fd == -1 and "does not exist" in notify.unavailable


# Writes a file larger than its group's limit (its page cache is charged to the group),
# drops it from the cache, then re-reads it through an mmap forever: page-cache thrash,
# memory stall without harming the host (docs/kernel.md, "PSI trigger").
THRASHER = """
import mmap, os, sys
path = sys.argv[1]
with open(path, "wb") as f:
    for _ in range(96):
        f.write(os.urandom(1 << 20))
fd = os.open(path, os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
print("ready", flush=True)
while True:
    for i in range(0, len(m), 4096):
        m[i]
"""


def test_psi_trigger_wakes_the_loop_even_though_the_loop_poll_consumes_its_event(tmp_path):
    # Measured here: the loop's poll of the epoll fd reports it readable, and the
    # epoll.poll(0) after it finds nothing, because psi_trigger_poll clears the event
    # on the first poll. Wakeups reports the trigger anyway.
    with v1_group("memory") as mem:
        (mem / "memory.limit_in_bytes").write_text(str(32 * MiB))
        trigger = wakeups.PressureTrigger(stall_us=50_000, window_us=2_000_000)
        assert trigger.unavailable is None and trigger.note is None
        child = start_in([mem], THRASHER, str(tmp_path / "thrash.bin"))
        try:
            wake = first_wakeup(trigger, 30)
            assert wake == wakeups.Wakeup("pressure", "/proc/pressure/memory",
                                          "some memory stall over 0.05 s in 2 s")
        finally:
            trigger.close()
            finish(child)
