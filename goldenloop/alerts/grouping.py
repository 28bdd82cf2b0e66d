"""Grouping, deduplication, repeats, silences and resolved notifications, the way
Prometheus Alertmanager does them.

Each notifier is a route: its matchers pick alerts, its ``group_by`` labels split them
into groups (``['...']``: every alert alone). For one group and route:

* a new group waits ``group_wait`` before its first notification, to batch alerts that
  fire together;
* after that the group is flushed every ``group_interval``; a flush notifies when an
  alert joined the firing set, when alerts resolved (``send_resolved``), or when
  ``repeat_interval`` passed since the last notification of an unchanged firing group;
* silenced alerts are left out (a group whose alerts are all silenced sends nothing);
* the notification log (which alerts were last notified firing/resolved, and when) is
  updated only when a delivery succeeds, so a failed one is retried at the next flush;
* a group with nothing firing and nothing left to report is removed.

Time comes from the caller (``now``), so tests drive it without sleeping.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from goldenloop.alerts.config import RouteConfig
from goldenloop.alerts.delivery import Deliveries
from goldenloop.alerts.matchers import matches_all
from goldenloop.alerts.model import Alert, aware, iso
from goldenloop.alerts.payload import AlertPayload, Notification
from goldenloop.alerts.silences import Silence, list_silences
from goldenloop.alerts.states import load_alerts, run_statements
from goldenloop.metrics.windows import naive
from goldenloop.store.base import Store

_COLUMNS = ("id", "route", "group_key", "labels", "created_at", "next_flush_at", "last_sent_at",
            "last_firing", "last_resolved", "updated_at")  # fmt: skip


@dataclass
class AlertGroup:
    id: str
    route: str
    group_key: str
    labels: dict[str, str]
    created_at: datetime
    next_flush_at: datetime
    last_sent_at: datetime | None = None
    last_firing: set[str] = field(default_factory=set)
    last_resolved: set[str] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route, "group_key": self.group_key, "labels": self.labels,
            "created_at": iso(self.created_at), "next_flush_at": iso(self.next_flush_at),
            "last_sent_at": iso(self.last_sent_at), "notified_firing": len(self.last_firing),
        }  # fmt: skip


def group_labels(group_by: Sequence[str], labels: Mapping[str, str]) -> dict[str, str]:
    if "..." in group_by:
        return dict(sorted(labels.items()))
    return {name: labels[name] for name in sorted(group_by) if name in labels}


def group_key(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items())) + "}"


def group_id(route: str, key: str) -> str:
    return hashlib.sha256(f"{route}\x00{key}".encode()).hexdigest()[:32]


def needs_update(group: AlertGroup, firing: set[str], resolved: set[str], *, now: datetime,
                 repeat: timedelta, send_resolved: bool) -> bool:  # fmt: skip
    """Alertmanager's dedup decision for one flush."""
    if group.last_sent_at is None:
        return bool(firing)
    if not firing <= group.last_firing:
        return True
    if not firing:
        return bool(group.last_firing) and bool(resolved) and send_resolved
    if send_resolved and not resolved <= group.last_resolved:
        return True
    return group.last_sent_at + repeat <= now


def load_groups(store: Store) -> list[AlertGroup]:
    rows = store.fetch(f"SELECT {', '.join(_COLUMNS)} FROM alert_groups ORDER BY route, group_key")
    groups = []
    for r in rows:
        created, flush = aware(r[4]), aware(r[5])
        assert created is not None and flush is not None
        groups.append(AlertGroup(r[0], r[1], r[2], json.loads(r[3]), created, flush, aware(r[6]),
                                 set(json.loads(r[7])), set(json.loads(r[8]))))  # fmt: skip
    return groups


def _save(group: AlertGroup, now: datetime) -> tuple[str, list[Any]]:
    values = [group.id, group.route, group.group_key, json.dumps(group.labels, sort_keys=True),
              naive(group.created_at), naive(group.next_flush_at),
              naive(group.last_sent_at) if group.last_sent_at else None,
              json.dumps(sorted(group.last_firing)), json.dumps(sorted(group.last_resolved)), naive(now)]  # fmt: skip
    updates = ", ".join(f"{c} = excluded.{c}" for c in ("next_flush_at", "labels", "updated_at"))
    return (
        f"INSERT INTO alert_groups ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)}) "
        f"ON CONFLICT (id) DO UPDATE SET {updates}",
        values,
    )


@dataclass
class DispatchReport:
    queued: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0
    groups: int = 0
    silenced: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"queued": self.queued, "refused": self.refused, "groups": self.groups,
                "silenced_alerts": self.silenced}  # fmt: skip


