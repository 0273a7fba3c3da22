"""--measure cgroup reads the cgroup v2 figures in the guest.

Sentinel runs inside a group with memory.max 100 MiB around a leaker that grows to 20 MiB
and idles. Its status over the control socket and its /metrics show the group's
memory.current and memory.max, the enforced measure is the working set; then `stop` over
the socket ends the leaker with SIGTERM (exit 143).
"""

from vmlib import (LEAKER, MiB, SENTINEL, Group, check, control, fact, finish, scrape,
                   series, wait_until)
import subprocess

LIMIT = 100 * MiB
SOCKET, PORT = "/tmp/measure-cgroup.socket", 9187


def settled():
    try:
        memory = control(SOCKET, "status json")["status"].get("memory") or {}
    except (OSError, ValueError):
        return None
    current = memory.get("cgroup_memory_current_bytes")
    return memory if current and current >= 20 * MiB else None


with Group("measure-cgroup", max_bytes=LIMIT) as group:
    proc = group.spawn([*SENTINEL, "run", "--measure", "cgroup", "--max-rss", "90Mi",
                        "--socket", SOCKET, "--metrics-address", "127.0.0.1",
                        "--metrics-port", str(PORT), "--log-format", "json", "--",
                        "python3", LEAKER, "--rate", "50", "--max", "20"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        memory = wait_until(settled, 60, "status with memory.current >= 20 MiB")
        current = group.number("memory.current")
        metrics = wait_until(lambda: scrape(PORT), 10, "/metrics")
        fact(status_memory=memory, memory_current_bytes=current,
             metrics={k: v for k, v in metrics.items() if "cgroup" in k or "memory" in k})
        check("status: cgroup_memory_max_bytes is memory.max",
              memory["cgroup_memory_max_bytes"] == LIMIT, status_memory=memory)
        check("status: cgroup_memory_current_bytes near memory.current",
              abs(memory["cgroup_memory_current_bytes"] - current) < 16 * MiB,
              status=memory["cgroup_memory_current_bytes"], memory_current=current)
        check("status: the enforced measure is the working set",
              memory["measure_bytes"] == memory["cgroup_working_set_bytes"] is not None)
        check("metrics: sentinel_workload_cgroup_memory_max_bytes is memory.max",
              series(metrics, "sentinel_workload_cgroup_memory_max_bytes") == LIMIT)
        check("metrics: sentinel_workload_cgroup_memory_current_bytes present",
              (series(metrics, "sentinel_workload_cgroup_memory_current_bytes") or 0) >= 20 * MiB)
        reply = control(SOCKET, "stop")
        check("stop over the socket accepted", reply.get("ok") is True, reply=reply)
        out, err = proc.communicate(timeout=30)
        fact(sentinel_exit=proc.returncode)
        check("sentinel exits 143 after stop", proc.returncode == 143, stderr=err[-1500:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

finish()
