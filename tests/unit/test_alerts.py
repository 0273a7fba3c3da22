"""``sentinel.core.alerts``: the warning, leak and prediction rules on recorded series
(synthetic, one sample a second): a steady leak, a garbage-collector sawtooth, a one-off
spike, a plateau, a slow leak under noise. No alert for the spike or the sawtooth, an
early alert for the leaks, the prediction within 20 % of the actual time to the limit,
and each rule fires once and resolves once."""

from __future__ import annotations

import random

import pytest

from sentinel.core.alerts import AlertSettings, Rules

KiB, MiB, GiB = 1024, 1024 ** 2, 1024 ** 3
DEFAULTS = AlertSettings()  # warn at 80 %, 5 min window, 64 KiB/s, predict within 10 min


def run(series, limit, settings=DEFAULTS):
    """Feed ``series`` (one value a second) to fresh rules; return the rules and each
    transition as ``(second, rule, state, fields)``."""
    rules = Rules(settings)
    out = []
    for t, value in enumerate(series):
        for tr in rules.observe(float(t), int(value), limit):
            out.append((t, tr.rule, tr.state, tr.fields))
    return rules, out


def first(out, rule, state="firing"):
    return next(((t, f) for t, r, s, f in out if r == rule and s == state), (None, None))


def count(out, rule, state):
    return sum(1 for _, r, s, _ in out if r == rule and s == state)


def sawtooth(seconds, base, amplitude, period):
    return [base + amplitude * ((t % period) / period) for t in range(seconds)]


def test_defaults_are_the_documented_ones():
    assert DEFAULTS == AlertSettings(0.8, 300.0, 64 * KiB, 600.0)


def test_a_steady_leak_warns_early_and_predicts_the_limit_within_20_percent():
    rng = random.Random(1)
    start, rate, limit = 100 * MiB, 1 * MiB, 1 * GiB
    reaches = (limit - start) / rate  # 924 s
    series = [start + rate * t + rng.uniform(-MiB, MiB) for t in range(int(reaches))]
    _, out = run(series, limit)
    t_leak, f_leak = first(out, "leak")
    # Half a window of warm-up, half a window of history, then at once.
    assert t_leak is not None and t_leak <= 310
    assert f_leak["growth_bytes_per_second"] == pytest.approx(rate, rel=0.05)
    assert f_leak["window_seconds"] == 300.0 and f_leak["limit_bytes"] == limit
    t_pred, f_pred = first(out, "prediction")
    assert t_pred is not None and t_pred < reaches - 500  # a 10 min horizon, ~5 min ahead
    assert f_pred["seconds_to_limit"] == pytest.approx(reaches - t_pred, rel=0.2)
    assert f_pred["seconds_to_limit"] < 600
    t_warn, f_warn = first(out, "warning")
    assert t_warn is not None and f_warn["share"] > 0.8
    assert t_leak < t_pred < t_warn < reaches
    for rule in ("warning", "leak", "prediction"):  # once each; nothing resolves
        assert count(out, rule, "firing") == 1 and count(out, rule, "resolved") == 0


def test_a_garbage_collector_sawtooth_fires_nothing():
    # 300 MiB, growing 50 MiB over each cycle and freed at once, for an hour; cycles
    # of 17 s and 20 s (a median of half-window slopes leans up on some periods: the
    # flat floor is what tells it apart from a leak). Peaks at 34 % of the limit.
    for period in (17, 20, 45):
        rules, out = run(sawtooth(3600, 300 * MiB, 50 * MiB, period), 1 * GiB)
        assert out == [], period
        assert rules.figures.growth_bytes_per_second is not None  # it was evaluated


def test_a_sawtooth_that_grows_taller_but_is_collected_in_full_is_no_leak():
    # More traffic, bigger cycles (10 MiB to 410 MiB in 30 min), but every collection
    # frees it all: the floor stays at 300 MiB. Its slopes lean up (the mean rises
    # ~110 KiB/s); the flat floor says it is no leak.
    for period in (17, 20, 45):
        series = [300 * MiB + (10 * MiB + 400 * MiB * t / 1800) * ((t % period) / period)
                  for t in range(1800)]
        _, out = run(series, None)
        assert out == [], period


