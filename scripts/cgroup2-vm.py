#!/usr/bin/env python3
"""Run Sentinel's real-kernel scenarios in a QEMU guest that has a cgroup v2 memory controller.

These hosts are cgroup v1 hybrids (the memory controller is v1); a QEMU TCG guest booting
Debian's kernel with the project's base image as its initramfs gives a real cgroup v2 in
about 20 s (KVM does not boot guests here). One boot runs every scenario.

    python3 scripts/cgroup2-vm.py                      # every tests/vm/guest_*.py
    python3 scripts/cgroup2-vm.py --scenario wrapper   # only guest_*wrapper*.py

Output: JSON lines on stdout, each with a "scenario" key (the file's stem): every JSON line
the scenario printed, {"output": LINE} for its other lines, {"stderr": TAIL} when it wrote
to stderr, then {"finished": {"exit": CODE, "seconds": S, "timed_out": BOOL}}; last, one line
{"vm": {...}} with the timings. Exit status 0 when the guest ran every scenario to the end
(whatever their results), 1 when the guest did not boot or finish, 2 on bad input or a
missing tool, each with one line on stderr. The guest's console is kept in
.cache/vm/console.log.

A scenario is a file tests/vm/guest_NAME.py run as root in the guest by /usr/bin/python3
(bookworm's 3.11) with Sentinel importable (PYTHONPATH=/opt/sentinel) and cwd /vm; it
passes when it exits 0 and prints no line with "ok": false. The guest has tests/vm/*.py
in /vm (vmlib.py: the helpers), tests/leaker.py and tests/children/*.py in /vm/children,
cgroup2 on /sys/fs/cgroup with +memory in the root's subtree_control, a tmpfs /tmp, lo up,
no swap, 1 GiB of RAM and 2 CPUs.

Caches under .cache/vm/ (gitignored): the base image's root file system as a cpio.gz keyed
on the image ID, Sentinel with its dependencies installed for the guest's Python (a
cpio.gz keyed on the hash of pyproject.toml and sentinel/). The kernel unpacks
concatenated cpio archives in order, so the initrd is those two plus a small one with /init
and the scenarios, built each run. A second run costs mostly the boot.

Standard library only: it runs before the venv exists (and in CI, after
scripts/install-system-deps.sh and scripts/make-base-image.sh).
"""

from __future__ import annotations

import argparse
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE_IMAGE = "localhost/sentinel-base:bookworm"
MARKER = "SENTINEL-VM "  # every line the guest's /init means for us starts with this
END = "SENTINEL-VM-END"
DIST = "sentinel-guard"


class HarnessError(Exception):
    """A one-line reason the harness cannot run or the guest did not finish; ``code`` is the
    exit status (2: bad input or a missing tool, 1: the guest failed)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def log(msg: str) -> None:
    print(f"cgroup2-vm: {msg}", file=sys.stderr, flush=True)


def run(cmd: list, *, timeout: float, what: str, **kw) -> subprocess.CompletedProcess:
    """Run ``cmd``; a non-zero exit becomes a HarnessError naming ``what`` and the last line."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=timeout, check=False, **kw)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["(no output)"]
        raise HarnessError(f"{what} failed (exit {proc.returncode}): {tail[0]}", code=1)
    return proc


def find_kernel(pattern: str) -> Path:
    kernels = sorted(glob.glob(pattern))
    if not kernels:
        raise HarnessError(f"no guest kernel matches {pattern}: install linux-image-amd64 "
                           "(bash scripts/install-system-deps.sh) or pass --kernel")
    return Path(kernels[-1])


def check_tools() -> None:
    for tool, package in (("qemu-system-x86_64", "qemu-system-x86"), ("cpio", "cpio"),
                          ("gzip", "gzip"), ("podman", "podman")):
        if not shutil.which(tool):
            raise HarnessError(f"{tool} is missing: install {package} "
                               "(bash scripts/install-system-deps.sh)")
    if os.geteuid() != 0:
        raise HarnessError("must run as root: the guest's root file system keeps the image's "
                           "owners and device nodes")


