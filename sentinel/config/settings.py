"""Settings for ``sentinel run`` and ``sentinel watch``: flags, ``SENTINEL_*``
environment variables, and the value grammars (sizes, durations, signals).

This module sits on the start-up path: ``sentinel run`` parses its arguments
here and spawns the workload before anything heavy is imported, so it uses
only the standard library's ``argparse`` (typer and click together cost about
110 ms of import here; see the README's start-up figures), and argparse only
for ``--help`` and for arguments it must judge (``parse_known_options`` reads
the common case in a few microseconds; importing argparse and building its
parser took about 4 ms of the child's start). One option table serves both
parsers, the environment variables and ``--help``.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from dataclasses import dataclass

from sentinel.config.webhooks import from_environ as webhooks_from_environ
from sentinel.config.webhooks import parse_url_file
from sentinel.errors import EXIT_MEMORY_KILL_DEFAULT, UsageError, mask_urls

# --------------------------------------------------------------------------
# Value grammars
# --------------------------------------------------------------------------

# Units follow Kubernetes resource quantities (binary Ki/Mi/Gi/Ti/Pi, decimal
# k/M/G/T/P, with an optional trailing B as people write "512MB"), plus the
# lowercase Docker forms (b, k, m, g, t: binary, as `docker run -m 512m`).
# Kubernetes' lowercase "m" means milli, which makes no sense for bytes, so the
# Docker meaning wins there. "k" is 1000 as in Kubernetes, "K" too; "kb"/"KiB"
# spell the rest.
_SIZE_UNITS: dict[str, int] = {
    "": 1, "b": 1, "B": 1,
    "k": 1000, "K": 1000, "kB": 1000, "KB": 1000,
    "M": 1000**2, "MB": 1000**2,
    "G": 1000**3, "GB": 1000**3,
    "T": 1000**4, "TB": 1000**4,
    "P": 1000**5, "PB": 1000**5,
    "Ki": 1024, "KiB": 1024, "kiB": 1024, "kb": 1024,
    "Mi": 1024**2, "MiB": 1024**2, "m": 1024**2, "mb": 1024**2,
    "Gi": 1024**3, "GiB": 1024**3, "g": 1024**3, "gb": 1024**3,
    "Ti": 1024**4, "TiB": 1024**4, "t": 1024**4, "tb": 1024**4,
    "Pi": 1024**5, "PiB": 1024**5,
}
_SIZE_RE = re.compile(r"^\s*(\d+)(?:\.(\d+))?\s*([A-Za-z]*)\s*$")
MAX_SIZE_BYTES = 2**63 - 1  # what the kernel's counters (and cgroup memory.max) hold
SIZE_EXAMPLES = "200Mi, 1.5Gi, 512M, 512MB, 1G, 64k or 1048576"


def parse_size(text: str) -> int:
    """Return ``text`` as a whole number of bytes (fractions round up, as Kubernetes does).

    Accepts plain bytes and the Kubernetes/Docker forms listed in
    ``_SIZE_UNITS``. Raises ``ValueError`` with a message that shows valid
    examples for anything else: empty, negative, zero, unknown unit, overflow.
    """
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size; use e.g. {SIZE_EXAMPLES}")
    whole, frac, unit = match.groups()
    if unit not in _SIZE_UNITS:
        raise ValueError(f"{text!r} has an unknown unit {unit!r}; use e.g. {SIZE_EXAMPLES}")
    multiplier = _SIZE_UNITS[unit]
    frac = frac or ""
    numerator = int(whole + frac) * multiplier
    denominator = 10 ** len(frac)
    value = -(-numerator // denominator)  # ceiling division, exact for any length
    if value <= 0:
        raise ValueError(f"{text!r} is not a positive size; use e.g. {SIZE_EXAMPLES}")
    if value > MAX_SIZE_BYTES:
        raise ValueError(f"{text!r} is larger than {MAX_SIZE_BYTES} bytes; use e.g. {SIZE_EXAMPLES}")
    return value


# A limit below this is almost certainly a missing unit ("--max-rss 512" meant
# 512Mi, "0.5" meant 0.5Gi): it would kill any process at once. 64k, the
# smallest form in the examples, is the floor.
MIN_LIMIT_BYTES = 64_000


def parse_limit(text: str) -> int:
    """A memory limit: ``parse_size`` and at least 64k. Raises ``ValueError``."""
    value = parse_size(text)
    if value < MIN_LIMIT_BYTES:
        match = _SIZE_RE.match(text)
        assert match is not None  # parse_size accepted it
        whole, frac, unit = match.groups()
        number = whole + (f".{frac}" if frac else "")
        bytes_ = f"{value} byte" + ("" if value == 1 else "s")
        # The hint puts Mi on the number as written: "512" -> 512Mi, "63k" -> 63Mi
        # (never "63kMi").
        why = f"a missing unit? e.g. {number}Mi" if unit in ("", "b", "B") else \
            f"a limit that small kills any process at once; did you mean {number}Mi?"
        raise ValueError(f"{text.strip()!r} is {bytes_}, below the 64k floor ({why}); "
                         f"use e.g. {SIZE_EXAMPLES}")
    return value


# Words that mean "no limit" for --max-rss, SENTINEL_MAX_RSS and the socket's
# `limit` verb (sentinel.control.verbs uses this list).
NO_LIMIT_WORDS = ("none", "off", "unlimited")


class AutoLimit(float):
    """``--max-rss auto[:N%]``: the share (0.01-1.0) of the container's memory limit,
    resolved against the discovered cgroup at start-up (``sentinel.entry``)."""


DEFAULT_AUTO_SHARE = 0.90  # sentinel.probes.cgroup.DEFAULT_AUTO_SHARE: leaves the kernel 10 %
# The share needs its %: "auto:85" could as well mean 85 MiB.
_AUTO_RE = re.compile(r"^\s*auto(?::\s*(\d+(?:\.\d+)?)\s*%)?\s*$", re.IGNORECASE)


def parse_auto(text: str) -> AutoLimit | None:
    """``auto`` -> ``AutoLimit(0.9)``, ``auto:85%`` -> ``AutoLimit(0.85)``; ``None`` when
    ``text`` does not start with ``auto``. Raises ``ValueError`` for a share outside
    1-100 % or a malformed one."""
    if not text.strip().lower().startswith("auto"):
        return None
    match = _AUTO_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not auto or auto:N% (a share of the container's "
                         "memory limit, e.g. auto:85%)")
    if match.group(1) is None:
        return AutoLimit(DEFAULT_AUTO_SHARE)
    percent = float(match.group(1))
    if not 1 <= percent <= 100:
        raise ValueError(f"{text!r}: the share must be 1-100 % of the container's memory "
                         "limit, e.g. auto:85%")
    return AutoLimit(percent / 100)


def parse_max_rss(text: str) -> int | AutoLimit | None:
    """``--max-rss``: ``parse_limit``, ``None`` (no limit: watch only) for ``none``,
    ``off`` or ``unlimited``, or an ``AutoLimit`` share for ``auto``/``auto:85%``.
    Raises ``ValueError``."""
    if text.strip().lower() in NO_LIMIT_WORDS:
        return None
    auto = parse_auto(text)
    if auto is not None:
        return auto
    try:
        return parse_limit(text)
    except ValueError as exc:
        raise ValueError(f"{exc}, auto or auto:85% (that share of the container's limit), "
                         "or none (watch only)") from None


def parse_address(text: str) -> str:
    """``--metrics-address``: a host name or IP address to bind; an IPv6 address may be
    bracketed as Sentinel prints it (``[::1]`` -> ``::1``). Raises ``ValueError`` for a
    bracketed form that is not an IPv6 address, or that carries a port."""
    import _socket  # the C module: this runs before the spawn; `socket` costs ~2 ms

    t = text.strip()
    if not t.startswith("["):
        return _check_unbracketed(t, text, _socket)
    inner, sep, rest = t[1:].partition("]")
    if sep and rest.startswith(":"):
        raise ValueError(f"{text!r} holds a port; give the address alone (e.g. [{inner}]) and "
                         f"the port with --metrics-port {rest[1:] or '8000'}")
    try:
        if not sep or rest:
            raise OSError
        _socket.inet_pton(_socket.AF_INET6, inner.split("%", 1)[0])  # fe80::1%eth0: a zone
    except OSError:
        raise ValueError(f"{text!r} is not a bracketed IPv6 address; use e.g. [::1], ::, "
                         "0.0.0.0 or a host name") from None
    return inner


def _check_unbracketed(t: str, text: str, _socket) -> str:
    """An address as given (IPv4, IPv6, a host name or empty for every address); a URL,
    a host:port or a malformed IP address raises ``ValueError``, so a typo is an exit 2
    at start-up rather than an exporter that is quietly off."""
    fix = "give the address alone (e.g. 0.0.0.0, ::, 127.0.0.1 or a host name)"
    if "/" in t:
        raise ValueError(f"{text!r} looks like a URL; {fix} and the port with --metrics-port")
    if ":" in t:
        try:
            _socket.inet_pton(_socket.AF_INET6, t.split("%", 1)[0])
            return t
        except OSError:
            host, _, port = t.rpartition(":")
            if port.isdigit() and host:
                raise ValueError(f"{text!r} holds a port; {fix} and the port with "
                                 f"--metrics-port {port}") from None
            raise ValueError(f"{text!r} is not an IPv6 address; {fix}") from None
    if t.replace(".", "").isdigit():
        try:
            _socket.inet_pton(_socket.AF_INET, t)
        except OSError:
            raise ValueError(f"{text!r} is not an IPv4 address; {fix}") from None
        return t
    labels = t.split(".") if t else []
    if len(t) > 253 or any(not label or len(label) > 63 or not all(
            c.isascii() and (c.isalnum() or c in "-_") for c in label) for label in labels):
        raise ValueError(f"{text!r} is not a valid host name; {fix}")
    return t


def parse_positive_duration(text: str) -> float:
    """``parse_duration`` above zero. Raises ``ValueError``."""
    value = parse_duration(text)
    if value <= 0:
        raise ValueError(f"{text!r} is not a positive duration; use e.g. 30s, 500ms or 1m")
    return value


_OFF_WORDS = ("none", "off")


def parse_share(text: str) -> float | None:
    """``--warn-at``: ``80%``, ``0.8`` -> 0.8; ``none``/``off`` -> ``None``. The share must
    be above 0 and at most 100 %. Raises ``ValueError``."""
    t = text.strip().lower()
    if t in _OFF_WORDS:
        return None
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise ValueError(f"{text!r} is not a share of the limit; use e.g. 80% or 0.8, "
                         "or none")
    return value


def parse_rate(text: str) -> int:
    """``--leak-min-rate``: a size per second, ``64Ki/s``, ``1Mi/s`` or ``65536``, in
    bytes/second (above 0). Raises ``ValueError``."""
    t = text.strip()
    size = t[:-2] if t.lower().endswith("/s") else t
    try:
        value = parse_size(size)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{text!r} is not a growth rate; use a size per second such as "
                         "64Ki/s or 1Mi/s")
    return value


def parse_horizon(text: str) -> float | None:
    """``--predict-within``: a positive duration (``10m``), or ``none``/``off`` ->
    ``None``. Raises ``ValueError``."""
    if text.strip().lower() in _OFF_WORDS:
        return None
    return parse_positive_duration(text)


def parse_count(text: str) -> int:
    """A whole number >= 1. Raises ``ValueError``."""
    t = text.strip()
    if not t.isdigit() or int(t) < 1:
        raise ValueError(f"{text!r} is not a whole number >= 1; use e.g. 64")
    return int(t)


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|ms|s|m|h|)\s*$")
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "": 1.0, "m": 60.0, "h": 3600.0}


def parse_command_line(text: str) -> tuple[str, ...]:
    """Split ``text`` as a shell would (``shlex.split``: quotes, backslashes; no
    variables, globs or pipes) into an argv tuple. Raises ``ValueError`` for an empty
    command or unbalanced quotes."""
    import shlex  # small; only when the option is given

    try:
        argv = tuple(shlex.split(text))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a command line: {exc}") from None
    if not argv:
        raise ValueError("empty command; give e.g. 'py-spy dump --pid $SENTINEL_PID' through "
                         "sh -c, or leave the option out")
    return argv


def resolve_hook_command(argv: tuple[str, ...], base: str | None = None,
                         path: str | None = None) -> tuple[str, ...]:
    """``argv`` of a pre-kill hook, checked now rather than at the kill (when its evidence
    would be lost): a program name must be found in ``path`` (default ``$PATH``); a path
    with a ``/`` is made absolute from ``base`` (default the current directory: Sentinel
    moves to / once the workload runs) and must be an executable file. Raises
    ``UsageError``."""
    import shutil

    name = argv[0]
    if "/" not in name:
        if shutil.which(name, path=path if path is not None else os.environ.get("PATH")):
            return argv
        raise UsageError(f"--pre-kill-hook: {name!r} is not found in PATH; give its full "
                         "path, or install it in the image")
    full = os.path.abspath(os.path.join(base or os.getcwd(), name))
    if not os.path.isfile(full):
        raise UsageError(f"--pre-kill-hook: {name!r} ({full}): no such file; give a path "
                         "that exists (a relative one is taken from "
                         + ("the config file's directory)" if base else "the directory Sentinel "
                            "is started in)"))
    if not os.access(full, os.X_OK):
        raise UsageError(f"--pre-kill-hook: {full} is not executable; chmod +x it or run it "
                         "through its interpreter (e.g. sh HOOK)")
    return (full, *argv[1:])


def pre_kill_hook_timeout(settings) -> float:
    """The pre-kill hook's time bound, seconds: ``--pre-kill-hook-timeout``, else
    min(5 s, grace period / 2) (half the grace period stays the workload's own)."""
    given = settings.pre_kill_hook_timeout_seconds
    return given if given is not None else min(5.0, settings.grace_period_seconds / 2)


def check_pre_kill_hook(settings, where: str = "--pre-kill-hook-timeout") -> None:
    """Raise ``UsageError`` when a pre-kill hook's timeout is not shorter than the grace
    period (the SIGTERM must leave the workload some of it)."""
    if not settings.pre_kill_hook:
        return
    timeout, grace = pre_kill_hook_timeout(settings), settings.grace_period_seconds
    if timeout >= grace:
        raise UsageError(f"{where}: {timeout:g}s is not shorter than the grace period "
                         f"{grace:g}s; the SIGTERM comes after the hook and SIGKILL at the end "
                         "of the grace period, so the workload would get no time to stop. "
                         "Lower the timeout or raise --grace-period")


def parse_duration(text: str) -> float:
    """Return ``text`` in seconds: ``3``, ``3s``, ``1.5s``, ``250ms``, ``2m``, ``1h``.

    Raises ``ValueError`` for anything else (negative numbers included).
    """
    match = _DURATION_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration; use e.g. 3s, 250ms, 1.5 or 2m")
    value = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if value > 365 * 86400:
        raise ValueError(f"{text!r} is longer than a year; use e.g. 3s, 250ms or 2m")
    return value


def parse_signal(text: str, *, allow_zero: bool = False) -> int:
    """Return the signal number for ``TERM``, ``SIGTERM``, ``sigterm`` or ``15``.

    ``0`` is accepted only with ``allow_zero`` (it means "drop" in a rewrite).
    Raises ``ValueError`` for unknown names and numbers.
    """
    t = text.strip()
    if t.isdigit():
        num = int(t)
        if num == 0 and allow_zero:
            return 0
        if 1 <= num < signal.NSIG:
            return num
        raise ValueError(f"{text!r} is not a signal number (1-{signal.NSIG - 1})")
    name = t.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    sig = getattr(signal.Signals, name, None) if name in signal.Signals.__members__ else None
    if sig is None:
        raise ValueError(f"{text!r} is not a signal name; use e.g. TERM, SIGUSR1 or 15")
    return int(sig)


def signal_name(signum: int) -> str:
    """``15`` -> ``"SIGTERM"``; real-time and unknown numbers as ``"SIG34"``."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


_UNREWRITABLE = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}


def parse_rewrite(text: str) -> tuple[int, int]:
    """``TERM:QUIT`` -> ``(15, 3)``; ``HUP:0`` drops SIGHUP. Raises ``ValueError``.

    SIGKILL and SIGSTOP never reach Sentinel, and SIGCHLD is its own, so none of
    them can be rewritten.
    """
    src, sep, dst = text.partition(":")
    if not sep:
        raise ValueError(f"{text!r} is not a rewrite; use FROM:TO, e.g. TERM:QUIT or HUP:0")
    pair = parse_signal(src), parse_signal(dst, allow_zero=True)
    if pair[0] in _UNREWRITABLE:
        raise ValueError(f"{text!r}: {signal_name(pair[0])} cannot be rewritten (it never "
                         "reaches Sentinel, or is Sentinel's own); rewrite e.g. TERM or HUP")
    return pair


def parse_exit_code(text: str) -> int:
    """An exit code 0-255. Raises ``ValueError``."""
    t = text.strip()
    if not t.isdigit() or int(t) > 255:
        raise ValueError(f"{text!r} is not an exit code (0-255)")
    return int(t)


def parse_port(text: str) -> int:
    """A TCP port 0-65535 (0 turns the exporter off). Raises ``ValueError``."""
    t = text.strip()
    if not t.isdigit() or int(t) > 65535:
        raise ValueError(f"{text!r} is not a port (0-65535; 0 turns metrics off)")
    return int(t)


def parse_mode(text: str) -> int:
    """An octal file mode such as ``0600`` or ``660``. Raises ``ValueError``."""
    try:
        mode = int(text, 8)
    except ValueError:
        raise ValueError(f"{text!r} is not an octal file mode; use e.g. 0600 or 0660") from None
    if not 0 <= mode <= 0o777:
        raise ValueError(f"{text!r} is not a file mode (0000-0777)")
    return mode


def parse_oom_score_adj_margin(text: str) -> int:
    """An oom_score_adj margin 0-2000 (the whole -1000..1000 range). Raises ``ValueError``."""
    t = text.strip()
    if not t.isdigit() or int(t) > 2000:
        raise ValueError(f"{text!r} is not a whole number 0-2000 (oom_score_adj spans "
                         "-1000..1000; 0 leaves it alone)")
    return int(t)


def parse_positive_int(text: str) -> int:
    t = text.strip()
    if not t.isdigit():
        raise ValueError(f"{text!r} is not a whole number >= 0")
    return int(t)


# --------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------

def parse_webhook_url_file(text: str) -> tuple:
    """``--webhook-url-file PATH``: the file's receivers (``WebhookSpec``), read now (before
    the spawn: a bad file is exit 2 before anything starts). ``ValueError`` otherwise."""
    if not text.strip():
        raise ValueError("empty path; give a file with one webhook URL a line")
    if "://" in text:  # os.path.abspath would fold it into /cwd/https:/... and echo it
        raise ValueError("takes a path to a file holding the URL, not the URL (the URL is "
                         "not shown); write the URL into a file, or set SENTINEL_WEBHOOK_URL")
    return parse_url_file(os.path.abspath(text))


MEASURES = ("rss", "pss", "uss", "working-set", "cgroup")
# How the workload's memory is followed (sentinel.core.ebpf_side): poll /proc (and the
# cgroup) on a tick; ebpf: the kernel follows the tree and wakes Sentinel (falls back to
# polling, with one line, where it cannot load); auto: ebpf when it loads, silently.
PROBES = ("poll", "ebpf", "auto")
RESTART_POLICIES = ("never", "on-failure", "always")
LOG_FORMATS = ("human", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
K8S_EVENTS = ("auto", "on", "off")


@dataclass(frozen=True)
class Settings:
    """Everything ``run`` and ``watch`` need, validated. Sizes in bytes, times in seconds."""

    mode: str = "run"  # "run" (Sentinel spawns the workload) or "watch" (sidecar)
    command: tuple[str, ...] = ()
    # Memory limit on the measure below; None supervises without enforcing.
    max_rss_bytes: int | None = None
    # --max-rss auto[:N%]: the share (0.01-1.0) of the container's memory limit; while
    # set, max_rss_bytes is None until sentinel.entry resolves it against the cgroup.
    limit_auto_share: float | None = None
    # How auto was resolved, one line (sentinel.launch.auto_note); logged at start-up.
    limit_auto_note: str = ""
    # Set by launch.resolve_cgroup_settings for a cgroup measure: which group is measured
    # (logged at INFO), and what else it holds (logged as a warning).
    cgroup_note: str = ""
    cgroup_warning: str = ""
    # Which figure is compared with the limit: tree RSS (default, cheapest,
    # what `ps` shows), PSS or USS from smaps_rollup (fairer for shared pages,
    # ~10x the cost), working-set (the cgroup's usage minus inactive_file, what
    # the kubelet evicts on) or cgroup (the cgroup's usage: memory.current on v2,
    # memory.usage_in_bytes on v1, what the kernel's OOM killer judges).
    measure: str = "rss"
    probe: str = "poll"
    # Where the cgroup hierarchy is mounted (or the cgroup's directory itself), for
    # unusual mounts and fixture trees; None: found from /proc/self/mountinfo.
    cgroup_root: str | None = None
    # Sampling period at rest. 0.1 s keeps the idle cost near zero; the
    # sampler samples faster as the measure nears the limit (see guardian).
    interval_seconds: float = 0.1
    # The longest period between ticks while a kernel wake-up (v1 usage threshold,
    # v2 memory.events with memory.high/max before the limit) covers the limit and the
    # measure is far from it (sentinel.core.sampler.relaxed_interval). 1 s: idle cost
    # ~10x lower than 0.1 s ticks, and the kernel's wake-up, not the tick, reacts.
    max_interval_seconds: float = 1.0
    # Issue 11's alert rules (sentinel.core.alerts), per program. Warn at this share of
    # the limit (0-1; None: no warning): 80 % leaves a kill's worth of headroom to act.
    warn_at_share: float | None = 0.8
    # The window of the leak and prediction rules' robust growth: 5 min spans many
    # garbage-collector cycles and a burst of traffic, yet warns within minutes.
    leak_window_seconds: float = 300.0
    # "Leak suspected" from this growth up (bytes/s). 64 KiB/s is 19 MiB per 5 min window,
    # 5.4 GiB a day: slow enough to catch a leak that kills overnight, above the
    # allocator's and the median's noise (a few KiB/s over 5 min at 10 MiB of jitter).
    leak_min_rate_bytes_per_second: int = 64 * 1024
    # "Limit predicted" when the limit is less than this away at the growth (None: off).
    # 10 min: enough for a person (or a webhook's automation) to act before the kill.
    predict_within_seconds: float | None = 600.0
    # SIGTERM -> SIGKILL wait. 3 s plus the workload's shutdown must fit in the
    # pod's terminationGracePeriodSeconds (30 s by default).
    grace_period_seconds: float = 3.0
    single_child: bool = False  # signal only the direct child, not its process group
    rewrite: tuple[tuple[int, int], ...] = ()  # (from, to); to=0 drops the signal
    success_exit_codes: frozenset[int] = frozenset()  # remapped to 0
    # Exit code when a memory kill ends with the workload exiting 0 (137 is
    # what an OOM kill shows, so dashboards that count 137 catch it).
    memory_kill_exit_code: int = EXIT_MEMORY_KILL_DEFAULT
    pdeathsig: int | None = None
    # The workload's oom_score_adj is raised to Sentinel's + this (capped at 1000) so the
    # kernel's OOM killer picks it first; 100 (not 1000) keeps the node-level order the
    # kubelet set by QoS class nearly intact. 0: leave oom_score_adj alone.
    oom_score_adj_margin: int = 100
    # During a grace period, SIGKILL early when the workload would reach the container's
    # hard limit before it ends (sentinel.core.kernel_side); True waits the full period.
    no_early_sigkill: bool = False
    # At a memory kill's SIGTERM, clamp the workload's cgroup v2 memory.high to its usage
    # for the grace period (restored after). Off by default: it needs a writable,
    # delegated cgroup and Sentinel outside it (sentinel.core.kernel_side.clamp_high).
    clamp_high: bool = False
    # The first signal of the ladder (--stop-signal): what a program's stop, a memory kill
    # and shutdown send before SIGKILL. SIGTERM, what docker stop and the kubelet send.
    stop_signal: int = int(signal.SIGTERM)
    # --pre-kill-hook: a command run before a memory kill's SIGTERM (evidence: a stack or
    # heap dump), argv already split; () for none (sentinel.core.hook).
    pre_kill_hook: tuple[str, ...] = ()
    # Its time bound; None: min(5 s, grace period / 2), so the workload keeps at least
    # half of its grace period (pre_kill_hook_timeout()). Must be below the grace period.
    pre_kill_hook_timeout_seconds: float | None = None
    # --dry-run: the ladder runs on schedule and is reported, but no signal is sent (try
    # a limit on production traffic first). Memory kills only: operator stop/kill and
    # the shutdown are real.
    dry_run: bool = False
    restart: str = "never"
    restart_delay_seconds: float = 1.0  # first back-off; doubles each failure
    restart_max_delay_seconds: float = 30.0  # back-off cap
    max_restarts: int = 0  # 0 = no cap
    log_format: str = "human"
    log_level: str = "info"
    metrics_address: str = "0.0.0.0"
    metrics_port: int = 8000  # 0 = no exporter
    socket_path: str | None = "/tmp/sentinel.socket"  # None = no control socket
    socket_mode: int = 0o600
    socket_group: str | None = None
    # Control-socket limits; None: sentinel.control.server's defaults (idle 60s, line 5s,
    # write 5s, 16 clients), documented in docs/control-socket.md.
    socket_idle_timeout_seconds: float | None = None
    socket_line_timeout_seconds: float | None = None
    socket_write_timeout_seconds: float | None = None
    socket_max_clients: int | None = None
    tui: bool = False
    # With --tui the dashboard owns the terminal; the workload's stdout/stderr
    # (and Sentinel's log while the dashboard is up) go here. /tmp: writable in
    # the usual container; opened 0600 without following symlinks.
    tui_log: str = "/tmp/sentinel-workload.log"
    workload_name: str = ""
    k8s_events: str = "auto"
    kubeconfig: str | None = None
    termination_log: str | None = "/dev/termination-log"
    # Where the pod's counters (kills, restarts, last kill) outlive a container
    # restart (sentinel.exporters.statefile); None: not kept. The chart passes /shared.
    state_dir: str | None = None
    # After a kill, how long Sentinel may wait before exiting for its reports
    # to get out (Events posted, one more scrape). None: 5 s in a pod (POD_NAME
    # set, or Events on), else 0. It exits as soon as nothing is pending.
    linger_seconds: float | None = None
    debug: bool = False
    # --config FILE (SENTINEL_CONFIG): several programs from a file
    # (sentinel.config.programs); absolute, as SIGHUP re-reads it after the chdir to /.
    config_path: str | None = None
    check_config: bool = False  # --check-config: validate the --config file, start nothing
    # watch mode: how to find the target (exactly one is set)
    target_name: str | None = None
    target_cmdline: str | None = None
    target_pid: int | None = None
    # Webhook receivers (sentinel.config.webhooks.WebhookSpec, URLs kept out of the repr):
    # --webhook-url-file's lines, and SENTINEL_WEBHOOK_URL's plus the config file's
    # settings.webhooks in `webhooks`. Posted by sentinel.exporters.webhooks.
    webhook_url_file: tuple = ()
    webhooks: tuple = ()
    # Each POST's timeout: 5 s, as Slack and most receivers answer in well under a
    # second, and a dead one must not keep a queue's worker for long.
    webhook_timeout_seconds: float = 5.0


# --------------------------------------------------------------------------
# The option table: flag, settings field, parser, help. Each flag also reads
# SENTINEL_<FLAG> (--max-rss: SENTINEL_MAX_RSS) from the environment; a flag wins over its
# variable. Repeatable flags take a comma-separated list in the variable.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Opt:
    """One option of ``run``/``watch``: its flag(s), the ``Settings`` field it sets, the
    grammar that parses its value (``parse``: str -> value, raises ``ValueError``)."""

    flags: tuple[str, ...]
    dest: str
    parse: object = None  # str -> value; raises ValueError
    help: str = ""
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    flag: bool = False  # a switch; the variable takes 1/true/yes/on
    repeat: bool = False
    modes: tuple[str, ...] = ("run", "watch")
    env: str | None = None  # override the variable's name
    watch_help: str | None = None  # the help in `sentinel watch --help`, when it differs

    @property
    def env_name(self) -> str:
        return self.env or "SENTINEL_" + self.flags[0].lstrip("-").upper().replace("-", "_")


OPTIONS: tuple[Opt, ...] = (
    Opt(("--max-rss",), "max_rss_bytes", parse_max_rss, metavar="SIZE",
        help=f"memory limit on the workload's tree ({SIZE_EXAMPLES}); auto or auto:85%%: that "
             "share (default 90%%) of the container's memory limit; none: watch only"),
    Opt(("--measure",), "measure", choices=MEASURES,
        help="figure compared with the limit: rss (tree RSS, default), pss, uss, working-set "
             "(cgroup usage minus inactive_file, as the kubelet) or cgroup (cgroup usage: "
             "memory.current / memory.usage_in_bytes)"),
    Opt(("--probe",), "probe", choices=PROBES,
        help="how memory is followed: poll (/proc and the cgroup on a tick, default), ebpf "
             "(the kernel follows the tree and wakes Sentinel at once; needs CAP_BPF and "
             "CAP_PERFMON with bpf(2) allowed by seccomp, or CAP_SYS_ADMIN; falls back to "
             "poll with one line) or auto (ebpf where it loads, quietly)"),
    Opt(("--cgroup-root",), "cgroup_root", str, metavar="PATH",
        help="where the cgroup hierarchy is mounted, or the cgroup's directory (default: "
             "from /proc/self/mountinfo)"),
    Opt(("--interval",), "interval_seconds", parse_duration, metavar="DURATION",
        help="sampling period at rest (default 0.1s; faster near the limit)"),
    Opt(("--max-interval",), "max_interval_seconds", parse_duration, metavar="DURATION",
        help="longest sampling period while a kernel wake-up covers the limit and memory is "
             "far from it (default 1s; never below --interval)"),
    Opt(("--warn-at",), "warn_at_share", parse_share, metavar="SHARE",
        help="alert (rule warning) when the measure is above this share of the limit, e.g. "
             "80%% or 0.8; resolves 5 points below (default 80%%; none: off)"),
    Opt(("--leak-window",), "leak_window_seconds", parse_positive_duration, metavar="DURATION",
        help="window of the leak and prediction alerts' robust growth (default 5m)"),
    Opt(("--leak-min-rate",), "leak_min_rate_bytes_per_second", parse_rate, metavar="SIZE/s",
        help="alert (rule leak) when the measure grows at least this fast, sustained, over "
             "--leak-window, e.g. 64Ki/s (bytes per second; default 64Ki/s)"),
    Opt(("--predict-within",), "predict_within_seconds", parse_horizon, metavar="DURATION",
        help="alert (rule prediction) when the limit is less than this away at the current "
             "growth (default 10m; none: off)"),
    Opt(("--grace-period",), "grace_period_seconds", parse_duration, metavar="DURATION",
        help="wait between SIGTERM and SIGKILL (default 3s)"),
    Opt(("--single-child",), "single_child", flag=True, modes=("run",),
        help="send signals to the direct child only, not to its whole process group"),
    Opt(("--rewrite",), "rewrite", parse_rewrite, metavar="SIG:SIG", repeat=True, modes=("run",),
        help="rewrite a forwarded signal, e.g. TERM:QUIT; HUP:0 drops SIGHUP (repeatable)"),
    Opt(("--success-exit-code",), "success_exit_codes", parse_exit_code, metavar="CODE",
        repeat=True, modes=("run",), help="exit 0 when the workload exits with CODE (repeatable)"),
    Opt(("--memory-kill-exit-code",), "memory_kill_exit_code", parse_exit_code, metavar="CODE",
        modes=("run",), help="exit code when a memory-killed workload still exits 0 (default 137)"),
    Opt(("--oom-score-adj-margin",), "oom_score_adj_margin", parse_oom_score_adj_margin,
        metavar="N", help="raise the workload's oom_score_adj to Sentinel's + N, at most 1000 "
                          "(default 100; 0: leave it alone)"),
    Opt(("--no-early-sigkill",), "no_early_sigkill", flag=True,
        help="wait the full grace period even when the workload would reach the container's "
             "hard memory limit (and be OOM-killed by the kernel) before it ends"),
    Opt(("--clamp-high",), "clamp_high", flag=True,
        help="at a memory kill's SIGTERM, set the workload's cgroup v2 memory.high to its "
             "usage so it cannot grow during the grace period; restored after (needs a "
             "writable cgroup that Sentinel is not in; a Sentinel killed mid-grace leaves "
             "it clamped)"),
    Opt(("--pdeathsig",), "pdeathsig", parse_signal, metavar="SIG", modes=("run",),
        help="signal Sentinel receives (and forwards) when its own parent dies"),
    Opt(("--stop-signal",), "stop_signal", parse_signal, metavar="SIG", modes=("run",),
        help="the ladder's first signal, sent before SIGKILL to stop the workload (default "
             "TERM)"),
    Opt(("--pre-kill-hook",), "pre_kill_hook", parse_command_line, metavar="CMD",
        modes=("run",),
        help="command run (split as a shell would, no shell) before a memory kill's SIGTERM, "
             "e.g. 'py-spy dump --pid $SENTINEL_PID' via sh -c; its env has SENTINEL_PID, "
             "SENTINEL_PIDS, SENTINEL_VALUE_BYTES, SENTINEL_LIMIT_BYTES...; its output goes "
             "to the log and the Event (default: none)"),
    Opt(("--pre-kill-hook-timeout",), "pre_kill_hook_timeout_seconds", parse_positive_duration,
        metavar="DURATION", modes=("run",),
        help="the pre-kill hook is killed after DURATION and the SIGTERM sent; below the grace "
             "period (default min(5s, grace/2))"),
    Opt(("--dry-run",), "dry_run", flag=True,
        help="memory kills are reported (log, metrics, Events, termination message) but no "
             "signal is sent; operator stop/kill and the shutdown still act"),
    Opt(("--restart",), "restart", choices=RESTART_POLICIES, modes=("run",),
        help="restart policy: never (default), on-failure or always, with capped back-off"),
    Opt(("--restart-delay",), "restart_delay_seconds", parse_duration, metavar="DURATION",
        modes=("run",), help="first restart back-off, doubled after each failure (default 1s)"),
    Opt(("--restart-max-delay",), "restart_max_delay_seconds", parse_duration,
        metavar="DURATION", modes=("run",), help="restart back-off cap (default 30s)"),
    Opt(("--max-restarts",), "max_restarts", parse_positive_int, metavar="N", modes=("run",),
        help="give up after N restarts in a row, each after a run shorter than max(10s, "
             "--restart-max-delay) (default 0: no cap)"),
    Opt(("--log-format",), "log_format", choices=LOG_FORMATS,
        help="human lines (default) or json, one object a line, on stderr"),
    Opt(("--log-level",), "log_level", choices=LOG_LEVELS, help="default info"),
    Opt(("--metrics-address",), "metrics_address", parse_address, metavar="ADDR",
        help="address of the Prometheus exporter (default 0.0.0.0; IPv6 as :: or [::1])"),
    Opt(("--metrics-port",), "metrics_port", parse_port, metavar="PORT",
        help="port of the Prometheus exporter (default 8000; 0 turns it off)"),
    Opt(("--no-metrics",), "no_metrics", flag=True, help="no Prometheus exporter"),
    Opt(("--socket",), "socket_path", str, metavar="PATH",
        help="control socket path (default /tmp/sentinel.socket)"),
    Opt(("--no-socket",), "no_socket", flag=True, help="no control socket"),
    Opt(("--socket-mode",), "socket_mode", parse_mode, metavar="MODE",
        help="control socket file mode (default 0600)"),
    Opt(("--socket-group",), "socket_group", str, metavar="GROUP",
        help="group allowed on the control socket (with --socket-mode 0660)"),
    Opt(("--socket-idle-timeout",), "socket_idle_timeout_seconds", parse_positive_duration,
        metavar="DURATION", help="control socket: close a connection idle this long (default 60s)"),
    Opt(("--socket-line-timeout",), "socket_line_timeout_seconds", parse_positive_duration,
        metavar="DURATION", help="control socket: time to finish a started line (default 5s)"),
    Opt(("--socket-write-timeout",), "socket_write_timeout_seconds", parse_positive_duration,
        metavar="DURATION",
        help="control socket: drop a client that reads no reply this long (default 5s)"),
    Opt(("--socket-max-clients",), "socket_max_clients", parse_count, metavar="N",
        help="control socket: connections served at once (default 16)"),
    Opt(("--tui",), "tui", flag=True, help="live terminal dashboard (needs a terminal)"),
    Opt(("--tui-log",), "tui_log", str, metavar="PATH",
        help="with --tui: file for the workload's output (default /tmp/sentinel-workload.log)",
        watch_help="with --tui: file for Sentinel's log while the dashboard is up (default "
                   "/tmp/sentinel-workload.log)"),
    Opt(("--workload-name",), "workload_name", str, metavar="NAME",
        help="the workload label in metrics and events (default: the command's basename)",
        watch_help="the workload label in metrics and events (default: the --target-* value)"),
    Opt(("--k8s-events",), "k8s_events", choices=K8S_EVENTS,
        help="record kills as Kubernetes Events: auto (default: when a cluster is configured), "
             "on, off"),
    Opt(("--kubeconfig",), "kubeconfig", str, metavar="PATH",
        help="kubeconfig outside a pod (default: $KUBECONFIG, then ~/.kube/config)"),
    Opt(("--termination-log",), "termination_log", str, metavar="PATH",
        help="where a kill summary is written for Kubernetes (default /dev/termination-log)"),
    Opt(("--state-dir",), "state_dir", str, metavar="DIR",
        help="keep the pod's counters (kills, restarts) in DIR/sentinel-state.json across "
             "container restarts (default: off; the chart uses /shared)"),
    Opt(("--linger",), "linger_seconds", parse_duration, metavar="DURATION", modes=("run",),
        help="after a kill, wait up to DURATION for Events and one more scrape before "
             "exiting (default 5s in a pod, else 0; a SIGTERM meanwhile cuts it short)"),
    Opt(("--webhook-url-file",), "webhook_url_file", parse_webhook_url_file, metavar="PATH",
        help="POST warnings, kills, OOM kills, restarts and give-ups to the webhook URLs "
             "in PATH: one a line, then optional format=json|text events=... name=... "
             "(docs/webhooks.md); URLs are never taken on the command line"),
    Opt(("--webhook-timeout",), "webhook_timeout_seconds", parse_positive_duration,
        metavar="DURATION", help="timeout of each webhook POST (default 5s)"),
    Opt(("--debug",), "debug", flag=True, help="debug logs and tracebacks on errors"),
    Opt(("--config",), "config_path", str, metavar="FILE", modes=("run",),
        help="run the programs of a YAML file (docs/config.md) instead of a command after --"),
    Opt(("--check-config",), "check_config", flag=True, modes=("run",),
        help="with --config: check the file, print the programs in start order, exit 0 (or "
             "2 with the error); nothing is started"),
    Opt(("--target-name",), "target_name", str, metavar="NAME", modes=("watch",),
        help="watch the process started as NAME (comm, argv[0] or executable basename, or a "
             "script's: python3 NAME)"),
    Opt(("--target-cmdline",), "target_cmdline", str, metavar="REGEX", modes=("watch",),
        help="watch the process whose command line matches REGEX"),
    Opt(("--target-pid",), "target_pid", parse_positive_int, metavar="PID", modes=("watch",),
        help="watch this PID"),
)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

RUN_DESCRIPTION = """\
Run CMD as Sentinel's child: forward signals to it, reap zombies, exit with its
status (128+N when it died of signal N), and enforce a memory limit on its
process tree: SIGTERM when the measure crosses --max-rss, SIGKILL after the
grace period. Every option also reads SENTINEL_<OPTION> from the environment,
e.g. SENTINEL_MAX_RSS=512Mi.
"""
WATCH_DESCRIPTION = """\
Guard a workload that Sentinel did not start (a sidecar in a pod with
shareProcessNamespace: true): wait for the target, watch its process tree,
apply the same SIGTERM -> grace -> SIGKILL ladder, and attach again when the
target is restarted. Every option also reads SENTINEL_<OPTION>.
"""
EPILOG = "Exit codes: the workload's own, 128+N for signal N; 2 bad usage, 126 not executable, " \
         "127 not found, 137 (configurable) memory kill that exited 0, 71 the workload could not " \
         "be ended (it refused SIGKILL or outlived it), 70 internal error."
WATCH_EPILOG = "Exit codes: 0 after SIGTERM or SIGINT (the target is left alone); 2 bad usage " \
    "(a --target-pid that is Sentinel or its ancestor included); 70 internal error."


def build_parser(mode: str):
    """The ``argparse.ArgumentParser`` for ``run`` or ``watch`` built from ``OPTIONS``; its
    errors raise ``UsageError`` (one line, no usage dump). argparse is imported here, not at
    module level: the common case never needs it (``parse_known_options``)."""
    import argparse

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]
            raise UsageError(f"{message} (see 'sentinel {self.prog.split()[-1]} --help')")

    parser = _Parser(
        prog=f"sentinel {mode}",
        usage=f"sentinel {mode} [OPTIONS] " + ("(-- CMD [ARGS...] | --config FILE)"
                                                if mode == "run" else
                                                "(--target-name NAME | --target-cmdline "
                                                "REGEX | --target-pid PID)"),
        description=RUN_DESCRIPTION if mode == "run" else WATCH_DESCRIPTION,
        epilog=EPILOG if mode == "run" else WATCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    for opt in OPTIONS:
        if mode not in opt.modes:
            continue
        help_text = f"{(opt.watch_help if mode == 'watch' else None) or opt.help} " \
                    f"[${opt.env_name}]"
        if opt.flag:
            parser.add_argument(*opt.flags, dest=opt.dest, action="store_true", default=None,
                                help=help_text)
        elif opt.choices:
            parser.add_argument(*opt.flags, dest=opt.dest, choices=opt.choices, default=None,
                                help=help_text)
        else:
            parser.add_argument(*opt.flags, dest=opt.dest, metavar=opt.metavar, default=None,
                                action="append" if opt.repeat else "store", help=help_text)
    return parser


def parse_known_options(mode: str, opts: list[str]) -> dict[str, object] | None:
    """Read ``opts`` as ``build_parser(mode).parse_args(opts)`` would, without argparse, when
    every word is plain: a long option of ``mode`` from ``OPTIONS`` (exactly, as with
    ``allow_abbrev=False``), as ``--switch``, ``--option VALUE`` or ``--option=VALUE``, with
    a value that does not start with ``-`` and, for a choice, is one of its choices.
    Returns ``{dest: value}`` for the options given, as argparse sets them (a switch
    ``True``, a repeatable option the list of its raw values, any other the last raw
    value), or ``None`` for anything else (``--help``, an unknown option, a missing value,
    a value that starts with ``-``...): argparse then prints the help or judges it, so
    its messages stay the only ones. Sentinel's start is faster by what argparse costs
    to import and build (about 4 ms, before the workload is spawned)."""
    by_flag = {f: o for o in OPTIONS if mode in o.modes for f in o.flags}
    given: dict[str, object] = {}
    words = iter(opts)
    for word in words:
        flag, eq, value = word.partition("=")
        opt = by_flag.get(flag)
        if opt is None:
            return None
        if opt.flag:
            if eq:
                return None  # argparse: "ignored explicit argument"
            given[opt.dest] = True
            continue
        if not eq:
            value = next(words, None)  # type: ignore[assignment]
            if value is None:
                return None  # argparse: "expected one argument"
        if value.startswith("-") or (opt.choices and value not in opt.choices):
            return None
        if opt.repeat:
            given.setdefault(opt.dest, []).append(value)  # type: ignore[union-attr]
        else:
            given[opt.dest] = value
    return given


def _convert(opt: Opt, raw: str, source: str):
    if opt.choices:
        if raw not in opt.choices:
            raise UsageError(f"{source}: {raw!r} is not one of {', '.join(opt.choices)}")
        return raw
    if opt.flag:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise UsageError(f"{source}: {raw!r} is not a boolean; use 1/0, true/false")
    parse = opt.parse or str
    try:
        return parse(raw)  # type: ignore[operator]
    except ValueError as exc:
        raise UsageError(f"{source}: {exc}") from None


def split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``run``'s arguments into Sentinel's options and the command.

    Everything after the first ``--`` is the command, untouched, even words
    that look like Sentinel's flags. Without ``--`` the command starts at the
    first word that is not an option or an option's value.
    """
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    takes_value = {f for o in OPTIONS if not o.flag for f in o.flags}
    i = 0
    while i < len(argv):
        word = argv[i]
        if not word.startswith("-") or word == "-":
            return argv[:i], argv[i:]
        i += 2 if word in takes_value else 1
    return argv, []


