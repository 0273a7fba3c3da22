"""Webhook URLs never leave Sentinel: not through the workload's or the hook's environment,
not in a text cut through a secret, not in an exit-2 message, not through a receiver
configuration that silently differs from what was written (docs/webhooks.md, "What is
guaranteed"). Real files, a real local HTTP receiver; the integration half
(tests/integration/test_webhook_secrets.py) runs real processes."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest

from sentinel import logs
from sentinel.config import webhooks as cfg
from sentinel.config.programs import load_config
from sentinel.config.settings import build_parser, parse_settings
from sentinel.control.protocol import Reply, encode
from sentinel.core.hook import OUTPUT_REPORTED_BYTES, HookResult
from sentinel.core.state import Event, KillRecord
from sentinel.errors import ConfigError, UsageError, mask_urls
from sentinel.exporters import event_bodies, termlog, webhooks
from tests.fakes.receiver import Receiver as FakeReceiver

TOKEN = "Zq7sEcReT-4f1e2d"


def _register(url: str) -> None:
    for secret in cfg.secrets_of(url):
        logs.register_secret(secret)


# -- 1. the environment of programs and hooks -------------------------------------------

def test_the_spawned_environment_has_no_webhook_variable():
    specs = (cfg.WebhookSpec(url=f"https://a/{TOKEN}", variable="SENTINEL_WEBHOOK_URL"),
             cfg.WebhookSpec(url=f"https://b/{TOKEN}", variable="SLACK_URL"),
             cfg.WebhookSpec(url=f"https://c/{TOKEN}", source="/etc/hooks:1"))
    base = {"PATH": "/bin", "SENTINEL_WEBHOOK_URL": "u", "SLACK_URL": "v", "HOME": "/root"}
    assert cfg.child_environ(base, specs) == {"PATH": "/bin", "HOME": "/root"}
    assert cfg.workload_environ(specs, base) == {"PATH": "/bin", "HOME": "/root"}
    assert cfg.workload_environ(specs, {"PATH": "/bin"}) is None  # nothing to take out


def test_the_config_files_url_env_names_its_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("SLACK_URL", f"https://chat.example.com/{TOKEN}")
    path = _config(tmp_path, "    - {url-env: SLACK_URL}\n")
    cli = parse_settings("run", ["--config", path],
                         {"SENTINEL_WEBHOOK_URL": f"https://e.example.com/{TOKEN}"})
    env_spec, file_spec = load_config(path, cli, frozenset()).settings.webhooks
    assert (env_spec.variable, file_spec.variable) == ("SENTINEL_WEBHOOK_URL", "SLACK_URL")


# -- 1. the texts that leave Sentinel: redacted before any cut ---------------------------

def test_the_hooks_output_is_redacted_before_it_is_cut_to_4_kib():
    url = f"https://hooks.example.com/services/{TOKEN}"
    _register(url)
    # The URL straddles the 4 KiB boundary: a cut first would keep its head.
    output = ("x" * (OUTPUT_REPORTED_BYTES - 20) + f" SLACK={url}\n").encode()
    fields = HookResult(("env",), 42, exit_code=0, output=output).fields()
    assert "https://" not in fields["output"] and TOKEN not in fields["output"]
    assert fields["output"].endswith(" SLACK=<redacted>\n")
    assert len(fields["output"].encode()) <= OUTPUT_REPORTED_BYTES


def _kill_with_hook(output: str) -> dict:
    k = KillRecord(reason="memory_limit", started_wall=time.time(), started_mono=0.0,
                   measure="rss", value_bytes=70 * 2**20, limit_bytes=60 * 2**20, pids=(12,),
                   grace_period_seconds=3.0, signals=["SIGTERM", "SIGKILL"], exit_code=137,
                   confirmed=True, reached={"SIGTERM": [12], "SIGKILL": [12]})
    d = k.to_dict()
    d["pre_kill_hook"] = {"command": ["env"], "exit_code": 0, "timed_out": False,
                          "seconds": 0.1, "output": output}
    return d


def test_the_termination_message_is_redacted_before_it_is_cut(tmp_path):
    url = f"https://hooks.example.com/services/{TOKEN}"
    _register(url)
    path = tmp_path / "termination-log"
    writer = termlog.TerminationLog(str(path), create=True, workload="web")
    # The hook's output is the message's last part, cut to what 4096 bytes leave.
    head = len(termlog.summary(_kill_with_hook(""), "web", 1).encode())
    output = "y" * (termlog.MAX_BYTES - head - 25) + url
    writer(Event("kill_finished", "done", fields={"kill": _kill_with_hook(output)},
                 program="web"))
    text = path.read_text()
    assert "yyyy" in text and "https://" not in text and TOKEN not in text


def test_an_event_note_is_redacted_before_it_is_cut():
    url = f"https://hooks.example.com/services/{TOKEN}"
    _register(url)
    output = "z" * 700 + url + " " + "z" * 500
    kill = _kill_with_hook(output)
    event = Event("pre_kill_hook", "hook done", fields={**kill["pre_kill_hook"], "kill": kill},
                  program="web")
    rec = event_bodies.record_for(event, "web", multi=True)
    assert rec is not None and "zzzz" in rec.note
    assert "hooks.example.com" not in rec.note and TOKEN not in rec.note


def test_every_control_reply_is_redacted():
    url = f"https://hooks.example.com/services/{TOKEN}"
    _register(url)
    reply = Reply(encode({"ok": True, "kill": {"pre_kill_hook": {"output": f"U={url}\n"}}}),
                  ok=True)
    assert TOKEN not in reply.data.decode()
    assert json.loads(reply.data)["kill"]["pre_kill_hook"]["output"] == "U=<redacted>\n"
    text = Reply(f"status\n  hook output: {url}\n".encode(), ok=True)  # `status text`
    assert text.data == b"status\n  hook output: <redacted>\n"


def test_a_webhook_body_carries_no_other_receivers_url():
    url = f"https://hooks.example.com/services/{TOKEN}"
    _register(url)

    class Host:
        state = type("S", (), {"workload": "web"})()

        def program(self, name):
            return self

    got = []

    class Sink:
        spec = cfg.WebhookSpec(url="http://127.0.0.1:9/x")

        def submit(self, data):
            got.append(data)

    notifier = webhooks.WebhookNotifier([Sink()], webhooks.Context(Host(), {}))
    kill = _kill_with_hook(f"SLACK={url}")
    notifier(Event("pre_kill_hook", "hook done", fields={**kill["pre_kill_hook"], "kill": kill},
                   program="web"))
    [data] = got
    assert TOKEN not in data.decode()
    assert json.loads(data)["fields"]["output"] == "SLACK=<redacted>"


# -- 2. redaction misses --------------------------------------------------------------------

@pytest.mark.parametrize("url, problem", [
    (f"http://user:{TOKEN}@hooks.example.com/x", "user:password@"),
    (f"https://user@hooks.example.com/{TOKEN}", "user:password@"),
    (f"https://hooks.example.com:70000/{TOKEN}", "port is not 1-65535"),
    (f"https://hooks.example.com:0/{TOKEN}", "port is not 1-65535"),
    (f"https://hooks.exämple.com/{TOKEN}", "non-ASCII"),
    (f"https://hooks.example.com/é/{TOKEN}", "percent-encode"),
])
def test_urls_that_can_never_work_are_refused_without_showing_them(url, problem):
    with pytest.raises(UsageError) as err:
        parse_settings("run", ["--", "true"], {"SENTINEL_WEBHOOK_URL": url})
    assert problem in str(err.value) and TOKEN not in str(err.value)
    assert cfg.check_url(f"https://hooks.example.com:8443/%C3%A9/{TOKEN}", "x")  # encoded: ok


def test_a_receivers_error_body_is_redacted_before_it_is_cut():
    out = io.StringIO()
    logs.setup("json", "debug", stream=out)
    try:
        with FakeReceiver() as server:
            # One long segment: the echo "Cannot POST /missing/<segment>" is longer than
            # the 200 characters kept; a cut first would keep the segment's head.
            secret = "s" * 190 + TOKEN
            spec = cfg.WebhookSpec(url=server.url(f"/missing/{secret}"))
            r = webhooks.Receiver(spec, "gone", timeout=2.0, backoff_seconds=0.05,
                                  max_backoff_seconds=0.1)
            r.submit(b"{}")
            deadline = time.monotonic() + 10
            while r.queue_length and time.monotonic() < deadline:
                time.sleep(0.01)
            r.poster.close(1)
    finally:
        logs.setup("human", "info", stream=io.StringIO())
    [line] = [json.loads(x) for x in out.getvalue().splitlines() if "webhook_failed" in x]
    assert "HTTP 404: Cannot POST <redacted>" in line["msg"]
    assert "ssssssssss" not in out.getvalue()


def test_percent_encoded_query_values_and_long_segments_are_redacted_alone():
    secret = f"{TOKEN}%2Fx"
    url = f"https://hooks.example.com/services/T0AAAA/B0BBBBBBBB/{secret}?sig=Ab%2Bcd3fg&v=1"
    _register(url)
    log = logging.getLogger(logs.LOGGER_NAME)
    out = io.StringIO()
    logs.setup("human", "info", stream=out)
    try:
        log.warning("decoded by the server: /services/T0AAAA/B0BBBBBBBB/%s/x", TOKEN)
        log.warning("a query value alone: Ab+cd3fg; the long segment alone: B0BBBBBBBB")
        log.warning("a short segment alone: T0AAAA")
    finally:
        logs.setup("human", "info", stream=io.StringIO())
    text = out.getvalue()
    assert TOKEN not in text and "Ab+cd3fg" not in text and "B0BBBBBBBB" not in text
    assert "T0AAAA" in text  # 6 characters: not registered alone (it would garble words)


def test_common_and_short_path_pieces_are_never_registered_alone():
    url = f"https://alerts.example.com/sentinel/api/hooks/webhooks?token={TOKEN}&fmt=json"
    pieces = cfg.secrets_of(url)
    assert url in pieces and TOKEN in pieces
    assert f"/sentinel/api/hooks/webhooks?token={TOKEN}&fmt=json" in pieces
    for piece in ("/sentinel", "sentinel", "api", "hooks", "webhooks", "json",
                  "/sentinel/api/hooks/webhooks"):
        assert piece not in pieces, piece
    # A URL without a plausible secret in its path or query: only the URL itself.
    assert cfg.secrets_of("https://alerts.example.com/sentinel") == [
        "https://alerts.example.com/sentinel"]
    for s in pieces:
        logs.register_secret(s)
    line = 'File "/usr/lib/python3/site-packages/sentinel/core/supervisor.py", line 7'
    assert logs.redact(line) == line
    assert logs.redact("POST /sentinel/api/hooks/webhooks failed") == \
        "POST /sentinel/api/hooks/webhooks failed"


def test_a_segment_in_sentinels_own_paths_is_not_registered(monkeypatch):
    # Installed as a distribution would be: its paths' long words are no secret, and
    # redacting them would garble every traceback.
    monkeypatch.setattr(cfg, "_own_paths",
                        lambda: "/usr/lib/python3.11/site-packages/sentinel/config")
    pieces = cfg.secrets_of(f"https://h.example.com/site-packages/python3.11/{TOKEN}")
    assert "site-packages" not in pieces and "python3.11" not in pieces
    assert TOKEN in pieces


# -- 3. exit-2 messages never print a URL ---------------------------------------------------

def test_the_mask_replaces_every_url():
    assert mask_urls(f"x https://h/{TOKEN} and HTTP://h/{TOKEN}, y") == \
        "x <url redacted> and <url redacted> y"


@pytest.mark.parametrize("argv, env, said", [
    (["--webhook-url-file", f"https://hooks.example.com/{TOKEN}", "--", "true"], {},
     "takes a path to a file holding the URL, not the URL"),
    (["--", "true"], {"SENTINEL_WEBHOOK_URL_FILE": f"https://hooks.example.com/{TOKEN}"},
     "SENTINEL_WEBHOOK_URL_FILE: takes a path to a file holding the URL"),
    (["--webhook_url", f"https://hooks.example.com/{TOKEN}", "--", "true"], {},
     "--webhook_url: there is no such option"),
    ([f"--webhook-uri=https://hooks.example.com/{TOKEN}", "--", "true"], {},
     "--webhook-uri: there is no such option"),
    (["--webhook_url_file", "/x", "--", "true"], {}, "did you mean --webhook-url-file?"),
    (["--max-rss", "1Gi", "--hook", f"https://hooks.example.com/{TOKEN}", "--", "true"], {},
     "unrecognized arguments: --hook <url redacted>"),
])
def test_exit_2_messages_never_print_the_url(argv, env, said):
    with pytest.raises(UsageError) as err:
        parse_settings("run", argv, env)
    assert said in str(err.value), str(err.value)
    assert TOKEN not in str(err.value)


def test_argparse_errors_are_masked():
    with pytest.raises(UsageError) as err:
        build_parser("run").parse_args(["--nope", f"https://h/{TOKEN}"])
    assert TOKEN not in str(err.value) and "<url redacted>" in str(err.value)


def test_a_url_file_line_with_words_first_does_not_echo_the_url(tmp_path):
    f = tmp_path / "hooks"
    f.write_text(f"name=slack https://hooks.example.com/{TOKEN}\n")
    with pytest.raises(UsageError) as err:
        parse_settings("run", ["--webhook-url-file", str(f), "--", "true"], {})
    assert f"{f}:1: the URL must come first on the line" in str(err.value)
    assert TOKEN not in str(err.value)


def _config(tmp_path, hooks: str, programs: str = "  - {name: web, command: [true]}\n",
            settings: str = "") -> str:
    f = tmp_path / "sentinel.yaml"
    f.write_text("settings:\n" + settings + "  webhooks:\n" + hooks + "programs:\n" + programs)
    return str(f)


def _load(path: str, env=None):
    return load_config(path, parse_settings("run", ["--config", path], env or {}), frozenset())


@pytest.mark.parametrize("hooks, line, said", [
    (f"    - {{url-file: 'https://hooks.example.com/{TOKEN}'}}\n", 3,
     "url-file takes a path to a file holding the URL, not the URL"),
    (f"    - {{url-env: 'https://hooks.example.com/{TOKEN}'}}\n", 3,
     "url-env takes the name of a variable holding the URL, not the URL"),
    (f"    - https://hooks.example.com/{TOKEN}\n", 3,
     "each receiver is a mapping, {url-env: VARIABLE} or {url-file: PATH}"),
    (f"    - {{url-env: HOOK, name: 'https://hooks.example.com/{TOKEN}'}}\n", 3,
     "name: '<url redacted>' is not a name"),
])
def test_a_url_in_the_config_file_is_refused_without_echoing_it(tmp_path, monkeypatch, hooks,
                                                                 line, said):
    monkeypatch.setenv("HOOK", f"https://alerts.example.com/{TOKEN}")
    path = _config(tmp_path, hooks)
    with pytest.raises(ConfigError) as err:
        _load(path)
    assert f"{path}:{line}:" in str(err.value) and said in str(err.value), str(err.value)
    assert TOKEN not in str(err.value)


# -- 4. receiver configuration: applied as written, or refused ------------------------------

def test_a_url_file_in_the_config_is_read_as_webhook_url_file_reads_it(tmp_path):
    (tmp_path / "hooks").write_text(
        f"# two receivers\nhttps://chat.example.com/{TOKEN} name=slack format=text\n"
        f"https://pager.example.com/{TOKEN} name=pager events=kill,oom\n")
    path = _config(tmp_path, "    - {url-file: hooks, programs: [web], queue: 7}\n")
    slack, pager = _load(path).settings.webhooks
    assert (slack.url, slack.name, slack.format, slack.events) == (
        f"https://chat.example.com/{TOKEN}", "slack", "text", cfg.EVENT_CLASSES)
    assert (pager.url, pager.name, pager.format, pager.events) == (
        f"https://pager.example.com/{TOKEN}", "pager", "json", ("kill", "oom"))
    assert slack.programs == pager.programs == ("web",)
    assert slack.queue == pager.queue == 7
    assert slack.source == f"{tmp_path / 'hooks'}:2"


@pytest.mark.parametrize("item, said", [
    ("{url-file: hooks, name: one}", "settings.webhooks[0].name: the file has 2 receivers"),
    ("{url-file: hooks, format: json}", "settings.webhooks[0].format: also given on"),
    ("{url-file: hooks, queue: 5}", "settings.webhooks[0].queue: also given on"),
])
def test_a_url_file_and_its_item_that_disagree_are_refused(tmp_path, item, said):
    (tmp_path / "hooks").write_text(f"https://a.example.com/{TOKEN} format=text\n"
                                    f"https://b.example.com/{TOKEN} queue=100\n")
    path = _config(tmp_path, f"    - {item}\n")
    with pytest.raises(ConfigError) as err:
        _load(path)
    assert f"{path}:3: {said}" in str(err.value), str(err.value)


def test_webhook_url_file_under_settings_is_taken_from_the_files_directory(tmp_path,
                                                                           monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "hooks").write_text(f"https://a.example.com/{TOKEN} name=rel\n")
    path = conf / "sentinel.yaml"
    path.write_text("settings:\n  webhook-url-file: hooks\nprograms:\n"
                    "  - {name: web, command: [true]}\n")
    monkeypatch.chdir(tmp_path)  # not the file's directory
    config = _load(str(path))
    [spec] = config.settings.webhook_url_file
    assert (spec.name, spec.url) == ("rel", f"https://a.example.com/{TOKEN}")


def test_a_programs_filter_must_name_programs_of_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOK", f"https://alerts.example.com/{TOKEN}")
    path = _config(tmp_path, "    - {url-env: HOOK}\n    - {url-env: HOOK, programs: [wbe]}\n")
    with pytest.raises(ConfigError) as err:
        _load(path)
    assert f"{path}:4: settings.webhooks[1]: programs: 'wbe' is not a program of this file; " \
           "the programs are: web" in str(err.value), str(err.value)
    hooks = tmp_path / "hooks"
    hooks.write_text(f"https://a.example.com/{TOKEN} programs=db\n")
    path = _config(tmp_path, "    - {url-env: HOOK}\n",
                   settings=f"  webhook-url-file: {hooks}\n")
    with pytest.raises(ConfigError) as err:
        _load(path)
    assert f"{hooks}:1: programs: 'db' is not a program of this file" in str(err.value)


def test_every_error_line_sentinel_prints_is_masked(capsys):
    from sentinel.config.settings import die

    with pytest.raises(SystemExit) as exit_:
        die(f"internal error: ValueError('unknown url type: https://h.example.com/{TOKEN}')", 70)
    assert exit_.value.code == 70
    err = capsys.readouterr().err
    assert err == "sentinel: error: internal error: ValueError('unknown url type: " \
                  "<url redacted>')\n"