class Dispatcher:
    def __init__(self, store: Store, deliveries: Deliveries, *, base_url: str) -> None:
        self.store = store
        self.deliveries = deliveries
        self.base_url = base_url
        self._outbox: list[tuple[RouteConfig, Notification, Callable[[Notification], None]]] = []

    def dispatch(self, routes: Sequence[RouteConfig], now: datetime) -> DispatchReport:
        report = DispatchReport()
        alerts = load_alerts(self.store, ("firing", "resolved"))
        silences = list_silences(self.store, now=now)
        muted = {a.id for a in alerts if a.status == "firing" and _muted(silences, a, now)}
        report.silenced = len(muted)
        groups = {(g.route, g.group_key): g for g in load_groups(self.store)}
        statements: list[tuple[str, Sequence[Any]]] = []
        names = {r.name for r in routes}
        for (route_name, _), group in list(groups.items()):
            if route_name not in names:
                statements.append(("DELETE FROM alert_groups WHERE id = ?", [group.id]))
        for route in routes:
            members: dict[str, list[Alert]] = {}
            labels_of: dict[str, dict[str, str]] = {}
            for alert in alerts:
                if matches_all(route.matchers, alert.labels):
                    g_labels = group_labels(route.grouping.group_by, alert.labels)
                    key = group_key(g_labels)
                    members.setdefault(key, []).append(alert)
                    labels_of[key] = g_labels
            keys = set(members) | {k for (r, k) in groups if r == route.name}
            for key in sorted(keys):
                existing = groups.get((route.name, key))
                labels = labels_of.get(key, existing.labels if existing else {})
                statements += self._flush(
                    route, key, labels, existing, members.get(key, []), muted, now
                )
        run_statements(self.store, statements)
        # Deliveries start only once the groups they update are stored.
        for route, notification, mark_sent in self._outbox:
            if self.deliveries.submit(route, notification, mark_sent):
                report.queued.append({"route": route.name, "group_key": notification.group_key,
                                      "status": notification.status,
                                      "alerts": len(notification.alerts)})  # fmt: skip
            else:
                report.refused += 1
        self._outbox = []
        report.groups = len(load_groups(self.store))
        return report

    def _flush(self, route: RouteConfig, key: str, labels: dict[str, str], group: AlertGroup | None,
               members: list[Alert], muted: set[str], now: datetime) -> list[tuple[str, Sequence[Any]]]:  # fmt: skip
        grouping = route.grouping
        firing_all = {a.fingerprint: a for a in members if a.status == "firing"}
        firing = {fp: a for fp, a in firing_all.items() if a.id not in muted}
        notified = group.last_firing if group else set()
        resolved: dict[str, Alert] = {}
        for alert in sorted(members, key=lambda a: a.resolved_at or now):
            if (
                alert.status == "resolved"
                and alert.fingerprint not in firing_all
                and alert.fingerprint in notified
            ):
                resolved[alert.fingerprint] = alert
        if group is None:
            if not firing_all:  # a group starts with its first firing alert, silenced or not
                return []
            group = AlertGroup(group_id(route.name, key), route.name, key, labels, now,
                               now + grouping.group_wait)  # fmt: skip
            if grouping.group_wait > timedelta(0):
                return [_save(group, now)]
        if now < group.next_flush_at or self.deliveries.in_flight(route.name, key):
            return [_save(group, now)]
        group.next_flush_at = now + grouping.group_interval
        if not firing_all and not resolved:
            return [("DELETE FROM alert_groups WHERE id = ?", [group.id])]
        statements: list[tuple[str, Sequence[Any]]] = [_save(group, now)]
        if needs_update(group, set(firing), set(resolved), now=now, repeat=grouping.repeat_interval,
                        send_resolved=route.send_resolved):  # fmt: skip
            shown = list(firing.values()) + (list(resolved.values()) if route.send_resolved else [])
            if shown:
                notification = Notification(
                    route.name,
                    key,
                    labels,
                    [AlertPayload(a, self.base_url) for a in shown],
                    self.base_url,
                    now,
                )
                firing_fps, resolved_fps = set(firing), set(resolved)
                group_ref = group.id

                def mark_sent(_: Notification) -> None:
                    self._mark_sent(group_ref, firing_fps, resolved_fps, now)

                self._outbox.append((route, notification, mark_sent))
        return statements

    def _mark_sent(self, group: str, firing: set[str], resolved: set[str], at: datetime) -> None:
        self.store.execute(
            "UPDATE alert_groups SET last_firing = ?, last_resolved = ?, last_sent_at = ? WHERE id = ?",
            [json.dumps(sorted(firing)), json.dumps(sorted(resolved)), naive(at), group],
        )


def _muted(silences: Sequence[Silence], alert: Alert, now: datetime) -> bool:
    return any(s.mutes(alert.labels, now) for s in silences)
