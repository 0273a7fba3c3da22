"""--clamp-high on real cgroup v2: the workload cannot grow during the grace period.

Sidecar-ish layout (as guest_kernel_oom_reported): the workload's group and Sentinel's are
siblings under one parent, `--cgroup-root` names the workload's. A leaker that ignores
SIGTERM grows 50 MiB/s past --max-rss 60Mi; at the SIGTERM Sentinel sets the workload's
memory.high to its memory.current, so during the 3 s grace period the kernel throttles it
instead of letting it add ~150 MiB; after the SIGKILL memory.high is "max" again.
Negative control: the same run without --clamp-high grows on through the grace period.
"""

from vmlib import (LEAKER, MiB, SENTINEL, Group, check, fact, finish, json_logs,
                   signals_sent, wait_until)
import subprocess


def run(name: str, *extra: str) -> dict:
    with Group(name, oom_group=False) as parent:
        parent.write("cgroup.subtree_control", "+memory")
        with Group(f"{name}/workload") as workload, \
                Group(f"{name}/sentinel", oom_group=False) as sentinel:
            proc = sentinel.spawn(
                [*SENTINEL, "run", "--max-rss", "60Mi", "--grace-period", "3s", *extra,
                 "--cgroup-root", workload.path, "--no-metrics", "--no-socket",
                 "--log-format", "json", "--", "/bin/sh", "-c",
                 f'echo $$ > {workload.path}/cgroup.procs && exec python3 {LEAKER} '
                 '--rate 50 --ignore-term --quiet'],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            clamped = None
            if extra:
                clamped = wait_until(lambda: (lambda v: v if v != "max" else None)(
                    workload.read("memory.high").strip()), 30, "memory.high to be clamped")
            out, err = proc.communicate(timeout=90)
            logs = json_logs(err)
            crossed = [e for e in logs if e.get("event") == "limit_crossed"]
            return {"exit": proc.returncode, "signals": signals_sent(logs),
                    "clamped": int(clamped) if clamped else None,
                    "high_after": workload.read("memory.high").strip(),
                    "peak": workload.number("memory.peak"),
                    "at_sigterm": crossed[0]["value_bytes"] if crossed else None,
                    "stderr": err[-1500:]}


with_clamp = run("clamp-high", "--clamp-high")
without = run("no-clamp-high")
fact(with_clamp={k: v for k, v in with_clamp.items() if k != "stderr"},
     without={k: v for k, v in without.items() if k != "stderr"})
check("SIGTERM then SIGKILL after the grace period, exit 137",
      with_clamp["exit"] == 137 and with_clamp["signals"] == ["SIGTERM", "SIGKILL"],
      stderr=with_clamp["stderr"])
check("memory.high was clamped near the usage at SIGTERM", with_clamp["clamped"] is not None
      and with_clamp["clamped"] < 120 * MiB, clamped=with_clamp["clamped"])
check("the workload barely grew during the grace period",
      with_clamp["peak"] < with_clamp["clamped"] + 24 * MiB, peak=with_clamp["peak"])
check("memory.high restored to max", with_clamp["high_after"] == "max",
      high_after=with_clamp["high_after"])
check("negative control: without --clamp-high it grew on",
      without["exit"] == 137 and without["peak"] > with_clamp["peak"] + 60 * MiB,
      peak=without["peak"], stderr=without["stderr"])

finish()