def parse_settings(mode: str, argv: list[str], environ: dict[str, str] | None = None,
                   explicit: set[str] | None = None) -> Settings:
    """Build ``Settings`` for ``mode`` ("run"/"watch") from ``argv`` and ``environ``.

    Raises ``UsageError`` (exit code 2) with one line naming the flag or
    variable at fault; ``--help`` prints help and raises ``SystemExit(0)``.
    ``explicit``, when given, receives the ``Opt.dest`` of every option given on
    the command line or as a ``SENTINEL_*`` variable (a config file's settings
    give way to those: ``sentinel.config.programs.load_config``).
    """
    env = os.environ if environ is None else environ
    opts, command = split_command(argv) if mode == "run" else (argv, [])
    _refuse_webhook_url(opts)
    parsed = parse_known_options(mode, opts)
    if parsed is None:
        parsed = vars(build_parser(mode).parse_args(opts))
    values: dict[str, object] = {}
    for opt in OPTIONS:
        if mode not in opt.modes:
            continue
        given = parsed.get(opt.dest)
        if given is not None:
            if opt.flag or opt.choices:
                values[opt.dest] = given
            elif opt.repeat:
                values[opt.dest] = [_convert(opt, g, opt.flags[0]) for g in given]
            else:
                values[opt.dest] = _convert(opt, given, opt.flags[0])
        elif opt.env_name in env and (env[opt.env_name] != "" or opt.flag):
            raw = env[opt.env_name]
            if opt.repeat:
                values[opt.dest] = [_convert(opt, part, opt.env_name)
                                    for part in raw.split(",") if part.strip()]
            else:
                values[opt.dest] = _convert(opt, raw, opt.env_name)
    if explicit is not None:
        explicit.update(values)
    normalize_values(values)
    try:
        values["webhooks"] = webhooks_from_environ(env)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if mode == "run" and values.get("config_path") is not None:
        if not str(values["config_path"]).strip():
            raise UsageError("--config: empty path; give the YAML file, e.g. --config "
                             "/etc/sentinel/sentinel.yaml")
        if command:
            raise UsageError("give either --config FILE or a command after --, not both")
        if "workload_name" in values:
            raise UsageError("--workload-name: with --config each program's name is its "
                             "workload name; leave --workload-name out")
    elif mode == "run" and values.get("check_config"):
        raise UsageError("--check-config: give the file to check, e.g. sentinel run "
                         "--config sentinel.yaml --check-config")
    elif mode == "run":
        if not command:
            raise UsageError("no command given; use e.g. 'sentinel run --max-rss 200Mi -- "
                             "python app.py'")
        if command[0] == "":
            raise UsageError("the command is an empty string; use e.g. 'sentinel run -- "
                             "python app.py'")
        values["command"] = tuple(command)
        values.setdefault("workload_name", os.path.basename(command[0]) or command[0])
    else:
        targets = [k for k in ("target_name", "target_cmdline", "target_pid") if k in values]
        if len(targets) != 1:
            raise UsageError("give exactly one of --target-name, --target-cmdline, --target-pid "
                             "(or SENTINEL_TARGET_NAME...)")
        for key, flag in (("target_name", "--target-name"), ("target_cmdline",
                                                              "--target-cmdline")):
            if key in values and not str(values[key]).strip():
                raise UsageError(f"{flag}: empty; it would match every process. Give the "
                                 "workload's name, e.g. --target-name python")
        if "target_pid" in values:
            pid, pid_max = int(values["target_pid"]), _pid_max()  # type: ignore[call-overload]
            if not 1 <= pid < pid_max:  # PIDs go up to pid_max - 1
                raise UsageError(f"--target-pid: {pid} is not a possible PID "
                                 f"(1-{pid_max - 1})")
        if "target_cmdline" in values:
            try:
                re.compile(str(values["target_cmdline"]))
            except re.error as exc:
                raise UsageError(f"--target-cmdline: not a regular expression: {exc}") from None
        values.setdefault("workload_name", str(values.get("target_name") or
                                               values.get("target_cmdline") or
                                               f"pid{values.get('target_pid')}"))
    if not str(values.get("workload_name", "x")).strip():
        raise UsageError("--workload-name: empty; Prometheus treats an empty label as absent. "
                         "Give a name (e.g. --workload-name web), or leave it out for the "
                         "default")
    _warn_unknown_variables(env)
    if mode == "run":
        delay = float(values.get("restart_delay_seconds",  # type: ignore[arg-type]
                                 Settings.restart_delay_seconds))
        cap = float(values.get("restart_max_delay_seconds",  # type: ignore[arg-type]
                               Settings.restart_max_delay_seconds))
        if delay > cap:
            raise UsageError(f"--restart-delay {delay:g}s is longer than --restart-max-delay "
                             f"{cap:g}s, which caps every back-off; raise --restart-max-delay "
                             f"(e.g. --restart-max-delay {max(delay * 2, 60):g}s) or lower "
                             "--restart-delay")
    probe = Settings(**{k: v for k, v in values.items()  # type: ignore[arg-type]
                        if k in ("pre_kill_hook", "pre_kill_hook_timeout_seconds",
                                 "grace_period_seconds")})
    check_pre_kill_hook(probe)
    interval = values.get("interval_seconds", Settings.interval_seconds)
    if not 0.001 <= float(interval) <= 60:  # type: ignore[arg-type]
        raise UsageError(f"--interval: {interval}s is out of range; use 1ms to 60s, e.g. 100ms")
    longest = values.get("max_interval_seconds", Settings.max_interval_seconds)
    if not 0.001 <= float(longest) <= 60:  # type: ignore[arg-type]
        raise UsageError(f"--max-interval: {longest}s is out of range; use 1ms to 60s, e.g. 1s")
    if values.get("socket_path") is not None and str(values["socket_path"]).strip() == "":
        raise UsageError("--socket: empty path; use e.g. /tmp/sentinel.socket or --no-socket")
    return Settings(mode=mode, **values)  # type: ignore[arg-type]


