"""The triage queue, flags, clusters and weekly report over JSON, plus the data
functions the triage page renders (one function per page, so page and JSON agree).

* ``GET /api/v1/triage`` ↔ ``/triage``: the ranked queue.
* ``GET /api/v1/triage/{item_id}`` ↔ ``/triage/{item_id}``: one item with its trace replay.
* ``POST /api/v1/triage/{item_id}/label``: label an item.
* ``POST /api/v1/triage/refresh``: run the nightly queue job now.
* ``GET /api/v1/flags``, ``POST /api/v1/flags/run``: flags and the flag engine.
* ``GET /api/v1/clusters``: failure themes; ``GET /api/v1/reports/weekly``: the agenda.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from goldenloop.flags import backfill, refresh_queue, run_incremental, saved_config
from goldenloop.flags._sql import naive, utcnow
from goldenloop.flags.config import ConfigError
from goldenloop.flags.engine import ENGINE_STATE
from goldenloop.flags.feedback import last_refresh_at, pending_flag_count
from goldenloop.store.base import Store
from goldenloop.triage.clustering import ClusterParams, cluster_flags, latest_run
from goldenloop.triage.labels import (
    FAILURE_MODES,
    LABEL_KEYS,
    LABELS,
    LabelError,
    LabelRequest,
    apply_label,
)
from goldenloop.triage.queue import (
    ITEM_STATUSES,
    ItemDetail,
    QueueFilter,
    TriageItem,
    count_items,
    item_detail,
    list_items,
)
from goldenloop.triage.weekly import weekly_report
from goldenloop.web.ingest_api import error_response, state_of


class BadParam(ValueError):
    """A query parameter is invalid; the message names it."""


class ItemNotFound(LookupError):
    pass


def _one(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name) or []
    if len(values) > 1:
        raise BadParam(f"{name} may be given once")
    return values[0] if values and values[0] != "" else None


def _int(params: Mapping[str, Sequence[str]], name: str, default: int, low: int, high: int) -> int:
    raw = _one(params, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadParam(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise BadParam(f"{name} must be between {low} and {high}, got {value}")
    return value


def _bool(params: Mapping[str, Sequence[str]], name: str) -> bool:
    raw = (_one(params, name) or "false").lower()
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        raise BadParam(f"{name} must be true or false, got {raw!r}")
    return raw in ("true", "1", "yes")


def _grouped(pairs: Sequence[tuple[str, str]], allowed: set[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        if key not in allowed:
            raise BadParam(f"unknown parameter {key!r}; use {', '.join(sorted(allowed))}")
        grouped.setdefault(key, []).append(value)
    return grouped


# -- the queue ------------------------------------------------------------------------------

_QUEUE_PARAMS = {"status", "priority", "project", "label", "overdue", "limit", "offset"}


@dataclass
class QueueContext:
    items: list[TriageItem]
    filter: QueueFilter
    limit: int
    offset: int
    counts: dict[str, int]
    pending_flags: int
    last_refresh: datetime | None
    now: datetime
    query: list[tuple[str, str]] = field(default_factory=list)
    selected: ItemDetail | None = None

    @property
    def next_offset(self) -> int | None:
        return self.offset + self.limit if len(self.items) == self.limit else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "items": [i.to_dict(self.now) for i in self.items],
            "counts": self.counts,
            "pending_flags": self.pending_flags,
            "last_refresh": self.last_refresh.isoformat() + "Z" if self.last_refresh else None,
            "filter": {
                "status": list(self.filter.statuses),
                "priority": self.filter.priority,
                "project": self.filter.project,
                "label": self.filter.label,
                "overdue": self.filter.overdue_only,
            },
            "limit": self.limit,
            "offset": self.offset,
            "next_offset": self.next_offset,
            "labels": list(LABELS),
            "failure_modes": list(FAILURE_MODES),
        }


def queue_context(
    store: Store, pairs: Sequence[tuple[str, str]], *, extra: frozenset[str] = frozenset()
) -> QueueContext:
    params = _grouped(pairs, _QUEUE_PARAMS | extra)
    statuses = params.get("status") or ["open"]
    if statuses == ["all"]:
        statuses = list(ITEM_STATUSES)
    label = _one(params, "label")
    if label is not None and label not in LABELS:
        raise BadParam(f"label must be one of {', '.join(LABELS)}, got {label!r}")
    try:
        flt = QueueFilter(
            statuses=tuple(statuses), priority=_one(params, "priority"),
            project=_one(params, "project"), label=label, overdue_only=_bool(params, "overdue"),
        )  # fmt: skip
    except ValueError as exc:
        raise BadParam(str(exc)) from None
    limit = _int(params, "limit", 50, 1, 500)
    offset = _int(params, "offset", 0, 0, 10_000_000)
    now = utcnow()
    return QueueContext(
        items=list_items(store, flt, limit=limit, offset=offset, now=now), filter=flt,
        limit=limit, offset=offset, counts=count_items(store),
        pending_flags=pending_flag_count(store), last_refresh=last_refresh_at(store), now=now,
        query=[(k, v) for k, v in pairs if k not in ("offset", "item")],
    )  # fmt: skip


def item_context(store: Store, item_id: str) -> ItemDetail:
    detail = item_detail(store, item_id)
    if detail is None:
        raise ItemNotFound(f"no triage item {item_id!r}")
    return detail


def api_triage(request: Request) -> Response:
    """The triage queue, highest impact first. Filters: status (repeatable, or all;
    default open), priority (P0–P3), project, label, overdue=true; limit, offset."""
    try:
        context = queue_context(state_of(request).store, request.query_params.multi_items())
    except BadParam as exc:
        return error_response(400, str(exc))
    return JSONResponse(context.to_dict())


def api_triage_item(request: Request, item_id: str) -> Response:
    """One item: impact, flags and reasons, member sessions, labels and trace replay."""
    try:
        return JSONResponse(item_context(state_of(request).store, item_id).to_dict())
    except ItemNotFound as exc:
        return error_response(404, str(exc))


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: Annotated[str, Field(description=f"one of {', '.join(LABELS)}")]
    owner: Annotated[str | None, Field(max_length=200)] = None
    notes: Annotated[str | None, Field(max_length=20_000)] = None
    failure_modes: list[str] = Field(default_factory=list, description=", ".join(FAILURE_MODES))
    criteria: Annotated[str | None, Field(max_length=20_000)] = None


def label_item(store: Store, item_id: str, body: LabelIn) -> TriageItem:
    request = LabelRequest.build(
        body.label, owner=body.owner, notes=body.notes, failure_modes=body.failure_modes,
        criteria=body.criteria,
    )  # fmt: skip
    if store.fetch("SELECT 1 FROM triage_items WHERE id = ?", (item_id,)) == []:
        raise ItemNotFound(f"no triage item {item_id!r}")
    return apply_label(store, item_id, request)


def api_label(request: Request, item_id: str, body: LabelIn) -> Response:
    """Label an item (add-to-eval, known-issue, expected-behavior,
    needs-product-decision) with owner, notes, failure modes and pass/fail criteria."""
    try:
        item = label_item(state_of(request).store, item_id, body)
    except ItemNotFound as exc:
        return error_response(404, str(exc))
    except LabelError as exc:
        return error_response(400, str(exc))
    return JSONResponse(item.to_dict())


def api_refresh(request: Request) -> Response:
    """Run the nightly queue job now (dedupe flags into items, rank, open the top,
    resolve items whose golden case passes in holdout)."""
    store = state_of(request).store
    try:
        config = saved_config(store)
    except ConfigError as exc:
        return error_response(409, f"the saved rule config is invalid: {exc}")
    return JSONResponse(refresh_queue(store, config.queue, notify=config.notify).to_dict())


# -- flags ----------------------------------------------------------------------------------

_FLAG_PARAMS = {"rule", "status", "session_id", "limit", "offset"}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


def flags_context(store: Store, pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    params = _grouped(pairs, _FLAG_PARAMS)
    clauses, values = ["TRUE"], []
    for name in ("rule", "status", "session_id"):
        value = _one(params, name)
        if value is not None:
            clauses.append(f"{name} = ?")
            values.append(value)
    limit = _int(params, "limit", 100, 1, 1000)
    offset = _int(params, "offset", 0, 0, 10_000_000)
    rows = store.fetch(
        "SELECT id, rule, session_id, project, customer_tier, trace_id, reason, score, severity, "
        f"status, event_time, item_id FROM flags WHERE {' AND '.join(clauses)} "
        "ORDER BY event_time DESC, id LIMIT ? OFFSET ?",
        [*values, limit, offset],
    )
    keys = ("id", "rule", "session_id", "project", "customer_tier", "trace_id", "reason",
            "score", "severity", "status", "event_time", "item_id")  # fmt: skip
    flags = [dict(zip(keys, r, strict=True)) for r in rows]
    for flag in flags:
        flag["event_time"] = flag["event_time"].isoformat() + "Z"
    state = store.fetch(
        "SELECT watermark, last_run_at FROM flag_state WHERE name = ?", (ENGINE_STATE,)
    )
    runs = store.fetch(
        "SELECT id, mode, started_at, finished_at, spans_seen, flags_new, flags_queued, errors "
        "FROM flag_runs ORDER BY started_at DESC, id LIMIT 5"
    )
    totals = store.fetch(
        "SELECT rule, status, count(*) FROM flags GROUP BY rule, status ORDER BY rule, status"
    )
    by_rule: dict[str, dict[str, int]] = {}
    for rule, status, count in totals:
        by_rule.setdefault(rule, {})[status] = int(count)
    return {
        "flags": flags,
        "limit": limit,
        "offset": offset,
        "totals": by_rule,
        "engine": {
            "watermark": _iso(state[0][0]) if state else None,
            "last_run_at": _iso(state[0][1]) if state else None,
            "recent_runs": [
                {
                    "id": r[0],
                    "mode": r[1],
                    "started_at": _iso(r[2]),
                    "finished_at": _iso(r[3]),
                    "spans_seen": r[4],
                    "flags_new": r[5],
                    "flags_queued": r[6],
                    "errors": r[7],
                }
                for r in runs
            ],  # fmt: skip
        },
    }


def api_flags(request: Request) -> Response:
    """Recent flags with reasons (filters: rule, status, session_id; limit, offset),
    counts per rule and status, and the engine's watermark and recent runs."""
    try:
        return JSONResponse(
            flags_context(state_of(request).store, request.query_params.multi_items())
        )
    except BadParam as exc:
        return error_response(400, str(exc))


class FlagRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: datetime | None = Field(
        default=None, description="Backfill from (with end); omit for incremental"
    )
    end: datetime | None = None
    refresh_queue: bool = Field(default=False, description="Also run the queue job after flagging")


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def api_flags_run(request: Request, body: FlagRunIn | None = None) -> Response:
    """Run the flag rules now: incremental (new data since the last run), or a backfill
    over ``start``–``end``. Uses the saved rule config."""
    store = state_of(request).store
    body = body or FlagRunIn()
    if (body.start is None) != (body.end is None):
        return error_response(
            400, "start and end go together (a backfill range); omit both for an incremental run"
        )
    try:
        config = saved_config(store)
    except ConfigError as exc:
        return error_response(409, f"the saved rule config is invalid: {exc}")
    if body.start is not None and body.end is not None:
        try:
            run = backfill(store, _aware(body.start), _aware(body.end), config.rules)
        except ValueError as exc:
            return error_response(400, f"start/end: {exc}")
    else:
        run = run_incremental(store, config.rules)
    result: dict[str, Any] = {"run": run.to_dict()}
    if body.refresh_queue:
        result["queue"] = refresh_queue(store, config.queue, notify=config.notify).to_dict()
    return JSONResponse(result)


# -- clusters and the weekly report -----------------------------------------------------------


