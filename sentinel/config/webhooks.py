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
    # The environment variable the URL came from (SENTINEL_WEBHOOK_URL, a url-env's), if
    # any: it is taken out of every spawned program's and hook's environment.
    variable: str | None = None
    # The words a URL-file line gave (format, name, ...), so that a config file's receiver
    # keys never silently override them.
    words: frozenset = field(default=frozenset(), compare=False, repr=False)


def check_url(text: str, where: str) -> str:
    """``text`` stripped if it is an http(s) URL that can be posted to: a host, a port of
    1-65535 if given, no ``user:password@`` (urllib cannot send it: put the token in the
    path or query), only ASCII (a non-ASCII host or path must be percent-encoded, or IDNA
    for a host). Else ``ValueError`` naming ``where`` and what is wrong, never the URL (it
    holds a token)."""
    url = text.strip()
    m = _URL_RE.match(url)
    hint = None
    if not m:
        scheme = url.split(":", 1)[0] if ":" in url else ""
        hint = (f"the scheme {scheme!r} is not http or https" if scheme and
                scheme.lower() not in ("http", "https") and len(scheme) < 10 else
                "it needs to be http(s)://host[:port]/path without spaces")
    elif m.group(2):
        hint = ("it has a user:password@ part, which is not sent (urllib takes no userinfo); "
                "put the token in the path or the query, as the receiver documents")
    elif m.group(4) and not 1 <= int(m.group(4)[1:]) <= 65535:
        hint = "its port is not 1-65535"
    elif not url.isascii():
        hint = ("it has non-ASCII characters; percent-encode them in the path and query "
                "(%C3%A9 for é), and give the host in its IDNA form (xn--...)")
    if hint:
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
    if "://" not in url and any("://" in w for w in words):
        raise ValueError(f"{where}: the URL must come first on the line, then the "
                         "KEY=VALUE words (the URL is not shown)")
    url = check_url(url, where)
    kwargs: dict = {}
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or key not in _WORDS:
            shown = "a second URL" if "://" in word else repr(word)
            raise ValueError(f"{where}: {shown} is not a KEY=VALUE word; after the URL use "
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
    return WebhookSpec(url=url, source=where, words=frozenset(kwargs), **kwargs)


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
    return (WebhookSpec(url=check_url(raw, ENV_VARIABLE), source=ENV_VARIABLE,
                        variable=ENV_VARIABLE),)


def child_environ(base, specs) -> dict[str, str]:
    """``base`` (Sentinel's environment, a mapping) without the variables that hold a
    webhook URL: ``SENTINEL_WEBHOOK_URL`` and each ``url-env`` of ``specs``
    (``WebhookSpec.variable``). What every spawned program and pre-kill hook gets: a
    workload or a hook that prints its environment (``env``, a crash report) must not
    carry a receiver's token to the log, an Event or a termination message."""
    drop = {ENV_VARIABLE} | {s.variable for s in specs if getattr(s, "variable", None)}
    return {k: v for k, v in base.items() if k not in drop}


def workload_environ(specs, base=None) -> dict[str, str] | None:
    """``child_environ(base, specs)`` for ``spawn(environ=...)``, or ``None`` (the spawn's
    default: Sentinel's environment as it is, no copy) when ``base`` (default
    ``os.environ``) holds none of those variables."""
    import os

    env = os.environ if base is None else base
    if ENV_VARIABLE not in env and not any(getattr(s, "variable", None) in env
                                           for s in specs):
        return None
    return child_environ(env, specs)


# Words of URL paths that are not secret (a receiver's documented path), and would
# garble ordinary log lines if redacted: never registered on their own.
COMMON_WORDS = frozenset({
    "services", "webhook", "webhooks", "sentinel", "incoming", "triggers", "workflows",
    "workflow", "notify", "notifications", "messages", "channels", "default", "alerts",
    "alertmanager", "api", "hooks", "hook", "v1", "v2", "true", "false", "json", "text",
    "integrations", "events", "prometheus", "callback", "receiver", "receivers",
    "powerautomate", "automation", "manual", "paths", "invoke", "trigger", "chat",
    "spaces", "message", "generic", "endpoint", "endpoints", "production", "staging",
})
# A path segment shorter than this is never registered alone (``/sentinel``, ``/api``,
# ``/v1`` would redact words of ordinary lines and tracebacks); the whole URL and its
# path with the query still are.
SEGMENT_MIN_CHARS = 8
QUERY_VALUE_MIN_CHARS = 6


def _own_paths() -> str:
    """Sentinel's own paths (its package, the interpreter, the working directory): a
    segment found in them is no secret, and redacting it would garble tracebacks."""
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    return "\n".join((here, sys.prefix, sys.executable or "", os.getcwd()))


def secrets_of(url: str) -> list[str]:
    """The parts of ``url`` that must never be shown, each also in its percent-decoded
    (``urllib.parse.unquote``) form: the URL itself; its path with the query (a server's
    error body often echoes it: "Cannot POST /hooks/T0/B0/XXXX") when that holds one of
    the following; each query value of ``QUERY_VALUE_MIN_CHARS``+ characters; each path
    segment of ``SEGMENT_MIN_CHARS``+ characters; and any password. A piece that is a
    ``COMMON_WORDS`` word, or appears in Sentinel's own paths, is left out, and so is a
    path made only of such pieces (``/sentinel``): redacting it would garble ordinary log
    lines. Imports ``urllib.parse``: call it after the spawn."""
    from urllib.parse import parse_qsl, unquote, urlsplit

    own = _own_paths()

    def plausible(piece: str, least: int) -> bool:
        return len(piece) >= least and piece.lower() not in COMMON_WORDS and piece not in own

    pieces = [url]
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # a bad port or bracket: the whole URL is all we can name
        parts, password = None, None
    if parts is not None:
        segments = [p for p in parts.path.split("/") if plausible(unquote(p),
                                                                  SEGMENT_MIN_CHARS)]
        values = [v for _, v in parse_qsl(parts.query, keep_blank_values=True)
                  if plausible(v, QUERY_VALUE_MIN_CHARS)]
        raw_values = [v.split("=", 1)[1] for v in parts.query.split("&") if "=" in v]
        values += [v for v in raw_values if plausible(unquote(v), QUERY_VALUE_MIN_CHARS)]
        if segments or values:
            rest = parts.path + (f"?{parts.query}" if parts.query else "")
            if len(rest) > 1:
                pieces.append(rest)
            if parts.query and segments:
                pieces.append(parts.path)
        pieces += segments + values
        if password:
            pieces.append(password)
    out: list[str] = []
    for piece in pieces:
        for form in (piece, unquote(piece)):
            if form and form not in out:
                out.append(form)
    return out
