"""Local webhook receivers for the tests: one ``http.server`` in a thread serving a few
behaviours by path, recording every request it read.

Paths (the first segment picks the behaviour; the rest is free, e.g. a token):

- ``/ok/...``: 200 at once;
- ``/slow/...``: 200 after ``SLOW_SECONDS``;
- ``/flaky/...``: 500 for the first ``FLAKY_FAILURES`` requests on that path, then 200;
- ``/fail/...``: 500 forever;
- ``/missing/...``: 404 with an Express-like body that echoes the path
  ("Cannot POST /missing/..."), as many real servers do;
- ``/hang/...``: reads the request, then never answers (until ``close``);
- ``/redirect/...``: 302 to ``/ok/redirected`` (a POST must not follow it).
"""

from __future__ import annotations

import http.server
import json
import threading
import time

SLOW_SECONDS = 2.0
FLAKY_FAILURES = 1


class Receiver:
    """``with Receiver() as r``: ``r.url(path)``, ``r.bodies(prefix)`` (parsed JSON bodies
    of the requests whose path starts with ``prefix``, in arrival order), ``r.wait_for``."""

    def __init__(self) -> None:
        self.requests: list[dict] = []  # {"path", "body", "at", "status"}
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._stop = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                kind = self.path.strip("/").split("/")[0]
                with outer._lock:
                    count = outer._counts[self.path] = outer._counts.get(self.path, 0) + 1
                status = {"ok": 200, "slow": 200, "fail": 500, "missing": 404,
                          "redirect": 302}.get(kind, 200)
                if kind == "flaky":
                    status = 500 if count <= FLAKY_FAILURES else 200
                with outer._lock:
                    outer.requests.append({"path": self.path, "body": body,
                                           "at": time.monotonic(), "status": status,
                                           "headers": dict(self.headers)})
                if kind == "hang":
                    outer._stop.wait(60)
                    return
                if kind == "slow":
                    outer._stop.wait(SLOW_SECONDS)
                text = (f"Cannot POST {self.path}" if status == 404 else "ok").encode()
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", "/ok/redirected")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def of(self, prefix: str) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["path"].startswith(prefix)]

    def bodies(self, prefix: str, status: int | None = 200) -> list:
        return [r["body"] for r in self.of(prefix) if status is None or r["status"] == status]

    def wait_for(self, predicate, timeout: float = 10.0, what: str = ""):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}; "
                             f"requests: {[(r['path'], r['status']) for r in self.requests]}")