def _end_param(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        return naive(_aware(datetime.fromisoformat(raw.replace("Z", "+00:00"))))
    except ValueError:
        raise BadParam(f"end must be an ISO-8601 time, got {raw!r}") from None


def api_clusters(request: Request) -> Response:
    """Failure themes of recently flagged sessions: label (top terms), size, share,
    trend (this week vs last) and exemplar sessions. ``refresh=true`` re-clusters;
    ``k``, ``seed``, ``weeks`` and ``end`` (ISO-8601) shape a fresh run."""
    store = state_of(request).store
    try:
        params = _grouped(
            request.query_params.multi_items(), {"refresh", "k", "seed", "weeks", "end"}
        )
        refresh = _bool(params, "refresh")
        k_raw = _one(params, "k")
        cluster_params = ClusterParams(
            k=_int(params, "k", 0, 1, 200) if k_raw is not None else None,
            seed=_int(params, "seed", 7, 0, 2**31 - 1), weeks=_int(params, "weeks", 2, 1, 52),
        )  # fmt: skip
        end = _end_param(_one(params, "end"))
    except BadParam as exc:
        return error_response(400, str(exc))
    run = None if refresh or len(request.query_params) else latest_run(store)
    if run is None:
        run = cluster_flags(store, cluster_params, now=end)
    return JSONResponse(run.to_dict())


def api_weekly(request: Request) -> Response:
    """The weekly review: top flagged items by impact, biggest clusters, incidents
    lacking eval follow-up, pass-rate and cost trends, golden cases landed vs target.
    ``end`` (ISO-8601) picks the week."""
    unknown = set(request.query_params) - {"end"}
    if unknown:
        return error_response(400, f"unknown parameter(s) {sorted(unknown)}; use end")
    try:
        now = _end_param(request.query_params.get("end"))
    except BadParam as exc:
        return error_response(400, str(exc))
    return JSONResponse(weekly_report(state_of(request).store, now=now).to_dict())


__all__ = [
    "LABEL_KEYS",
    "BadParam",
    "ItemNotFound",
    "QueueContext",
    "item_context",
    "queue_context",
]
