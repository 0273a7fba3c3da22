"""What a process inside a cgroup v2 group sees (tests/vm/cgroup_view.py), for discovery.

The guest has no cgroup namespace of its own: /proc/self/cgroup says "0::/<group>", the
cgroup2 mount's root is "/", and the group's directory is /sys/fs/cgroup/<group>, writable
(root, no container).
"""

import json
import subprocess

from vmlib import CGROUP, MiB, Group, check, fact, finish

LIMIT = 100 * MiB

with Group("cgroup-view", max_bytes=LIMIT) as group:
    out = group.spawn(["/usr/bin/python3", "/vm/cgroup_view.py"], stdout=subprocess.PIPE,
                      text=True).communicate(timeout=30)[0]
    view = json.loads(out)["cgroup_view"]
    fact(cgroup_view=view)
    check("/proc/self/cgroup is the v2 line of the group",
          view["proc_self_cgroup"] == ["0::/cgroup-view"], lines=view["proc_self_cgroup"])
    mount = [line.split(" ") for line in view["mountinfo"]]
    check("one cgroup2 mount, root /, at /sys/fs/cgroup",
          [(m[3], m[4]) for m in mount] == [("/", CGROUP)], mountinfo=view["mountinfo"])
    files = view["files"]
    check("the group's memory.max (mount point + path) reads 100 MiB",
          files.get(f"{CGROUP}/cgroup-view/memory.max", "").strip() == str(LIMIT), files=files)
    check("the group's memory.oom.group reads 1 (as the kubelet sets it)",
          files.get(f"{CGROUP}/cgroup-view/memory.oom.group", "").strip() == "1")
    check("the group's memory.max opens for writing (no container here)",
          view["open_for_write"].get(f"{CGROUP}/cgroup-view/memory.max") == "ok",
          open_for_write=view["open_for_write"])

finish()
