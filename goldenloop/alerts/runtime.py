"""Everything one evaluation needs, loaded fresh each tick: the alerts configuration
(a file, else the saved one), the rules (file + API), the SLOs (metrics config file +
API) and the signal names; plus the tick log and the evaluator lease."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from goldenloop.alerts.config import AlertsConfig, RuleSet, load_alerts_file, rule_set, saved_config
from goldenloop.alerts.model import aware, iso
from goldenloop.metrics.config import MetricsConfig, load_metrics_config
from goldenloop.metrics.signals import SignalConfig
from goldenloop.metrics.slo import SLO, SloSet
from goldenloop.metrics.windows import naive
from goldenloop.store.base import Store

LEASE = "evaluator"


@dataclass
class AlertsRuntime:
    config: AlertsConfig
    rules: RuleSet
    slos: dict[str, SLO] = field(default_factory=dict)
    signals: SignalConfig = field(default_factory=SignalConfig)

    @property
    def idle(self) -> bool:
        """Nothing to evaluate and nobody to tell."""
        return not self.rules.rules and not self.config.routes


def load_runtime(
    store: Store, *, alerts_file: str | None = None, metrics: MetricsConfig | None = None,
    slo_file: str | None = None,
) -> AlertsRuntime:  # fmt: skip
    """Raises ``AlertConfigError`` / ``MetricsConfigError`` naming what is wrong."""
    config = load_alerts_file(alerts_file) if alerts_file else saved_config(store)
    metrics = metrics if metrics is not None else load_metrics_config(slo_file)
    slos = {s.name: s for s in SloSet(list(metrics.slos)).all(store)}
    return AlertsRuntime(config, rule_set(store, config), slos, metrics.signals)


# -- the evaluator lease (several servers may share one PostgreSQL) ----------------------------
def acquire_lease(store: Store, holder: str, now: datetime, ttl: timedelta) -> str:
    """Take or renew the evaluator lease; returns whoever holds it afterwards."""
    until = naive(now + ttl)
    store.execute(
        "INSERT INTO alert_lease (name, holder, expires_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
        [LEASE, holder, until],
    )
    store.execute(
        "UPDATE alert_lease SET holder = ?, expires_at = ? WHERE name = ? AND (holder = ? OR expires_at < ?)",
        [holder, until, LEASE, holder, naive(now)],
    )
    rows = store.fetch("SELECT holder FROM alert_lease WHERE name = ?", [LEASE])
    return str(rows[0][0]) if rows else holder


def release_lease(store: Store, holder: str, now: datetime) -> None:
    store.execute(
        "UPDATE alert_lease SET expires_at = ? WHERE name = ? AND holder = ?",
        [naive(now), LEASE, holder],
    )


# -- the tick log ---------------------------------------------------------------------------------
@dataclass
class TickRecord:
    id: str
    source: str
    at: datetime
    started_at: datetime
    duration_ms: float
    rules: int
    pending: int
    firing: int
    notifications: int
    errors: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "at": iso(self.at), "started_at": iso(self.started_at),
            "duration_ms": round(self.duration_ms, 1), "rules": self.rules,
            "pending": self.pending, "firing": self.firing,
            "notifications": self.notifications, "errors": self.errors,
        }  # fmt: skip


def record_tick(store: Store, record: TickRecord) -> None:
    store.execute(
        "INSERT INTO alert_ticks (id, source, evaluated_at, started_at, duration_ms, rules, pending, firing, "
        "notifications, errors) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            record.id,
            record.source,
            naive(record.at),
            naive(record.started_at),
            record.duration_ms,
            record.rules,
            record.pending,
            record.firing,
            record.notifications,
            json.dumps(record.errors),
        ],  # fmt: skip
    )


def new_tick_id() -> str:
    return uuid.uuid4().hex


def recent_ticks(store: Store, *, limit: int = 20) -> list[TickRecord]:
    rows = store.fetch(
        "SELECT id, source, evaluated_at, started_at, duration_ms, rules, pending, firing, notifications, "
        "errors FROM alert_ticks ORDER BY started_at DESC, id LIMIT ?",
        [limit],
    )
    records = []
    for r in rows:
        at, started = aware(r[2]), aware(r[3])
        assert at is not None and started is not None
        records.append(TickRecord(r[0], r[1], at, started, float(r[4]), int(r[5]), int(r[6]),
                                  int(r[7]), int(r[8]), json.loads(r[9] or "{}")))  # fmt: skip
    return records


def prune_ticks(store: Store, now: datetime, keep: timedelta = timedelta(days=7)) -> None:
    store.execute("DELETE FROM alert_ticks WHERE started_at < ?", [naive(now - keep)])
