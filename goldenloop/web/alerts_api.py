"""JSON API for alerts: the overview (twin of ``/alerts``), rules, silences, history,
backtests, the saved configuration, and an on-demand check.

Malformed input answers 400 naming the field (and, for rules, the rule and key); a rule
that belongs to the config file answers 409 when the API tries to change it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import Body, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from goldenloop.alerts.config import (
    AlertConfigError,
    RuleConflict,
    delete_rule,
    save_config,
    save_rule,
)
from goldenloop.alerts.scheduler import AlertEngine
from goldenloop.alerts.silences import SilenceError, create_silence, expire_silence, list_silences
from goldenloop.alerts.states import load_history
from goldenloop.metrics.windows import WindowError, parse_duration, parse_time
from goldenloop.web.alerts_pages import (
    BadParam,
    UnknownRule,
    alerts_page,
    alerts_runtime,
    parse_since,
    rule_page,
    run_backtest,
)
from goldenloop.web.ingest_api import error_response, state_of

MAX_CONFIG_BYTES = 1024 * 1024


def api_alerts(request: Request) -> Response:
    """Everything the alerts page shows: firing, pending and resolved (24h) alerts with
    exemplar, trace URL, prompt version, model, slice and numbers; rules; silences;
    notifiers; recent notifications; the scheduler. Filters: ``state``, ``rule``."""
    try:
        return JSONResponse(alerts_page(request, request.query_params).to_dict())
    except BadParam as exc:
        return error_response(400, str(exc))


def api_alert_rules(request: Request) -> Response:
    """Every rule (config file and API) with its origin, and API rules that no longer
    parse."""
    runtime, error = alerts_runtime(request)
    if runtime is None:
        return error_response(503, f"the alerts configuration cannot be loaded: {error}")
    return JSONResponse({
        "rules": [r.to_dict() for r in runtime.rules.rules],
        "invalid": runtime.rules.invalid,
        "config_source": runtime.config.source,
    })  # fmt: skip


def api_create_alert_rule(request: Request, body: dict[str, Any] = Body(...)) -> Response:  # noqa: B008
    """Create or replace a rule: the body is one rule as in the config file."""
    runtime, error = alerts_runtime(request)
    if runtime is None:
        return error_response(503, f"the alerts configuration cannot be loaded: {error}")
    try:
        rule, created = save_rule(state_of(request).store, body, runtime.config)
    except RuleConflict as exc:
        return error_response(409, str(exc))
    except AlertConfigError as exc:
        return error_response(400, str(exc))
    return JSONResponse(rule.to_dict(), status_code=201 if created else 200)


def api_alert_rule(request: Request, name: str) -> Response:
    """One rule with its alerts (7 days) and history; ``backtest=7d`` (``step``,
    ``until``) adds when it would have fired."""
    try:
        return JSONResponse(rule_page(request, name, request.query_params).to_dict())
    except BadParam as exc:
        return error_response(400, str(exc))
    except UnknownRule as exc:
        return error_response(404, str(exc))


def api_delete_alert_rule(request: Request, name: str) -> Response:
    """Remove a rule defined through the API (its alerts resolve at the next tick)."""
    runtime, error = alerts_runtime(request)
    if runtime is None:
        return error_response(503, f"the alerts configuration cannot be loaded: {error}")
    try:
        removed = delete_rule(state_of(request).store, name, runtime.config)
    except RuleConflict as exc:
        return error_response(409, str(exc))
    if not removed:
        return error_response(404, f"no API-defined alert rule {name!r}")
    return Response(status_code=204)


def api_alert_history(request: Request) -> Response:
    """State changes, newest first: ``rule``, ``since`` (7d or ISO time), ``limit``."""
    params, now = request.query_params, datetime.now(UTC)
    try:
        since = parse_since(params["since"], "since", now) if params.get("since") else None
        limit = int(params.get("limit") or 100)
        if not 1 <= limit <= 1000:
            raise ValueError
    except BadParam as exc:
        return error_response(400, str(exc))
    except ValueError:
        return error_response(400, "limit: expected a whole number from 1 to 1000")
    history = load_history(
        state_of(request).store, rule=params.get("rule") or None, limit=limit, since=since
    )
    return JSONResponse({"history": [h.to_dict() for h in history]})


def api_backtest(request: Request) -> Response:
    """When would ``rule`` have fired? ``since`` (default 7d), ``until``, ``step`` (1m)."""
    params = request.query_params
    name = params.get("rule")
    if not name:
        return error_response(400, "rule: required (the name of an alert rule)")
    runtime, error = alerts_runtime(request)
    if runtime is None:
        return error_response(503, f"the alerts configuration cannot be loaded: {error}")
    rule = runtime.rules.get(name)
    if rule is None:
        return error_response(404, f"no alert rule {name!r}")
    try:
        result = run_backtest(request, runtime, rule, params, datetime.now(UTC))
    except BadParam as exc:
        return error_response(400, str(exc))
    return JSONResponse(result.to_dict())


def api_silences(request: Request) -> Response:
    """Active and pending silences; ``expired=true`` adds those that ended in the last week."""
    now = datetime.now(UTC)
    expired = (request.query_params.get("expired") or "").lower() in ("1", "true", "yes")
    silences = list_silences(state_of(request).store, now=now, include_expired=expired)
    return JSONResponse({"silences": [s.to_dict(now) for s in silences]})


def api_create_silence(request: Request, body: dict[str, Any] = Body(...)) -> Response:  # noqa: B008
    """``{"matchers": ["alertname=refund-burn", "locale=~de-.*"], "duration": "2h",
    "comment": "…", "created_by": "…"}``; ``ends_at``/``starts_at`` (ISO) instead of
    ``duration``. Matchers may also be a mapping of label → value."""
    now = datetime.now(UTC)
    try:
        duration = (
            parse_duration(str(body["duration"]), name="duration") if body.get("duration") else None
        )
        ends_at = parse_time(str(body["ends_at"]), name="ends_at") if body.get("ends_at") else None
        starts_at = (
            parse_time(str(body["starts_at"]), name="starts_at") if body.get("starts_at") else None
        )
        for key in ("created_by", "comment"):
            if body.get(key) is not None and not isinstance(body[key], str):
                raise SilenceError(f"{key}: expected text")
        silence = create_silence(
            state_of(request).store, body.get("matchers"), now=now, ends_at=ends_at,
            duration=duration, starts_at=starts_at, created_by=body.get("created_by"),
            comment=body.get("comment"),
        )  # fmt: skip
    except (SilenceError, WindowError) as exc:
        return error_response(400, str(exc))
    return JSONResponse(silence.to_dict(now), status_code=201)


def api_expire_silence(request: Request, silence_id: str) -> Response:
    """End a silence now."""
    if not expire_silence(state_of(request).store, silence_id, now=datetime.now(UTC)):
        return error_response(404, f"no active silence {silence_id!r}")
    return Response(status_code=204)


def api_alerts_config(request: Request) -> Response:
    """The configuration the server evaluates (notifier secrets masked)."""
    runtime, error = alerts_runtime(request)
    if runtime is None:
        return error_response(503, f"the alerts configuration cannot be loaded: {error}")
    return JSONResponse(runtime.config.to_dict())


async def api_put_alerts_config(request: Request) -> Response:
    """Replace the saved configuration with the body (YAML or JSON text), after
    validating it; what ``goldenloop alerts apply FILE --server URL`` sends."""
    raw = await request.body()
    if len(raw) > MAX_CONFIG_BYTES:
        return error_response(413, f"the configuration is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return error_response(400, "body: the configuration must be UTF-8 text")
    source = request.query_params.get("source") or "api"
    try:
        config = await run_in_threadpool(save_config, state_of(request).store, text, source=source)
    except AlertConfigError as exc:
        return error_response(400, str(exc))
    return JSONResponse(config.to_dict())


def api_check_alerts(request: Request) -> Response:
    """Evaluate every rule now and dispatch notifications (what the scheduler does each
    minute); for game days and tests."""
    state = state_of(request)
    scheduler = getattr(request.app.state, "goldenloop_alerts", None)
    if scheduler is not None:
        report = scheduler.run_once()
    else:
        engine = AlertEngine(state.store, base_url=state.settings.base_url, source="api",
                             slo_file=state.settings.slo_file or None,
                             alerts_file=getattr(state.settings, "alerts_file", "") or None)  # fmt: skip
        report = engine.tick(datetime.now(UTC))
        engine.deliveries.wait(30)
        engine.deliveries.close()
    return JSONResponse(report.to_dict())