def _refuse_webhook_url(opts: list[str]) -> None:
    """A webhook URL on the command line would be readable by every user in
    /proc/PID/cmdline, and it carries the receiver's token: refuse it without echoing it."""
    known = ("--webhook-url-file", "--webhook-timeout")
    for word in opts:
        name = word.split("=", 1)[0]
        near = name.lower().replace("_", "-")  # --webhook_url, --Webhook-URI: near misses
        if name not in known and near in known:
            raise UsageError(f"{name}: no such option; did you mean {near}?")
        if name not in known and near.startswith("--webhook"):
            raise UsageError(f"{name}: there is no such option: a URL on the command line is "
                             "readable by every user (/proc/PID/cmdline) and webhook URLs "
                             "carry tokens; set SENTINEL_WEBHOOK_URL, or list URLs in a file "
                             "and pass --webhook-url-file PATH")


def normalize_values(values: dict[str, object]) -> None:
    """Turn the converted values of ``OPTIONS`` (``Opt.dest`` -> value) into ``Settings``
    fields, in place: ``--max-rss auto`` into ``limit_auto_share``, ``--no-metrics`` and
    ``--no-socket`` into ``metrics_port``/``socket_path``, paths made absolute (Sentinel
    moves to / once the workload runs). Shared by ``parse_settings`` and the config file
    (``sentinel.config.programs``). Raises ``UsageError`` (an empty ``--cgroup-root``, a
    signal rewritten twice)."""
    if values.get("pre_kill_hook"):
        values["pre_kill_hook"] = resolve_hook_command(tuple(values["pre_kill_hook"]))
    if isinstance(values.get("max_rss_bytes"), AutoLimit):
        values["limit_auto_share"] = float(values.pop("max_rss_bytes"))  # type: ignore[arg-type]
        values["max_rss_bytes"] = None
    if isinstance(values.get("cgroup_root"), str):
        if not str(values["cgroup_root"]).strip():
            raise UsageError("--cgroup-root: empty path; give the directory where the cgroup "
                             "hierarchy is mounted, e.g. /sys/fs/cgroup, or leave it out")
        values["cgroup_root"] = os.path.abspath(str(values["cgroup_root"]))
    if values.pop("no_metrics", False):
        values["metrics_port"] = 0
    if values.pop("no_socket", False):
        values["socket_path"] = None
    if "rewrite" in values:
        pairs = list(values["rewrite"])  # type: ignore[call-overload]
        sources = [src for src, _ in pairs]
        for src in set(sources):
            if sources.count(src) > 1:
                raise UsageError(f"--rewrite: {signal_name(src)} is rewritten twice; give one "
                                 "FROM:TO per signal")
        values["rewrite"] = tuple(pairs)
    if "success_exit_codes" in values:
        values["success_exit_codes"] = frozenset(values["success_exit_codes"])  # type: ignore
    if values.get("termination_log") == "":
        values["termination_log"] = None
    # Sentinel moves to / once the workload runs: relative paths are taken
    # relative to the directory it was started in, now.
    if isinstance(values.get("config_path"), str) and values["config_path"]:
        values["config_path"] = os.path.abspath(str(values["config_path"]))
    for key in ("socket_path", "termination_log", "tui_log", "state_dir"):
        if isinstance(values.get(key), str) and values[key]:
            values[key] = os.path.abspath(values[key])  # type: ignore[arg-type]
    if isinstance(values.get("kubeconfig"), str):  # a list, as $KUBECONFIG may be
        values["kubeconfig"] = os.pathsep.join(
            os.path.abspath(p) for p in str(values["kubeconfig"]).split(os.pathsep) if p)


