"""The one line Sentinel says when the eBPF probe cannot load (sentinel.probes.ebpf.explain),
for each way a load fails; the real failures (EPERM, a verifier refusal, no BTF) are
also met on the kernel in tests/integration/test_ebpf.py."""

from __future__ import annotations

import errno

import pytest

from sentinel.probes.ebpf import explain
from sentinel.probes.libbpf import LibbpfError

CASES = [
    (LibbpfError(errno.ENOENT, "library", "libbpf.so.1 not loadable", []), "no-libbpf",
     "apt-get install libbpf1"),
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
