"""What a notification carries: one alert group, Alertmanager-style, with the context a
person needs at 3 a.m.

Every alert in a notification carries (in ``annotations`` as text, and structured
under ``goldenloop``): an exemplar session id, the trace URL in goldenloop
(``{base_url}/traces/{trace_id}``), the prompt version, the model id, the affected
slice (project, prompt hash, locale, tier, flags …) and the numbers that tripped it.
Fields the rule could not know are present and ``null``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from goldenloop.alerts.model import Alert, Numbers, iso

GroupStatus = Literal["firing", "resolved"]
ZERO_TIME = "0001-01-01T00:00:00Z"


def format_numbers(numbers: Numbers) -> str:
    parts = []
    for name, value in numbers.items():
        if value is None:
            continue
        parts.append(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}")
    return ", ".join(parts)


def format_slice(slice_: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in slice_.items()) or "all traffic"


@dataclass
class AlertPayload:
    """One alert as notifiers see it."""

    alert: Alert
    base_url: str

    @property
    def status(self) -> GroupStatus:
        return "resolved" if self.alert.status == "resolved" else "firing"

    @property
    def numbers(self) -> Numbers:
        """The numbers that tripped it (at the moment it fired), else the latest."""
        return self.alert.details.numbers_at_fire or self.alert.numbers

    @property
    def summary(self) -> str:
        """What it said when it fired (else the latest evaluation's words)."""
        return self.alert.details.summary_at_fire or self.alert.summary

    @property
    def trace_url(self) -> str | None:
        exemplar = self.alert.details.exemplar
        return exemplar.trace_url(self.base_url) if exemplar else None

    @property
    def alert_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/alerts?rule={self.alert.rule}"

    def context(self) -> dict[str, Any]:
        """The structured context (``goldenloop`` key of the webhook body)."""
        alert, exemplar = self.alert, self.alert.details.exemplar
        return {
            "rule": alert.rule,
            "rule_type": alert.details.rule_type,
            "severity": alert.severity,
            "summary": self.summary,
            "session_id": exemplar.session_id if exemplar else None,
            "trace_id": exemplar.trace_id if exemplar else None,
            "trace_url": self.trace_url,
            "prompt_version": exemplar.prompt_version if exemplar else None,
            "model": exemplar.model if exemplar else None,
            "model_version": exemplar.model_version if exemplar else None,
            "slice": alert.details.slice,
            "breakdown": [s.to_dict() for s in alert.details.breakdown],
            "numbers": self.numbers,
            "current": alert.numbers,
            "value": alert.value,
            "alert_url": self.alert_url,
        }

    def annotations(self) -> dict[str, str]:
        context = self.context()
        texts = {
            "summary": self.summary,
            "session_id": context["session_id"] or "",
            "trace_url": context["trace_url"] or "",
            "prompt_version": context["prompt_version"] or "",
            "model": context["model"] or "",
            "slice": format_slice(self.alert.details.slice),
            "numbers": format_numbers(self.numbers),
        }
        return {**self.alert.details.annotations, **texts}

    def to_dict(self) -> dict[str, Any]:
        """One entry of an Alertmanager webhook's ``alerts`` list."""
        alert = self.alert
        return {
            "status": self.status,
            "labels": alert.labels,
            "annotations": self.annotations(),
            "startsAt": iso(alert.fired_at or alert.active_at),
            "endsAt": iso(alert.resolved_at) if alert.resolved_at else ZERO_TIME,
            "generatorURL": self.alert_url,
            "fingerprint": alert.fingerprint,
            "goldenloop": self.context(),
        }


@dataclass
class Notification:
    """One notification for one alert group and one notifier (route)."""

    route: str
    group_key: str
    group_labels: dict[str, str]
    alerts: list[AlertPayload]
    base_url: str
    created_at: datetime
    truncated: int = 0
    id: str = field(default="")

    @property
    def status(self) -> GroupStatus:
        return "firing" if any(a.status == "firing" for a in self.alerts) else "resolved"

    @property
    def firing(self) -> list[AlertPayload]:
        return [a for a in self.alerts if a.status == "firing"]

    @property
    def resolved(self) -> list[AlertPayload]:
        return [a for a in self.alerts if a.status == "resolved"]

    @property
    def severity(self) -> str:
        severities = {a.alert.severity for a in (self.firing or self.alerts)}
        return "page" if "page" in severities else "ticket"

    @property
    def dedup_key(self) -> str:
        """Stable per alert group (and notifier): the same incident while it lasts."""
        return hashlib.sha256(f"{self.route}\x00{self.group_key}".encode()).hexdigest()[:32]

    def _common(self, pick: str) -> dict[str, str]:
        maps = [a.alert.labels if pick == "labels" else a.annotations() for a in self.alerts]
        if not maps:
            return {}
        common = dict(maps[0])
        for other in maps[1:]:
            common = {k: v for k, v in common.items() if other.get(k) == v}
        return common

    @property
    def common_labels(self) -> dict[str, str]:
        return self._common("labels")

    @property
    def common_annotations(self) -> dict[str, str]:
        return self._common("annotations")

    @property
    def title(self) -> str:
        name = (
            self.group_labels.get("alertname") or self.common_labels.get("alertname") or self.route
        )
        where = ", ".join(f"{k}={v}" for k, v in self.group_labels.items() if k != "alertname")
        count = len(self.firing) if self.status == "firing" else len(self.resolved)
        return f"[{self.status.upper()}:{count}] {name}" + (f" ({where})" if where else "")

    @property
    def summary(self) -> str:
        """One line: the title and the first alert's summary."""
        lead = (self.firing or self.alerts)[0].summary if self.alerts else ""
        return f"{self.title}: {lead}" if lead else self.title

    @property
    def alerts_url(self) -> str:
        return f"{self.base_url.rstrip('/')}/alerts"

    def webhook_body(self) -> dict[str, Any]:
        """The Alertmanager webhook body (version 4) plus goldenloop's context per alert."""
        return {
            "version": "4",
            "groupKey": self.group_key,
            "truncatedAlerts": self.truncated,
            "status": self.status,
            "receiver": self.route,
            "groupLabels": self.group_labels,
            "commonLabels": self.common_labels,
            "commonAnnotations": self.common_annotations,
            "externalURL": self.alerts_url,
            "alerts": [a.to_dict() for a in self.alerts],
        }