def test_a_leaking_garbage_collector_is_a_leak():
    # The same sawtooth over a floor that rises 256 KiB/s: what the collector cannot free.
    series = [v + 256 * KiB * t for t, v in enumerate(sawtooth(1800, 300 * MiB, 50 * MiB, 20))]
    _, out = run(series, None)
    assert count(out, "leak", "firing") == 1
    assert first(out, "leak")[0] <= 400


def sampled_sawtooth(seconds, floor, amplitude, period, limit, leak=0.0, phase=0.0):
    """A collector's sawtooth sampled the way Sentinel samples it: faster near the limit
    (a third of the headroom at 300 MiB/s, as ``sampler.relaxed_interval`` plans while a
    kernel notification covers the limit; at least 20 ms). Its tops hold more samples
    than its troughs. ``(seconds, bytes)`` points; ``leak`` bytes/s under it."""
    t, out = 0.0, []
    while t < seconds:
        value = floor + amplitude * (((t + phase) % period) / period) + leak * t
        out.append((t, int(value)))
        t += max(0.02, (limit - value) / (300 * MiB) / 3)
    return out


def test_a_sawtooth_sampled_faster_at_its_tops_is_no_leak():
    # The integration test's case (tests/integration/test_alerts.py, a 2 s window, 1 MiB/s
    # the least leak): 14 to 32 MiB every 0.25 s under a 60 MiB limit, 32 to 52 ms between
    # samples; periods a little off 0.25 s (the child falls behind under load). Quarters
    # of the points end at a top, without the last trough; a floor a ramp step higher
    # (the first sample after a collection lands anywhere on the first step) is no rise.
    settings = AlertSettings(0.8, 2.0, 1 * MiB, 600.0)
    fired = []
    for period in (0.24, 0.245, 0.2528, 0.26, 0.27):
        for phase in [k * period / 8 for k in range(8)]:
            rules = Rules(settings)
            for t, v in sampled_sawtooth(8.0, 14 * MiB, 18 * MiB, period, 60 * MiB,
                                         phase=phase):
                fired += [(period, phase, t, tr.rule) for tr in rules.observe(t, v, 60 * MiB)
                          if tr.rule != "warning"]
            assert rules.figures.growth_bytes_per_second is not None
    assert fired == []
    # The same sampled sawtooth over a floor rising 4 MiB/s is a leak, at every phase.
    for phase in [k * 0.25 / 4 for k in range(4)]:
        rules = Rules(settings)
        for t, v in sampled_sawtooth(3.0, 14 * MiB, 18 * MiB, 0.25, 60 * MiB, leak=4 * MiB,
                                     phase=phase):
            rules.observe(t, v, 60 * MiB)
        assert "leak" in rules.firing, phase


def test_a_one_off_spike_fires_no_alert():
    # Flat at 200 MiB for 30 min; one sample at 700 MiB (68 % of the limit), and a
    # burst of 20 s at +300 MiB later on.
    series = [200 * MiB] * 1800
    series[600] = 700 * MiB
    for t in range(1200, 1220):
        series[t] += 300 * MiB
    rules, out = run(series, 1 * GiB)
    assert out == []
    assert rules.figures.growth_bytes_per_second == 0


def test_a_spike_over_the_warning_share_warns_once_but_predicts_nothing():
    series = [200 * MiB] * 900
    series[600] = 900 * MiB  # 88 %
    _, out = run(series, 1 * GiB)
    assert [(t, r, s) for t, r, s, _ in out] == [(600, "warning", "firing"),
                                                 (601, "warning", "resolved")]


def test_a_plateau_resolves_the_leak_and_the_prediction_once():
    # 1 MiB/s from 100 MiB for 500 s (the limit 424 s away when it stops), then flat.
    series = [100 * MiB + MiB * min(t, 500) for t in range(1500)]
    _, out = run(series, 1 * GiB)
    assert [(r, s) for _, r, s, _ in out] == [
        ("leak", "firing"), ("prediction", "firing"),
        ("prediction", "resolved"), ("leak", "resolved")]
    t_res = max(t for t, _, s, _ in out if s == "resolved")
    assert 500 + 300 < t_res <= 500 + 600  # calm for a window, within two


