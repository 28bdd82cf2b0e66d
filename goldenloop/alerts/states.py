"""Reading and writing alert episodes (``alert_states``) and their history."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from goldenloop.alerts.model import Alert, AlertDetails, aware, iso
from goldenloop.metrics.windows import naive
from goldenloop.store.base import Store
from goldenloop.store.sql import SqlStore

STATE_COLUMNS = (
    "id", "rule", "fingerprint", "labels", "severity", "status", "active_at", "fired_at",
    "resolved_at", "last_eval_at", "value", "summary", "numbers", "details", "updated_at",
)  # fmt: skip
_SELECT = ", ".join(STATE_COLUMNS)
Statements = list[tuple[str, Sequence[Any]]]


def run_statements(store: Store, statements: Statements) -> None:
    """In one transaction where the backend offers it."""
    if not statements:
        return
    if isinstance(store, SqlStore):
        store._run_in_transaction(statements)
    else:
        for sql, params in statements:
            store.execute(sql, params)


def alert_from_row(row: Sequence[Any]) -> Alert:
    values = dict(zip(STATE_COLUMNS, row, strict=True))
    active, last = aware(values["active_at"]), aware(values["last_eval_at"])
    assert active is not None and last is not None
    return Alert(
        id=str(values["id"]), rule=str(values["rule"]), fingerprint=str(values["fingerprint"]),
        labels=json.loads(values["labels"]), severity=values["severity"], status=values["status"],
        active_at=active, last_eval_at=last, fired_at=aware(values["fired_at"]),
        resolved_at=aware(values["resolved_at"]), value=values["value"],
        summary=values["summary"] or "", numbers=json.loads(values["numbers"] or "{}"),
        details=AlertDetails.from_dict(json.loads(values["details"] or "{}")),
    )  # fmt: skip


def load_alerts(
    store: Store, statuses: Sequence[str] = ("pending", "firing"), *, rule: str | None = None,
    resolved_since: datetime | None = None,
) -> list[Alert]:  # fmt: skip
    clauses = [f"status IN ({', '.join('?' for _ in statuses)})"]
    params: list[Any] = list(statuses)
    if rule is not None:
        clauses.append("rule = ?")
        params.append(rule)
    if resolved_since is not None:
        clauses.append("(resolved_at IS NULL OR resolved_at >= ?)")
        params.append(naive(resolved_since))
    rows = store.fetch(
        f"SELECT {_SELECT} FROM alert_states WHERE {' AND '.join(clauses)} "
        "ORDER BY active_at DESC, id",
        params,
    )
    return [alert_from_row(r) for r in rows]


def upsert_alert(alert: Alert, now: datetime) -> tuple[str, list[Any]]:
    values = [
        alert.id, alert.rule, alert.fingerprint, json.dumps(alert.labels, sort_keys=True),
        alert.severity, alert.status, naive(alert.active_at),
        naive(alert.fired_at) if alert.fired_at else None,
        naive(alert.resolved_at) if alert.resolved_at else None, naive(alert.last_eval_at),
        alert.value, alert.summary, json.dumps(alert.numbers), json.dumps(alert.details.to_dict()),
        naive(now),
    ]  # fmt: skip
    updates = ", ".join(f"{c} = excluded.{c}" for c in STATE_COLUMNS if c != "id")
    sql = (
        f"INSERT INTO alert_states ({_SELECT}) VALUES ({', '.join('?' for _ in STATE_COLUMNS)}) "
        f"ON CONFLICT (id) DO UPDATE SET {updates}"
    )
    return sql, values


def delete_alert(alert_id: str) -> tuple[str, list[Any]]:
    return "DELETE FROM alert_states WHERE id = ?", [alert_id]


def history_row(
    alert: Alert, from_status: str, to_status: str, at: datetime, now: datetime
) -> tuple[str, list[Any]]:
    return (
        "INSERT INTO alert_history (id, alert_id, rule, fingerprint, labels, from_status, "
        "to_status, changed_at, value, summary, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            uuid.uuid4().hex,
            alert.id,
            alert.rule,
            alert.fingerprint,
            json.dumps(alert.labels, sort_keys=True),
            from_status,
            to_status,
            naive(at),
            alert.value,
            alert.summary,
            naive(now),
        ],  # fmt: skip
    )


@dataclass
class HistoryEntry:
    alert_id: str
    rule: str
    labels: dict[str, str]
    from_status: str
    to_status: str
    at: datetime
    value: float | None
    summary: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id, "rule": self.rule, "labels": self.labels,
            "from": self.from_status, "to": self.to_status, "at": iso(self.at),
            "value": self.value, "summary": self.summary,
        }  # fmt: skip


def load_history(store: Store, *, rule: str | None = None, limit: int = 100,
                 since: datetime | None = None) -> list[HistoryEntry]:  # fmt: skip
    clauses: list[str] = ["TRUE"]
    params: list[Any] = []
    if rule is not None:
        clauses.append("rule = ?")
        params.append(rule)
    if since is not None:
        clauses.append("changed_at >= ?")
        params.append(naive(since))
    rows = store.fetch(
        "SELECT alert_id, rule, labels, from_status, to_status, changed_at, value, summary "
        "FROM alert_history "
        f"WHERE {' AND '.join(clauses)} ORDER BY changed_at DESC, recorded_at DESC, id LIMIT ?",
        [*params, limit],
    )
    entries = []
    for r in rows:
        at = aware(r[5])
        assert at is not None
        entries.append(HistoryEntry(r[0], r[1], json.loads(r[2]), r[3], r[4], at, r[6], r[7] or ""))
    return entries


def prune(store: Store, now: datetime, *, resolved_for: timedelta = timedelta(days=7),
          history_for: timedelta = timedelta(days=90)) -> None:  # fmt: skip
    """Forget resolved episodes after a week and history after 90 days."""
    run_statements(store, [
        ("DELETE FROM alert_states WHERE status = 'resolved' AND resolved_at < ?", [naive(now - resolved_for)]),
        ("DELETE FROM alert_history WHERE changed_at < ?", [naive(now - history_for)]),
    ])  # fmt: skip
