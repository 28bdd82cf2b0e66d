"""The triage queue page: ranked list, trace replay of the selected item, labelling by
click or keystroke. Built from the same data functions as the JSON API
(``triage_api.queue_context`` / ``item_context``).

With htmx (vendored in /static) selecting an item or labelling it swaps only the
detail pane; without JavaScript the links and forms still work (full page loads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from goldenloop.flags import refresh_queue, run_incremental, saved_config
from goldenloop.flags.config import ConfigError
from goldenloop.model import Span, Turn
from goldenloop.triage.labels import FAILURE_MODES, LABEL_KEYS, LabelError
from goldenloop.triage.queue import ItemDetail
from goldenloop.web.ingest_api import state_of
from goldenloop.web.triage_api import (
    BadParam,
    ItemNotFound,
    LabelIn,
    QueueContext,
    item_context,
    label_item,
    queue_context,
)

_KEYS_FOR = {label: key for key, label in LABEL_KEYS.items()}


@dataclass
class ReplayTurn:
    turn: Turn
    spans: list[tuple[Span, int]]


def replay_turns(detail: ItemDetail) -> list[ReplayTurn]:
    """The session's turns, each with its spans in order and their nesting depth."""
    if detail.replay is None:
        return []
    by_trace: dict[str, list[Span]] = {}
    for span in detail.replay.spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    turns = []
    for turn in detail.replay.turns:
        spans = by_trace.get(turn.trace_id, [])
        parents = {s.span_id: s.parent_id for s in spans}
        rows = []
        for span in spans:
            depth, current, seen = 0, span.parent_id, set()
            while current and current in parents and current not in seen:
                seen.add(current)
                depth += 1
                current = parents[current]
            rows.append((span, depth))
        turns.append(ReplayTurn(turn, rows))
    return turns


def _templates() -> Jinja2Templates:
    from goldenloop.web.app import templates

    return templates


def _detail_vars(detail: ItemDetail) -> dict[str, Any]:
    return {
        "detail": detail,
        "item": detail.item,
        "turns": replay_turns(detail),
        "label_keys": _KEYS_FOR,
        "failure_modes": FAILURE_MODES,
        "now": detail.now,
    }


def _error(request: Request, message: str, status: int) -> Response:
    return _templates().TemplateResponse(
        request, "error.html", {"message": message}, status_code=status
    )


def _render_page(request: Request, context: QueueContext) -> Response:
    variables: dict[str, Any] = {"page": context, "label_keys": _KEYS_FOR}
    if context.selected is not None:
        variables.update(_detail_vars(context.selected))
    return _templates().TemplateResponse(request, "triage.html", variables)


def page_triage(request: Request) -> Response:
    store = state_of(request).store
    pairs = request.query_params.multi_items()
    try:
        context = queue_context(store, pairs, extra=frozenset({"item"}))
    except BadParam as exc:
        return _error(request, str(exc), 400)
    chosen = request.query_params.get("item") or (context.items[0].id if context.items else None)
    if chosen:
        try:
            context.selected = item_context(store, chosen)
        except ItemNotFound as exc:
            return _error(request, str(exc), 404)
    return _render_page(request, context)


def page_triage_item(request: Request, item_id: str) -> Response:
    store = state_of(request).store
    try:
        detail = item_context(store, item_id)
    except ItemNotFound as exc:
        return _error(request, str(exc), 404)
    if request.headers.get("hx-request"):
        return _templates().TemplateResponse(request, "triage_detail.html", _detail_vars(detail))
    try:
        context = queue_context(store, request.query_params.multi_items())
    except BadParam as exc:
        return _error(request, str(exc), 400)
    context.selected = detail
    return _render_page(request, context)


async def page_triage_label(request: Request, item_id: str) -> Response:
    """Form post from the page (one click or a keystroke)."""
    form = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    values: dict[str, Any] = {"failure_modes": []}
    for key, value in form:
        if key == "failure_modes":
            values["failure_modes"].append(value)
        elif key in ("label", "owner", "notes", "criteria"):
            values[key] = value
    store = state_of(request).store
    try:
        if "label" not in values:
            raise LabelError("label: choose a label")
        label_item(store, item_id, LabelIn(**values))
        detail = item_context(store, item_id)
    except ItemNotFound as exc:
        return _error(request, str(exc), 404)
    except (LabelError, ValueError) as exc:
        return _error(request, str(exc), 400)
    if request.headers.get("hx-request"):
        return _templates().TemplateResponse(request, "triage_detail.html", _detail_vars(detail))
    return RedirectResponse(f"/triage/{item_id}", status_code=303)


def page_triage_run(request: Request) -> Response:
    """The page's "Flag new data now" button: incremental flagging, then the queue job."""
    store = state_of(request).store
    try:
        config = saved_config(store)
    except ConfigError as exc:
        return _error(request, f"the saved rule config is invalid: {exc}", 409)
    run_incremental(store, config.rules)
    refresh_queue(store, config.queue, notify=config.notify)
    return RedirectResponse("/triage", status_code=303)
