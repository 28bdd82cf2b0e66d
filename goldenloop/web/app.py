"""The server: one FastAPI app, every URL in ``ROUTES``.

``create_app(settings, store)`` builds the app around a store it is handed (the CLI
opens the store; tests pass their own). The writer thread starts and stops with the
app's lifespan and commits everything accepted before shutdown completes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from goldenloop import __version__
from goldenloop.config import Settings
from goldenloop.ingest.writer import GroupCommitWriter
from goldenloop.pricing import price_table_for
from goldenloop.store.base import Store
from goldenloop.web import (
    alerts_api,
    alerts_pages,
    golden_api,
    ingest_api,
    metrics_api,
    overview,
    triage_api,
    triage_pages,
    views,
)
from goldenloop.web.filters import FilterError
from goldenloop.web.state import AppState

_HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(_HERE / "templates"))
# Ids may contain "/" (tenant/42): quote everything so links round-trip to {id:path}.
templates.env.filters["pathquote"] = lambda value: quote(str(value), safe="")


def _state(request: Request) -> AppState:
    return ingest_api.state_of(request)


# -- JSON API ---------------------------------------------------------------------------


def healthz(request: Request) -> dict[str, Any]:
    """Liveness plus the writer's queue depth and the store in use."""
    state = _state(request)
    stats = state.writer.stats
    return {
        "status": "ok",
        "version": __version__,
        "store": state.store.dialect,
        "queued_spans": stats.queued_spans,
        "committed_spans": stats.committed_spans,
        "commits": stats.commits,
    }


def api_trace(request: Request, trace_id: str) -> Response:
    """All spans of one trace with their normalized fields."""
    try:
        return JSONResponse(views.trace_detail(_state(request).store, trace_id).to_dict())
    except views.NotFound as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)


def api_session(request: Request, session_id: str) -> Response:
    """One session: turns, spans, feedback, outcomes and totals."""
    try:
        return JSONResponse(views.session_detail(_state(request).store, session_id).to_dict())
    except views.NotFound as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)