def pack(directory: Path, out: Path) -> None:
    """``find . | cpio -o -H newc | gzip -1`` of ``directory`` into ``out`` (atomically)."""
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        find = subprocess.Popen(["find", ".", "-print0"], cwd=directory, stdout=subprocess.PIPE)
        cpio = subprocess.Popen(["cpio", "--null", "--quiet", "-o", "-H", "newc"], cwd=directory,
                                stdin=find.stdout, stdout=subprocess.PIPE)
        find.stdout.close()
        gz = subprocess.Popen(["gzip", "-1"], stdin=cpio.stdout, stdout=f)
        cpio.stdout.close()
        codes = (gz.wait(), cpio.wait(), find.wait())
    if any(codes):
        tmp.unlink(missing_ok=True)
        raise HarnessError(f"packing {directory} failed (find/cpio/gzip exited {codes})", code=1)
    tmp.rename(out)


def guest_python(root: Path) -> str:
    """The guest's Python as "3.11", from its standard library's directory."""
    versions = sorted(p.parent.name[len("python"):] for p in root.glob("usr/lib/python3.*/os.py"))
    if not versions:
        raise HarnessError(f"{BASE_IMAGE} has no python3 under /usr/lib: rebuild it with "
                           "bash scripts/make-base-image.sh --rebuild")
    return versions[-1]


def base_archive(cache: Path, image: str) -> tuple[Path, str]:
    """The base image's root file system as a cpio.gz, and the guest's Python version.

    Cached as base-<image id>.cpio.gz: `podman create` + `podman export | tar -x` once per
    image ID."""
    inspect = subprocess.run(["podman", "image", "inspect", "--format", "{{.Id}}", image],
                             capture_output=True, text=True, check=False, timeout=60)
    if inspect.returncode != 0:
        raise HarnessError(f"base image {image} not found: build it with "
                           "bash scripts/make-base-image.sh")
    image_id = inspect.stdout.strip()[:16]
    archive, meta = cache / f"base-{image_id}.cpio.gz", cache / f"base-{image_id}.json"
    if archive.exists() and meta.exists():
        return archive, json.loads(meta.read_text())["python"]
    for old in cache.glob("base-*"):
        old.unlink()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(dir=cache, prefix="rootfs-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        cid = run(["podman", "create", "--pull=never", image, "/bin/true"], timeout=120,
                  what=f"podman create {image}").stdout.strip()
        try:
            export = subprocess.Popen(["podman", "export", cid], stdout=subprocess.PIPE)
            tar = subprocess.run(["tar", "-x", "--numeric-owner", "-C", root],
                                 stdin=export.stdout, capture_output=True, check=False)
            export.stdout.close()
            if export.wait() or tar.returncode:
                raise HarnessError(f"podman export {image} | tar -x failed: "
                                   f"{tar.stderr.decode(errors='replace').strip()[-200:]}", code=1)
        finally:
            subprocess.run(["podman", "rm", "--force", cid], capture_output=True, check=False)
        python = guest_python(root)
        pack(root, archive)
    meta.write_text(json.dumps({"image": image, "id": image_id, "python": python}))
    log(f"guest root file system from {image} ({image_id}) in {time.monotonic() - t0:.1f} s")
    return archive, python


def source_key(repo: Path, python: str) -> str:
    """Hash of what goes into Sentinel's wheel (pyproject.toml and sentinel/), and the
    guest's Python."""
    h = hashlib.sha256(python.encode())
    files = [repo / "pyproject.toml", *sorted((repo / "sentinel").rglob("*"))]
    for f in files:
        if f.is_file() and "__pycache__" not in f.parts:
            h.update(str(f.relative_to(repo)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<ver>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)"
                   r"-(?P<plat>[^-]+)\.whl$")


