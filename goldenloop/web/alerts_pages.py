"""The alerts pages and the data functions behind them and their JSON twins.

* ``/alerts`` ↔ ``GET /api/v1/alerts``: firing, pending and recently resolved alerts,
  rules with their state, silences, notifiers, recent notifications (failures
  included) and the scheduler's status.
* ``/alerts/rules/{name}`` ↔ ``GET /api/v1/alerts/rules/{name}``: one rule, its
  alerts and history, and (``?backtest=7d``) when it would have fired.

Pages post silences through small forms (``POST /alerts/silences``,
``POST /alerts/silences/{id}/expire``) and redirect back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from goldenloop.alerts.backtest import BacktestResult, backtest
from goldenloop.alerts.config import AlertConfigError
from goldenloop.alerts.delivery import DeliveryRecord, recent_deliveries
from goldenloop.alerts.model import STATUSES, Alert
from goldenloop.alerts.rules import AlertRule
from goldenloop.alerts.runtime import AlertsRuntime, TickRecord, load_runtime, recent_ticks
from goldenloop.alerts.silences import (
    Silence,
    SilenceError,
    create_silence,
    expire_silence,
    list_silences,
)
from goldenloop.alerts.states import HistoryEntry, load_alerts, load_history
from goldenloop.metrics.config import MetricsConfigError
from goldenloop.metrics.windows import WindowError, parse_duration, parse_time
from goldenloop.web.ingest_api import state_of
from goldenloop.web.metrics_api import services as metrics_services

RESOLVED_SHOWN = timedelta(hours=24)


class BadParam(ValueError):
    """A query parameter is malformed; the message names it."""


class UnknownRule(LookupError):
    pass


def _templates() -> Jinja2Templates:
    from goldenloop.web.app import templates

    return templates


def alerts_runtime(request: Request) -> tuple[AlertsRuntime | None, str | None]:
    """The configuration the server evaluates, or the reason it cannot be loaded."""
    state = state_of(request)
    try:
        metrics = metrics_services(request).config
    except MetricsConfigError as exc:
        return None, str(exc)
    try:
        return load_runtime(state.store, metrics=metrics,
                            alerts_file=getattr(state.settings, "alerts_file", "") or None), None  # fmt: skip
    except AlertConfigError as exc:
        return None, str(exc)


def scheduler_status(request: Request) -> dict[str, Any] | None:
    scheduler = getattr(request.app.state, "goldenloop_alerts", None)
    return scheduler.status() if scheduler is not None else None


def parse_since(text: str, name: str, now: datetime) -> datetime:
    """``7d`` (that long before now) or an ISO-8601 time."""
    try:
        return now - parse_duration(text, name=name)
    except WindowError:
        pass
    try:
        return parse_time(text, name=name)
    except WindowError:
        raise BadParam(
            f"{name}: {text!r} is neither a duration like 7d nor an ISO-8601 time"
        ) from None


@dataclass
class AlertsPage:
    now: datetime
    base_url: str
    rules: list[AlertRule]
    alerts: list[Alert]
    silences: list[Silence]
    notifications: list[DeliveryRecord]
    ticks: list[TickRecord]
    scheduler: dict[str, Any] | None
    runtime: AlertsRuntime | None
    config_error: str | None
    state_filter: str | None = None
    rule_filter: str | None = None
    silenced: dict[str, list[str]] = field(default_factory=dict)

    def by_status(self, status: str) -> list[Alert]:
        return [a for a in self.alerts if a.status == status]

    def counts(self, rule: str) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for alert in self.alerts:
            if alert.rule == rule:
                counts[alert.status] += 1
        return counts

    def rule_error(self, rule: str) -> str | None:
        """The rule's error in the latest evaluation, if it failed."""
        return self.ticks[0].errors.get(f"rule {rule}") if self.ticks else None

    @property
    def failed_notifications(self) -> int:
        return sum(1 for n in self.notifications if not n.ok)

    def to_dict(self) -> dict[str, Any]:
        config = self.runtime.config if self.runtime else None
        return {
            "now": self.now.isoformat(),
            "config": {k: v for k, v in config.to_dict().items() if k != "rules"}
            if config
            else None,
            "config_error": self.config_error,
            "invalid_rules": self.runtime.rules.invalid if self.runtime else {},
            "scheduler": self.scheduler,
            "rules": [
                {
                    **r.to_dict(),
                    "alerts": self.counts(r.name),
                    "last_error": self.rule_error(r.name),
                }
                for r in self.rules
            ],
            "alerts": {
                status: [
                    {**a.to_dict(self.base_url), "silenced_by": self.silenced.get(a.id, [])}
                    for a in self.by_status(status)
                ]
                for status in STATUSES
                if self.state_filter in (None, status)
            },
            "silences": [s.to_dict(self.now) for s in self.silences],
            "notifications": [n.to_dict() for n in self.notifications],
            "ticks": [t.to_dict() for t in self.ticks],
        }


