#!/usr/bin/env python3
"""Print what a process sees of its cgroups, as one JSON line {"cgroup_view": {...}}.

Run inside a podman container (tests/integration/test_image.py) and inside the cgroup v2
guest (guest_cgroup_view.py), so cgroup discovery can be checked against real views:

- ``proc_self_cgroup``: the lines of /proc/self/cgroup (v1 "N:controllers:/path", v2 "0::/path");
- ``mountinfo``: the /proc/self/mountinfo lines of cgroup and cgroup2 mounts (field 4 is the
  mount's root: with a host cgroup namespace it is not "/", and the group's directory is
  mount point + (path minus root));
- ``files``: in each cgroup mount point and each group directory under it (mount point +
  (path minus root)), the memory files' content (or the errno name): v1 memory.limit_in_bytes, memory.usage_in_bytes, memory.oom_control; v2 memory.max,
  memory.current, memory.events, memory.oom.group, memory.high;
- ``open_for_write``: the errno name of opening a limit file for writing ("EROFS" on a
  read-only cgroupfs, as in a pod), or "ok" (nothing is written).

Standard library only; any user.
"""

import errno
import json
import os

V1 = ("memory.limit_in_bytes", "memory.usage_in_bytes", "memory.oom_control")
V2 = ("memory.max", "memory.current", "memory.events", "memory.oom.group", "memory.high")


def read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))


def open_for_write(path: str) -> str:
    try:
        os.close(os.open(path, os.O_WRONLY))
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))


def group_dirs(cgroup_lines: list[str], mounts: list[str]) -> list[str]:
    """Candidate directories of this process's groups: each cgroup mount's point, and the
    point joined to (the /proc/self/cgroup path minus the mount's root) where the path lies
    under that root. A test helper for recording, not Sentinel's discovery."""
    paths = {}
    for line in cgroup_lines:
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else ["unified"]:
            paths[c] = path
    dirs = []
    for line in mounts:
        fields, (fstype, _, superopts) = line.split(" "), line.split(" - ", 1)[1].split(" ")
        root, point = fields[3], fields[4]
        keys = ["unified"] if fstype == "cgroup2" else superopts.split(",")
        dirs.append(point)
        for key in keys:
            path = paths.get(key)
            if path is not None and (path + "/").startswith(root.rstrip("/") + "/"):
                dirs.append(os.path.normpath(point + "/" + path[len(root.rstrip("/")):]))
    return sorted(set(dirs))


def view() -> dict:
    with open("/proc/self/cgroup") as f:
        cgroup_lines = f.read().splitlines()
    with open("/proc/self/mountinfo") as f:
        mounts = [line for line in f.read().splitlines()
                  if line.split(" - ", 1)[-1].split(" ", 1)[0] in ("cgroup", "cgroup2")]
    files, writable = {}, {}
    for directory in group_dirs(cgroup_lines, mounts):
        for name in V1 + V2:
            path = f"{directory}/{name}"
            if os.path.exists(path):
                files[path] = read(path)
        limit = next((f"{directory}/{n}" for n in ("memory.limit_in_bytes", "memory.max")
                      if os.path.exists(f"{directory}/{n}")), None)
        if limit:
            writable[limit] = open_for_write(limit)
    return {"uid": os.getuid(), "pid": os.getpid(), "proc_self_cgroup": cgroup_lines,
            "mountinfo": mounts, "files": files, "open_for_write": writable}


if __name__ == "__main__":
    print(json.dumps({"cgroup_view": view()}), flush=True)
