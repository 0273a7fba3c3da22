"""A kernel OOM kill of the workload is reported as one (kernel_oom), on real cgroup v2.

With memory.oom.group 1 (as the kubelet sets it) a kernel OOM kill takes every process of
the group, Sentinel included (guest_kernel_oom), so nothing could be reported. Here the
WORKLOAD's group is a child with memory.max 100 MiB and oom.group 1, and Sentinel runs in a
sibling leaf of the same parent (a sidecar-ish layout; cgroup v2 allows processes only in
leaves). The workload joins its group in its first step (a shell writes its PID to
cgroup.procs, then execs the leaker: it is still Sentinel's child), and `--cgroup-root`
names the workload's group directory, so Sentinel reads its memory.events. --max-rss 1Gi
is far above memory.max: the kernel kills the leaker, Sentinel survives, reports
kernel_oom at ERROR and exits 137.
"""

from vmlib import (LEAKER, MiB, SENTINEL, Group, check, fact, finish, json_logs,
                   signals_sent, wait_until)
import subprocess

LIMIT = 100 * MiB

with Group("oom-reported", oom_group=False) as parent:
    parent.write("cgroup.subtree_control", "+memory")
    with Group("oom-reported/workload", max_bytes=LIMIT) as workload, \
            Group("oom-reported/sentinel", oom_group=False) as sentinel:
        proc = sentinel.spawn(
            [*SENTINEL, "run", "--max-rss", "1Gi", "--cgroup-root", workload.path,
             "--no-metrics", "--no-socket", "--log-format", "json", "--", "/bin/sh", "-c",
             f'echo $$ > {workload.path}/cgroup.procs && exec python3 {LEAKER} --rate 50'],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=90)
        wait_until(lambda: "populated 0" in workload.read("cgroup.events"), 10,
                   "an empty workload group")
        events = workload.events()
        logs = json_logs(err)
        oom = [e for e in logs if e.get("event") == "kernel_oom_kill"]
        fact(sentinel_exit=proc.returncode, memory_events=events,
             signals_sent=signals_sent(logs), kernel_oom_kill=oom[0] if oom else None)
        check("sentinel survived and exits 137", proc.returncode == 137, stderr=err[-1500:])
        check("sentinel sent no signal", signals_sent(logs) == [])
        check("the kernel's oom_kill rose in the workload's group", events["oom_kill"] >= 1,
              memory_events=events)
        check("one kernel_oom_kill, at ERROR, naming memory.max",
              len(oom) == 1 and oom[0]["level"] == "error"
              and oom[0]["cgroup_limit_bytes"] == LIMIT
              and oom[0]["kill"]["reason"] == "kernel_oom", kernel_oom_kill=oom)

finish()