def api_sessions(request: Request) -> Response:
    """Sessions, newest first. Filters: project, since, until (ISO time or a duration
    like 24h), any slice dimension (locale=de-DE), attr.NAME=VALUE, flag.NAME=VARIANT;
    paginate with limit and offset."""
    try:
        context = views.session_list(_state(request).store, request.query_params.multi_items())
    except (FilterError, ValueError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse(context.to_dict())


# -- pages ------------------------------------------------------------------------------


def page_sessions(request: Request) -> Response:
    try:
        context = views.session_list(_state(request).store, request.query_params.multi_items())
    except (FilterError, ValueError) as exc:
        return templates.TemplateResponse(
            request, "error.html", {"message": str(exc)}, status_code=400
        )
    return templates.TemplateResponse(request, "sessions.html", {"page": context})


def page_session(request: Request, session_id: str) -> Response:
    try:
        detail = views.session_detail(_state(request).store, session_id)
    except views.NotFound as exc:
        return templates.TemplateResponse(
            request, "error.html", {"message": str(exc)}, status_code=404
        )
    return templates.TemplateResponse(request, "session.html", {"page": detail})


def page_trace(request: Request, trace_id: str) -> Response:
    try:
        context = views.trace_detail(_state(request).store, trace_id)
    except views.NotFound as exc:
        return templates.TemplateResponse(
            request, "error.html", {"message": str(exc)}, status_code=404
        )
    return templates.TemplateResponse(request, "trace.html", {"page": context})


@dataclass(frozen=True)
class Route:
    path: str
    endpoint: Callable[..., Any]
    methods: tuple[str, ...] = ("GET",)
    html: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


#: Every URL the server answers, in one table.
ROUTES: tuple[Route, ...] = (
    Route(
        "/v1/traces",
        ingest_api.ingest_traces,
        ("POST",),
        extra={"openapi_extra": ingest_api.OTLP_OPENAPI},
    ),
    Route("/api/v1/feedback", ingest_api.ingest_feedback, ("POST",), extra={"status_code": 202}),
    Route("/api/v1/outcomes", ingest_api.ingest_outcome, ("POST",), extra={"status_code": 202}),
    Route("/api/v1/traces/{trace_id}", api_trace),
    Route("/api/v1/sessions/{session_id:path}", api_session),
    Route("/api/v1/sessions", api_sessions),
    Route("/healthz", healthz),
    Route("/", overview.page_overview, html=True),
    Route("/sessions", page_sessions, html=True),
    Route("/sessions/{session_id:path}", page_session, html=True),
    Route("/traces/{trace_id}", page_trace, html=True),
    Route("/api/v1/metrics", metrics_api.api_metrics),
    Route("/api/v1/slos", metrics_api.api_slos),
    Route("/api/v1/slos", metrics_api.api_create_slo, ("POST",), extra={"status_code": 201}),
    Route("/api/v1/slos/{name}", metrics_api.api_delete_slo, ("DELETE",)),
    Route("/api/v1/regressions", metrics_api.api_regressions),
    Route("/api/v1/overview", overview.api_overview),
    Route("/metrics", metrics_api.prometheus_metrics),
    Route("/overview", overview.page_overview, html=True),
    Route("/overview/regressions", overview.page_overview_regressions, html=True),
    Route("/api/v1/golden/cases", golden_api.api_golden_cases),
    Route("/api/v1/golden/coverage", golden_api.api_golden_coverage),
    Route("/api/v1/golden/promote", golden_api.api_promote, ("POST",), extra={"status_code": 201}),
    Route("/api/v1/eval-runs", golden_api.api_eval_runs),
    Route(
        "/api/v1/eval-runs", golden_api.api_store_eval_run, ("POST",), extra={"status_code": 201}
    ),
    Route("/api/v1/eval-runs/{run_id}", golden_api.api_eval_run),
    Route("/golden", golden_api.page_golden, html=True),
    Route("/evals", golden_api.page_eval_runs, html=True),
    Route("/evals/{run_id}", golden_api.page_eval_run, html=True),
    Route("/api/v1/triage", triage_api.api_triage),
    Route("/api/v1/triage/refresh", triage_api.api_refresh, ("POST",)),
    Route("/api/v1/triage/{item_id}", triage_api.api_triage_item),
    Route("/api/v1/triage/{item_id}/label", triage_api.api_label, ("POST",)),
    Route("/api/v1/flags", triage_api.api_flags),
    Route("/api/v1/flags/run", triage_api.api_flags_run, ("POST",)),
    Route("/api/v1/clusters", triage_api.api_clusters),
    Route("/api/v1/reports/weekly", triage_api.api_weekly),
    Route("/triage", triage_pages.page_triage, html=True),
    Route("/triage/run", triage_pages.page_triage_run, ("POST",), html=True),
    Route("/triage/{item_id}", triage_pages.page_triage_item, html=True),
    Route("/triage/{item_id}/label", triage_pages.page_triage_label, ("POST",), html=True),
    Route("/api/v1/alerts", alerts_api.api_alerts),
    Route("/api/v1/alerts/rules", alerts_api.api_alert_rules),
    Route(
        "/api/v1/alerts/rules",
        alerts_api.api_create_alert_rule,
        ("POST",),
        extra={"status_code": 201},
    ),
    Route("/api/v1/alerts/rules/{name}", alerts_api.api_alert_rule),
    Route("/api/v1/alerts/rules/{name}", alerts_api.api_delete_alert_rule, ("DELETE",)),
    Route("/api/v1/alerts/history", alerts_api.api_alert_history),
    Route("/api/v1/alerts/backtest", alerts_api.api_backtest),
    Route("/api/v1/alerts/silences", alerts_api.api_silences),
    Route(
        "/api/v1/alerts/silences",
        alerts_api.api_create_silence,
        ("POST",),
        extra={"status_code": 201},
    ),
    Route("/api/v1/alerts/silences/{silence_id}", alerts_api.api_expire_silence, ("DELETE",)),
    Route("/api/v1/alerts/config", alerts_api.api_alerts_config),
    Route("/api/v1/alerts/config", alerts_api.api_put_alerts_config, ("PUT",)),
    Route("/api/v1/alerts/check", alerts_api.api_check_alerts, ("POST",)),
    Route("/alerts", alerts_pages.page_alerts, html=True),
    Route("/alerts/rules/{name}", alerts_pages.page_alert_rule, html=True),
    Route("/alerts/silences", alerts_pages.page_create_silence, ("POST",), html=True),
    Route(
        "/alerts/silences/{silence_id}/expire",
        alerts_pages.page_expire_silence,
        ("POST",),
        html=True,
    ),
)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        problems.append(f"{location or 'body'}: {error.get('msg', 'invalid')}")
    return JSONResponse(
        {"error": "invalid request: " + "; ".join(problems), "problems": problems},
        status_code=422,
    )


def create_app(settings: Settings, store: Store) -> FastAPI:
    """The ASGI app serving ``store``; the caller owns (and closes) the store."""
    writer = GroupCommitWriter(
        store,
        max_queue_spans=settings.max_queue_spans,
        batch_max_spans=settings.batch_max_spans,
        batch_max_wait_ms=settings.batch_max_wait_ms,
    )
    state = AppState(
        settings=settings,
        store=store,
        writer=writer,
        prices=price_table_for(settings.prices_file),
        api_keys=settings.project_keys(),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from goldenloop.alerts.scheduler import start_alert_scheduler, stop_alert_scheduler
        from goldenloop.flags.loop import start_flagging_loop_safely

        writer.start()
        # Flag rules run on new data every flag_interval_s; a failure there is logged,
        # never fatal.
        flagging = (
            start_flagging_loop_safely(store, float(settings.flag_interval_s))
            if settings.flag_interval_s > 0
            else None
        )
        # Alert rules are evaluated every minute in the background; never fatal either.
        app.state.goldenloop_alerts = start_alert_scheduler(settings, store)
        try:
            yield
        finally:
            stop_alert_scheduler(app.state.goldenloop_alerts)
            if flagging is not None:
                flagging.stop()
            await state.decoder.stop()
            writer.stop()

    app = FastAPI(
        title="goldenloop",
        version=__version__,
        description="Production monitoring for LLM features that closes the log-to-eval loop.",
        lifespan=lifespan,
    )
    app.state.goldenloop = state
    for route in ROUTES:
        app.add_api_route(
            route.path,
            route.endpoint,
            methods=list(route.methods),
            include_in_schema=not route.html,
            response_class=HTMLResponse if route.html else JSONResponse,
            **route.extra,
        )
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")
    app.add_exception_handler(RequestValidationError, _validation_error)
    return app
