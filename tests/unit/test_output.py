"""OutputRelay: a program's lines to Sentinel's fd with its name in front.

Here the test itself is the program: it writes into ``relay.write_fd`` and reads
the target pipe. Real child processes: tests/integration/test_output_relay.py.
"""

from __future__ import annotations

import os
import select
import signal
import time
from pathlib import Path

import pytest

from sentinel.core import output
from sentinel.core.output import MAX_LINE_BYTES, OutputRelay, drain, prefix_for


@pytest.fixture
def target():
    """A pipe standing for Sentinel's stdout: (read end, write end)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


@pytest.fixture
def relays():
    made: list[OutputRelay] = []
    yield made
    for relay in made:
        relay.close()


def _relay(relays, name, target_fd, width=None):
    relay = OutputRelay(name, f"{name.ljust(width or len(name))} | ", target_fd)
    relays.append(relay)
    return relay


def _read(fd: int, until: bytes, timeout: float = 5.0) -> bytes:
    """Read ``fd`` until the data read ends with ``until``."""
    got = b""
    deadline = time.monotonic() + timeout
    while not got.endswith(until):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; got {got!r}"
        if select.select([fd], [], [], left)[0]:
            got += os.read(fd, 1 << 20)
    return got


def _nothing_to_read(fd: int, within: float) -> bool:
    return not select.select([fd], [], [], within)[0]


def test_prefixes_are_padded_to_the_longest_name():
    assert prefix_for(["web", "worker", "db"], color=False) == \
        {"web": "web    | ", "worker": "worker | ", "db": "db     | "}


def test_colours_only_on_a_terminal_without_no_color(monkeypatch):
    colored = prefix_for(["web", "worker"], color=True)
    assert colored["web"] == "\x1b[36mweb    |\x1b[0m "
    assert colored["worker"] == "\x1b[33mworker |\x1b[0m "
    monkeypatch.setattr(output, "_isatty", lambda fd: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert prefix_for(["web"]) == {"web": "\x1b[36mweb |\x1b[0m "}
    monkeypatch.setenv("NO_COLOR", "1")
    assert prefix_for(["web"]) == {"web": "web | "}
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setattr(output, "_isatty", lambda fd: False)
    assert prefix_for(["web"]) == {"web": "web | "}


def test_complete_lines_get_the_prefix_and_are_counted(target, relays):
    r, w = target
    relay = _relay(relays, "web", w, width=6)
    os.write(relay.write_fd, b"GET / 200\nGET /a 404\n")
    assert _read(r, b"404\n") == b"web    | GET / 200\nweb    | GET /a 404\n"
    relay.started()
    assert relay.wait(5)
    assert (relay.lines_relayed, relay.bytes_relayed, relay.lines_dropped) == (2, 21, 0)


def test_a_partial_line_is_written_after_100_ms_and_its_rest_continues_it(target, relays):
    r, w = target
    relay = _relay(relays, "web", w)
    pipe = relay.write_fd
    sent = time.monotonic()
    os.write(pipe, b"Password: ")
    assert _read(r, b": ") == b"web | Password: "  # no newline added
    assert time.monotonic() - sent >= output.PARTIAL_LINE_SECONDS * 0.9
    os.write(pipe, b"ok\nnext")
    assert _read(r, b"ok\n") == b"ok\n"  # the same line: no second prefix
    relay.started()  # EOF: the unfinished line is written with a newline added
    assert _read(r, b"\n") == b"web | next\n"
    assert relay.wait(5)
    assert relay.lines_relayed == 2


def test_another_programs_line_ends_an_unfinished_one_first(target, relays):
    r, w = target
    web, api = _relay(relays, "web", w), _relay(relays, "api", w)
    os.write(web.write_fd, b"loading...")
    assert _read(r, b"...") == b"web | loading..."
    os.write(api.write_fd, b"ready\n")
    assert _read(r, b"ready\n") == b"\napi | ready\n"
    os.write(web.write_fd, b"done\n")  # its line was ended: it starts a new prefixed one
    assert _read(r, b"done\n") == b"web | done\n"
    web.started()
    api.started()
    assert drain([web, api], 5)
    assert _nothing_to_read(r, 0.05)


def test_a_line_longer_than_64_kib_is_cut_into_prefixed_pieces(tmp_path, relays):
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        relay = _relay(relays, "web", out)
        line = bytes(range(97, 123)) * 10000  # 260,000 bytes, no newline in it
        pipe = relay.write_fd
        for i in range(0, len(line), 10000):  # in pieces, as a pipe delivers them
            os.write(pipe, line[i:i + 10000])
        os.write(pipe, b"\nshort\n")
        relay.started()
        assert relay.wait(10)
    finally:
        os.close(out)
    lines = (tmp_path / "out").read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert all(piece.startswith(b"web | ") for piece in lines[:-1])
    bodies = [piece[len(b"web | "):] for piece in lines[:-1]]
    assert [len(b) for b in bodies] == [MAX_LINE_BYTES] * 3 + [260000 - 3 * MAX_LINE_BYTES, 5]
    assert b"".join(bodies[:4]) == line
    assert relay.bytes_relayed == 260000 + 1 + 6  # the program's bytes: no added newline
    assert relay.lines_relayed == 5


@pytest.mark.parametrize("gone", ["EPIPE", "EBADF", "ENOSPC"])
def test_writes_to_a_gone_stdout_are_dropped_and_counted_never_raised(target, relays, gone):
    r, w = target
    if gone == "EPIPE":
        os.close(r)  # nobody reads Sentinel's stdout any more
        fd = w
    elif gone == "EBADF":
        fd = 987  # Sentinel's stdout closed
        with pytest.raises(OSError):
            os.fstat(fd)
    else:
        fd = os.open("/dev/full", os.O_WRONLY | os.O_CLOEXEC)
    try:
        relay = _relay(relays, "web", fd)
        os.write(relay.write_fd, b"one\ntwo\n")
        os.write(relay.write_fd, b"three\n")
        relay.started()
        assert relay.wait(5)
        assert (relay.lines_relayed, relay.lines_dropped) == (0, 3)
        assert relay.close()  # the thread ended normally: nothing raised in it
    finally:
        if gone == "ENOSPC":
            os.close(fd)


def test_the_relay_thread_blocks_every_signal_whatever_its_creator_blocks(target, relays):
    # pytest's main thread blocks nothing; the relay's thread must (signals are the
    # loop's, read from its signalfd; a thread that took one would lose it).
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == set()
    relay = _relay(relays, "web", target[1])
    status = dict(line.split(":\t", 1) for line in
                  Path(f"/proc/self/task/{relay.native_id}/status").read_text().splitlines()
                  if ":\t" in line)
    catchable = set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
    blocked = int(status["SigBlk"], 16)
    assert {s for s in catchable if blocked & (1 << (s - 1))} == catchable
    assert signal.pthread_sigmask(signal.SIG_BLOCK, set()) == set()  # the caller's restored


def test_reopen_gives_a_fresh_pipe_only_once_the_last_was_handed_over(target, relays):
    r, w = target
    relay = _relay(relays, "web", w)
    first = relay.write_fd
    relay.reopen()
    assert relay.write_fd == first  # not handed over yet: the same pipe
    os.write(first, b"run 1\n")
    relay.started()
    relay.started()  # idempotent
    assert _read(r, b"run 1\n") == b"web | run 1\n"
    assert relay.wait(5)
    relay.reopen()
    assert not relay.wait(0.05)  # a new pipe is open again
    os.write(relay.write_fd, b"run 2\n")
    relay.started()
    assert _read(r, b"run 2\n") == b"web | run 2\n"
    assert relay.wait(5)


def test_a_closed_relay_refuses_a_new_pipe_with_a_clear_error(target):
    relay = OutputRelay("web", "web | ", target[1])
    assert relay.close()
    with pytest.raises(ValueError, match="the output relay of 'web' is closed"):
        relay.write_fd
    assert drain([relay], 1)  # closing twice is harmless
