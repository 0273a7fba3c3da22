"""Webhooks from a real ``sentinel run`` killing a real leaker, against local HTTP
receivers (tests/fakes/receiver.py): a good one in each format, a slow one (2 s), one
that fails once then succeeds, one that never answers, one that answers 500 forever,
one that answers 404. The ladder keeps its timing, the good receivers get the kill,
Sentinel exits with the workload's status within its linger, the bounded queue's drops
are counted exactly, and no URL ever shows in stderr, ``status`` or ``/metrics``."""

from __future__ import annotations

import json
import time

from sentinel.control.client import request
from sentinel.core.state import Event
from sentinel.exporters import webhooks
from tests.conftest import PY, LEAKER, leaker, wait_until
from tests.fakes.receiver import Receiver
from tests.integration.test_prometheus import free_port, get

# The alert rules off: their warning before the kill is posted too (tested elsewhere).
COMMON = ["--no-metrics", "--no-socket", "--log-format", "json", "--grace-period", "1s",
          "--max-rss", "60Mi", "--warn-at", "none", "--predict-within", "none"]
TOKEN = "xoxb-T0KEN-9f8e7d"  # in every receiver's path and query
LINGER = 5.0


def _ts(iso: str) -> float:
    base, frac = iso.rstrip("Z").split(".")
    import calendar

    return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + int(frac) / 1000


def _kill_of(s) -> dict:
    [done] = [r for r in s.logs() if r.get("event") == "kill_finished"]
    return done["kill"]


def _secrets_absent(text: str) -> None:
    assert TOKEN not in text
    assert "/ok/" not in text and "/hang/" not in text and "/missing/" not in text


