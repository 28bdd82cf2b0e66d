"""`metrics`, `slo status`, `slo validate` and `regressions`: thin shells over
goldenloop.metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from goldenloop.cli._common import (
    console,
    json_option,
    load_cli_settings,
    open_cli_store,
    print_json,
    store_options,
)
from goldenloop.metrics.burn import evaluate_slos
from goldenloop.metrics.catalog import UnknownMetric, format_value, get_metric, resolve_metrics
from goldenloop.metrics.compute import DEFAULT_METRICS, MetricsQuery, compute_metrics
from goldenloop.metrics.config import MetricsConfig, MetricsConfigError, load_metrics_config
from goldenloop.metrics.dimensions import DimensionError, parse_dimensions, parse_filters
from goldenloop.metrics.regressions import REGRESSION_METRICS, RegressionQuery, find_regressions
from goldenloop.metrics.slo import SloSet
from goldenloop.metrics.windows import (
    TimeWindow,
    WindowError,
    parse_bucket,
    parse_duration,
    parse_time,
)
from goldenloop.store import Store

F = TypeVar("F", bound=Callable[..., Any])


def _print(table: Table) -> None:
    Console().print(table)  # created per call: honours COLUMNS at run time


def _format(value: float | None, unit: str) -> str:
    return format_value(value, unit)


def slo_file_option(fn: F) -> F:
    return click.option(
        "--slo-file",
        envvar="GOLDENLOOP_SLO_FILE",
        type=click.Path(dir_okay=False),
        help="Metrics config (YAML/JSON): SLOs, signal attribute names, /metrics labels.",
    )(fn)


def _config(slo_file: str | None) -> MetricsConfig:
    try:
        return load_metrics_config(slo_file)
    except MetricsConfigError as exc:
        raise click.ClickException(str(exc)) from None


@contextmanager
def _store(db: str | None, database_url: str | None) -> Iterator[Store]:
    store = open_cli_store(load_cli_settings(db=db, database_url=database_url))
    try:
        yield store
    finally:
        store.close()


def _window(length: str, end: str | None, name: str = "--window") -> TimeWindow:
    try:
        stop = parse_time(end, name="--end") if end else None
        return TimeWindow.last(parse_duration(length, name=name), end=stop)
    except WindowError as exc:
        raise click.BadParameter(str(exc)) from None


def _parsed(texts: Sequence[str], parse: Callable[[Sequence[str]], Any], option: str) -> Any:
    try:
        return parse(texts)
    except (DimensionError, UnknownMetric) as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


# -- goldenloop metrics ---------------------------------------------------------------------
@click.command()
@store_options
@slo_file_option
@click.option("--window", default="24h", show_default=True, help="How far back: 30m, 24h, 7d …")
@click.option("--end", help="Window end (ISO-8601 UTC); default now.")
@click.option("--by", multiple=True, help="Group by a dimension (repeat): locale, customer_tier, "
              "prompt_hash, model, flag.NAME, attr.NAME …")  # fmt: skip
@click.option("--where", multiple=True, help="Filter DIM=VALUE or DIM!=VALUE (repeat).")
@click.option("--metric", "metric_names", multiple=True,
              help="Metric name (repeat or comma-separate); default: the standard set.")  # fmt: skip
@click.option("--bucket", type=click.Choice(["minute", "hour", "day"]), help="Time series buckets.")
@click.option("--list", "list_metrics", is_flag=True, help="List the metric catalog and exit.")
@json_option
def metrics(
    db: str | None, database_url: str | None, slo_file: str | None, window: str, end: str | None,
    by: tuple[str, ...], where: tuple[str, ...], metric_names: tuple[str, ...],
    bucket: str | None, list_metrics: bool, as_json: bool,
) -> None:  # fmt: skip
    """Online health metrics over a window, sliced by any dimension.

    Examples: `goldenloop metrics --window 24h --by locale --where project=refund-assistant`,
    `goldenloop metrics --metric task_success_rate --by flag.eu_banner --bucket hour`."""
    if list_metrics:
        _print_catalog(as_json)
        return
    defs = _parsed(tuple(metric_names) or DEFAULT_METRICS, resolve_metrics, "--metric")
    names = tuple(m.name for m in defs)
    query = MetricsQuery(
        _window(window, end), names, tuple(_parsed(by, parse_dimensions, "--by")),
        tuple(_parsed(where, parse_filters, "--where")), parse_bucket(bucket),
    )  # fmt: skip
    config = _config(slo_file)
    with _store(db, database_url) as store:
        result = compute_metrics(store, query, signals=config.signals)
    if as_json:
        print_json(result.to_dict())
        return
    rows = result.rows
    if not query.by and not query.bucket:
        table = Table("metric", "value", "n", title=_title(query.window))
        for name, value in rows[0].values.items() if rows else ():
            metric = get_metric(name)
            table.add_row(metric.title, _format(value.value, metric.unit), f"{value.n:,}")
        _print(table)
        return
    headers = (["bucket"] if query.bucket else []) + [d.name for d in query.by]
    table = Table(*headers, *(get_metric(n).title for n in names), title=_title(query.window))
    for row in rows:
        keys = [row.bucket.strftime("%Y-%m-%d %H:%M")] if query.bucket and row.bucket else []
        keys += ["(none)" if v is None else v for v in row.dims]
        values = [_format(row.values[n].value, get_metric(n).unit) for n in names]
        table.add_row(*keys, *values)
    _print(table)


def _title(window: TimeWindow) -> str:
    return f"{window.start:%Y-%m-%d %H:%M} – {window.end:%Y-%m-%d %H:%M} UTC"


def _print_catalog(as_json: bool) -> None:
    from goldenloop.metrics.catalog import METRICS

    if as_json:
        print_json([m.to_dict() for m in METRICS.values()])
        return
    table = Table("name", "title", "unit", "source", "aggregation", "group")
    for m in sorted(METRICS.values(), key=lambda m: (m.group, m.name)):
        table.add_row(m.name, m.title, m.unit, m.source, m.aggregation, m.group)
    _print(table)


# -- goldenloop slo ---------------------------------------------------------------------------
@click.group()
def slo() -> None:
    """SLOs with error budgets and burn rates."""


@slo.command("status")
@store_options
@slo_file_option
@click.option("--at", "at_time", help="Evaluate at this ISO-8601 UTC time instead of now.")
@json_option
def slo_status(
    db: str | None, database_url: str | None, slo_file: str | None, at_time: str | None,
    as_json: bool,
) -> None:  # fmt: skip
    """SLI, error budget left, burn rates (5m/30m/1h/6h/3d) and freeze status of every SLO
    (config file and API). Exits 0; the status column says what to do."""
    config = _config(slo_file)
    try:
        now: datetime | None = parse_time(at_time, name="--at") if at_time else None
    except WindowError as exc:
        raise click.BadParameter(str(exc)) from None
    with _store(db, database_url) as store:
        statuses = evaluate_slos(store, SloSet(list(config.slos)).all(store), now=now,
                                 signals=config.signals)  # fmt: skip
    if as_json:
        print_json({"slos": [s.to_dict() for s in statuses], "config_file": config.path})
        return
    if not statuses:
        click.echo("No SLOs defined: add them to --slo-file or POST /api/v1/slos.")
        return
    table = Table("SLO", "objective", "SLI", "budget left", "5m", "30m", "1h", "6h", "3d", "status")
    for status in statuses:
        rates = [f"{r:.2f}" if r is not None else "–" for r in status.burn_rates.values()]
        label = status.status + (" (freeze experiments)" if status.freeze_experiments else "")
        table.add_row(status.slo.name, f"{status.slo.objective:.2%}", _format(status.sli, "ratio"),
                      _format(status.budget_remaining, "ratio"), *rates, label)  # fmt: skip
    _print(table)


@slo.command("validate")
@click.argument("path", type=click.Path(dir_okay=False, exists=True))
def slo_validate(path: str) -> None:
    """Check a metrics config file; name every problem. Exit 1 when it is invalid."""
    config = _config(path)
    click.echo(f"{path}: ok ({len(config.slos)} SLOs)")


# -- goldenloop regressions -------------------------------------------------------------------
@click.command()
@store_options
@slo_file_option
@click.option("--window", default="2h", show_default=True, help="Recent window to check.")
@click.option("--baseline", default="7d", show_default=True,
              help="Baseline window, ending where --window starts.")  # fmt: skip
@click.option("--end", help="Window end (ISO-8601 UTC); default now.")
@click.option("--by", multiple=True, help="Dimensions to slice by (default: all standard + flags).")
@click.option("--where", multiple=True, help="Only traffic matching DIM=VALUE (repeat).")
@click.option("--metric", "metric_names", multiple=True, help="Metrics to check (default set).")
@click.option("--min-sample", type=int, default=30, show_default=True)
@click.option("--min-sessions", type=int, default=10, show_default=True)
@click.option("--alpha", type=float, default=0.05, show_default=True, help="False-discovery rate.")
@click.option("--min-effect", type=float, default=0.2, show_default=True,
              help="Smallest standardized effect (Cohen's h / d) worth reporting.")  # fmt: skip
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--improvements", is_flag=True, help="Also report slices that got better.")
@json_option
def regressions(
    db: str | None, database_url: str | None, slo_file: str | None, window: str,
    baseline: str, end: str | None, by: tuple[str, ...], where: tuple[str, ...],
    metric_names: tuple[str, ...], min_sample: int, min_sessions: int, alpha: float,
    min_effect: float, limit: int, improvements: bool, as_json: bool,
) -> None:  # fmt: skip
    """Slices whose metrics got significantly worse in --window than in --baseline,
    ranked by effect size (e.g. `goldenloop regressions --window 2h --baseline 7d`)."""
    current = _window(window, end)
    defs = _parsed(tuple(metric_names) or REGRESSION_METRICS, resolve_metrics, "--metric")
    names = tuple(m.name for m in defs)
    try:
        query = RegressionQuery(
            current, current.before(parse_duration(baseline, name="--baseline")), names,
            tuple(_parsed(by, parse_dimensions, "--by")) or None,
            tuple(_parsed(where, parse_filters, "--where")), min_sample=min_sample,
            min_sessions=min_sessions, alpha=alpha, min_effect=min_effect, limit=limit,
            include_improvements=improvements,
        )  # fmt: skip
    except (ValueError, WindowError) as exc:
        raise click.BadParameter(str(exc)) from None
    config = _config(slo_file)
    with _store(db, database_url) as store, console.status("comparing slices…"):
        report = find_regressions(store, query, signals=config.signals)
    if as_json:
        print_json(report.to_dict())
        return
    if not report.findings:
        click.echo(f"No significant regressions ({report.tests_run} slice tests).")
        return
    table = Table("slice", "metric", "now", "baseline", "effect", "q", "since", "mostly",
                  title=f"{_title(current)} vs the {baseline} before")  # fmt: skip
    for f in report.findings:
        unit = f.metric.unit
        table.add_row(
            f.slice_label, f.metric.title, _format(f.window_value, unit),
            _format(f.baseline_value, unit) + ("" if f.baseline_scope == "slice" else f" ({f.baseline_scope})"),
            f"{f.effect:+.2f}", f"{f.q_value:.1e}", f.onset.strftime("%H:%M") if f.onset else "",
            ", ".join(f"{d}={v}" for d, v, _ in f.context[:3]),
        )  # fmt: skip
    _print(table)
