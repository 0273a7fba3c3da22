"""OutputRelay with real programs writing to its pipes (spawned by core.spawn, as a
config's programs are): lines never mixed, nothing lost at exit, a leftover that
keeps the pipe does not hang the drain, a gone stdout costs nothing, and a
stdout nobody reads slows the program, not Sentinel's loop.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sentinel.core.output import OutputRelay, drain, prefix_for
from sentinel.core.spawn import spawn
from tests.conftest import proc_state, wait_until

PY = sys.executable

# Writes N lines "<TAG>:<seq>:<filler>" of lengths cycling up to 3000 bytes, each
# with one write(2), as fast as it can; then an unfinished line, and exits.
_WRITER = """
import os, sys
tag, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    os.write(1, b"%s:%d:%s\\n" % (tag.encode(), i, tag.lower().encode() * (i * 37 % 3000)))
os.write(1, b"%s:end" % tag.encode())
"""


@pytest.fixture
def made():
    relays: list[OutputRelay] = []
    children: list[int] = []
    yield relays, children
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in children:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    for relay in relays:
        relay.close()


def _start(made, name: str, prefix: str, target_fd: int, command: list[str]):
    """A relay for ``name`` and a program spawned with its stdout on the relay's pipe."""
    relays, children = made
    relay = OutputRelay(name, prefix, target_fd)
    relays.append(relay)
    try:
        child = spawn(tuple(command), set(), stdout_fd=relay.write_fd)
    finally:
        relay.started()
    children.append(child.pid)
    return relay, child.pid


def _exit_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _file(tmp_path: Path) -> int:
    return os.open(tmp_path / "stdout", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                   0o644)


def test_two_fast_writers_interleave_by_whole_lines_and_nothing_is_lost(tmp_path, made):
    prefixes = prefix_for(["alpha", "b"], color=False)
    out = _file(tmp_path)
    try:
        a, pa = _start(made, "alpha", prefixes["alpha"], out, [PY, "-c", _WRITER, "A", "3000"])
        b, pb = _start(made, "b", prefixes["b"], out, [PY, "-c", _WRITER, "B", "3000"])
        assert (_exit_code(pa), _exit_code(pb)) == (0, 0)
        assert drain([a, b], 20)
    finally:
        os.close(out)
    lines = (tmp_path / "stdout").read_bytes().split(b"\n")
    assert lines.pop() == b""
    line = re.compile(rb"(alpha \| A:(\d+):(a*)|b     \| B:(\d+):(b*)|alpha \| A:end|b     \| B:end)")
    seen = {b"A": [], b"B": []}
    for text in lines:
        m = line.fullmatch(text)
        assert m, f"a mixed or mangled line: {text[:120]!r}"
        if m.group(2) is not None:
            seq = int(m.group(2))
            assert len(m.group(3)) == seq * 37 % 3000
            seen[b"A"].append(seq)
        elif m.group(4) is not None:
            seq = int(m.group(4))
            assert len(m.group(5)) == seq * 37 % 3000
            seen[b"B"].append(seq)
    assert seen[b"A"] == list(range(3000)) and seen[b"B"] == list(range(3000))
    assert lines.count(b"alpha | A:end") == 1 and lines.count(b"b     | B:end") == 1
    assert (a.lines_relayed, b.lines_relayed) == (3001, 3001)
    assert a.lines_dropped == b.lines_dropped == 0


def test_every_byte_a_program_wrote_before_exiting_arrives_before_drain_returns(tmp_path,
                                                                               made):
    out = _file(tmp_path)
    try:
        relay, pid = _start(made, "web", "web | ", out, [PY, "-c", _WRITER, "W", "2000"])
        # Not waited for by the test: drain itself waits for the pipe's EOF.
        assert drain([relay], 20)
        assert _exit_code(pid) == 0
    finally:
        os.close(out)
    expected = b"".join(b"web | W:%d:%s\n" % (i, b"w" * (i * 37 % 3000)) for i in range(2000))
    assert (tmp_path / "stdout").read_bytes() == expected + b"web | W:end\n"


_LEAVES_A_LEFTOVER = """
import os, sys, time
pid = os.fork()
if pid == 0:  # the leftover: keeps the program's stdout open, writes once more later
    time.sleep(60)
    os.write(1, b"too late\\n")
    os._exit(0)
os.write(1, b"leftover %d\\n" % pid)
os.write(1, b"partial")
"""


def test_a_leftover_holding_the_pipe_does_not_make_drain_hang(tmp_path, made):
    out = _file(tmp_path)
    try:
        relay, pid = _start(made, "web", "web | ", out, [PY, "-c", _LEAVES_A_LEFTOVER])
        assert _exit_code(pid) == 0
        text = wait_until(lambda: (tmp_path / "stdout").read_bytes(), 5, what="first line")
        leftover = int(text.split()[3])
        made[1].append(leftover)
        assert proc_state(leftover) not in (None, "Z")
        started = time.monotonic()
        assert not drain([relay], 0.5)  # not at EOF: the leftover holds the pipe
        assert time.monotonic() - started < 2.0  # 0.5 s, and 0.2 s for the final writes, loaded
    finally:
        os.close(out)
    # What was read is written, the unfinished line ended: nothing read is lost.
    assert (tmp_path / "stdout").read_bytes() == b"web | leftover %d\nweb | partial\n" % leftover


def test_a_gone_stdout_drops_and_counts_lines_and_harms_no_program(made):
    r, w = os.pipe2(os.O_CLOEXEC)
    os.close(r)  # nobody reads Sentinel's stdout: every write fails with EPIPE
    try:
        relay, pid = _start(made, "web", "web | ", w, [PY, "-c", _WRITER, "W", "100"])
        assert _exit_code(pid) == 0  # the program is not killed by SIGPIPE
        assert drain([relay], 10)
    finally:
        os.close(w)
    assert (relay.lines_relayed, relay.lines_dropped) == (0, 101)


def _wchan(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def test_a_stdout_nobody_reads_blocks_the_program_not_the_loop(made):
    r, w = os.pipe2(os.O_CLOEXEC)
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)  # Sentinel's stdout: one page, nobody reading
    try:
        relay, pid = _start(made, "web", "web | ", w, [PY, "-c", _WRITER, "W", "500"])
        # The relay's thread blocks in its write to the full target, stops reading;
        # the program's own pipe fills and its write blocks: back-pressure.
        wait_until(lambda: "pipe_write" in _wchan(f"/proc/self/task/{relay.native_id}/wchan"),
                   10, what="the relay blocked writing")
        wait_until(lambda: "pipe_write" in _wchan(f"/proc/{pid}/wchan"), 10,
                   what="the program blocked writing")
        assert proc_state(pid) == "S"
        # This thread, standing for Sentinel's loop, goes on meanwhile: it can ask the
        # relay for its counters and prepare the next run's pipe.
        started = time.monotonic()
        assert relay.lines_dropped == 0 and relay.lines_relayed < 500
        relay.reopen()
        relay.started()
        assert time.monotonic() - started < 0.5
        # Now someone reads: everything arrives, nothing was dropped.
        got = b""
        while not got.endswith(b"W:end\n"):
            got += os.read(r, 1 << 16)
        assert _exit_code(pid) == 0
        assert relay.wait(10)
    finally:
        os.close(r)
        os.close(w)
    assert got.count(b"\n") == 501 and relay.lines_dropped == 0
    assert got.startswith(b"web | W:0:\nweb | W:1:" + b"w" * 37 + b"\n")
