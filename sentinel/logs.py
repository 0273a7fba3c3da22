"""Sentinel's own log lines, on stderr: human lines or one JSON object a line.

The stdlib ``logging`` module does the work; this only formats. Sentinel
never writes to stdout, which belongs to the workload.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

LOGGER_NAME = "sentinel"
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


class HumanFormatter(logging.Formatter):
    """``2026-11-29T22:01:02.345Z sentinel[7] WARNING memory limit crossed: ...``"""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_iso(record.created)} sentinel[{os.getpid()}] {record.levelname:<7} " \
               f"{record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts``, ``level``, ``sentinel_pid``, ``msg``, and the event's
    fields (``event`` names the kind; ``pid`` there is the workload's)."""

    def format(self, record: logging.LogRecord) -> str:
        obj = {"ts": _iso(record.created), "level": record.levelname.lower(),
               "logger": record.name, "sentinel_pid": os.getpid(), "msg": record.getMessage()}
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                obj[key] = value
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, default=str)


def setup(fmt: str = "human", level: str = "info", stream=None) -> logging.Logger:
    """Configure and return the ``sentinel`` logger (idempotent)."""
    logger = logging.getLogger(LOGGER_NAME)
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    return logger


def fmt_bytes(n: int | None) -> str:
    """``209715200`` -> ``"200.0 MiB"``; for log lines and the dashboard only."""
    if n is None:
        return "n/a"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def printable(text: str) -> str:
    """``text`` made safe to encode as UTF-8, for metric labels, files and Events.

    A name that was not UTF-8 (Python decodes a command's file name with byte
    0xff as the surrogate escape ``\\udcff``, which no UTF-8 encoder accepts)
    shows its bytes as ``\\xff``; any other lone surrogate as ``\\udxxx``.
    Valid text is returned as it is.
    """
    try:
        text.encode()
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
