"""Webhook receivers as configured: ``SENTINEL_WEBHOOK_URL``, ``--webhook-url-file PATH``
and the config file's ``settings.webhooks`` list. Parsed and validated here, before the
spawn, with the standard library's ``re`` only (no ``urllib``: the fast path stays small).

A receiver's URL carries its token (a Slack incoming webhook is its URL), so it is
never accepted on the command line (``/proc/PID/cmdline`` is readable by every user of
the host) and never shown: ``WebhookSpec``'s repr leaves it out, receivers are named by
an index or a ``name`` the user gives, and ``secrets_of(url)`` lists what the log must
redact (``sentinel.logs.register_secret``).

The URL file (docs/webhooks.md): one receiver a line, ``#`` starts a comment, blank
lines are skipped; after the URL, optional ``key=value`` words::

    https://hooks.slack.com/services/T000/B000/XXXX  format=text events=kill,oom name=slack
    https://alerts.example.com/sentinel?token=abc     # json, every event
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FORMATS = ("json", "text")
# The event classes a receiver may choose (``events=``): alert (warning, leak and
# prediction alerts, firing and resolved), kill (a kill's first signal, its end and the
# pre-kill hook's report), oom (a kernel OOM kill), restart (a restart scheduled),
# gave-up (the restart budget used up). Dry-run reports are the kill class's.
EVENT_CLASSES = ("alert", "kill", "oom", "restart", "gave-up")
QUEUE_DEFAULT = 100
QUEUE_MAX = 10_000
ENV_VARIABLE = "SENTINEL_WEBHOOK_URL"
# http(s)://host[:port][/path][?query]; no whitespace or control characters (a
# copy-paste that caught a newline or a tab fails here, not at the first kill).
_URL_RE = re.compile(r"^(https?)://([^/?#\s@]+@)?(\[[0-9A-Fa-f:.]+\]|[^/?#\s:@\[\]]+)"
                     r"(:\d{1,5})?([/?#][^\s\x00-\x1f\x7f]*)?$")
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9_.]*[a-z0-9])?$")


@dataclass(frozen=True)
class WebhookSpec:
    """One receiver. ``url`` is secret (not in the repr); ``name`` is its label in
    metrics, ``status`` and the log (``None``: its index among all receivers, given by
    ``sentinel.exporters.webhooks``); ``events`` a subset of ``EVENT_CLASSES``;
    ``programs`` the program names it hears about (``()``: all); ``queue`` the bound on
    its queue (messages); ``source`` where it was configured, for error messages
    ("SENTINEL_WEBHOOK_URL", "/etc/hooks:3", "settings.webhooks[0]")."""

    url: str = field(repr=False)
    name: str | None = None
    format: str = "json"
    events: tuple[str, ...] = EVENT_CLASSES
    programs: tuple[str, ...] = ()
    queue: int = QUEUE_DEFAULT
    source: str = ""


def check_url(text: str, where: str) -> str:
    """``text`` stripped if it is an http(s) URL with a host; else ``ValueError`` naming
    ``where`` but never the URL (it holds a token)."""
    url = text.strip()
    if not _URL_RE.match(url):
        scheme = url.split(":", 1)[0] if ":" in url else ""
        hint = (f"the scheme {scheme!r} is not http or https" if scheme and
                scheme.lower() not in ("http", "https") and len(scheme) < 10 else
                "it needs to be http(s)://host[:port]/path without spaces")
        raise ValueError(f"{where}: not a webhook URL ({hint}; the URL is not shown, it "
                         "may hold a token)")
    return url


def check_events(items: list[str], where: str) -> tuple[str, ...]:
    """The event classes of ``items`` (``all`` for every one); ``ValueError`` otherwise."""
    out: list[str] = []
    for item in items:
        word = item.strip().lower().replace("_", "-")
        if not word:
            continue
        if word == "all":
            return EVENT_CLASSES
        if word not in EVENT_CLASSES:
            raise ValueError(f"{where}: events: {item!r} is not one of "
                             f"{', '.join(EVENT_CLASSES)} (or all)")
        if word not in out:
            out.append(word)
    if not out:
        raise ValueError(f"{where}: events: empty; give some of {', '.join(EVENT_CLASSES)}, "
                         "or leave it out for all")
    return tuple(out)


def check_format(text: str, where: str) -> str:
    if text.strip().lower() not in FORMATS:
        raise ValueError(f"{where}: format: {text!r} is not one of {', '.join(FORMATS)}")
    return text.strip().lower()


def check_name(text: str, where: str) -> str:
    if not _NAME_RE.match(text) or len(text) > 63:
        raise ValueError(f"{where}: name: {text!r} is not a name; use lower-case letters, "
                         "digits, '-', '_' or '.', starting with a letter (e.g. slack)")
    return text


def check_queue(text: str, where: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= QUEUE_MAX:
        raise ValueError(f"{where}: queue: {text!r} is not a number of messages from 1 to "
                         f"{QUEUE_MAX} (default {QUEUE_DEFAULT})")
    return n


def check_programs(items: list[str], where: str) -> tuple[str, ...]:
    out = tuple(p.strip() for p in items if p.strip())
    for p in out:
        check_name(p, f"{where}: programs")
    return out


_WORDS = ("format", "events", "name", "programs", "queue")


def parse_line(line: str, where: str) -> WebhookSpec | None:
    """One line of a URL file: ``None`` for a blank or comment line, else the receiver.
    ``ValueError`` for a bad URL or word (the message names ``where``, never the URL)."""
    text = line.split("#", 1)[0] if line.lstrip().startswith("#") else line
    # A '#' after whitespace starts a comment; one inside the URL (a fragment) does not.
    text = re.split(r"\s#", text, maxsplit=1)[0].strip()
    if not text:
        return None
    url, *words = text.split()
    kwargs: dict = {}
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or key not in _WORDS:
            raise ValueError(f"{where}: {word!r} is not a KEY=VALUE word; after the URL use "
                             "format=json|text, events=alert,kill,oom,restart,gave-up, "
                             "name=NAME, programs=a,b, queue=N")
        if key in kwargs:
            raise ValueError(f"{where}: {key}= given twice; keep one")
        if key == "format":
            kwargs[key] = check_format(value, where)
        elif key == "events":
            kwargs[key] = check_events(value.split(","), where)
        elif key == "name":
            kwargs[key] = check_name(value, where)
        elif key == "programs":
            kwargs[key] = check_programs(value.split(","), where)
        else:
            kwargs[key] = check_queue(value, where)
    return WebhookSpec(url=check_url(url, where), source=where, **kwargs)


def parse_url_file(path: str) -> tuple[WebhookSpec, ...]:
    """The receivers of the URL file at ``path`` (see the module docstring); ``ValueError``
    (one line: the file, the line, what is wrong) when it cannot be read or a line is bad.
    Reads the file once, at start-up: a file changed later is read at the next start."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}; give a file with one "
                         "webhook URL a line") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text; give one webhook URL a line") from None
    specs = tuple(s for i, line in enumerate(lines, 1)
                  if (s := parse_line(line, f"{path}:{i}")) is not None)
    if not specs:
        raise ValueError(f"{path}: no webhook URL in the file (blank and # lines only); add "
                         "one URL a line, or leave --webhook-url-file out")
    return specs


def from_environ(env) -> tuple[WebhookSpec, ...]:
    """``SENTINEL_WEBHOOK_URL``'s receiver (json, every event), or ``()`` when unset or
    empty; ``ValueError`` for a value that is not a URL."""
    raw = env.get(ENV_VARIABLE, "")
    if not raw.strip():
        return ()
    return (WebhookSpec(url=check_url(raw, ENV_VARIABLE), source=ENV_VARIABLE),)


def secrets_of(url: str) -> list[str]:
    """The parts of ``url`` that must never be logged: the URL itself, its path with the
    query (a server's error body often echoes it: "Cannot POST /hooks/T0/B0/XXXX") and
    any password; empty or trivial parts (``/``) are left out."""
    out = [url]
    m = _URL_RE.match(url)
    if m:
        rest = m.group(5) or ""
        if len(rest) > 1:
            out.append(rest)
            path = rest.split("?", 1)[0]
            if len(path) > 1 and path != rest:
                out.append(path)
        userinfo = (m.group(2) or "")[:-1]
        if userinfo:
            out.append(userinfo)
    return out