def test_a_slow_leak_under_noise_is_caught_early_and_predicted_within_20_percent():
    # 100 KiB/s (8 GiB a day) under +-5 MiB of noise, from 500 MiB to a 1 GiB limit:
    # ~5370 s to the limit.
    rng = random.Random(7)
    start, rate, limit = 500 * MiB, 100 * KiB, 1 * GiB
    reaches = (limit - start) / rate
    series = [start + rate * t + rng.uniform(-5 * MiB, 5 * MiB) for t in range(int(reaches))]
    _, out = run(series, limit)
    t_leak, f_leak = first(out, "leak")
    assert t_leak is not None and t_leak <= 450  # within a window and a half
    assert f_leak["growth_bytes_per_second"] == pytest.approx(rate, rel=0.25)
    t_pred, f_pred = first(out, "prediction")
    assert t_pred is not None
    assert f_pred["seconds_to_limit"] == pytest.approx(reaches - t_pred, rel=0.2)
    assert count(out, "leak", "firing") == 1 and count(out, "leak", "resolved") == 0
    assert count(out, "prediction", "firing") == 1


def test_noise_alone_fires_nothing():
    rng = random.Random(3)
    series = [500 * MiB + rng.uniform(-5 * MiB, 5 * MiB) for _ in range(3600)]
    _, out = run(series, 1 * GiB)
    assert out == []


def test_the_warning_has_hysteresis_and_fires_and_resolves_once():
    # Hovering at 78-82 % fires once and stays; below 75 % resolves once.
    limit = 1000 * MiB
    series = [700 * MiB] * 10 + [(780 + 40 * (t % 2)) * MiB for t in range(50)] \
        + [760 * MiB] * 10 + [740 * MiB] * 10 + [790 * MiB] * 10
    _, out = run(series, limit)
    # 82 % fires at second 11; 76 % stays; 74 % resolves; 79 % is below 80 %: no refire.
    assert [(t, r, s) for t, r, s, _ in out] == [(11, "warning", "firing"),
                                                 (70, "warning", "resolved")]
    fired = first(out, "warning")[1]
    assert fired["share"] == pytest.approx(0.82) and fired["value_bytes"] == 820 * MiB
    assert fired["window_seconds"] == 0.0


def test_the_prediction_has_hysteresis_and_stays_while_the_limit_is_a_bit_further():
    # 1 MiB/s until the limit is predicted, then a growth that slows as it nears the
    # limit: the limit stays ~11 min away (between 10 and 15 min) for half an hour. The
    # prediction fires once and stands (it resolves only beyond 1.5 x 10 min).
    import math
    series = [100 * MiB + MiB * t for t in range(400)] + \
        [GiB - 524 * MiB * math.exp(-t / 800) for t in range(1, 2000)]
    _, out = run(series, 1 * GiB)
    assert count(out, "prediction", "firing") == 1
    assert count(out, "prediction", "resolved") == 0
    assert 600 < [f for _, r, _, f in out if r == "warning"][0]["seconds_to_limit"] < 900


def test_without_a_limit_only_the_leak_can_fire():
    series = [100 * MiB + MiB * t for t in range(1200)]
    _, out = run(series, None)
    assert {r for _, r, _, _ in out} == {"leak"}
    assert first(out, "leak")[1]["seconds_to_limit"] is None


def test_options_turn_the_warning_and_the_prediction_off():
    series = [100 * MiB + MiB * t for t in range(1000)]
    _, out = run(series, 1 * GiB, AlertSettings(None, 300.0, 64 * KiB, None))
    assert {r for _, r, _, _ in out} == {"leak"}


def test_reset_forgets_the_history_and_resolves_what_fires():
    rules, out = run([100 * MiB + MiB * t for t in range(400)], 1 * GiB)
    assert rules.firing == {"leak", "prediction"}
    resolved = rules.reset("the program restarted")
    assert [(t.rule, t.state) for t in resolved] == [("leak", "resolved"),
                                                     ("prediction", "resolved")]
    assert resolved[0].message == "leak suspicion resolved: the program restarted"
    assert rules.firing == set() and rules.figures.growth_bytes_per_second is None
    # A fresh history needs half a window again.
    assert rules.observe(1000.0, 600 * MiB, 1 * GiB) == []
    assert rules.figures.growth_bytes_per_second is None


