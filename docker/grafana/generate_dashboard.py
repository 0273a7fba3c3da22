#!/usr/bin/env python3
"""Generate docker/grafana/dashboards/sentinel.json with grafana-foundation-sdk.

    python docker/grafana/generate_dashboard.py          # rewrite the JSON
    python docker/grafana/generate_dashboard.py --check  # exit 1 if it is stale

The JSON is committed (Grafana's provisioning and the Helm chart's ConfigMap
read it, `make chart-sync` copies it into the chart);
tests/unit/test_grafana_dashboard.py fails when it differs from what this
script writes, and
tests/integration/test_prometheus.py runs every PromQL expression below
against a real Prometheus scraping a real Sentinel.

Every query filters on the templated ``$program`` (the ``program`` label: a
program of ``sentinel run --config``, or the one workload of the single-command
form, named after its command) and sums ``by (program)``, so one Sentinel
guarding several programs shows each apart. Sentinel's own process metrics
(``process_*``) carry no program label; they are joined to the Sentinels that
guard a selected program through ``sentinel_workload_up`` on (job, instance),
``max``-ed first: one Sentinel may guard several programs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, common as common_b, dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, dashboard

OUT = Path(__file__).resolve().parent / "dashboards" / "sentinel.json"
UID = "sentinel"
DS = dashboard.DataSourceRef(type_val="prometheus", uid="${datasource}")
W = 'program=~"$program"'
# process_* of each Sentinel that guards a selected program (one series per Sentinel,
# however many programs it guards: max by (job, instance) before the join).
PER_WORKLOAD = ("on (job, instance) group_left () max by (job, instance) "
                f"(0 * sentinel_workload_up{{{W}}} + 1)")


def query(expr: str, legend: str, ref: str, *, instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DS)
    return q.instant() if instant else q.range()


def pos(x: int, y: int, w: int, h: int) -> dashboard.GridPos:
    return dashboard.GridPos(h=h, w=w, x=x, y=y)


def thresholds(*steps: tuple[float | None, str]) -> dash_b.ThresholdsConfig:
    return dash_b.ThresholdsConfig().mode(dashboard.ThresholdsMode.ABSOLUTE).steps(
        [dashboard.Threshold(value=v, color=c) for v, c in steps])


def value_map(options: dict[str, tuple[str, str]]) -> list[dashboard.ValueMapping]:
    return [dashboard.ValueMap(options={
        k: dashboard.ValueMappingResult(text=t, color=c, index=i)
        for i, (k, (t, c)) in enumerate(options.items())})]


def stat_panel(pid: int, title: str, desc: str, target, at, *, unit: str = "none",
               mappings=None, steps=((None, "green"),)) -> stat.Panel:
    p = (stat.Panel().id(pid).title(title).description(desc).datasource(DS).grid_pos(at)
         .with_target(target).unit(unit).thresholds(thresholds(*steps))
         .graph_mode(common.BigValueGraphMode.NONE)
         .color_mode(common.BigValueColorMode.VALUE)
         .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
         .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))
    if mappings:
        p = p.mappings(mappings)
    return p


def series_panel(pid: int, title: str, desc: str, targets, at, *, unit: str,
                 bars: bool = False, stepped: bool = False) -> timeseries.Panel:
    p = (timeseries.Panel().id(pid).title(title).description(desc).datasource(DS).grid_pos(at)
         .targets(targets).unit(unit)
         .legend(common_b.VizLegendOptions().show_legend(True)
                 .display_mode(common.LegendDisplayMode.LIST)
                 .placement(common.LegendPlacement.BOTTOM))
         .tooltip(common_b.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI)
                  .sort(common.SortOrder.DESCENDING)))
    if bars:
        p = p.draw_style(common.GraphDrawStyle.BARS).fill_opacity(80).line_width(1)
    else:
        p = p.draw_style(common.GraphDrawStyle.LINE).line_width(2).fill_opacity(0)
    if stepped:
        p = p.line_interpolation(common.LineInterpolation.STEP_AFTER)
    return p


def build() -> dash_b.Dashboard:
    d = (dash_b.Dashboard("Sentinel").uid(UID)
         .description("Sentinel, the process guardian: each workload's memory against its "
                      "limit, the kills and restarts, how fast Sentinel reacted, and "
                      "Sentinel's own cost.")
         .tags(["sentinel", "memory"]).editable().timezone("browser")
         .time("now-1h", "now").refresh("30s").tooltip(dashboard.DashboardCursorSync.CROSSHAIR)
         .with_variable(dash_b.DatasourceVariable("datasource").label("Data source")
                        .type("prometheus"))
         .with_variable(dash_b.QueryVariable("program").label("Program").datasource(DS)
                        .query({"query": "label_values(sentinel_workload_up, program)",
                                "refId": "program"})
                        .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
                        .sort(dashboard.VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
                        .multi(True).include_all(True).all_value(".*"))
         .annotation(dash_b.AnnotationQuery().name("Kills").datasource(DS).enable(True)
                     .icon_color("red")
                     .expr(f"changes(sentinel_last_kill_timestamp_seconds{{{W}}}[1m]) > 0 "
                           f"and sentinel_last_kill_timestamp_seconds{{{W}}} > 0"))
         .annotation(dash_b.AnnotationQuery().name("Restarts").datasource(DS).enable(True)
                     .icon_color("orange")
                     .expr(f"increase(sentinel_restarts_total{{{W}}}[1m]) > 0")))

    # Row 1: the state now.
    d = d.with_panel(stat_panel(
        1, "Workload", "1 while the workload's main process runs.",
        query(f"sentinel_workload_up{{{W}}}", "{{program}}", "A", instant=True), pos(0, 0, 4, 4),
        mappings=value_map({"1": ("up", "green"), "0": ("down", "red")}),
        steps=((None, "red"), (1, "green"))))
    d = d.with_panel(stat_panel(
        2, "Memory / limit", "The measure against the limit (--max-rss), now.",
        query(f"sentinel_workload_memory_bytes{{{W}}} / sentinel_memory_limit_bytes{{{W}}}",
              "{{program}} ({{measure}})", "A", instant=True), pos(4, 0, 5, 4),
        unit="percentunit", steps=((None, "green"), (0.8, "orange"), (0.9, "red"))))
    d = d.with_panel(stat_panel(
        3, "Memory kills", "Stops for crossing the limit in the time range (one SIGTERM each).",
        query(f'sum by (program) (increase(sentinel_kills_total{{{W}, reason="memory_limit", '
              f'signal="SIGTERM"}}[$__range]))', "{{program}}", "A", instant=True),
        pos(9, 0, 4, 4), unit="none", steps=((None, "green"), (0.5, "red"))))
    d = d.with_panel(stat_panel(
        4, "Restarts", "Restarts by the restart policy in the time range.",
        query(f"sum by (program) (increase(sentinel_restarts_total{{{W}}}[$__range]))",
              "{{program}}", "A", instant=True), pos(13, 0, 4, 4),
        steps=((None, "green"), (0.5, "orange"))))
    d = d.with_panel(stat_panel(
        5, "Enforcement", "Paused from the control socket, or active.",
        query(f"sentinel_enforcement_paused{{{W}}}", "{{program}}", "A", instant=True),
        pos(17, 0, 3, 4),
        mappings=value_map({"0": ("active", "green"), "1": ("paused", "orange")})))
    d = d.with_panel(stat_panel(
        6, "Version", "Sentinel's version and mode.",
        query(f"sentinel_build_info * {PER_WORKLOAD}", "{{version}} {{mode}}", "A",
              instant=True), pos(20, 0, 4, 4)).text_mode(common.BigValueTextMode.NAME))

    # Row 2: memory against the limit, as the sampler saw it (a staircase).
    d = d.with_panel(series_panel(
        7, "Memory against limit",
        "The measure Sentinel compares with the limit, per workload, and the limit. Drawn as "
        "steps: each value holds until the next sample. A fall to nothing is a kill or exit.",
        [query(f"sentinel_workload_memory_bytes{{{W}}}", "{{program}} {{measure}}", "A"),
         query(f"sentinel_memory_limit_bytes{{{W}}}", "{{program}} limit", "B")],
        pos(0, 4, 24, 9), unit="bytes", stepped=True)
        .override_by_regexp(".* limit$", [
            dashboard.DynamicConfigValue(id_val="custom.lineStyle",
                                         value={"fill": "dash", "dash": [10, 10]}),
            dashboard.DynamicConfigValue(id_val="color",
                                         value={"mode": "fixed", "fixedColor": "red"})]))

    # Row 3: kills, restarts, reaction.
    d = d.with_panel(series_panel(
        8, "Kills and restarts",
        "Signals sent to stop the workload (by reason and signal) and restarts, per interval.",
        [query(f"sum by (program, reason, signal) (increase(sentinel_kills_total{{{W}}}"
               f"[$__rate_interval]))", "{{program}} {{reason}} {{signal}}", "A"),
         query(f"sum by (program) (increase(sentinel_restarts_total{{{W}}}[$__rate_interval]))",
               "{{program}} restart", "B")],
        pos(0, 13, 12, 8), unit="none", bars=True))
    reaction = [query(
        f"histogram_quantile({q}, sum by (le, program) "
        f"(increase(sentinel_reaction_seconds_bucket{{{W}}}[$__range])))",
        f"{{{{program}}}} p{int(q * 100)}", ref, instant=True)
        for q, ref in ((0.5, "A"), (0.9, "B"), (0.99, "C"))]
    d = d.with_panel(
        bargauge.Panel().id(9).title("Reaction time (limit crossing -> SIGTERM)")
        .description("Percentiles over the time range of the time from the estimated limit "
                     "crossing to the SIGTERM. Empty until the first memory kill.")
        .datasource(DS).grid_pos(pos(12, 13, 12, 8)).targets(reaction).unit("s")
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.GRADIENT).min(0)
        .thresholds(thresholds((None, "green"), (0.05, "orange"), (0.25, "red")))
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))

    # Row 4: Sentinel's own cost and its sampler.
    d = d.with_panel(series_panel(
        10, "Sentinel CPU", "CPU of the Sentinel process (cores), from process_cpu_seconds_total.",
        [query(f"rate(process_cpu_seconds_total[$__rate_interval]) * {PER_WORKLOAD}",
               "{{instance}}", "A")], pos(0, 21, 8, 8), unit="percentunit"))
    d = d.with_panel(series_panel(
        11, "Sentinel RSS", "Resident memory of the Sentinel process itself.",
        [query(f"process_resident_memory_bytes * {PER_WORKLOAD}", "{{instance}}", "A")],
        pos(8, 21, 8, 8), unit="bytes"))
    d = d.with_panel(series_panel(
        12, "Sampling", "How long one memory sample of the workload's tree takes (p50, p99).",
        [query(f"histogram_quantile({q}, sum by (le, program) (rate("
               f"sentinel_sample_duration_seconds_bucket{{{W}}}[$__rate_interval])))",
               f"{{{{program}}}} sample p{int(q * 100)}", ref)
         for q, ref in ((0.5, "A"), (0.99, "B"))],
        pos(16, 21, 8, 8), unit="s"))

    # Row 5: the kernel's side: OOM kills it made before Sentinel's limit, and pressure.
    d = d.with_panel(series_panel(
        13, "Kernel OOM kills",
        "Workload processes the kernel's OOM killer took before Sentinel's limit was reached "
        "(no SIGTERM, no grace), per interval. Any bar means Sentinel's limit sits too close "
        "to the container's: lower --max-rss, or use --max-rss auto or --measure working-set.",
        [query(f'sum by (program) (increase(sentinel_kills_total{{{W}, reason="kernel_oom"}}'
               f'[$__rate_interval]))', "{{program}} kernel OOM kill", "A")],
        pos(0, 29, 12, 8), unit="none", bars=True))
    d = d.with_panel(series_panel(
        14, "Memory pressure (PSI)",
        "Share of time tasks stalled waiting for memory (some: at least one; full: all at "
        "once), of each program's cgroup (v2) or the whole host, from "
        "sentinel_memory_pressure_stall_seconds_total. Rising pressure comes before the "
        "kernel's OOM killer.",
        [query(f"rate(sentinel_memory_pressure_stall_seconds_total[$__rate_interval]) * "
               f"{PER_WORKLOAD}", "{{instance}} {{program}} {{scope}} {{kind}}", "A")],
        pos(12, 29, 12, 8), unit="percentunit"))
    return d


def render() -> str:
    """The dashboard as the committed file holds it: sorted keys, 2-space indent, newline."""
    model = json.loads(JSONEncoder(sort_keys=True).encode(build().build()))
    # Prometheus annotation fields the SDK's AnnotationQuery does not model.
    for ann in model["annotations"]["list"]:
        ann.update({"titleFormat": f"{ann['name'][:-1].lower()} {{{{program}}}}",
                    "tagKeys": "program", "step": "15s"})
    return json.dumps(model, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale; run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
