"""Generic webhook: POSTs the Alertmanager webhook body (version 4), so anything that
already receives Alertmanager notifications receives goldenloop's. Each alert also
carries goldenloop's context under ``goldenloop`` (exemplar, trace URL, prompt
version, model, slice, numbers).

Options: ``url`` (required), ``headers`` (extra HTTP headers, e.g. an Authorization
header), ``max_alerts`` (0: all; otherwise the rest are counted in ``truncatedAlerts``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from goldenloop.alerts.notifiers import check_known, check_url, register_notifier
from goldenloop.alerts.notifiers.http import RetryingHttp
from goldenloop.alerts.payload import Notification


def _max_alerts(options: Mapping[str, Any]) -> int:
    value = options.get("max_alerts", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("max_alerts: expected a whole number (0: no limit)")
    return value


class WebhookNotifier:
    def check(self, options: Mapping[str, Any]) -> None:
        check_known(options, {"url", "headers", "max_alerts"})
        check_url(options, "url")
        headers = options.get("headers") or {}
        if not isinstance(headers, Mapping) or not all(
            isinstance(v, str) for v in headers.values()
        ):
            raise ValueError("headers: expected a mapping of header → text")
        _max_alerts(options)

    def body(self, notification: Notification, options: Mapping[str, Any]) -> dict[str, Any]:
        body = notification.webhook_body()
        limit = _max_alerts(options)
        if limit and len(body["alerts"]) > limit:
            body["truncatedAlerts"] = notification.truncated + len(body["alerts"]) - limit
            body["alerts"] = body["alerts"][:limit]
        return body

    def send(
        self, notification: Notification, options: Mapping[str, Any], http: RetryingHttp
    ) -> None:
        headers = {str(k): str(v) for k, v in (options.get("headers") or {}).items()}
        http.post_json(str(options["url"]), self.body(notification, options), headers)


register_notifier("webhook", WebhookNotifier())
