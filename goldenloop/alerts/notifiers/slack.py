"""Slack incoming webhook: ``text`` (the fallback shown in notifications) plus
``blocks``: a header, then per alert its summary, the session, prompt version, model
and slice, the numbers, and an "Open trace" button.

Options: ``url`` (the incoming-webhook URL, required), ``channel`` and ``username``
(legacy webhooks only), ``max_alerts`` (default 10; Slack allows 50 blocks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from goldenloop.alerts.notifiers import check_known, check_url, register_notifier
from goldenloop.alerts.notifiers.http import RetryingHttp
from goldenloop.alerts.payload import AlertPayload, Notification, format_numbers, format_slice


def escape(text: str) -> str:
    """Slack mrkdwn control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(value: str | None) -> str:
    return f"`{escape(value)}`" if value else "–"


def _mrkdwn(text: str, limit: int = 2000) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text[:limit]}


def alert_blocks(payload: AlertPayload) -> list[dict[str, Any]]:
    context = payload.context()
    icon = ":white_check_mark:" if payload.status == "resolved" else (
        ":rotating_light:" if payload.alert.severity == "page" else ":warning:"
    )  # fmt: skip
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": _mrkdwn(
                f"{icon} *{escape(payload.alert.rule)}* ({payload.alert.severity}, "
                f"{payload.status}): {escape(payload.summary)}",
                3000,
            ),  # fmt: skip
            "fields": [
                _mrkdwn(f"*Session*\n{_code(context['session_id'])}"),
                _mrkdwn(f"*Prompt version*\n{_code(context['prompt_version'])}"),
                _mrkdwn(f"*Model*\n{_code(context['model'])}"),
                _mrkdwn(f"*Slice*\n{escape(format_slice(payload.alert.details.slice))}"),
            ],
        },
        {"type": "context", "elements": [_mrkdwn(escape(format_numbers(payload.numbers)) or "–")]},
    ]
    if context["trace_url"]:
        blocks.append({
            "type": "actions",
            "elements": [{
                "type": "button",
                "text": {"type": "plain_text", "text": "Open trace"},
                "url": context["trace_url"],
            }],
        })  # fmt: skip
    return blocks


class SlackNotifier:
    def check(self, options: Mapping[str, Any]) -> None:
        check_known(options, {"url", "channel", "username", "max_alerts"})
        check_url(options, "url")
        for key in ("channel", "username"):
            if key in options and not isinstance(options[key], str):
                raise ValueError(f"{key}: expected text")
        limit = options.get("max_alerts", 10)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 20:
            raise ValueError("max_alerts: expected a whole number from 1 to 20")

    def body(self, notification: Notification, options: Mapping[str, Any]) -> dict[str, Any]:
        limit = int(options.get("max_alerts", 10))
        shown = notification.alerts[:limit]
        hidden = len(notification.alerts) - len(shown) + notification.truncated
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": notification.title[:150]}}
        ]
        for payload in shown:
            blocks += alert_blocks(payload)
        footer = f"<{notification.alerts_url}|All alerts in goldenloop>"
        if hidden:
            footer = f"…and {hidden} more alert(s). " + footer
        blocks.append({"type": "context", "elements": [_mrkdwn(footer)]})
        body: dict[str, Any] = {"text": notification.summary[:3000], "blocks": blocks}
        for key in ("channel", "username"):
            if options.get(key):
                body[key] = options[key]
        return body

    def send(
        self, notification: Notification, options: Mapping[str, Any], http: RetryingHttp
    ) -> None:
        http.post_json(str(options["url"]), self.body(notification, options))


register_notifier("slack", SlackNotifier())
