"""Webhooks in one process: the receivers' configuration (URL file, variable, config
file, the refused --webhook-url), which events are posted and their bodies, the
poster's retries against local HTTP receivers (tests/fakes/receiver.py), exact drop
counts, the metrics families, and the log's redaction of URLs."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from sentinel import logs
from sentinel.config import webhooks as cfg
from sentinel.config.programs import load_config
from sentinel.config.settings import parse_settings
from sentinel.core.state import Event
from sentinel.errors import ConfigError, UsageError
from sentinel.exporters import webhooks
from sentinel.exporters.metrics import webhook_families
from tests.fakes.receiver import Receiver as FakeReceiver

TOKEN = "T0KEN-s3cr3t"


@pytest.fixture
def server():
    with FakeReceiver() as r:
        yield r


@pytest.fixture
def log_lines():
    """Sentinel's logger writing JSON lines into a StringIO; yields a function returning
    the text so far."""
    out = io.StringIO()
    logs.setup("json", "debug", stream=out)
    yield out.getvalue
    logs.setup("human", "info", stream=io.StringIO())


# -- configuration ----------------------------------------------------------------

def test_the_url_file_takes_one_url_a_line_with_words_and_comments(tmp_path):
    f = tmp_path / "hooks"
    f.write_text(f"# receivers\n\nhttps://hooks.example.com/services/{TOKEN}\n"
                 f"http://10.0.0.1:8080/a?token={TOKEN} format=text events=kill,oom name=chat"
                 " programs=web,db queue=7  # the chat room\n")
    specs = cfg.parse_url_file(str(f))
    assert [s.url for s in specs] == [f"https://hooks.example.com/services/{TOKEN}",
                                      f"http://10.0.0.1:8080/a?token={TOKEN}"]
    assert specs[0].format == "json" and specs[0].events == cfg.EVENT_CLASSES
    assert (specs[1].format, specs[1].events, specs[1].name, specs[1].programs,
            specs[1].queue) == ("text", ("kill", "oom"), "chat", ("web", "db"), 7)
    assert specs[1].source == f"{f}:4"
    assert TOKEN not in repr(specs)  # the URL is not in the repr


@pytest.mark.parametrize("line, problem", [
    (f"ftp://x/{TOKEN}", "the scheme 'ftp' is not http or https"),
    (f"hooks.example.com/{TOKEN}", "needs to be http(s)://host"),
    (f"https://x/{TOKEN} format=xml", "format: 'xml' is not one of json, text"),
    (f"https://x/{TOKEN} events=kills", "events: 'kills' is not one of"),
    (f"https://x/{TOKEN} text", "'text' is not a KEY=VALUE word"),
    (f"https://x/{TOKEN} queue=0", "queue: '0' is not a number of messages"),
    (f"https://x/{TOKEN} name=Bad!", "name: 'Bad!' is not a name"),
])
def test_a_bad_line_is_one_message_that_never_shows_the_url(tmp_path, line, problem):
    f = tmp_path / "hooks"
    f.write_text(line + "\n")
    with pytest.raises(UsageError) as err:
        parse_settings("run", ["--webhook-url-file", str(f), "--", "true"], {})
    assert problem in str(err.value)
    assert f"{f}:1" in str(err.value)
    assert TOKEN not in str(err.value)


def test_an_empty_or_missing_url_file_is_refused(tmp_path):
    f = tmp_path / "hooks"
    f.write_text("# nothing yet\n")
    with pytest.raises(UsageError, match="no webhook URL in the file"):
        parse_settings("run", ["--webhook-url-file", str(f), "--", "true"], {})
    with pytest.raises(UsageError, match="cannot read .*No such file"):
        parse_settings("run", ["--webhook-url-file", str(tmp_path / "nope"), "--", "true"], {})


@pytest.mark.parametrize("argv", [
    ["--webhook-url", f"https://x/{TOKEN}", "--", "true"],
    [f"--webhook-url=https://x/{TOKEN}", "--", "true"],
    ["--webhook-url", f"https://x/{TOKEN}", "true"],  # without --: the URL looks like a command
])
def test_a_url_on_the_command_line_is_refused_and_not_echoed(argv):
    with pytest.raises(UsageError) as err:
        parse_settings("run", argv, {})
    text = str(err.value)
    assert "--webhook-url-file" in text and "SENTINEL_WEBHOOK_URL" in text
    assert TOKEN not in text


def test_the_variable_is_one_json_receiver_for_every_event():
    s = parse_settings("run", ["--", "true"], {"SENTINEL_WEBHOOK_URL": f"https://x/{TOKEN}"})
    [spec] = s.webhooks
    assert (spec.url, spec.format, spec.events) == (f"https://x/{TOKEN}", "json",
                                                    cfg.EVENT_CLASSES)
    with pytest.raises(UsageError, match="SENTINEL_WEBHOOK_URL: not a webhook URL"):
        parse_settings("run", ["--", "true"], {"SENTINEL_WEBHOOK_URL": f"x/{TOKEN}"})


def _config(tmp_path, hooks: str) -> str:
    f = tmp_path / "sentinel.yaml"
    f.write_text("settings:\n  webhooks:\n" + hooks +
                 "programs:\n  - {name: web, command: [true]}\n")
    return str(f)


def test_the_config_file_takes_receivers_from_a_variable_or_a_file(tmp_path, monkeypatch):
    (tmp_path / "chat.url").write_text(f"https://chat.example.com/{TOKEN}\n")
    monkeypatch.setenv("HOOK_URL", f"https://alerts.example.com/{TOKEN}")
    path = _config(tmp_path, "    - {url-env: HOOK_URL, name: alerts, events: [alert, kill]}\n"
                             "    - {url-file: chat.url, format: text, programs: web, queue: 5}\n")
    cli = parse_settings("run", ["--config", path], {"SENTINEL_WEBHOOK_URL": "http://e/x"})
    config = load_config(path, cli, frozenset())
    env, alerts, chat = config.settings.webhooks
    assert env.url == "http://e/x"
    assert (alerts.url, alerts.name, alerts.events) == (f"https://alerts.example.com/{TOKEN}",
                                                        "alerts", ("alert", "kill"))
    assert (chat.url, chat.format, chat.programs, chat.queue) == (
        f"https://chat.example.com/{TOKEN}", "text", ("web",), 5)


@pytest.mark.parametrize("hooks, problem", [
    (f"    - {{url: 'https://x/{TOKEN}'}}\n", "unknown key"),
    ("    - {url-env: HOOK_URL, url-file: x}\n", "exactly one of url-file: PATH or url-env"),
    ("    - {url-env: NOT_SET_ANYWHERE}\n", "$NOT_SET_ANYWHERE is not set"),
    ("    - {url-env: HOOK_URL, events: [everything]}\n", "'everything' is not one of"),
])
def test_a_bad_receiver_in_the_file_names_its_line(tmp_path, monkeypatch, hooks, problem):
    monkeypatch.setenv("HOOK_URL", f"https://alerts.example.com/{TOKEN}")
    path = _config(tmp_path, hooks)
    with pytest.raises(ConfigError) as err:
        load_config(path, parse_settings("run", ["--config", path], {}), frozenset())
    assert problem in str(err.value)
    assert ":3:" in str(err.value) and TOKEN not in str(err.value)


def test_a_reload_that_changes_the_receivers_says_it_needs_a_restart(tmp_path, monkeypatch):
    from sentinel.config.programs import diff

    monkeypatch.setenv("HOOK_URL", f"https://alerts.example.com/{TOKEN}")
    path = _config(tmp_path, "    - {url-env: HOOK_URL}\n")
    cli = parse_settings("run", ["--config", path], {})
    old = load_config(path, cli, frozenset())
    assert diff(old, load_config(path, cli, frozenset())).settings_changed == ()
    monkeypatch.setenv("HOOK_URL", "https://alerts.example.com/rotated")
    assert diff(old, load_config(path, cli, frozenset())).settings_changed == ("webhooks",)


# -- which events, which bodies --------------------------------------------------

def _kill(signals, reason="memory_limit", **extra) -> dict:
    return {"reason": reason, "signals": list(signals), "pids": [7], **extra}


@pytest.mark.parametrize("event, cls", [
    (Event("signal_sent", "sent SIGTERM", fields={"signal": "SIGTERM",
                                                  "kill": _kill(["SIGTERM"])}), "kill"),
    (Event("signal_sent", "sent SIGKILL", fields={"signal": "SIGKILL",
                                                  "kill": _kill(["SIGTERM", "SIGKILL"])}), None),
    (Event("signal_sent", "sent SIGKILL now", fields={"signal": "SIGKILL",
                                                      "kill": _kill(["SIGKILL"])}), "kill"),
    (Event("signal_sent", "shutdown", fields={"signal": "SIGTERM",
                                              "kill": _kill(["SIGTERM"], "shutdown")}), None),
    (Event("kill_finished", "done", fields={"kill": _kill(["SIGTERM"])}), "kill"),
    (Event("pre_kill_hook", "hook ran", fields={"kill": _kill([])}), "kill"),
    (Event("alert", "leak", fields={"rule": "leak", "state": "firing"}), "alert"),
    (Event("kernel_oom_kill", "oom"), "oom"),
    (Event("restart_scheduled", "restarting"), "restart"),
    (Event("gave_up", "giving up"), "gave-up"),
    (Event("exited", "exited 0"), None),
    (Event("limit_crossed", "crossed"), None),
])
def test_which_events_are_posted(event, cls):
    assert webhooks.event_class(event) == cls


class _Host:
    def __init__(self, workload="web-app") -> None:
        self.state = type("S", (), {"workload": workload, "version": "1.2.3",
                                    "components": {}})()
        self.listeners: list = []

    def program(self, name):
        return self


ENV = {"POD_NAME": "web-7d9", "POD_NAMESPACE": "shop", "NODE_NAME": "node-3"}


def test_the_json_body_has_every_documented_key():
    alert = Event("alert", "leak suspected: rss grows 2.1 MiB/s", at_wall=1796141008.25,
                  fields={"rule": "leak", "state": "firing", "value_bytes": 10,
                          "limit_bytes": 20, "share": 0.5, "window_seconds": 300.0},
                  program="web")
    body = webhooks.json_body(alert, webhooks.Context(_Host(), ENV), "alert")
    assert body == {"version": 1, "kind": "alert", "class": "alert", "severity": "warning",
                    "dry_run": False, "rule": "leak", "state": "firing", "program": "web",
                    "workload": "web-app", "pod": "web-7d9", "namespace": "shop",
                    "node": "node-3", "sentinel_pid": body["sentinel_pid"],
                    "time": "2026-12-01T16:03:28.250Z",
                    "message": "leak suspected: rss grows 2.1 MiB/s", "fields": alert.fields}
    # Documented in docs/webhooks.md, key by key.
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text()
    for key in body:
        assert f"`{key}`" in doc, key
    resolved = Event("alert", "leak resolved", fields={"rule": "leak", "state": "resolved"})
    assert webhooks.json_body(resolved, webhooks.Context(_Host(), {}), "alert")["severity"] \
        == "resolved"
    assert "node" not in webhooks.json_body(resolved, webhooks.Context(_Host(), {}), "alert")


def test_the_text_body_is_one_line_with_a_severity_word():
    ev = Event("signal_sent", "sent SIGTERM to the workload (memory_limit): [7];\nSIGKILL in "
               "3.0s", fields={"signal": "SIGTERM", "kill": _kill(["SIGTERM"])}, program="web")
    assert webhooks.text_body(ev, webhooks.Context(_Host(), ENV), "kill") == {
        "text": "CRITICAL web (shop/web-7d9): sent SIGTERM to the workload (memory_limit): "
                "[7]; SIGKILL in 3.0s"}
    long = Event("pre_kill_hook", "output: " + "x" * 5000, fields={"kill": _kill([])},
                 program="web")
    text = webhooks.text_body(long, webhooks.Context(_Host(), {}), "kill")["text"]
    assert len(text) == webhooks.TEXT_MAX_CHARS and text.endswith("xx...")


def test_a_dry_run_says_would_have():
    sent = Event("signal_sent", "would have sent SIGTERM to the workload (memory_limit)",
                 fields={"signal": "SIGTERM", "dry_run": True,
                         "kill": _kill(["SIGTERM"], dry_run=True)}, program="web")
    done = Event("kill_finished", "memory_limit stop done", program="web",
                 fields={"dry_run": True, "kill": _kill(["SIGTERM"], dry_run=True)})
    ctx = webhooks.Context(_Host(), {})
    assert webhooks.text_body(sent, ctx, "kill")["text"] == \
        "DRY-RUN web: would have sent SIGTERM to the workload (memory_limit)"
    assert "would have" in webhooks.text_body(done, ctx, "kill")["text"]
    body = webhooks.json_body(done, ctx, "kill")
    assert body["dry_run"] is True and body["severity"] == "info"
    assert "would have" in body["message"]


# -- posting ---------------------------------------------------------------------

def _receiver(url: str, **kw) -> webhooks.Receiver:
    spec = cfg.WebhookSpec(url=url, **{k: v for k, v in kw.items()
                                       if k in ("queue", "format", "events", "programs")})
    return webhooks.Receiver(spec, kw.get("name", "0"), timeout=kw.get("timeout", 2.0),
                             backoff_seconds=0.05, max_backoff_seconds=0.1)


def _settle(r: webhooks.Receiver, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while r.queue_length and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not r.queue_length


def test_a_good_receiver_gets_the_body(server):
    r = _receiver(server.url(f"/ok/{TOKEN}"))
    assert r.submit(b'{"version": 1}')
    _settle(r)
    assert server.bodies("/ok/") == [{"version": 1}]
    [req] = server.of("/ok/")
    assert req["headers"]["Content-Type"] == "application/json"
    assert req["headers"]["User-Agent"].startswith("sentinel/")
    assert (r.sent_total, r.failed_total, r.retries_total) == (1, {}, 0)
    r.poster.close(1)


def test_a_failing_then_succeeding_receiver_gets_it_after_a_retry(server):
    r = _receiver(server.url(f"/flaky/{TOKEN}"))
    r.submit(b'{"n": 1}')
    _settle(r)
    assert [q["status"] for q in server.of("/flaky/")] == [500, 200]
    assert (r.sent_total, r.retries_total, r.failed_total) == (1, 1, {})
    r.poster.close(1)


def test_500s_are_retried_until_the_attempts_are_used_up(server, log_lines):
    r = _receiver(server.url(f"/fail/{TOKEN}"))
    r.submit(b'{"n": 1}')
    _settle(r)
    assert len(server.of("/fail/")) == webhooks.MAX_ATTEMPTS
    assert (r.sent_total, r.failed_total, r.last_error) == (0, {"http_5xx": 1}, "HTTP 500")
    r.poster.close(1)


def test_a_404_is_not_retried_and_its_echo_of_the_url_is_redacted(server, log_lines):
    r = _receiver(server.url(f"/missing/{TOKEN}?key={TOKEN}x"), name="chat")
    r.submit(b'{"n": 1}')
    r.submit(b'{"n": 2}')
    _settle(r)
    assert [q["status"] for q in server.of("/missing/")] == [404, 404]  # one request each
    assert r.failed_total == {"http_4xx": 2} and r.retries_total == 0
    text = log_lines()
    [line] = [json.loads(x) for x in text.splitlines() if "webhook_failed" in x]
    # The server's body is "Cannot POST /missing/<token>?key=...": logged, redacted.
    assert line["msg"].startswith("webhook chat: a message was not delivered: HTTP 404: "
                                  "Cannot POST <redacted>")
    assert TOKEN not in text
    r.poster.close(1)


def test_a_redirect_is_not_followed(server):
    r = _receiver(server.url(f"/redirect/{TOKEN}"))
    r.submit(b'{"n": 1}')
    _settle(r)
    assert [q["status"] for q in server.requests] == [302]  # the token is not sent on
    assert (r.failed_total, r.last_error) == ({"redirect": 1}, "HTTP 302")
    r.poster.close(1)


def test_a_receiver_that_never_answers_times_out(server):
    r = _receiver(server.url(f"/hang/{TOKEN}"), timeout=0.2)
    r.poster.max_attempts = 2
    r.submit(b'{"n": 1}')
    _settle(r)
    assert len(server.of("/hang/")) == 2
    assert (r.failed_total, r.last_error) == ({"timeout": 1}, "TimeoutError")
    r.poster.close(1)


def test_a_refused_connection_is_retried_and_counted(log_lines):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = _receiver(f"http://127.0.0.1:{port}/{TOKEN}")
    r.submit(b"{}")
    _settle(r)
    assert r.failed_total == {"connection": 1}
    assert r.retries_total == webhooks.MAX_ATTEMPTS - 1
    assert r.last_error == "ConnectionRefusedError"
    assert TOKEN not in log_lines()
    r.poster.close(1)


def test_a_full_queue_drops_and_counts_exactly(server):
    r = _receiver(server.url(f"/hang/{TOKEN}"), queue=2, timeout=30)
    assert r.submit(b'{"n": 0}')
    server.wait_for(lambda: server.of("/hang/"), 5, "the first POST")  # in flight
    results = [r.submit(b'{"n": %d}' % i) for i in range(1, 10)]
    assert results == [True, True] + [False] * 7
    assert (r.dropped_total, r.queue_length) == (7, 3)
    left = r.poster.close(0.2)
    assert left == 3


def test_the_notifier_filters_and_never_blocks(server):
    hang = _receiver(server.url("/hang/a"), queue=1, timeout=30, name="hang")
    ok = _receiver(server.url("/ok/b"), events=("kill",), programs=("web",), name="ok")
    text = _receiver(server.url("/ok/text"), format="text", name="text", queue=200)
    notifier = webhooks.WebhookNotifier([hang, ok, text], webhooks.Context(_Host(), {}))
    kill = Event("signal_sent", "sent SIGTERM", fields={"signal": "SIGTERM",
                                                        "kill": _kill(["SIGTERM"])},
                 program="web")
    events = [kill, Event("restart_scheduled", "restarting", program="web"),
              Event("signal_sent", "db", program="db",
                    fields={"signal": "SIGTERM", "kill": _kill(["SIGTERM"])}),
              Event("exited", "exited 0", program="web")] * 50
    notifier(events[0])
    server.wait_for(lambda: server.of("/hang/"), 5, "the first POST")  # in flight
    took = []
    for e in events[1:]:
        t = time.perf_counter()
        notifier(e)
        took.append(time.perf_counter() - t)
    assert max(took) < 0.05, max(took)  # the hanging receiver costs the caller nothing
    _settle(ok)
    _settle(text)
    assert len(server.bodies("/ok/b")) == 50  # kills of web only
    assert len(server.bodies("/ok/text")) == 150  # every posted event
    assert hang.dropped_total == 150 - 2  # one in flight, one queued
    assert notifier.pending_reports(0.0) == "2 webhook message(s)"
    st = notifier.status()
    assert [s["name"] for s in st] == ["hang", "ok", "text"]
    assert st[0]["dropped"] == 148 and st[1]["sent"] == 50
    assert TOKEN not in json.dumps(st) and "/ok/b" not in json.dumps(st)
    notifier.close()


def test_close_is_bounded_by_the_flush_in_all(server):
    rs = [_receiver(server.url(f"/hang/{i}"), timeout=30, name=str(i)) for i in range(3)]
    notifier = webhooks.WebhookNotifier(rs, webhooks.Context(_Host(), {}), flush_seconds=0.5)
    for r in rs:
        r.submit(b"{}")
    server.wait_for(lambda: len(server.of("/hang/")) == 3, 5, "three POSTs")
    t = time.monotonic()
    notifier.close()
    assert time.monotonic() - t < 0.9  # 0.5 s in all, not 0.5 s each


def test_start_names_receivers_and_sets_the_component():
    from dataclasses import replace

    settings = parse_settings("run", ["--", "true"], {"SENTINEL_WEBHOOK_URL": "http://e/x"})
    settings = replace(settings, webhook_url_file=(
        cfg.WebhookSpec(url="http://f/1"), cfg.WebhookSpec(url="http://f/2", name="chat")))
    host = _Host()
    [notifier] = webhooks.start(host, settings)
    assert [r.name for r in notifier.receivers] == ["0", "1", "chat"]
    assert host.webhooks is notifier and host.listeners == [notifier]
    assert host.state.components["webhooks"] == "on: 3 receiver(s): 0 (json), 1 (json), " \
        "chat (json)"
    notifier.close()
    host = _Host()
    assert webhooks.start(host, parse_settings("run", ["--", "true"], {})) == []
    assert host.state.components["webhooks"].startswith("off")


# -- metrics and the log ------------------------------------------------------------

def test_the_metric_families_exact_text(server):
    r = _receiver(server.url(f"/missing/{TOKEN}"), name="chat")
    r.submit(b"{}")
    _settle(r)
    notifier = webhooks.WebhookNotifier([r], webhooks.Context(_Host(), {}))

    class C(Collector):
        def collect(self):
            return webhook_families(notifier)

    reg = CollectorRegistry()
    reg.register(C())
    text = generate_latest(reg).decode()
    lines = [x for x in text.splitlines() if not x.startswith("#")]
    assert lines == [
        'sentinel_webhook_sent_total{receiver="chat"} 0.0',
        'sentinel_webhook_failed_total{reason="connection",receiver="chat"} 0.0',
        'sentinel_webhook_failed_total{reason="http_4xx",receiver="chat"} 1.0',
        'sentinel_webhook_failed_total{reason="http_5xx",receiver="chat"} 0.0',
        'sentinel_webhook_failed_total{reason="other",receiver="chat"} 0.0',
        'sentinel_webhook_failed_total{reason="redirect",receiver="chat"} 0.0',
        'sentinel_webhook_failed_total{reason="timeout",receiver="chat"} 0.0',
        'sentinel_webhook_dropped_total{receiver="chat"} 0.0',
        'sentinel_webhook_queue_length{receiver="chat"} 0.0',
    ]
    assert TOKEN not in text
    notifier.close()


def test_the_log_redacts_a_registered_url_in_any_line(log_lines):
    url = f"https://hooks.example.com/services/{TOKEN}?q=é"
    for secret in cfg.secrets_of(url):
        logs.register_secret(secret)
    log = logging.getLogger(logs.LOGGER_NAME)
    try:
        raise ValueError(f"unknown url type: {url!r}")  # what urllib says of a bad URL
    except ValueError as exc:
        log.warning("post failed: %r", exc, exc_info=exc)
    log.info("path only: /services/%s", TOKEN)
    text = log_lines()
    assert TOKEN not in text and "hooks.example.com/services" not in text
    assert text.count("<redacted>") >= 3
    logs.setup("human", "info", stream=(human := io.StringIO()))
    log.warning("human too: %s", url)
    assert human.getvalue().rstrip().endswith("human too: <redacted>")
