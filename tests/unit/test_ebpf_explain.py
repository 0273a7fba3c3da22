"""The one line Sentinel says when the eBPF probe cannot load (sentinel.probes.ebpf.explain),
for each way a load fails; the real failures (EPERM, a verifier refusal, no BTF) are
also met on the kernel in tests/integration/test_ebpf.py."""

from __future__ import annotations

import errno
import os

import pytest

from sentinel.probes.ebpf import explain
from sentinel.probes.libbpf import LibbpfError

CASES = [
    (LibbpfError(errno.ENOENT, "library", "libbpf.so.1 not loadable",
                 ["libbpf.so.1: cannot open shared object file"]), "no-libbpf",
     "(libbpf.so.1: cannot open shared object file): install Debian's libbpf1"),
    (LibbpfError(errno.EPERM, "load", "x", ["libbpf: prog 'on_rss_stat': failed to load: -1"]),
     "EPERM", "CAP_BPF and CAP_PERFMON with a seccomp profile that allows bpf(2)"),
    (LibbpfError(errno.EACCES, "load", "x", [
        "libbpf: prog 'on_fork': BPF program load failed: Permission denied\n"
        "-- BEGIN PROG LOAD LOG --\n0: R1=ctx() R10=fp0\n; int x @ a.c:1\n"
        "R6 invalid mem access 'map_value_or_null'\nprocessed 10 insns\n-- END PROG LOAD LOG --",
        "libbpf: failed to load object 'x'"]), "verifier",
     "verifier refused on_fork (R6 invalid mem access 'map_value_or_null')"),
    (LibbpfError(errno.ESRCH, "load", "x", [
        "libbpf: prog 'on_rss_stat': relo #3: failed to resolve CO-RE relocation <byte_off> "
        "[12] struct mm_struct.rss_stat"]), "layout", "Linux 6.2+"),
    (LibbpfError(errno.ESRCH, "load", "x", ["libbpf: failed to find valid kernel BTF"]),
     "no-btf", "CONFIG_DEBUG_INFO_BTF=y"),
    (LibbpfError(errno.ENOENT, "attach", "on_mark_victim cannot be attached", []), "attach",
     "tp_btf attach point"),
]


@pytest.mark.parametrize("exc,reason,says", CASES)
def test_each_failure_is_one_line_naming_what_is_missing(exc, reason, says):
    got = explain(exc)
    assert got.reason == reason
    assert says in str(got) and "\n" not in str(got), str(got)


def test_the_object_must_be_a_small_regular_file(tmp_path, monkeypatch):
    from sentinel.probes.ebpf import OBJECT_ENV, EbpfUnavailable, object_bytes

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.o"
    with open(huge, "wb") as f:
        f.truncate(2 << 30)  # sparse: costs nothing on disk
    for path, says in ((fifo, "not a regular file"), ("/dev/zero", "not a regular file"),
                       (tmp_path, "not a regular file"), (huge, "more than any BPF object"),
                       (tmp_path / "missing.o", "No such file")):
        monkeypatch.setenv(OBJECT_ENV, str(path))
        with pytest.raises(EbpfUnavailable) as got:
            object_bytes()  # never blocks (the FIFO has no writer), never reads 2 GiB
        assert got.value.reason == "no-object"
        assert str(path) in str(got.value) and says in str(got.value), str(got.value)
        assert "unset SENTINEL_BPF_OBJECT" in str(got.value)
    small = tmp_path / "small.o"
    small.write_bytes(b"\x7fELF" + bytes(100))
    monkeypatch.setenv(OBJECT_ENV, str(small))
    assert object_bytes() == small.read_bytes()


def test_a_file_that_is_no_bpf_object_is_named_with_the_fix(monkeypatch, tmp_path):
    from sentinel.probes.ebpf import OBJECT_ENV

    monkeypatch.setenv(OBJECT_ENV, str(tmp_path / "x.o"))
    got = explain(LibbpfError(4001, "open", "the BPF object cannot be opened",
                              ["libbpf: elf: '5612' is not a proper ELF object"]))
    assert got.reason == "no-object"
    assert str(got) == (f"{tmp_path / 'x.o'} is not a BPF object libbpf can open "
                        "(the BPF object cannot be opened: Unknown error 4001): unset "
                        "SENTINEL_BPF_OBJECT")


def test_sentinel_bpf_object_is_a_known_variable():
    from sentinel.config.settings import EXTRA_VARIABLES

    assert "SENTINEL_BPF_OBJECT" in EXTRA_VARIABLES