def wheel_fits(filename: str, python: str) -> bool:
    """Whether a wheel's tags (PEP 425) install on the guest: CPython ``python`` ("3.11"),
    glibc x86_64 (bookworm's glibc 2.36)."""
    m = WHEEL.match(filename)
    if not m:
        return False
    cp = "cp" + python.replace(".", "")
    minor = int(python.split(".")[1])
    pys, abis, plats = (set(m[k].split(".")) for k in ("py", "abi", "plat"))

    def py_ok(tag: str) -> bool:
        if tag in ("py3", cp) or tag == f"py{python.replace('.', '')}":
            return True
        return "abi3" in abis and tag.startswith("cp3") and tag[3:].isdigit() \
            and int(tag[3:]) <= minor
    abi_ok = bool(abis & {"none", "abi3", cp})
    plat_ok = any(p == "any" or (p.endswith("_x86_64") and (
        p == "linux_x86_64" or p.startswith("manylinux1") or p.startswith("manylinux20")
        or (p.startswith("manylinux_2_") and int(p.split("_")[2]) <= 36))) for p in plats)
    return any(py_ok(t) for t in pys) and abi_ok and plat_ok


def site_archive(cache: Path, repo: Path, python: str, pip_python: str) -> Path:
    """Sentinel and its dependencies installed under /opt/sentinel, as a cpio.gz.

    `pip wheel` of the tree into a wheelhouse, then `pip install --no-index --target` with
    the guest's Python version and ABI, so a binary wheel (psutil, PyYAML) that does not
    load in the guest is refused here, in one line, not in the guest."""
    key = source_key(repo, python)
    archive = cache / f"site-{key}.cpio.gz"
    if archive.exists():
        return archive
    for old in cache.glob("site-*"):
        old.unlink()
    t0 = time.monotonic()
    cp = "cp" + python.replace(".", "")
    with tempfile.TemporaryDirectory(dir=cache, prefix="site-") as tmp:
        wheelhouse, root = Path(tmp) / "wheelhouse", Path(tmp) / "root"
        run([pip_python, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
             "--wheel-dir", wheelhouse, repo], timeout=900, what="pip wheel")
        unfit = sorted(w.name for w in wheelhouse.glob("*.whl") if not wheel_fits(w.name, python))
        if unfit:
            raise HarnessError(f"wheel {unfit[0]} does not install on the guest's Python "
                               f"{python} ({cp}, glibc x86_64): run this script with a Python "
                               f"{python} (--pip-python)")
        run([pip_python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-index", "--find-links", wheelhouse, "--target", root / "opt" / "sentinel",
             "--python-version", python, "--implementation", "cp", "--abi", cp, "--abi", "abi3",
             "--abi", "none", "--only-binary=:all:",
             *[a for p in ("manylinux_2_36_x86_64", "manylinux_2_28_x86_64",
                           "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64")
               for a in ("--platform", p)], DIST],
            timeout=600, what="pip install --target (the guest's Python)")
        # Console scripts name the host's interpreter: the guest uses python3 -m sentinel.
        shutil.rmtree(root / "opt" / "sentinel" / "bin", ignore_errors=True)
        pack(root, archive)
    log(f"Sentinel for the guest's Python {python} in {time.monotonic() - t0:.1f} s")
    return archive