def test_the_messages_are_one_line_with_the_figures():
    rules = Rules(DEFAULTS)
    msgs = []
    for t in range(400):
        msgs += [tr.message for tr in rules.observe(float(t), 100 * MiB + 2 * MiB * t, 1 * GiB)]
    assert msgs[0].startswith("leak suspected: rss grows 2.0 MiB/s over 5m00s; the limit in ")
    assert msgs[0].endswith(" at this rate")
    assert all("\n" not in m for m in msgs)


def test_the_rules_options_work_per_program_in_a_config_file(tmp_path):
    # settings: for every program, a program's own over it, the text read as written.
    from tests.unit.test_programs_config import load
    config = load(tmp_path, """\
        settings: {warn-at: 90%, leak-window: 1m}
        programs:
          - {name: a, command: [true], leak-min-rate: 1Mi/s, predict-within: none}
          - {name: b, command: [true], warn-at: none, leak-window: 30s, predict-within: 2m}
        """)
    a, b = (AlertSettings.of(config.program_settings(p)) for p in config.programs)
    assert a == AlertSettings(0.9, 60.0, float(MiB), None)
    assert b == AlertSettings(None, 30.0, 64 * KiB, 120.0)


@pytest.mark.parametrize("argv, said", [
    (["--warn-at", "120%"], "--warn-at: '120%' is not a share of the limit; use e.g. 80%"),
    (["--leak-min-rate", "fast"], "--leak-min-rate: 'fast' is not a growth rate; use a size"),
    (["--predict-within", "soon"], "--predict-within: 'soon' is not a duration"),
    (["--leak-window", "0s"], "--leak-window: '0s' is not a positive duration"),
])
def test_a_bad_rule_option_is_one_clear_line(argv, said):
    from typer.testing import CliRunner
    from sentinel.cli import app
    result = CliRunner().invoke(app, ["run", *argv, "--", "true"])
    assert result.exit_code == 2
    assert said in result.output and "Traceback" not in result.output


def test_start_up_growth_is_no_leak():
    # 0 -> 400 MiB over the first 2 min (code loaded, caches filled), then flat: the
    # rules' history starts half a window into the run.
    series = [min(t, 120) * 400 * MiB / 120 for t in range(1800)]
    _, out = run(series, 1 * GiB)
    assert out == []


def test_a_leak_that_pauses_for_less_than_a_window_stays_one_alert():
    # 1 MiB/s, a 4 min pause (less than the 5 min window of calm a resolution needs), on.
    series, v = [], 100 * MiB
    for t in range(1500):
        if not 500 <= t < 740:
            v += MiB
        series.append(v)
    _, out = run(series, None)
    assert [(r, s) for _, r, s, _ in out] == [("leak", "firing")]


