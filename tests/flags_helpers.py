"""Hand-built sessions for flag and triage tests.

``turn(session, n, ...)`` returns the span rows of one turn: a root ``agent`` span
carrying the user message and the answer, and child spans (dicts of span fields) laid
out one second apart. ``load(store, *turns)`` inserts them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from conftest import BASE_TIME, span_batch

from goldenloop.flags._sql import insert_rows, naive
from goldenloop.flags.config import parse_config
from goldenloop.flags.rules import ConfiguredRule
from goldenloop.store.base import Store

Row = dict[str, Any]


def turn(
    session: str,
    n: int,
    *,
    start: datetime | None = None,
    question: str = "What is the refund policy?",
    answer: str = "You can return items within 30 days.",
    children: Sequence[Mapping[str, Any]] = (),
    project: str = "shop",
    tier: str | None = "free",
    status: str = "ok",
    ingested_at: datetime | None = None,
    **root: Any,
) -> list[Row]:
    t0 = start or BASE_TIME + timedelta(minutes=n)
    trace = f"{session}-t{n}"
    ingested = ingested_at or t0 + timedelta(seconds=30)
    common = {"project": project, "session_id": session, "trace_id": trace,
              "customer_tier": tier, "ingested_at": ingested}  # fmt: skip
    rows: list[Row] = [
        {**common, "span_id": f"{trace}-root", "parent_id": None, "kind": "agent",
         "name": "invoke_agent shop", "start_time": t0, "latency_ms": 1000.0 * (len(children) + 1),
         "status": status, "input_text": question, "output_text": answer, "model": None,
         "input_tokens": None, "output_tokens": None, "cost_usd": None, "stop_reason": None,
         **root},
    ]  # fmt: skip
    for i, child in enumerate(children, start=1):
        rows.append(
            {**common, "span_id": f"{trace}-{i}", "parent_id": f"{trace}-root",
             "start_time": t0 + timedelta(seconds=i), "latency_ms": 500.0,
             "input_text": None, "output_text": None, **child}
        )  # fmt: skip
    return rows


def llm(**fields: Any) -> Row:
    return {"kind": "llm", "name": "chat gpt-4o-mini", "model": "gpt-4o-mini",
            "input_tokens": 100, "output_tokens": 20, "cost_usd": 0.0003, "stop_reason": "stop",
            **fields}  # fmt: skip


def tool(name: str, args: str = '{"order_id": "A-1"}', *, ok: bool = True, **fields: Any) -> Row:
    return {"kind": "tool", "name": f"execute_tool {name}", "tool_name": name, "tool_args": args,
            "status": "ok" if ok else "error", "error_type": None if ok else "OrderServiceTimeout",
            "model": None, "input_tokens": None, "output_tokens": None, "cost_usd": None,
            "stop_reason": None, **fields}  # fmt: skip


def scored(kind: str, score: float, name: str) -> Row:
    return {"kind": kind, "name": name, "score": score, "model": None, "input_tokens": None,
            "output_tokens": None, "cost_usd": None, "stop_reason": None}  # fmt: skip


def load(store: Store, *turns: Iterable[Row]) -> None:
    store.insert_spans(span_batch(*(row for t in turns for row in t)))


def add_feedback(
    store: Store,
    session: str,
    *,
    rating: str = "down",
    category: str | None = "wrong",
    when: datetime | None = None,
    message_id: str | None = None,
    project: str = "shop",
    fid: str | None = None,
    user_id: str | None = "user-1",
    comment: str | None = None,
) -> None:
    insert_rows(
        store,
        "feedback",
        ("id", "project", "session_id", "message_id", "rating", "category", "comment",
         "prompt_hash", "model_hash", "user_id", "created_at"),
        [(fid or f"fb-{session}-{rating}-{category}", project, session, message_id, rating,
          category, comment, "p-abc123", "gpt-4o-mini", user_id,
          naive(when or BASE_TIME + timedelta(minutes=5)))],
    )  # fmt: skip


def add_outcome(store: Store, session: str, *, success: bool, when: datetime | None = None) -> None:
    insert_rows(
        store,
        "outcomes",
        ("id", "project", "session_id", "message_id", "name", "success", "value", "attributes",
         "created_at"),
        [(f"oc-{session}-{success}", "shop", session, None, "refund_completed", success, None,
          json.dumps({}), naive(when or BASE_TIME + timedelta(minutes=6)))],
    )  # fmt: skip


def only(rule: str, yaml_rules: str = "") -> list[ConfiguredRule]:
    """The configured rule ``rule`` alone (with ``yaml_rules`` as its YAML body)."""
    config = parse_config(f"rules:\n  {rule}:\n{_indent(yaml_rules)}" if yaml_rules else "")
    chosen = config.rule(rule)
    assert chosen is not None
    return [chosen]


def _indent(text: str) -> str:
    return "".join("    " + line + "\n" for line in text.strip().splitlines())


def flagged(store: Store, rule: str | None = None) -> dict[str, tuple[str, str]]:
    """session → (rule, reason) of stored flags (of ``rule`` if given)."""
    rows = store.fetch(
        "SELECT session_id, rule, reason FROM flags" + (" WHERE rule = ?" if rule else ""),
        (rule,) if rule else (),
    )
    return {r[0]: (r[1], r[2]) for r in rows}