INIT = r'''#!/usr/bin/python3
"""/init of the cgroup v2 guest (written by scripts/cgroup2-vm.py): mount, run each
scenario with a timeout, print its lines behind a marker on the console, power off."""
import ctypes, fcntl, glob, json, os, select, socket, struct, subprocess, sys, time

MARKER, TIMEOUT = %(marker)r, %(timeout)r
libc = ctypes.CDLL(None, use_errno=True)


def mount(fstype, target, data=None):
    os.makedirs(target, exist_ok=True)
    if libc.mount(fstype.encode(), target.encode(), fstype.encode(), 0,
                  data.encode() if data else None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount -t {fstype} {target}: {os.strerror(err)}")


def emit(obj):
    sys.stdout.write(MARKER + json.dumps(obj) + "\n")
    sys.stdout.flush()


def lo_up():
    # No iproute2 in the minbase image: SIOCSIFFLAGS with IFF_UP|IFF_LOOPBACK|IFF_RUNNING.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, 0x8914, struct.pack("16sH22x", b"lo", 0x1 | 0x8 | 0x40))


def reap():
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return


def run_scenario(path):
    name = os.path.basename(path)[:-3]
    t0 = time.monotonic()
    with open(f"/tmp/{name}.stderr", "w+") as err:
        proc = subprocess.Popen(["/usr/bin/python3", path], cwd="/vm", stdout=subprocess.PIPE,
                                stderr=err, start_new_session=True, text=True,
                                env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                     "PYTHONPATH": "/opt/sentinel", "LANG": "C.UTF-8",
                                     "HOME": "/root", "PYTHONUNBUFFERED": "1"})
        timed_out, buf = False, ""
        while True:
            left = TIMEOUT - (time.monotonic() - t0)
            if left <= 0:
                timed_out = True
                os.killpg(proc.pid, 9)
                break
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if not ready:
                continue
            line = proc.stdout.readline()
            if not line:
                break
            line = line.rstrip("\n")
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            emit({"scenario": name, **obj} if isinstance(obj, dict)
                 else {"scenario": name, "output": line})
        code = proc.wait()
        try:
            os.killpg(proc.pid, 9)  # what the scenario left behind
        except ProcessLookupError:
            pass
        err.seek(0)
        tail = err.read()[-4000:]
    if tail:
        emit({"scenario": name, "stderr": tail})
    emit({"scenario": name, "finished": {"exit": code, "timed_out": timed_out,
                                         "seconds": round(time.monotonic() - t0, 3)}})
    reap()


def main():
    mount("proc", "/proc")
    mount("sysfs", "/sys")
    mount("devtmpfs", "/dev")
    mount("cgroup2", "/sys/fs/cgroup")
    mount("tmpfs", "/tmp")
    fd = os.open("/dev/console", os.O_RDWR)
    for n in (0, 1, 2):
        os.dup2(fd, n)
    # Kernel messages (an OOM kill's report) would cut our lines on the same console.
    with open("/proc/sys/kernel/printk", "w") as f:
        f.write("1")
    with open("/sys/fs/cgroup/cgroup.subtree_control", "w") as f:
        f.write("+memory")
    lo_up()
    emit({"guest": {"kernel": os.uname().release, "cpus": os.cpu_count(),
                    "uptime_seconds": float(open("/proc/uptime").read().split()[0])}})
    for path in sorted(glob.glob("/vm/guest_*.py")):
        try:
            run_scenario(path)
        except Exception as exc:  # the next scenario still runs
            emit({"scenario": os.path.basename(path)[:-3],
                  "finished": {"exit": None, "error": f"{type(exc).__name__}: {exc}"}})


try:
    main()
except Exception as exc:
    emit({"init_error": f"{type(exc).__name__}: {exc}"})
print("%(end)s", flush=True)
os.sync()
with open("/proc/sysrq-trigger", "w") as f:
    f.write("o")
time.sleep(30)  # the power-off is asynchronous; should it fail, init's exit panics (-no-reboot)
'''


def overlay_archive(tmp: Path, repo: Path, scenarios: list[Path], timeout: float) -> Path:
    """/init, /dev/console, /vm (tests/vm/*.py but only the chosen guest_*.py) and
    /vm/children (the leaker and the other test children), as a cpio.gz."""
    root = tmp / "overlay"
    (root / "vm" / "children").mkdir(parents=True)
    (root / "dev").mkdir()
    # The kernel opens /dev/console for init before anything is mounted.
    os.mknod(root / "dev" / "console", 0o600 | 0o020000, os.makedev(5, 1))
    init = root / "init"
    init.write_text(INIT % {"marker": MARKER, "timeout": timeout, "end": END})
    init.chmod(0o755)
    chosen = {p.name for p in scenarios}
    for f in sorted((repo / "tests" / "vm").glob("*.py")):
        if not f.name.startswith("guest_") or f.name in chosen:
            shutil.copy(f, root / "vm" / f.name)
    for f in [repo / "tests" / "leaker.py", *sorted((repo / "tests" / "children").glob("*.py"))]:
        shutil.copy(f, root / "vm" / "children" / f.name)
    archive = tmp / "overlay.cpio.gz"
    pack(root, archive)
    return archive