def test_a_guardian_feeds_the_rules_and_shows_them_in_state_status_tui_and_metrics(monkeypatch):
    # A guardian on a fake clock: 1 MiB/s from 10 MiB to a 100 MiB limit, 10 s windows,
    # predicted within 60 s; enforcement paused (the rules still warn).
    import io
    import time
    from rich.console import Console
    from sentinel.control.client import status_text
    from sentinel.control.snapshot import snapshot
    from sentinel.control.verbs import status_dict
    from sentinel.exporters.metrics import SentinelCollector
    from sentinel.ui.dashboard import format_line, render
    from tests.unit.test_guardian_clock import make
    from tests.unit.test_metrics import samples

    g, loop, probe = make(limit=100 * MiB, start=10 * MiB, rate=1 * MiB, leak_window_seconds=10.0,
                          leak_min_rate_bytes_per_second=256 * KiB, predict_within_seconds=60.0)
    wall0 = time.time()
    monkeypatch.setattr(time, "time", lambda: wall0 + (loop.now - 1000.0))
    g.pause()
    loop.advance(4.0)  # warming up: nothing yet
    assert g.state.alerts == {} and g.state.growth_bytes_per_second is None
    loop.advance(7.0)  # 5 s warm-up, 5 s of history: the leak, and the limit ~79 s away
    st = g.state
    assert st.alerts["leak"]["state"] == "firing"
    assert st.growth_bytes_per_second == pytest.approx(MiB, rel=0.05)
    loop.advance(25.0)  # 46 MiB at t=36 s: the limit ~54 s away
    assert st.alerts["prediction"]["state"] == "firing"
    assert st.seconds_to_limit == pytest.approx((100 - 46) , rel=0.1)
    fired = [e for e in st.events if e.kind == "alert"]
    assert [(e.fields["rule"], e.fields["state"]) for e in fired] == [
        ("leak", "firing"), ("prediction", "firing")]
    assert fired[0].message.startswith("leak suspected: rss grows 1.0 MiB/s over 10s; "
                                       "the limit in ")
    assert set(fired[0].fields) == {"rule", "state", "value_bytes", "limit_bytes", "share",
                                    "growth_bytes_per_second", "seconds_to_limit",
                                    "window_seconds"}

    status = status_dict(g)
    assert status["alerts"]["firing"] == ["leak", "prediction"]
    assert status["alerts"]["rules"]["leak"]["state"] == "firing"
    assert status["alerts"]["rules"]["leak"]["since"] == pytest.approx(wall0 + 10.0, abs=0.5)
    assert status["programs"][0]["alerts"] == status["alerts"]
    lines = status_text(status).splitlines()
    assert any(line.startswith("ALERT ") and line.split(None, 1)[1].startswith(
        "leak suspected: growth +1.0 MiB/s, the limit in ") for line in lines), lines

    snap = snapshot(st, None)
    assert snap["alerts"]["firing"] == ["leak", "prediction"]
    console = Console(record=True, width=100, color_system=None, file=io.StringIO())
    console.print(render(snap, width=100))
    screen = console.export_text()
    assert "ALERT leak suspected: growth +1.0 MiB/s, the limit in " in screen
    assert "ALERT limit predicted: growth +1.0 MiB/s, the limit in " in screen
    assert "alerts leak,prediction" in format_line(snap)
    # `sentinel top` on a plain status reply (no dashboard object) draws them too.
    from sentinel.ui.dashboard import StatusAdapter
    adapted = StatusAdapter(names=None).update({"status": status})
    console = Console(record=True, width=100, color_system=None, file=io.StringIO())
    console.print(render(adapted, width=100))
    assert "ALERT leak suspected: growth +1.0 MiB/s" in console.export_text()

    got = samples(SentinelCollector(st, pressure_path=None))
    labels = (("program", "app"), ("workload", "app"))
    assert got[("sentinel_alert_firing", (("program", "app"), ("rule", "leak"),
                                          ("workload", "app")))] == 1.0
    assert got[("sentinel_alert_firing", (("program", "app"), ("rule", "warning"),
                                          ("workload", "app")))] == 0.0
    assert got[("sentinel_growth_bytes_per_second", labels)] == pytest.approx(MiB, rel=0.05)
    assert got[("sentinel_predicted_seconds_to_limit", labels)] == pytest.approx(54, rel=0.1)

    # A restart (a new run) resolves what fires and starts the history again.
    g.child_exited(0)
    assert [(e.fields["rule"], e.fields["state"]) for e in st.events if e.kind == "alert"][2:] \
        == [("leak", "resolved"), ("prediction", "resolved")]
    assert st.alerts["leak"]["state"] == "resolved" and st.growth_bytes_per_second is None


def test_the_rules_options_come_from_the_environment_and_the_flag_wins():
    from sentinel.config.settings import parse_settings
    env = {"SENTINEL_WARN_AT": "none", "SENTINEL_LEAK_WINDOW": "1m",
           "SENTINEL_LEAK_MIN_RATE": "1Mi/s", "SENTINEL_PREDICT_WITHIN": "off"}
    s = parse_settings("run", ["--leak-window", "30s", "--", "true"], env)
    assert AlertSettings.of(s) == AlertSettings(None, 30.0, float(MiB), None)
    assert AlertSettings.of(parse_settings("run", ["--", "true"], {})) == DEFAULTS