# Variables read elsewhere than the option table (the client commands' own, in
# sentinel.control.client), so they are not reported as unknown.
EXTRA_VARIABLES = {"SENTINEL_CLIENT_MAX_REPLY",
                   "SENTINEL_WEBHOOK_URL",  # read by parse_settings: no --webhook-url flag
                   "SENTINEL_BPF_OBJECT"}  # sentinel.probes.ebpf: another build of the object


def _warn_unknown_variables(env) -> None:
    """One warning line for each ``SENTINEL_*`` variable that no option reads (a typo
    such as SENTINEL_MAXRSS would otherwise silently mean "no limit")."""
    known = {o.env_name for o in OPTIONS} | EXTRA_VARIABLES
    unknown = sorted(k for k in env if k.startswith("SENTINEL_") and k not in known)
    if not unknown:
        return
    import difflib

    for name in unknown:
        # Compared without the common prefix, or every SENTINEL_X resembles something.
        close = difflib.get_close_matches(name[len("SENTINEL_"):],
                                          [k[len("SENTINEL_"):] for k in known], n=1, cutoff=0.7)
        hint = f"; did you mean SENTINEL_{close[0]}?" if close else "; see 'sentinel run --help'"
        sys.stderr.write(f"sentinel: warning: {name} is not a Sentinel variable, ignored{hint}\n")


def _pid_max() -> int:
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 4194304  # the kernel's ceiling (PID_MAX_LIMIT on 64-bit)


def is_true(text: str | None) -> bool:
    return (text or "").strip().lower() in _TRUE


def die(message: str, code: int) -> None:
    """Print one ``sentinel: error: ...`` line on stderr and exit with ``code``; a URL in
    ``message`` is masked (``errors.mask_urls``: it may be a webhook's, with its token)."""
    sys.stderr.write(f"sentinel: error: {mask_urls(message)}\n")
    sys.stderr.flush()
    raise SystemExit(code)
