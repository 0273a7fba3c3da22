"""Webhook URLs never reach the workload, a program of a config file or the pre-kill hook,
and a hook that prints one anyway (it read it from a file) has it redacted everywhere
its output goes: the log, the termination message, the Kubernetes Event, ``status`` and
the other receivers' bodies. A real Sentinel killing a real leaker; a local HTTP receiver
and a local API server."""

from __future__ import annotations

import json
import os
import signal
import subprocess

from sentinel.control.client import request
from tests.conftest import LEAKER, PY, SENTINEL, clean_env, wait_until
from tests.fakes.apiserver import FakeApiServer
from tests.fakes.receiver import Receiver
from tests.integration.test_events import env_for

TOKEN = "Xk29-webhook-T0KEN-77aa"
NO_PROXY = {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}


def _env_file(path) -> dict:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_workload_and_hook_never_get_the_urls_and_a_printed_one_is_redacted(
        start_sentinel, tmp_path, mode):
    sock, term = tmp_path / "sentinel.socket", tmp_path / "termination-log"
    workload_env, hook_env = tmp_path / "workload.env", tmp_path / "hook.env"
    with Receiver() as r, FakeApiServer() as api:
        env_url = r.url(f"/ok/env/{TOKEN}?token={TOKEN}")
        (tmp_path / "copy.url").write_text(env_url + "\n")  # what the hook prints
        urls = tmp_path / "webhooks"
        urls.write_text(f"{r.url(f'/ok/file/{TOKEN}')} name=file\n")
        kc = api.kubeconfig(tmp_path / "kubeconfig")
        s = start_sentinel([
            "--no-metrics", "--log-format", "json", "--socket", str(sock),
            "--termination-log", str(term), "--max-rss", "60Mi", "--grace-period", "2s",
            "--restart", "always", "--restart-delay", "60s", "--restart-max-delay", "60s",
            "--webhook-url-file", str(urls),
            "--pre-kill-hook", f"sh -c 'env > {hook_env}; echo evidence; cat {tmp_path}/copy.url'",
            "--", "sh", "-c", f"env > {workload_env}; exec {PY} {LEAKER} --rate 100 --quiet"],
            pid1=mode == "pid1",
            env=env_for(tmp_path, kc, SENTINEL_WEBHOOK_URL=env_url, **NO_PROXY))
        wait_until(lambda: any(x.get("event") == "restart_scheduled" for x in s.logs()), 20,
                   what=lambda: s.stderr()[-3000:])
        r.wait_for(lambda: len(r.bodies("/ok/file/")) >= 3, 10, "the kill's messages")
        api.wait_for(lambda: any(e["reason"] == "PreKillHook" for e in api.events()), 10,
                     "the hook's Event")
        status = json.dumps(request(str(sock), "status"))
        status_text = request(str(sock), "status text")["text"]
        bodies = json.dumps(r.bodies("/ok/"))
        [note] = [e["note"] for e in api.events() if e["reason"] == "PreKillHook"]
    # The workload and the hook ran without the receivers' variable.
    assert "SENTINEL_WEBHOOK_URL" not in _env_file(workload_env)
    assert "SENTINEL_WEBHOOK_URL" not in _env_file(hook_env)
    assert _env_file(workload_env)["PATH"]  # the rest of the environment is there
    # The hook printed the URL itself: redacted in its report and everywhere it goes.
    [done] = [x for x in s.logs() if x.get("event") == "pre_kill_hook"]
    assert done["output"] == "evidence\n<redacted>\n"
    assert "evidence" in note and "<redacted>" in note
    assert "evidence" in term.read_text() and "<redacted>" in term.read_text()
    assert '"output": "evidence\\n<redacted>\\n"' in status
    hook_bodies = [b for b in r.bodies("/ok/file/") if b["kind"] == "pre_kill_hook"]
    assert [b["fields"]["output"] for b in hook_bodies] == ["evidence\n<redacted>\n"]
    for shown in (note, term.read_text(), status, status_text, bodies, s.stderr()):
        assert TOKEN not in shown
        assert "/ok/env/" not in shown and "/ok/file/" not in shown


def test_the_programs_of_a_config_file_never_get_the_url_variables(start_sentinel, tmp_path):
    out = tmp_path / "web.env"
    config = tmp_path / "sentinel.yaml"
    config.write_text(f"""
settings:
  no-metrics: true
  no-socket: true
  webhooks:
    - {{url-env: HOOK_CHAT, name: chat}}
programs:
  - name: web
    command: [sh, -c, "env > {out}.tmp && mv {out}.tmp {out}; exec sleep 600"]
    env: {{KEPT: "yes"}}
""")
    s = start_sentinel(["--config", str(config)],
                       env={"HOOK_CHAT": f"http://127.0.0.1:9/chat/{TOKEN}",
                            "SENTINEL_WEBHOOK_URL": f"http://127.0.0.1:9/env/{TOKEN}",
                            "UNRELATED": "kept", **NO_PROXY})
    wait_until(out.exists, 10, what=lambda: s.stderr()[-3000:])
    env = _env_file(out)
    assert "HOOK_CHAT" not in env and "SENTINEL_WEBHOOK_URL" not in env
    assert env["UNRELATED"] == "kept" and env["KEPT"] == "yes"
    assert TOKEN not in out.read_text()
    os.kill(s.popen.pid, signal.SIGTERM)
    assert s.wait() == 143


def test_exit_2_messages_of_the_real_cli_never_print_the_url(tmp_path):
    marker = tmp_path / "spawned"
    lines = tmp_path / "webhooks"
    lines.write_text(f"name=slack https://hooks.example.com/{TOKEN}\n")
    config = tmp_path / "sentinel.yaml"
    config.write_text(f"settings:\n  webhooks:\n    - https://hooks.example.com/{TOKEN}\n"
                      "programs:\n  - {name: web, command: [true]}\n")
    url = f"https://hooks.example.com/{TOKEN}"
    cases = [
        (["--webhook-url-file", url], {}, "not the URL"),
        ([], {"SENTINEL_WEBHOOK_URL_FILE": url}, "not the URL"),
        (["--webhook-url-file", str(lines)], {}, "the URL must come first"),
        (["--webhook_url", url], {}, "no such option"),
        ([f"--webhook-uri={url}"], {}, "no such option"),
        (["--frobnicate", url], {}, "unrecognized arguments: --frobnicate <url redacted>"),
        ([], {"SENTINEL_WEBHOOK_URL": f"http://u:{TOKEN}@hooks.example.com/x"},
         "user:password@"),
    ]
    for args, env, said in cases:
        p = subprocess.run([*SENTINEL, "run", "--no-metrics", "--no-socket", *args, "--",
                            "touch", str(marker)], env=clean_env(env), capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 2, (args, p.stderr)
        [line] = p.stderr.splitlines()
        assert line.startswith("sentinel: error: ") and said in line, line
        assert TOKEN not in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([*SENTINEL, "run", "--config", str(config)], env=clean_env(),
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and f"{config}:3: settings.webhooks[0]: each receiver is a " \
        "mapping" in p.stderr, p.stderr
    assert TOKEN not in p.stderr
    assert not marker.exists()