def boot(kernel: Path, initrd: Path, console_log: Path, *, timeout: float, memory: int,
         cpus: int) -> tuple[list[dict], bool, float]:
    """Boot the guest; its marked lines as dicts, whether it reached the end, the seconds."""
    cmd = ["qemu-system-x86_64", "-accel", "tcg,thread=multi", "-smp", str(cpus),
           "-m", str(memory), "-nographic", "-no-reboot", "-kernel", kernel, "-initrd", initrd,
           "-append", "console=ttyS0 quiet panic=-1"]
    t0 = time.monotonic()
    try:
        proc = subprocess.run([str(c) for c in cmd], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout, check=False)
        out, timed_out = proc.stdout, False
    except subprocess.TimeoutExpired as exc:
        out, timed_out = exc.stdout or b"", True
    seconds = time.monotonic() - t0
    text = out.decode(errors="replace").replace("\r", "")
    console_log.write_text(text)
    records, ended = [], False
    for line in text.splitlines():
        if END in line:
            ended = True
        at = line.find(MARKER)
        if at < 0:
            continue
        try:
            records.append(json.loads(line[at + len(MARKER):]))
        except ValueError:
            records.append({"unparsed": line[at:]})
    if timed_out:
        raise HarnessError(f"the guest did not power off within {timeout:.0f} s "
                           f"(console: {console_log})", code=1)
    return records, ended, seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", action="append", default=[],
                   help="run only tests/vm/guest_*.py whose name contains this (repeatable)")
    p.add_argument("--kernel", default="/boot/vmlinuz-*-amd64",
                   help="guest kernel (a glob; the newest match; default %(default)s)")
    p.add_argument("--image", default=BASE_IMAGE, help="base image (default %(default)s)")
    p.add_argument("--cache-dir", default=str(REPO / ".cache" / "vm"))
    p.add_argument("--pip-python", default=sys.executable,
                   help="Python whose pip builds the wheels (default: this one)")
    p.add_argument("--scenario-timeout", type=float, default=120.0,
                   help="seconds one scenario may take in the guest (default %(default)s)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds the whole boot may take (default %(default)s)")
    p.add_argument("--memory", type=int, default=1024, help="guest RAM in MiB (default 1024)")
    p.add_argument("--cpus", type=int, default=2)
    args = p.parse_args(argv)
    t0 = time.monotonic()
    try:
        scenarios = sorted((REPO / "tests" / "vm").glob("guest_*.py"))
        if args.scenario:
            scenarios = [s for s in scenarios if any(w in s.stem for w in args.scenario)]
        if not scenarios:
            raise HarnessError("no scenario matches: tests/vm/guest_*.py"
                               + (f" containing {args.scenario}" if args.scenario else ""))
        check_tools()
        kernel = find_kernel(args.kernel)
        cache = Path(args.cache_dir)
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / ".lock", "w") as lock:
            # Two runs at once (make vm-test and the pytest test) share the cache.
            fcntl.flock(lock, fcntl.LOCK_EX)
            base, python = base_archive(cache, args.image)
            site = site_archive(cache, REPO, python, args.pip_python)
            t_prep = time.monotonic()
            with tempfile.TemporaryDirectory(dir=cache, prefix="run-") as tmp:
                overlay = overlay_archive(Path(tmp), REPO, scenarios, args.scenario_timeout)
                initrd = Path(tmp) / "initrd.gz"
                with open(initrd, "wb") as out:
                    for part in (base, site, overlay):
                        with open(part, "rb") as f:
                            shutil.copyfileobj(f, out, 1 << 20)
                records, ended, boot_seconds = boot(
                    kernel, initrd, cache / "console.log", timeout=args.timeout,
                    memory=args.memory, cpus=args.cpus)
    except HarnessError as exc:
        log(str(exc))
        return exc.code
    for r in records:
        print(json.dumps(r), flush=True)
    init_error = next((r["init_error"] for r in records if "init_error" in r), None)
    print(json.dumps({"vm": {"kernel": str(kernel), "python": python, "ended": ended,
                             "prepare_seconds": round(t_prep - t0, 1),
                             "boot_seconds": round(boot_seconds, 1),
                             "total_seconds": round(time.monotonic() - t0, 1),
                             "scenarios": [s.stem for s in scenarios]}}), flush=True)
    if init_error or not ended:
        log(f"the guest did not finish: {init_error or 'no end marker'} "
            f"(console: {cache / 'console.log'})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
