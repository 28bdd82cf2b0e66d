"""The values alerting passes around: samples a rule produces, alert episodes, exemplars.

A rule evaluated at a time ``at`` returns ``Sample`` objects, one per series (a label
set such as ``{slo: refund-ok}`` or ``{project: refund-assistant, customer_tier: pro}``).
An active sample becomes (or keeps) an ``Alert``: an episode of one rule × label set
that goes pending → firing → resolved. The alert's identity is the fingerprint of its
full label set (``alertname``, ``severity``, the rule's labels and the series labels).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from goldenloop.metrics.catalog import MetricDef
from goldenloop.metrics.dimensions import Filter
from goldenloop.metrics.windows import TimeWindow

Severity = Literal["page", "ticket"]
SEVERITIES: tuple[str, ...] = get_args(Severity)
AlertStatus = Literal["pending", "firing", "resolved"]
STATUSES: tuple[str, ...] = get_args(AlertStatus)

#: Numbers a rule reports: counts, rates, thresholds (None: not computable).
Numbers = dict[str, float | int | None]


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable id for a label set (order does not matter)."""
    text = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def floor_minute(value: datetime) -> datetime:
    """The start of ``value``'s minute, as an aware UTC datetime."""
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.replace(second=0, microsecond=0)


def iso(value: datetime | None) -> str | None:
    """RFC 3339 with a ``Z`` (stores hand back naive UTC)."""
    if value is None:
        return None
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.isoformat().replace("+00:00", "Z")


def _parse_time(value: Any) -> datetime | None:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None


def aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class MetricEvidence:
    """Where a metric rule's bad events live: the exemplar and the affected slice are
    looked up here when the alert fires. ``mode`` is ``failing`` (rows failing a success
    ``good`` (rows the metric counts as good are the problem, e.g. breaker trips) or
    ``largest`` (the rows with the largest value, e.g. the most expensive turns)."""

    metric: MetricDef
    filters: tuple[Filter, ...]
    window: TimeWindow
    mode: Literal["failing", "matching", "largest"] = "failing"


@dataclass(frozen=True)
class Exemplar:
    """One concrete session behind an alert, for the person who gets paged."""

    session_id: str | None = None
    trace_id: str | None = None
    prompt_version: str | None = None
    model: str | None = None
    model_version: str | None = None
    project: str | None = None

    def trace_url(self, base_url: str) -> str | None:
        return f"{base_url.rstrip('/')}/traces/{self.trace_id}" if self.trace_id else None

    def to_dict(self, base_url: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "session_id": self.session_id,
            "trace_id": self.trace_id,
            "prompt_version": self.prompt_version,
            "model": self.model,
            "model_version": self.model_version,
            "project": self.project,
        }
        if base_url is not None:
            data["trace_url"] = self.trace_url(base_url)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Exemplar | None:
        if not data:
            return None
        names = ("session_id", "trace_id", "prompt_version", "model", "model_version", "project")
        return cls(**{name: data.get(name) for name in names})


@dataclass
class Sample:
    """One series of a rule at one evaluation time."""

    labels: dict[str, str]
    active: bool
    value: float | None
    numbers: Numbers = field(default_factory=dict)
    summary: str = ""
    #: None: the rule's own severity.
    severity: Severity | None = None
    evidence: MetricEvidence | None = None
    #: Rules that know their exemplar directly (triage items) set it here.
    exemplar: Exemplar | None = None
    #: The slice the rule itself scopes the series to (its filter and series labels).
    scope: dict[str, str] = field(default_factory=dict)


@dataclass
class SliceShare:
    """A dimension value that accounts for ``share`` of an alert's bad events."""

    dimension: str
    value: str
    share: float
    lift: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "dimension": self.dimension,
            "value": self.value,
            "share": round(self.share, 4),
            "lift": None if self.lift is None else round(self.lift, 3),
        }


@dataclass
class AlertDetails:
    """What an alert carries beyond its labels: the numbers at the moment it fired, the
    exemplar, and the affected slice."""

    rule_type: str = ""
    numbers_at_fire: Numbers = field(default_factory=dict)
    summary_at_fire: str = ""
    #: The last evaluation at which the condition held (for ``keep_firing_for``).
    last_active_at: datetime | None = None
    exemplar: Exemplar | None = None
    slice: dict[str, str] = field(default_factory=dict)
    breakdown: list[SliceShare] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    enrich_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_type": self.rule_type,
            "numbers_at_fire": self.numbers_at_fire,
            "summary_at_fire": self.summary_at_fire,
            "last_active_at": iso(self.last_active_at),
            "exemplar": self.exemplar.to_dict() if self.exemplar else None,
            "slice": self.slice,
            "breakdown": [s.to_dict() for s in self.breakdown],
            "annotations": self.annotations,
            "enrich_error": self.enrich_error,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AlertDetails:
        if not data:
            return cls()
        return cls(
            rule_type=str(data.get("rule_type") or ""),
            numbers_at_fire=dict(data.get("numbers_at_fire") or {}),
            summary_at_fire=str(data.get("summary_at_fire") or ""),
            last_active_at=_parse_time(data.get("last_active_at")),
            exemplar=Exemplar.from_dict(data.get("exemplar")),
            slice={str(k): str(v) for k, v in (data.get("slice") or {}).items()},
            breakdown=[
                SliceShare(b["dimension"], b["value"], float(b["share"]), b.get("lift"))
                for b in data.get("breakdown") or []
            ],
            annotations={str(k): str(v) for k, v in (data.get("annotations") or {}).items()},
            enrich_error=data.get("enrich_error"),
        )


@dataclass
class Alert:
    """One episode of a rule × label set."""

    id: str
    rule: str
    fingerprint: str
    labels: dict[str, str]
    severity: Severity
    status: AlertStatus
    active_at: datetime
    last_eval_at: datetime
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    value: float | None = None
    summary: str = ""
    numbers: Numbers = field(default_factory=dict)
    details: AlertDetails = field(default_factory=AlertDetails)

    @property
    def pending_for(self) -> timedelta:
        return self.last_eval_at - self.active_at

    def to_dict(self, base_url: str | None = None) -> dict[str, Any]:
        details = self.details
        return {
            "id": self.id,
            "rule": self.rule,
            "fingerprint": self.fingerprint,
            "labels": self.labels,
            "severity": self.severity,
            "status": self.status,
            "active_at": iso(self.active_at),
            "fired_at": iso(self.fired_at),
            "resolved_at": iso(self.resolved_at),
            "last_eval_at": iso(self.last_eval_at),
            "value": self.value,
            "summary": self.summary,
            "numbers": self.numbers,
            "numbers_at_fire": details.numbers_at_fire,
            "summary_at_fire": details.summary_at_fire,
            "exemplar": details.exemplar.to_dict(base_url) if details.exemplar else None,
            "slice": details.slice,
            "breakdown": [s.to_dict() for s in details.breakdown],
            "annotations": details.annotations,
        }
