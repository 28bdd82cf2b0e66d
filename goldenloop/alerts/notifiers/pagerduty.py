"""PagerDuty Events API v2: ``trigger`` while the group has firing alerts, ``resolve``
when all of them resolved. The ``dedup_key`` is stable per alert group, so repeats
and new alerts in the group update one PagerDuty incident, and the resolve closes it.

Options: ``routing_key`` (the integration key, required), ``url`` (default
``https://events.pagerduty.com/v2/enqueue``; point it elsewhere for a proxy or a test
receiver), ``severity_map`` (goldenloop severity → PagerDuty severity; default
page → critical, ticket → warning), ``source`` (default: the server's host).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from goldenloop.alerts.model import iso
from goldenloop.alerts.notifiers import check_known, check_url, register_notifier
from goldenloop.alerts.notifiers.http import RetryingHttp
from goldenloop.alerts.payload import Notification

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
PD_SEVERITIES = ("critical", "error", "warning", "info")
DEFAULT_SEVERITY_MAP = {"page": "critical", "ticket": "warning"}
MAX_LINKS = 5


class PagerDutyNotifier:
    def check(self, options: Mapping[str, Any]) -> None:
        check_known(options, {"routing_key", "url", "severity_map", "source"})
        key = options.get("routing_key")
        if not isinstance(key, str) or not key.strip():
            raise ValueError("routing_key: required (the Events API v2 integration key)")
        check_url(options, "url", required=False)
        mapping = options.get("severity_map") or {}
        if not isinstance(mapping, Mapping) or any(
            v not in PD_SEVERITIES for v in mapping.values()
        ):
            raise ValueError(f"severity_map: values must be one of {', '.join(PD_SEVERITIES)}")
        if "source" in options and not isinstance(options["source"], str):
            raise ValueError("source: expected text")

    def body(self, notification: Notification, options: Mapping[str, Any]) -> dict[str, Any]:
        key = str(options["routing_key"])
        if notification.status == "resolved":
            return {
                "routing_key": key,
                "event_action": "resolve",
                "dedup_key": notification.dedup_key,
            }
        severity_map = {**DEFAULT_SEVERITY_MAP, **(options.get("severity_map") or {})}
        firing = notification.firing
        lead = firing[0].alert
        source = options.get("source") or urlsplit(notification.base_url).netloc or "goldenloop"
        links = [
            {"href": p.trace_url, "text": f"Trace of session {p.context()['session_id']} ({p.alert.rule})"}
            for p in firing if p.trace_url
        ][:MAX_LINKS]  # fmt: skip
        links.append({"href": notification.alerts_url, "text": "Alerts in goldenloop"})
        payload: dict[str, Any] = {
            "summary": notification.summary[:1024],
            "source": source,
            "severity": severity_map.get(notification.severity, "warning"),
            "timestamp": iso(lead.fired_at or lead.active_at),
            "group": lead.rule,
            "class": lead.details.rule_type or lead.rule,
            "custom_details": {
                "group_labels": notification.group_labels,
                "firing": len(firing),
                "resolved": len(notification.resolved),
                "alerts": [p.context() for p in firing],
            },
        }
        project = notification.common_labels.get("project") or lead.details.slice.get("project")
        if project:
            payload["component"] = project
        return {
            "routing_key": key,
            "event_action": "trigger",
            "dedup_key": notification.dedup_key,
            "payload": payload,
            "links": links,
            "client": "goldenloop",
            "client_url": notification.alerts_url,
        }

    def send(
        self, notification: Notification, options: Mapping[str, Any], http: RetryingHttp
    ) -> None:
        http.post_json(str(options.get("url") or EVENTS_URL), self.body(notification, options))


register_notifier("pagerduty", PagerDutyNotifier())
