"""Labelling triage items: the four labels, failure-mode tags, owner, notes and the
pass/fail criteria a reviewer writes for the future golden case."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from goldenloop.flags._sql import naive, utcnow
from goldenloop.store.base import Store
from goldenloop.triage.queue import TriageItem, get_item

LABELS: tuple[str, ...] = (
    "add-to-eval",
    "known-issue",
    "expected-behavior",
    "needs-product-decision",
)
FAILURE_MODES: tuple[str, ...] = (
    "retrieval-miss",
    "faithfulness",
    "tool-error",
    "injection",
    "policy",
    "latency",
    "other",
)
#: Keyboard shortcuts on the queue page (j/k are navigation there).
LABEL_KEYS: dict[str, str] = {
    "a": "add-to-eval",
    "i": "known-issue",
    "e": "expected-behavior",
    "p": "needs-product-decision",
}


class LabelError(ValueError):
    """A label request names an unknown label, tag or item."""


def normalize_failure_mode(value: str) -> str:
    """``"Retrieval miss"`` / ``retrieval_miss`` → ``retrieval-miss``."""
    slug = "-".join(value.strip().lower().replace("_", " ").replace("-", " ").split())
    if slug not in FAILURE_MODES:
        raise LabelError(
            f"failure_modes: unknown failure mode {value!r}; use {', '.join(FAILURE_MODES)}"
        )
    return slug


@dataclass(frozen=True)
class LabelRequest:
    label: str
    owner: str | None = None
    notes: str | None = None
    failure_modes: tuple[str, ...] = ()
    criteria: str | None = None

    @classmethod
    def build(
        cls,
        label: str,
        *,
        owner: str | None = None,
        notes: str | None = None,
        failure_modes: Iterable[str] = (),
        criteria: str | None = None,
    ) -> LabelRequest:
        label = label.strip().lower().replace("_", "-")
        if label not in LABELS:
            raise LabelError(f"label: unknown label {label!r}; use {', '.join(LABELS)}")
        modes = tuple(dict.fromkeys(normalize_failure_mode(m) for m in failure_modes if m.strip()))
        for name, value, limit in (("owner", owner, 200), ("notes", notes, 20_000),
                                   ("criteria", criteria, 20_000)):  # fmt: skip
            if value is not None and len(value) > limit:
                raise LabelError(f"{name}: at most {limit} characters")
        return cls(label, _blank(owner), _blank(notes), modes, _blank(criteria))


def _blank(value: str | None) -> str | None:
    return value.strip() or None if value is not None else None


def apply_label(
    store: Store, item_id: str, request: LabelRequest, *, now: datetime | None = None
) -> TriageItem:
    """Label an item (keeping the history); owner, notes, tags and criteria that the
    request leaves empty keep their previous values."""
    item = get_item(store, item_id)
    if item is None:
        raise LabelError(f"no triage item {item_id!r}")
    when = naive(now) if now else utcnow()
    owner = request.owner or item.owner
    notes = request.notes or item.notes
    modes = list(request.failure_modes) or item.failure_modes
    criteria = request.criteria or item.criteria
    store.execute(
        "INSERT INTO triage_labels (id, item_id, label, owner, notes, failure_modes, criteria, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (uuid.uuid4().hex, item_id, request.label, owner, notes, json.dumps(modes), criteria, when),
    )
    status = "resolved" if item.status == "resolved" else "labelled"
    store.execute(
        "UPDATE triage_items SET label = ?, owner = ?, notes = ?, failure_modes = ?, "
        "criteria = ?, labelled_at = ?, status = ?, queued_at = coalesce(queued_at, ?), "
        "updated_at = ? WHERE id = ?",
        (
            request.label,
            owner,
            notes,
            json.dumps(modes),
            criteria,
            when,
            status,
            when,
            when,
            item_id,
        ),
    )
    labelled = get_item(store, item_id)
    assert labelled is not None
    return labelled


def link_golden_case(
    store: Store, item_id: str, case_id: str, *, merged_at: datetime | None = None
) -> TriageItem:
    """Record that ``case_id`` (promoted from this item) merged into the golden set;
    this stops the time-to-eval clock."""
    item = get_item(store, item_id)
    if item is None:
        raise LabelError(f"no triage item {item_id!r}")
    when = naive(merged_at) if merged_at else utcnow()
    store.execute(
        "UPDATE triage_items SET golden_case_id = ?, case_merged_at = ?, updated_at = ? "
        "WHERE id = ?",
        (case_id, when, utcnow(), item_id),
    )
    linked = get_item(store, item_id)
    assert linked is not None
    return linked