def alerts_page(
    request: Request, params: Mapping[str, str], *, now: datetime | None = None
) -> AlertsPage:
    state = state_of(request)
    store, now = state.store, now or datetime.now(UTC)
    status = params.get("state") or None
    if status is not None and status not in STATUSES:
        raise BadParam(f"state: {status!r} is not one of {', '.join(STATUSES)}")
    rule = params.get("rule") or None
    runtime, error = alerts_runtime(request)
    alerts = load_alerts(store, STATUSES, rule=rule, resolved_since=now - RESOLVED_SHOWN)
    silences = list_silences(store, now=now, include_expired=True)
    active = [s for s in silences if s.state(now) == "active"]
    silenced = {
        a.id: [s.id for s in active if s.mutes(a.labels, now)]
        for a in alerts
        if a.status == "firing"
    }
    rules = runtime.rules.rules if runtime else []
    return AlertsPage(
        now=now, base_url=state.settings.base_url,
        rules=[r for r in rules if rule in (None, r.name)], alerts=alerts, silences=silences,
        notifications=recent_deliveries(store, limit=20), ticks=recent_ticks(store, limit=10),
        scheduler=scheduler_status(request), runtime=runtime, config_error=error,
        state_filter=status, rule_filter=rule, silenced={k: v for k, v in silenced.items() if v},
    )  # fmt: skip


@dataclass
class RulePage:
    rule: AlertRule
    alerts: list[Alert]
    history: list[HistoryEntry]
    base_url: str
    backtest: BacktestResult | None = None
    backtest_since: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.to_dict(),
            "alerts": [a.to_dict(self.base_url) for a in self.alerts],
            "history": [h.to_dict() for h in self.history],
            "backtest": self.backtest.to_dict() if self.backtest else None,
        }


def _limit(params: Mapping[str, str], default: int) -> int:
    raw = params.get("limit")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadParam(f"limit: expected a whole number, got {raw!r}") from None
    if not 1 <= value <= 1000:
        raise BadParam("limit: must be between 1 and 1000")
    return value


def run_backtest(request: Request, runtime: AlertsRuntime, rule: AlertRule, params: Mapping[str, str],
                 now: datetime) -> BacktestResult:  # fmt: skip
    since = parse_since(params.get("since") or params.get("backtest") or "7d", "since", now)
    until = parse_since(params["until"], "until", now) if params.get("until") else now
    try:
        step = parse_duration(params.get("step") or "1m", name="step")
        return backtest(state_of(request).store, rule, since, until, step=step,
                        signals=runtime.signals, slos=runtime.slos)  # fmt: skip
    except (WindowError, ValueError) as exc:
        raise BadParam(str(exc)) from None


def rule_page(
    request: Request, name: str, params: Mapping[str, str], *, now: datetime | None = None
) -> RulePage:
    now = now or datetime.now(UTC)
    runtime, error = alerts_runtime(request)
    if runtime is None:
        raise BadParam(f"the alerts configuration cannot be loaded: {error}")
    rule = runtime.rules.get(name)
    if rule is None:
        raise UnknownRule(f"no alert rule {name!r}")
    store = state_of(request).store
    page = RulePage(rule, load_alerts(store, STATUSES, rule=name, resolved_since=now - timedelta(days=7)),
                    load_history(store, rule=name, limit=_limit(params, 100)),
                    state_of(request).settings.base_url)  # fmt: skip
    if params.get("backtest"):
        page.backtest = run_backtest(request, runtime, rule, params, now)
        page.backtest_since = params["backtest"]
    return page


# -- HTML handlers ---------------------------------------------------------------------------
def _error(request: Request, message: str, status: int) -> Response:
    return _templates().TemplateResponse(
        request, "error.html", {"message": message}, status_code=status
    )


def page_alerts(request: Request) -> Response:
    try:
        context = alerts_page(request, request.query_params)
    except BadParam as exc:
        return _error(request, str(exc), 400)
    return _templates().TemplateResponse(request, "alerts.html", {"page": context})


def page_alert_rule(request: Request, name: str) -> Response:
    try:
        context = rule_page(request, name, request.query_params)
    except BadParam as exc:
        return _error(request, str(exc), 400)
    except UnknownRule as exc:
        return _error(request, str(exc), 404)
    return _templates().TemplateResponse(request, "alerts_rule.html", {"page": context})


async def page_create_silence(request: Request) -> Response:
    """The page's silence form: matchers (one per line or comma-separated), duration,
    comment, author."""
    # A urlencoded form, read without python-multipart (not a dependency).
    fields = parse_qs((await request.body()).decode("utf-8", "replace"))
    form = {k: v[-1] for k, v in fields.items()}
    text = form.get("matchers") or ""
    matchers = [m.strip() for line in text.splitlines() for m in line.split(",") if m.strip()]
    try:
        duration = parse_duration(form.get("duration") or "2h", name="duration")
        await run_in_threadpool(
            create_silence, state_of(request).store, matchers, now=datetime.now(UTC),
            duration=duration, created_by=form.get("created_by") or None,
            comment=form.get("comment") or None,
        )  # fmt: skip
    except (SilenceError, WindowError) as exc:
        return _error(request, str(exc), 400)
    return RedirectResponse("/alerts#silences", status_code=303)


def page_expire_silence(request: Request, silence_id: str) -> Response:
    if not expire_silence(state_of(request).store, silence_id, now=datetime.now(UTC)):
        return _error(request, f"no active silence {silence_id!r}", 404)
    return RedirectResponse("/alerts#silences", status_code=303)
