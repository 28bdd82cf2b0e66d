"""Triage rules: the human-review queue backs up, and P0 feedback misses its
time-to-eval target.

Both read ``triage_items`` (``goldenloop.triage.queue``) and reuse its definitions:
``TriageItem.from_row`` for the rows and ``TriageItem.is_overdue`` for "a P0 item whose
time-to-eval target passed without a merged golden case". The queue is the annotation
queue (items with status ``open``); an item's waiting time runs from ``queued_at``.

For a backtest the state of an item at an earlier time is rebuilt from its timestamps
(created → queued → labelled → case merged → resolved); an item that has not changed
since ``t`` is taken as it is. The label an item had before it was last relabelled is
not kept, so the rebuilt history can differ for relabelled items.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

# goldenloop.triage.queue and goldenloop.flags import each other; importing the flags
# package first is the order that works (importing triage.queue first fails).
import goldenloop.flags  # noqa: F401
from goldenloop.alerts.model import Exemplar, Numbers, Sample
from goldenloop.alerts.rules import RuleContext, RuleSpec, RuleType, register_rule_type
from goldenloop.metrics.windows import TimeWindow, format_duration, naive
from goldenloop.triage.queue import ITEM_COLUMNS, ITEM_STATUSES, TriageItem

HOUR = timedelta(hours=1)


def item_as_of(item: TriageItem, t: datetime) -> TriageItem | None:
    """The item as it stood at ``t`` (naive UTC); None when it did not exist yet."""
    if t >= item.updated_at:
        return item
    if item.created_at > t:
        return None
    if item.resolved_at is not None and item.resolved_at <= t:
        status = "resolved"
    elif item.labelled_at is not None and item.labelled_at <= t:
        status = "labelled"
    elif item.queued_at is not None and item.queued_at <= t:
        status = "open"
    else:
        status = "backlog"
    labelled = item.labelled_at is not None and item.labelled_at <= t
    return dataclasses.replace(
        item,
        status=status,
        label=item.label if labelled else None,
        case_merged_at=item.case_merged_at
        if item.case_merged_at and item.case_merged_at <= t
        else None,
        resolved_at=item.resolved_at if status == "resolved" else None,
    )


def load_items(ctx: RuleContext, span: TimeWindow, *, p0_only: bool) -> list[TriageItem]:
    """Items that can matter for evaluations in ``span``."""
    start, end = naive(span.start), naive(span.end)
    clauses = [
        "created_at < ?",
        "(resolved_at IS NULL OR resolved_at >= ? OR status <> 'resolved')",
    ]
    params: list[Any] = [end, start]
    if p0_only:
        clauses.append("priority = 'P0' AND due_at IS NOT NULL AND due_at < ?")
        params.append(end)
    else:
        clauses.append("(labelled_at IS NULL OR labelled_at >= ? OR status = 'open')")
        params.append(start)
    rows = ctx.store.fetch(
        f"SELECT {', '.join(ITEM_COLUMNS)} FROM triage_items WHERE {' AND '.join(clauses)}", params
    )
    return [TriageItem.from_row(row) for row in rows]


def _by_project(spec: RuleSpec) -> bool:
    dims = spec.dims("by")
    if any(d.name != "project" for d in dims):
        raise spec.error("by", "triage rules can only be split by project")
    return bool(dims)


def _exemplar(item: TriageItem) -> Exemplar:
    return Exemplar(item.session_id, item.trace_id, item.prompt_hash, None, None, item.project)


def _groups(
    items: Sequence[TriageItem], by_project: bool
) -> dict[tuple[str, ...], list[TriageItem]]:
    groups: dict[tuple[str, ...], list[TriageItem]] = {}
    for item in items:
        groups.setdefault((item.project,) if by_project else (), []).append(item)
    return groups


class ReviewQueueRule:
    def __init__(self, max_depth: int | None, max_age: timedelta | None, statuses: tuple[str, ...],
                 project: str | None, by_project: bool) -> None:  # fmt: skip
        self.max_depth, self.max_age, self.statuses = max_depth, max_age, statuses
        self.project, self.by_project = project, by_project

    @classmethod
    def from_spec(cls, spec: RuleSpec) -> ReviewQueueRule:
        depth = spec.integer("max_depth", 0, minimum=0) or None
        age = spec.duration("max_age", None)
        if depth is None and age is None:
            raise spec.error("max_depth", "give max_depth (items) and/or max_age (e.g. 48h)")
        statuses = spec.raw("statuses") or ["open"]
        allowed = [s for s in ITEM_STATUSES if s != "resolved"]
        if (
            not isinstance(statuses, list)
            or not statuses
            or any(s not in allowed for s in statuses)
        ):
            raise spec.error("statuses", f"expected a list of {', '.join(allowed)}")
        return cls(depth, age, tuple(statuses), spec.text("project"), _by_project(spec))

    def lookback(self) -> timedelta:
        return timedelta(0)

    def load(self, ctx: RuleContext, span: TimeWindow) -> ReviewQueueTimeline:
        items = load_items(ctx, span, p0_only=False)
        if self.project:
            items = [i for i in items if i.project == self.project]
        return ReviewQueueTimeline(self, items)


class ReviewQueueTimeline:
    def __init__(self, rule: ReviewQueueRule, items: list[TriageItem]) -> None:
        self.rule, self.items = rule, items

    def evaluate(self, at: datetime) -> list[Sample]:
        rule, t = self.rule, naive(at)
        waiting = [s for s in (item_as_of(i, t) for i in self.items)
                   if s is not None and s.status in rule.statuses]  # fmt: skip
        groups = _groups(waiting, rule.by_project) or ({(): []} if not rule.by_project else {})
        samples = []
        for key, members in sorted(groups.items()):
            oldest = min(
                members, key=lambda i: (i.queued_at or i.first_seen_at, i.id), default=None
            )
            age = (t - (oldest.queued_at or oldest.first_seen_at)) if oldest else timedelta(0)
            depth = len(members)
            deep = rule.max_depth is not None and depth >= rule.max_depth
            old = rule.max_age is not None and oldest is not None and age >= rule.max_age
            numbers: Numbers = {
                "depth": depth, "max_depth": rule.max_depth,
                "oldest_age_hours": round(age / HOUR, 2),
                "max_age_hours": round(rule.max_age / HOUR, 2) if rule.max_age else None,
            }  # fmt: skip
            where = f" for {key[0]}" if key else ""
            summary = (
                f"Human-review queue{where}: {depth} item(s) waiting"
                + (
                    f", the oldest for {format_duration(age)}"
                    if oldest and age >= timedelta(minutes=1)
                    else ""
                )
                + (f" (limits: {rule.max_depth} items" if rule.max_depth else " (limits:")
                + (f", {format_duration(rule.max_age)})" if rule.max_age else ")")
            )
            labels = {"queue": "triage", **({"project": key[0]} if key else {})}
            scope = (
                {"project": key[0]} if key else ({"project": rule.project} if rule.project else {})
            )
            samples.append(Sample(labels, deep or old, float(depth), numbers, summary, None, None,
                                  _exemplar(oldest) if oldest else None, scope))  # fmt: skip
        return samples


class P0OverdueRule:
    def __init__(self, min_count: int, project: str | None, by_project: bool,
                 source: str | None = None) -> None:  # fmt: skip
        self.min_count, self.project, self.by_project = min_count, project, by_project
        self.source = source

    @classmethod
    def from_spec(cls, spec: RuleSpec) -> P0OverdueRule:
        source = spec.text("source")  # "feedback": only items raised by a thumbs-down
        return cls(spec.integer("min_count", 1, minimum=1), spec.text("project"),
                   _by_project(spec), source)  # fmt: skip

    def lookback(self) -> timedelta:
        return timedelta(0)

    def load(self, ctx: RuleContext, span: TimeWindow) -> P0OverdueTimeline:
        items = load_items(ctx, span, p0_only=True)
        if self.project:
            items = [i for i in items if i.project == self.project]
        if self.source:
            items = [i for i in items if i.source == self.source]
        return P0OverdueTimeline(self, items)


class P0OverdueTimeline:
    def __init__(self, rule: P0OverdueRule, items: list[TriageItem]) -> None:
        self.rule, self.items = rule, items

    def evaluate(self, at: datetime) -> list[Sample]:
        rule, t = self.rule, naive(at)
        overdue = [s for s in (item_as_of(i, t) for i in self.items)
                   if s is not None and s.priority == "P0" and s.is_overdue(t)]  # fmt: skip
        groups = _groups(overdue, rule.by_project) or ({(): []} if not rule.by_project else {})
        samples = []
        for key, members in sorted(groups.items()):
            worst = min(members, key=lambda i: (i.due_at or t, i.id), default=None)
            late = (t - worst.due_at) if worst and worst.due_at else timedelta(0)
            numbers: Numbers = {"overdue": len(members), "min_count": rule.min_count,
                                "most_overdue_hours": round(late / HOUR, 2)}  # fmt: skip
            where = f" in {key[0]}" if key else ""
            summary = f"{len(members)} P0 triage item(s){where} past the time-to-eval target" + (
                f"; the worst is {late / HOUR:.1f} h late: {worst.title}" if worst else ""
            )
            labels = {"queue": "triage", **({"project": key[0]} if key else {})}
            scope = (
                {"project": key[0]} if key else ({"project": rule.project} if rule.project else {})
            )
            samples.append(Sample(labels, len(members) >= rule.min_count, float(len(members)),
                                  numbers, summary, None, None,
                                  _exemplar(worst) if worst else None, scope))  # fmt: skip
        return samples


register_rule_type(RuleType(
    "review_queue", ReviewQueueRule.from_spec,
    "The human-review (annotation) queue holds max_depth items or more, or its oldest "
    "item has waited max_age.",
))  # fmt: skip
register_rule_type(RuleType(
    "p0_overdue", P0OverdueRule.from_spec,
    "P0 triage items (e.g. unsafe or billing-wrong thumbs-down) past their time-to-eval "
    "target without a merged golden case.",
))  # fmt: skip