def test_the_ladder_keeps_its_timing_and_the_receivers_get_the_kill(start_sentinel, tmp_path,
                                                                    mode):
    pid1 = mode == "pid1"
    workload = leaker("--rate", "100", "--quiet", "--ignore-term")
    # The run without webhooks, for the timing: the same leaker, limit and grace period.
    base = start_sentinel([*COMMON, "--linger", "0", "--", *workload], pid1=pid1)
    assert base.wait() == 137
    base_kill = _kill_of(base)
    with Receiver() as r:
        urls = tmp_path / "webhooks"
        urls.write_text("\n".join([
            "# every kind of receiver",
            f"{r.url(f'/ok/json/{TOKEN}?token={TOKEN}')} name=json",
            f"{r.url(f'/ok/text/{TOKEN}')} format=text name=chat",
            f"{r.url(f'/slow/{TOKEN}')} name=slow",
            f"{r.url(f'/flaky/{TOKEN}')} name=flaky",
            f"{r.url(f'/hang/{TOKEN}')} name=hang queue=1",
            f"{r.url(f'/fail/{TOKEN}')} name=fail",
            f"{r.url(f'/missing/{TOKEN}?token={TOKEN}')} name=gone",
        ]) + "\n")
        s = start_sentinel([*COMMON, "--linger", f"{LINGER}s", "--webhook-url-file", str(urls),
                            "--", *workload], pid1=pid1,
                           env={"SENTINEL_WEBHOOK_URL": r.url(f"/ok/env/{TOKEN}"),
                                "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
        code = s.wait(LINGER + 15)
        exited_wall = time.time()
        assert code == 137  # the workload's status (SIGKILL), whatever the receivers did
        kill = _kill_of(s)
        logs = s.logs()
        # The ladder's timing: crossing -> SIGTERM, and SIGTERM -> SIGKILL, against the run
        # without webhooks. The grace period is a timer (1 s): within 15 % either way.
        # The reaction is milliseconds, where a ratio is noise: at most 3 times the
        # baseline's plus 100 ms (one --interval).
        assert kill["signals"] == base_kill["signals"] == ["SIGTERM", "SIGKILL"]
        grace = kill["sigkill"] - kill["started"]
        base_grace = base_kill["sigkill"] - base_kill["started"]
        assert 0.85 <= grace / base_grace <= 1.15, (grace, base_grace)
        assert kill["reaction_seconds"] <= 3 * base_kill["reaction_seconds"] + 0.1, \
            (kill["reaction_seconds"], base_kill["reaction_seconds"])
        # The exit: the linger waited for the hanging receiver, then closing gave it at
        # most FLUSH_SECONDS more; never its 5 s timeouts times four attempts.
        [done] = [x for x in logs if x.get("event") == "kill_finished"]
        lag = exited_wall - _ts(done["ts"])
        assert lag <= LINGER + webhooks.FLUSH_SECONDS + 1.5, lag
        assert any(x.get("event") == "linger" and "still not out" in x["msg"] for x in logs)

        kinds = ["signal_sent", "kill_finished"]
        for path in ("/ok/json/", "/ok/env/"):
            bodies = r.bodies(path)
            assert [b["kind"] for b in bodies] == kinds, path
            assert bodies[0]["fields"]["signal"] == "SIGTERM"
            assert bodies[1]["fields"]["kill"]["signals"] == ["SIGTERM", "SIGKILL"]
            assert bodies[1]["fields"]["kill"]["exit_code"] == 137
            assert {b["version"] for b in bodies} == {1}
            assert {b["program"] for b in bodies} == {"python"}
        texts = [b["text"] for b in r.bodies("/ok/text/")]
        assert len(texts) == 2 and all(t.startswith("CRITICAL python: ") for t in texts)
        assert "sent SIGTERM" in texts[0]
        assert [b["kind"] for b in r.bodies("/slow/")] == kinds  # 2 s each, within the linger
        assert [q["status"] for q in r.of("/flaky/")] == [500, 200, 200]  # after a retry
        assert [b["kind"] for b in r.bodies("/flaky/")] == kinds
        assert [q["status"] for q in r.of("/missing/")] == [404, 404]  # never retried
        assert len(r.of("/fail/")) >= webhooks.MAX_ATTEMPTS  # the first one, retried
        assert r.of("/hang/")
        failed = {(x["receiver"], x["reason"]) for x in logs if x.get("event") == "webhook_failed"}
        assert ("gone", "http_4xx") in failed
        _secrets_absent(s.stderr())


def _record_event(rec: dict) -> Event:
    return Event(rec["event"], rec["msg"], fields=rec, program=rec.get("program", ""))


def test_a_config_files_receivers_are_counted_exactly_and_never_shown(start_sentinel,
                                                                      tmp_path):
    sock = tmp_path / "sentinel.socket"
    port = free_port()
    with Receiver() as r:
        (tmp_path / "hang.url").write_text(f"# a Secret's file\n{r.url(f'/hang/{TOKEN}')}\n")
        config = tmp_path / "sentinel.yaml"
        config.write_text(f"""
settings:
  socket: {sock}
  metrics-address: 127.0.0.1
  metrics-port: {port}
  log-format: json
  webhook-timeout: 30s
  webhooks:
    - {{url-env: HOOK_OK, name: ok}}
    - {{url-file: hang.url, name: hang, queue: 2}}
    - {{url-env: HOOK_GONE, name: gone, events: [kill]}}
    - {{url-env: HOOK_TEXT, name: chat, format: text, programs: [leaky]}}
programs:
  - name: idle
    command: [{PY}, -c, "import time; print('ready', flush=True); time.sleep(600)"]
    main: true
  - name: leaky
    command: [{PY}, {LEAKER}, --rate, "100", --quiet]
    max-rss: 60Mi
    grace-period: 1s
    restart: always
    restart-delay: 100ms
    restart-max-delay: 100ms
    max-restarts: 2
    on-give-up: continue
""")
        env = {"HOOK_OK": r.url(f"/ok/json/{TOKEN}?token={TOKEN}"),
               "HOOK_GONE": r.url(f"/missing/{TOKEN}"), "HOOK_TEXT": r.url(f"/ok/text/{TOKEN}"),
               "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
        s = start_sentinel(["--config", str(config)], env=env)
        wait_until(lambda: any(x.get("event") == "gave_up" for x in s.logs()), 30,
                   what=lambda: s.stderr()[-3000:])
        posted = [x for x in s.logs() if x.get("program") == "leaky"
                  and webhooks.event_class(_record_event(x)) is not None]
        # Three kills (the first run and two restarts): each a SIGTERM and its end; two
        # restarts; one give-up.
        kinds = [x["event"] for x in posted]
        assert kinds.count("signal_sent") == 3 and kinds.count("kill_finished") == 3
        assert kinds.count("restart_scheduled") == 2 and kinds.count("gave_up") == 1
        n = len(posted)
        r.wait_for(lambda: len(r.bodies("/ok/json/")) == n and len(r.bodies("/ok/text/")) == n
                   and len(r.of("/missing/")) == 6, 10, "every message")
        assert [b["kind"] for b in r.bodies("/ok/json/")] == kinds  # nothing lost, in order
        assert all(b["program"] == "leaky" for b in r.bodies("/ok/json/"))

        def status() -> dict:
            return {w["name"]: w for w in request(str(sock), "status")["status"]["webhooks"]}

        hooks = wait_until(lambda: (st := status()) and st["ok"]["sent"] == n and st, 5)
        assert (hooks["ok"]["sent"], hooks["ok"]["dropped"], hooks["ok"]["failed"]) == (n, 0, {})
        # The hanging receiver: one message in flight, two queued, the rest dropped.
        assert (hooks["hang"]["sent"], hooks["hang"]["queue_length"],
                hooks["hang"]["dropped"]) == (0, 3, n - 3)
        assert hooks["gone"]["failed"] == {"http_4xx": 6} and hooks["gone"]["retries"] == 0
        assert hooks["gone"]["last_error"] == "HTTP 404"
        assert hooks["chat"]["format"] == "text" and hooks["chat"]["programs"] == ["leaky"]
        assert len(r.of("/hang/")) == 1
        metrics = get(f"http://127.0.0.1:{port}/metrics")
        assert f'sentinel_webhook_sent_total{{receiver="ok"}} {float(n)}' in metrics
        assert f'sentinel_webhook_dropped_total{{receiver="hang"}} {float(n - 3)}' in metrics
        assert 'sentinel_webhook_queue_length{receiver="hang"} 3.0' in metrics
        assert 'sentinel_webhook_failed_total{reason="http_4xx",receiver="gone"} 6.0' in metrics
        text = request(str(sock), "status text")["text"]
        for shown in (json.dumps(request(str(sock), "status")), text, metrics, s.stderr()):
            _secrets_absent(shown)


def test_urllib_is_imported_after_the_spawn(tmp_path):
    """The URL file is read and checked before the spawn with ``re`` only; the HTTP client
    loads in each receiver's worker, once the workload runs."""
    import re

    from tests.conftest import Running

    with Receiver() as r:
        urls = tmp_path / "webhooks"
        urls.write_text(f"{r.url(f'/ok/{TOKEN}')}\n")
        s = Running([PY, "-X", "importtime", "-m", "sentinel", "run", *COMMON,
                     "--webhook-url-file", str(urls), "--", *leaker("--rate", "100", "--quiet")],
                    pid1=False, env={"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
        try:
            assert s.wait() == 143
            r.wait_for(lambda: len(r.bodies("/ok/")) == 2, 5, "the kill's two messages")
            lines = s.stderr().splitlines()
            urllib_at = [i for i, x in enumerate(lines) if re.search(r"\|\s+urllib\.request$", x)]
            spawned = [i for i, x in enumerate(lines) if '"spawned"' in x]
            config_at = [i for i, x in enumerate(lines)
                         if re.search(r"\|\s+sentinel\.config\.webhooks$", x)]
            assert urllib_at and spawned and config_at
            assert config_at[0] < spawned[0] < urllib_at[0]
        finally:
            s.kill_all()


def test_bad_receivers_are_exit_2_before_the_spawn_and_never_echo_the_url(tmp_path):
    import subprocess

    from tests.conftest import SENTINEL, clean_env

    marker = tmp_path / "spawned"
    bad = tmp_path / "webhooks"
    bad.write_text(f"https://hooks.example.com/{TOKEN} format=xml\n")
    cases = [
        (["--webhook-url", f"https://hooks.example.com/{TOKEN}"], {}, "--webhook-url-file"),
        ([f"--webhook-url=https://hooks.example.com/{TOKEN}"], {}, "SENTINEL_WEBHOOK_URL"),
        (["--webhook-url-file", str(tmp_path / "missing")], {}, "cannot read"),
        (["--webhook-url-file", str(bad)], {}, f"{bad}:1: format: 'xml'"),
        ([], {"SENTINEL_WEBHOOK_URL": f"hooks.example.com/{TOKEN}"}, "not a webhook URL"),
    ]
    for args, env, said in cases:
        p = subprocess.run([*SENTINEL, "run", "--no-metrics", "--no-socket", *args, "--",
                            "touch", str(marker)], env=clean_env(env), capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 2, (args, p.stderr)
        [line] = p.stderr.splitlines()
        assert line.startswith("sentinel: error: ") and said in line, line
        assert TOKEN not in p.stderr and "Traceback" not in p.stderr
        assert not marker.exists()


def test_a_leakers_warning_and_prediction_reach_the_receiver_before_its_kill(start_sentinel):
    with Receiver() as r:
        env = {"SENTINEL_WEBHOOK_URL": r.url(f"/ok/json/{TOKEN}"), "NO_PROXY": "127.0.0.1",
               "no_proxy": "127.0.0.1"}
        s = start_sentinel(["--no-metrics", "--no-socket", "--log-format", "json",
                            "--max-rss", "80Mi", "--grace-period", "1s", "--leak-window", "4s",
                            "--predict-within", "1m", "--interval", "50ms", "--",
                            *leaker("--rate", "8", "--quiet")], env=env)
        assert s.wait(40) == 143
        r.wait_for(lambda: any(b["kind"] == "kill_finished" for b in r.bodies("/ok/json/")),
                   10, "the kill's end")
        bodies = r.bodies("/ok/json/")
        kinds = [(b["kind"], b.get("rule"), b.get("state")) for b in bodies]
        first_kill = kinds.index(("signal_sent", None, None))
        before = kinds[:first_kill]
        assert ("alert", "warning", "firing") in before, kinds
        assert ("alert", "prediction", "firing") in before, kinds
        prediction = next(b for b in bodies if b.get("rule") == "prediction")
        assert prediction["fields"]["seconds_to_limit"] > 0
