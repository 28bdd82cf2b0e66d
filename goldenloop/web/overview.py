"""The overview page (the landing page) and its JSON twin.

``overview_data`` is the one data function: headline numbers and per-bucket series
(success, latency, cost, error rates) from one scan per metric source, latency by
span kind × model, cost by customer tier, a slice table, and SLO status. The page
renders it with uPlot charts; ``/api/v1/overview`` returns ``to_dict()``. The
regression table loads separately (htmx) because the finder is the slowest query.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.templating import Jinja2Templates

from goldenloop.metrics.burn import SloStatus, evaluate_slos
from goldenloop.metrics.catalog import METRICS, MetricDef, format_value
from goldenloop.metrics.compute import (
    MetricRow,
    MetricsQuery,
    MetricsResult,
    MetricValue,
    View,
    compute_metrics,
    compute_views,
)
from goldenloop.metrics.config import MetricsConfig, MetricsConfigError
from goldenloop.metrics.dimensions import Filter, parse_dimension
from goldenloop.metrics.regressions import find_regressions
from goldenloop.metrics.slo import SloSet
from goldenloop.metrics.windows import Bucket, TimeWindow, WindowError, default_bucket, parse_bucket
from goldenloop.store.base import Store
from goldenloop.web.ingest_api import state_of
from goldenloop.web.metrics_api import (
    ParamError,
    collect_params,
    parse_window,
    regression_query,
    services,
)

#: Charts: (id, title, unit, metrics).
CHARTS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("success", "Task success", "ratio",
     ("task_success_rate", "feedback_success_rate", "outcome_success_rate", "judge_pass_rate")),
    ("latency", "Turn latency", "ms", ("turn_latency_p50", "turn_latency_p95")),
    ("cost", "Cost", "usd", ("cost_usd",)),
    ("errors", "Error rates", "ratio",
     ("turn_error_rate", "tool_error_rate", "parse_error_rate", "guardrail_block_rate",
      "empty_response_rate")),
    ("volume", "Turns", "count", ("turns",)),
)  # fmt: skip
HEADLINE: tuple[str, ...] = (
    "turns", "sessions", "task_success_rate", "turn_latency_p50", "turn_latency_p95", "cost_usd",
    "cost_per_successful_task", "turn_error_rate", "tool_error_rate", "circuit_breaker_rate",
    "max_tokens_rate",
)  # fmt: skip
LATENCY_TABLE: tuple[str, ...] = ("span_latency_p50", "span_latency_p95", "spans")
COST_TABLE: tuple[str, ...] = (
    "sessions", "cost_usd", "tokens", "cost_per_session", "cost_per_successful_task",
)  # fmt: skip
SLICE_TABLE: tuple[str, ...] = (
    "turns", "task_success_rate", "turn_latency_p95", "turn_error_rate", "cost_per_turn",
)  # fmt: skip
_PAGE_PARAMS = {"window", "end", "bucket", "slices"}
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


templates.env.globals["fmt"] = format_value


@dataclass
class Table:
    title: str
    dims: list[str]
    metrics: list[MetricDef]
    rows: list[MetricRow]

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "dims": self.dims,
            "metrics": [m.name for m in self.metrics],
            "rows": [
                {"dims": dict(zip(self.dims, r.dims, strict=True)),
                 "values": {k: v.to_dict() for k, v in r.values.items()}}
                for r in self.rows
            ],
        }  # fmt: skip


@dataclass
class OverviewContext:
    window: TimeWindow
    bucket: Bucket
    filters: list[Filter]
    slice_dim: str
    headline: dict[str, MetricValue]
    series: list[MetricRow]
    tables: list[Table]
    slos: list[SloStatus] = field(default_factory=list)
    query: list[tuple[str, str]] = field(default_factory=list)

    @property
    def charts(self) -> list[dict[str, Any]]:
        """Chart specs and data for the page script (times in epoch seconds)."""
        times = [row.bucket.timestamp() for row in self.series if row.bucket]
        specs = []
        for chart_id, title, unit, names in CHARTS:
            specs.append({
                "id": chart_id, "title": title, "unit": unit,
                "series": [{"metric": n, "label": METRICS[n].title,
                            "values": [row.values[n].value for row in self.series]} for n in names],
                "times": times,
            })  # fmt: skip
        return specs

    def metric(self, name: str) -> MetricDef:
        return METRICS[name]

    @property
    def window_choices(self) -> list[str]:
        current = self.window.to_dict()["length"]
        choices = ["1h", "6h", "24h", "7d", "30d"]
        return choices if current in choices else [current, *choices]

    @property
    def end_param(self) -> str | None:
        return next((v for k, v in self.query if k == "end"), None)

    def filter_value(self, name: str) -> str:
        """The value of a plain ``DIM=VALUE`` filter, for the filter form."""
        for flt in self.filters:
            if flt.dimension.name == name and not flt.negate and flt.value is not None:
                return flt.value
        return ""

    @property
    def query_string(self) -> str:
        return urlencode(self.query)

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.window.to_dict(),
            "bucket": self.bucket,
            "where": [str(f) for f in self.filters],
            "headline": {k: v.to_dict() for k, v in self.headline.items()},
            "series": [
                {
                    "bucket": r.bucket.isoformat() if r.bucket else None,
                    "values": {k: v.value for k, v in r.values.items()},
                }
                for r in self.series
            ],  # fmt: skip
            "charts": [{k: v for k, v in c.items() if k != "times"} for c in self.charts],
            "tables": [t.to_dict() for t in self.tables],
            "slos": [s.to_dict() for s in self.slos],
        }


def overview_data(
    store: Store,
    config: MetricsConfig,
    slo_set: SloSet,
    params: Iterable[tuple[str, str]],
) -> OverviewContext:
    items = list(params)
    known, filters = collect_params(items, _PAGE_PARAMS)
    try:
        window = parse_window(known, "7d")
        bucket = parse_bucket(known.get("bucket", [""])[-1]) or default_bucket(window)
        window.bucket_starts(bucket)
        slice_dim = parse_dimension(known.get("slices", ["locale"])[-1])
    except (WindowError, ValueError) as exc:
        raise ParamError(str(exc)) from None
    where = tuple(filters)
    signals = config.signals
    tier = parse_dimension("customer_tier")
    # Two passes so each grouping computes only what it shows: the series and headline
    # (quantiles per bucket), then the tables (a few groups each).
    series_names = tuple(dict.fromkeys([*HEADLINE, *(n for c in CHARTS for n in c[3])]))
    series_r, totals_r = compute_views(
        store, window, series_names, [View((), bucket), View(())], where, signals=signals
    )
    table_names = tuple(dict.fromkeys([*COST_TABLE, *SLICE_TABLE]))
    tier_r, slice_r = compute_views(
        store, window, table_names, [View((tier,)), View((slice_dim,))], where, signals=signals
    )
    headline = totals_r.rows[0].values if totals_r.rows else {}
    headline = {n: headline[n] for n in HEADLINE if n in headline}
    latency = compute_metrics(
        store, MetricsQuery(window, LATENCY_TABLE, (parse_dimension("kind"), parse_dimension("model")),
                            where), signals=signals,
    )  # fmt: skip
    tables = [
        _table("Latency by span kind × model", latency, LATENCY_TABLE, "spans"),
        _table("Cost by customer tier", tier_r, COST_TABLE, "sessions"),
        _table(f"By {slice_dim.name}", slice_r, SLICE_TABLE, "turns"),
    ]
    series = series_r.rows
    slos = evaluate_slos(store, slo_set.all(store), now=window.end, signals=signals)
    query = [(k, v) for k, v in items if k not in ("format",)]
    return OverviewContext(window, bucket, list(filters), slice_dim.name, headline, series,
                           tables, slos, query)  # fmt: skip


def _table(title: str, result: MetricsResult, metrics: tuple[str, ...], volume: str) -> Table:
    ordered = sorted(result.rows, key=lambda r: -(r.values[volume].value or 0))
    rows = [MetricRow(r.bucket, r.dims, {n: r.values[n] for n in metrics}) for r in ordered]
    return Table(title, [d.name for d in result.dims], [METRICS[n] for n in metrics], rows)


# -- handlers --------------------------------------------------------------------------------
def _context(request: Request) -> OverviewContext:
    state = state_of(request)
    svc = services(request)
    return overview_data(state.store, svc.config, svc.slos, request.query_params.multi_items())


def api_overview(request: Request) -> Response:
    """The overview page's data: headline numbers, per-bucket series (success rates,
    latency P50/P95, cost, error rates, turns), latency by kind × model, cost by tier, a
    slice table and SLO status. Parameters: window (7d), end, bucket, slices (dimension
    of the slice table, default locale) and DIM=VALUE filters."""
    try:
        return JSONResponse(_context(request).to_dict())
    except ParamError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    except MetricsConfigError as exc:
        return JSONResponse({"error": str(exc)}, status_code=503)


def page_overview(request: Request) -> Response:
    try:
        context = _context(request)
    except (ParamError, MetricsConfigError) as exc:
        status = 400 if isinstance(exc, ParamError) else 503
        return templates.TemplateResponse(
            request, "error.html", {"message": str(exc)}, status_code=status
        )
    return templates.TemplateResponse(request, "overview.html", {"page": context})


def page_overview_regressions(request: Request) -> Response:
    """HTML fragment: the regression table for the overview (loaded with htmx)."""
    state = state_of(request)
    try:
        query = regression_query(request.query_params.multi_items())
        report = find_regressions(state.store, query, signals=services(request).config.signals)
    except (ParamError, MetricsConfigError) as exc:
        return templates.TemplateResponse(request, "overview_regressions.html",
                                          {"error": str(exc), "report": None}, status_code=400)  # fmt: skip
    return templates.TemplateResponse(
        request, "overview_regressions.html", {"report": report, "error": None}
    )
