"""JSON API for metrics, SLOs and regressions, and ``/metrics`` for Prometheus.

Handlers parse the query string into the metrics package's own types and call one
service function; a malformed parameter answers 400 naming it. The metrics config file
(``GOLDENLOOP_SLO_FILE``) is read on first use and re-read when it changes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Body, Request
from fastapi.responses import JSONResponse, Response

from goldenloop.metrics.burn import evaluate_slos
from goldenloop.metrics.catalog import UnknownMetric, resolve_metrics
from goldenloop.metrics.compute import DEFAULT_METRICS, MetricsQuery, compute_metrics
from goldenloop.metrics.config import MetricsConfig, MetricsConfigError, load_metrics_config
from goldenloop.metrics.dimensions import (
    Dimension,
    DimensionError,
    Filter,
    filters_from_pairs,
    parse_dimensions,
    parse_filters,
)
from goldenloop.metrics.prometheus import CONTENT_TYPE, PrometheusExporter, parse_labels
from goldenloop.metrics.regressions import REGRESSION_METRICS, RegressionQuery, find_regressions
from goldenloop.metrics.slo import SloConflict, SloError, SloSet, delete_slo, parse_slo, save_slo
from goldenloop.metrics.windows import (
    TimeWindow,
    WindowError,
    parse_bucket,
    parse_duration,
    parse_time,
)
from goldenloop.web.ingest_api import state_of


class ParamError(ValueError):
    """A query parameter is malformed; the message names it."""


@dataclass
class MetricsServices:
    """Per-app metrics objects: the parsed config file and the Prometheus exporter."""

    config: MetricsConfig
    slos: SloSet
    exporter: PrometheusExporter
    stamp: tuple[str, float]


_LOCK = threading.Lock()


def _stamp(path: str) -> tuple[str, float]:
    try:
        return path, Path(path).stat().st_mtime if path else 0.0
    except OSError:
        return path, -1.0


def services(request: Request) -> MetricsServices:
    """The app's metrics services (kept on ``app.state``), reloading the config file
    when it changed."""
    state = state_of(request)
    path = state.settings.slo_file
    stamp = _stamp(path)
    with _LOCK:
        current: MetricsServices | None = getattr(request.app.state, "goldenloop_metrics", None)
        if current is not None and current.stamp == stamp:
            return current
        config = load_metrics_config(path)
        slo_set = SloSet(list(config.slos))
        store = state.store
        exporter = PrometheusExporter(
            store, config.prometheus, slos=lambda: slo_set.all(store), signals=config.signals
        )
        current = MetricsServices(config, slo_set, exporter, stamp)
        request.app.state.goldenloop_metrics = current
        return current


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _split(values: Iterable[str]) -> list[str]:
    return [part.strip() for v in values for part in v.split(",") if part.strip()]


# -- query-string parsing (shared with the overview page) ----------------------------------
def parse_window(params: dict[str, list[str]], default: str, name: str = "window") -> TimeWindow:
    end = parse_time(params["end"][-1]) if params.get("end") else None
    length = parse_duration(params.get(name, [default])[-1], name=name)
    return TimeWindow.last(length, end=end)


def collect_params(
    items: Iterable[tuple[str, str]], reserved: set[str]
) -> tuple[dict[str, list[str]], list[Filter]]:
    """Known parameters by name; every other ``DIM=VALUE`` pair (``locale=de-DE``,
    ``flag.eu_banner=on``, ``attr.intent=refund``; ``DIM!=VALUE`` as ``DIM!``) is a filter."""
    params: dict[str, list[str]] = {}
    pairs: list[tuple[str, str]] = []
    for key, value in items:
        if key in reserved:
            params.setdefault(key, []).append(value)
        elif key == "where":
            params.setdefault("where", []).append(value)
        else:
            pairs.append((key, value))
    try:
        filters = filters_from_pairs(pairs) + parse_filters(params.get("where", []))
    except DimensionError as exc:
        raise ParamError(f"{exc}") from None
    return params, filters


def _number(params: dict[str, list[str]], name: str, default: float, kind: type = float) -> Any:
    if name not in params:
        return default
    raw = params[name][-1]
    try:
        return kind(raw)
    except ValueError:
        raise ParamError(
            f"{name}: expected {'an integer' if kind is int else 'a number'}, got {raw!r}"
        ) from None


def _dims(params: dict[str, list[str]], name: str = "by") -> tuple[Dimension, ...]:
    try:
        return tuple(parse_dimensions(params.get(name, [])))
    except DimensionError as exc:
        raise ParamError(f"{name}: {exc}") from None


_METRICS_PARAMS = {"window", "end", "metric", "by", "bucket"}


def metrics_query(items: Iterable[tuple[str, str]]) -> MetricsQuery:
    params, filters = collect_params(items, _METRICS_PARAMS)
    try:
        window = parse_window(params, "24h")
        bucket = parse_bucket(params.get("bucket", [""])[-1])
        metrics = tuple(_split(params.get("metric", []))) or DEFAULT_METRICS
        resolve_metrics(metrics)
        if bucket:
            window.bucket_starts(bucket)  # rejects too many buckets
    except UnknownMetric as exc:
        raise ParamError(f"metric: {exc}") from None
    except WindowError as exc:
        raise ParamError(str(exc)) from None
    return MetricsQuery(window, metrics, _dims(params), tuple(filters), bucket)


_REGRESSION_PARAMS = {
    "window", "baseline", "end", "metric", "by", "min_sample", "min_sessions", "alpha",
    "min_effect", "limit", "improvements",
}  # fmt: skip


def regression_query(items: Iterable[tuple[str, str]]) -> RegressionQuery:
    params, filters = collect_params(items, _REGRESSION_PARAMS)
    try:
        window = parse_window(params, "2h")
        baseline = window.before(
            parse_duration(params.get("baseline", ["7d"])[-1], name="baseline")
        )
        metrics = tuple(_split(params.get("metric", []))) or REGRESSION_METRICS
        resolve_metrics(metrics)
    except UnknownMetric as exc:
        raise ParamError(f"metric: {exc}") from None
    except WindowError as exc:
        raise ParamError(str(exc)) from None
    dims = _dims(params) or None
    try:
        return RegressionQuery(
            window, baseline, metrics, dims, tuple(filters),
            min_sample=_number(params, "min_sample", 30, int),
            min_sessions=_number(params, "min_sessions", 10, int),
            alpha=_number(params, "alpha", 0.05), min_effect=_number(params, "min_effect", 0.2),
            limit=_number(params, "limit", 20, int),
            include_improvements=params.get("improvements", ["false"])[-1].lower() in ("1", "true", "yes"),
        )  # fmt: skip
    except ValueError as exc:
        raise ParamError(str(exc)) from None


# -- handlers ------------------------------------------------------------------------------
def api_metrics(request: Request) -> Response:
    """Metrics over a window. Parameters: window (24h), end (ISO time), metric (repeat
    or comma-separate; default: the standard set), by (dimensions: locale, customer_tier,
    prompt_hash, flag.NAME, attr.NAME …), bucket (minute, hour, day), and filters as
    DIM=VALUE (e.g. locale=de-DE, flag.eu_banner=on) or where=DIM=VALUE."""
    state = state_of(request)
    try:
        query = metrics_query(request.query_params.multi_items())
        config = services(request).config
    except ParamError as exc:
        return _error(400, str(exc))
    except MetricsConfigError as exc:
        return _error(503, str(exc))
    return JSONResponse(compute_metrics(state.store, query, signals=config.signals).to_dict())


def api_slos(request: Request) -> Response:
    """Every SLO (config file and API) with its SLI, error budget, budget remaining,
    burn rates over 5m/30m/1h/6h/3d and status (ok, warning, freeze, exhausted,
    no_data). ``at`` evaluates at an ISO time instead of now."""
    state = state_of(request)
    try:
        at_values = request.query_params.getlist("at")
        now = parse_time(at_values[-1], name="at") if at_values else None
        svc = services(request)
    except WindowError as exc:
        return _error(400, str(exc))
    except MetricsConfigError as exc:
        return _error(503, str(exc))
    statuses = evaluate_slos(
        state.store, svc.slos.all(state.store), now=now, signals=svc.config.signals
    )
    return JSONResponse({"slos": [s.to_dict() for s in statuses], "config_file": svc.config.path})


def api_create_slo(request: Request, body: dict[str, Any] = Body(...)) -> Response:  # noqa: B008
    """Define (or replace) an SLO through the API; the body is one SLO as in the config
    file: name, objective, period, description, sli {kind, filter, …}."""
    state = state_of(request)
    try:
        svc = services(request)
        slo = parse_slo(body, origin="api")
        created = save_slo(state.store, slo, svc.slos.file)
    except SloConflict as exc:
        return _error(409, str(exc))
    except SloError as exc:
        return _error(400, str(exc))
    except MetricsConfigError as exc:
        return _error(503, str(exc))
    return JSONResponse(slo.to_dict(), status_code=201 if created else 200)


def api_delete_slo(request: Request, name: str) -> Response:
    """Remove an SLO defined through the API."""
    state = state_of(request)
    try:
        removed = delete_slo(state.store, name, services(request).slos.file)
    except SloConflict as exc:
        return _error(409, str(exc))
    except MetricsConfigError as exc:
        return _error(503, str(exc))
    if not removed:
        return _error(404, f"no API-defined SLO {name!r}")
    return Response(status_code=204)


def api_regressions(request: Request) -> Response:
    """Slices whose metrics got significantly worse in a window against a baseline.
    Parameters: window (2h), baseline (7d, ending where the window starts), end, by,
    metric, min_sample (30), min_sessions (10), alpha (0.05, false-discovery rate),
    min_effect (0.2), limit (20), improvements (false), and DIM=VALUE filters."""
    state = state_of(request)
    try:
        query = regression_query(request.query_params.multi_items())
        config = services(request).config
    except ParamError as exc:
        return _error(400, str(exc))
    except MetricsConfigError as exc:
        return _error(503, str(exc))
    return JSONResponse(find_regressions(state.store, query, signals=config.signals).to_dict())


def prometheus_metrics(request: Request) -> Response:
    """Prometheus exposition. Optional ``labels`` (comma-separated dimensions, at most
    4; default from the config file: project) and ``window`` (default 5m)."""
    try:
        svc = services(request)
    except MetricsConfigError as exc:
        return _error(503, str(exc))
    try:
        labels_param = request.query_params.get("labels")
        labels = parse_labels(labels_param) if labels_param is not None else None
        window_param = request.query_params.get("window")
        window = parse_duration(window_param) if window_param else None
    except ValueError as exc:  # DimensionError, WindowError, too many labels
        return _error(400, f"labels: {exc}" if "window" not in str(exc) else str(exc))
    return Response(svc.exporter.render(labels, window), media_type=CONTENT_TYPE)
