"""Notifiers against a real HTTP receiver on a loopback port: exact payloads, retries
with backoff on 429/503, no retry on 400, and one failing notifier never holding up
another."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alerts_helpers import Receiver, capture_notifier

from goldenloop.alerts.config import RouteConfig
from goldenloop.alerts.delivery import Deliveries, recent_deliveries
from goldenloop.alerts.model import Alert, AlertDetails, Exemplar, SliceShare
from goldenloop.alerts.notifiers import NOTIFIERS, DeliveryError, RetryingHttp, RetryPolicy
from goldenloop.alerts.payload import AlertPayload, Notification
from goldenloop.store.base import Store

BASE = "http://goldenloop.test:4318"
FIRED = datetime(2024, 6, 4, 10, 44, tzinfo=UTC)


def _alert(status: str = "firing", locale: str = "de-DE") -> Alert:
    return Alert(
        id="a1", rule="refund-burn", fingerprint=f"fp-{locale}",
        labels={"alertname": "refund-burn", "severity": "page", "slo": "refund-ok", "locale": locale},
        severity="page", status=status,  # type: ignore[arg-type]
        active_at=FIRED, last_eval_at=FIRED + timedelta(minutes=20), fired_at=FIRED,
        resolved_at=FIRED + timedelta(minutes=20) if status == "resolved" else None, value=16.7,
        summary="SLO refund-ok is burning its error budget 16.7× over 1h",
        numbers={"burn_rate_1h": 3.1},
        details=AlertDetails(
            rule_type="slo_burn", numbers_at_fire={"burn_rate_1h": 16.7, "burn_rate_5m": 37.5, "threshold": 14.4},
            exemplar=Exemplar("sess-42", "abc123", "p-a9f2", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", "refund-assistant"),
            slice={"project": "refund-assistant", "locale": locale, "flag.eu_banner": "on"},
            breakdown=[SliceShare("flag.eu_banner", "on", 0.9, 3.0)], annotations={"runbook": "https://wiki/refund"},
        ),
    )  # fmt: skip


def _notification(*alerts: Alert, key: str = '{alertname="refund-burn"}') -> Notification:
    return Notification("oncall", key, {"alertname": "refund-burn"},
                        [AlertPayload(a, BASE) for a in alerts], BASE, FIRED)  # fmt: skip


CONTEXT: dict[str, Any] = {
    "rule": "refund-burn", "rule_type": "slo_burn", "severity": "page",
    "summary": "SLO refund-ok is burning its error budget 16.7× over 1h",
    "session_id": "sess-42", "trace_id": "abc123", "trace_url": f"{BASE}/traces/abc123",
    "prompt_version": "p-a9f2", "model": "gpt-4o-mini", "model_version": "gpt-4o-mini-2024-07-18",
    "slice": {"project": "refund-assistant", "locale": "de-DE", "flag.eu_banner": "on"},
    "breakdown": [{"dimension": "flag.eu_banner", "value": "on", "share": 0.9, "lift": 3.0}],
    "numbers": {"burn_rate_1h": 16.7, "burn_rate_5m": 37.5, "threshold": 14.4},
    "current": {"burn_rate_1h": 3.1}, "value": 16.7, "alert_url": f"{BASE}/alerts?rule=refund-burn",
}  # fmt: skip
ANNOTATIONS = {
    "runbook": "https://wiki/refund", "summary": "SLO refund-ok is burning its error budget 16.7× over 1h",
    "session_id": "sess-42", "trace_url": f"{BASE}/traces/abc123", "prompt_version": "p-a9f2",
    "model": "gpt-4o-mini", "slice": "project=refund-assistant, locale=de-DE, flag.eu_banner=on",
    "numbers": "burn_rate_1h=16.7, burn_rate_5m=37.5, threshold=14.4",
}  # fmt: skip


def _send(kind: str, notification: Notification, **options: Any) -> None:
    NOTIFIERS[kind].check(options)
    NOTIFIERS[kind].send(notification, options, RetryingHttp(RetryPolicy(), sleep=lambda s: None))


def test_webhook_posts_the_alertmanager_body_with_goldenloop_context() -> None:
    with Receiver() as rx:
        _send(
            "webhook",
            _notification(_alert()),
            url=rx.url + "/hook",
            headers={"Authorization": "Bearer t"},
        )
    (request,) = rx.requests
    assert request.headers["Authorization"] == "Bearer t"
    assert request.body == {
        "version": "4", "groupKey": '{alertname="refund-burn"}', "truncatedAlerts": 0,
        "status": "firing", "receiver": "oncall", "groupLabels": {"alertname": "refund-burn"},
        "commonLabels": {"alertname": "refund-burn", "severity": "page", "slo": "refund-ok", "locale": "de-DE"},
        "commonAnnotations": ANNOTATIONS, "externalURL": f"{BASE}/alerts",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "refund-burn", "severity": "page", "slo": "refund-ok", "locale": "de-DE"},
            "annotations": ANNOTATIONS, "startsAt": "2024-06-04T10:44:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": f"{BASE}/alerts?rule=refund-burn", "fingerprint": "fp-de-DE", "goldenloop": CONTEXT,
        }],
    }  # fmt: skip


def test_webhook_truncates_to_max_alerts() -> None:
    with Receiver() as rx:
        _send(
            "webhook",
            _notification(_alert(), _alert(locale="fr-FR")),
            url=rx.url + "/hook",
            max_alerts=1,
        )
    body = rx.requests[0].body
    assert (len(body["alerts"]), body["truncatedAlerts"]) == (1, 1)
    assert body["commonLabels"] == {
        "alertname": "refund-burn",
        "severity": "page",
        "slo": "refund-ok",
    }


def test_slack_posts_text_and_blocks_with_a_trace_button() -> None:
    with Receiver() as rx:
        _send("slack", _notification(_alert()), url=rx.url + "/slack")
    assert rx.requests[0].body == {
        "text": "[FIRING:1] refund-burn: SLO refund-ok is burning its error budget 16.7× over 1h",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "[FIRING:1] refund-burn"}},
            {"type": "section",
             "text": {"type": "mrkdwn", "text": ":rotating_light: *refund-burn* (page, firing): "
                      "SLO refund-ok is burning its error budget 16.7× over 1h"},
             "fields": [{"type": "mrkdwn", "text": "*Session*\n`sess-42`"},
                        {"type": "mrkdwn", "text": "*Prompt version*\n`p-a9f2`"},
                        {"type": "mrkdwn", "text": "*Model*\n`gpt-4o-mini`"},
                        {"type": "mrkdwn", "text": "*Slice*\nproject=refund-assistant, locale=de-DE, flag.eu_banner=on"}]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "burn_rate_1h=16.7, burn_rate_5m=37.5, threshold=14.4"}]},
            {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open trace"},
                                              "url": f"{BASE}/traces/abc123"}]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{BASE}/alerts|All alerts in goldenloop>"}]},
        ],
    }  # fmt: skip


def test_pagerduty_triggers_then_resolves_with_a_stable_dedup_key() -> None:
    firing, resolved = _notification(_alert()), _notification(_alert("resolved"))
    with Receiver(ok_status=202) as rx:
        _send("pagerduty", firing, url=rx.url + "/v2/enqueue", routing_key="R0UT1NGKEY")
        _send("pagerduty", resolved, url=rx.url + "/v2/enqueue", routing_key="R0UT1NGKEY")
    trigger, resolve = rx.bodies("/v2/enqueue")
    assert trigger == {
        "routing_key": "R0UT1NGKEY", "event_action": "trigger", "dedup_key": firing.dedup_key,
        "payload": {
            "summary": "[FIRING:1] refund-burn: SLO refund-ok is burning its error budget 16.7× over 1h",
            "source": "goldenloop.test:4318", "severity": "critical", "timestamp": "2024-06-04T10:44:00Z",
            "group": "refund-burn", "class": "slo_burn", "component": "refund-assistant",
            "custom_details": {"group_labels": {"alertname": "refund-burn"}, "firing": 1, "resolved": 0,
                               "alerts": [CONTEXT]},
        },
        "links": [{"href": f"{BASE}/traces/abc123", "text": "Trace of session sess-42 (refund-burn)"},
                  {"href": f"{BASE}/alerts", "text": "Alerts in goldenloop"}],
        "client": "goldenloop", "client_url": f"{BASE}/alerts",
    }  # fmt: skip
    assert resolve == {
        "routing_key": "R0UT1NGKEY",
        "event_action": "resolve",
        "dedup_key": firing.dedup_key,
    }
    assert firing.dedup_key == resolved.dedup_key
    assert _notification(_alert(), key='{alertname="other"}').dedup_key != firing.dedup_key


def test_429_and_503_are_retried_with_backoff() -> None:
    sleeps: list[float] = []
    with Receiver({"/hook": [429, 503]}) as rx:
        http = RetryingHttp(RetryPolicy(initial_backoff=0.25), sleep=sleeps.append)
        NOTIFIERS["webhook"].send(_notification(_alert()), {"url": rx.url + "/hook"}, http)
    assert len(rx.requests) == 3
    assert rx.requests[0].body == rx.requests[2].body
    # Retry-After: 1 on the 429 wins over the first backoff step; then 2 × 0.25 s.
    assert sleeps == [1.0, 0.5]
    assert (http.attempts, http.last_status) == (3, 200)


def test_400_is_not_retried() -> None:
    sleeps: list[float] = []
    with Receiver({"/hook": [400]}) as rx:
        http = RetryingHttp(RetryPolicy(), sleep=sleeps.append)
        with pytest.raises(DeliveryError) as info:
            NOTIFIERS["webhook"].send(_notification(_alert()), {"url": rx.url + "/hook"}, http)
    assert len(rx.requests) == 1 and sleeps == []
    assert (info.value.status, info.value.attempts) == (400, 1)


def test_persistent_5xx_gives_up_after_max_attempts() -> None:
    sleeps: list[float] = []
    with Receiver(ok_status=503) as rx:
        http = RetryingHttp(
            RetryPolicy(max_attempts=4, initial_backoff=1, max_backoff=3), sleep=sleeps.append
        )
        with pytest.raises(DeliveryError, match="HTTP 503"):
            NOTIFIERS["slack"].send(_notification(_alert()), {"url": rx.url + "/slack"}, http)
    assert len(rx.requests) == 4
    assert sleeps == [1.0, 2.0, 3.0]  # doubling, capped at max_backoff


def _route(name: str, kind: str, **options: Any) -> RouteConfig:
    return RouteConfig(name, kind, options=options)


def test_a_failing_notifier_does_not_hold_up_another(store: Store) -> None:
    gate = threading.Event()
    deliveries = Deliveries(store, sleep=lambda s: gate.wait(10))
    with Receiver({"/broken": [503, 503]}) as rx:
        done = threading.Event()
        deliveries.submit(
            _route("broken", "webhook", url=rx.url + "/broken"),
            _notification(_alert()),
            lambda n: None,
        )
        deliveries.submit(_route("fine", "webhook", url=rx.url + "/fine"), _notification(_alert()),
                          lambda n: done.set())  # fmt: skip
        # The healthy notifier delivers while the broken one is stuck in its backoff.
        assert done.wait(10)
        assert deliveries.in_flight("broken", _notification(_alert()).group_key)
        gate.set()
        assert deliveries.wait(10)
    deliveries.close()
    records = {r.route: r for r in recent_deliveries(store)}
    assert records["fine"].ok and records["fine"].attempts == 1
    assert records["broken"].ok and records["broken"].attempts == 3  # recovered on the third try
    assert (deliveries.sent, deliveries.failed) == (2, 0)


def test_failures_are_recorded_and_a_full_lane_refuses(store: Store) -> None:
    gate = threading.Event()
    deliveries = Deliveries(store, sleep=lambda s: gate.wait(10), max_pending=1,
                            policy=RetryPolicy(max_attempts=2))  # fmt: skip
    with Receiver(ok_status=500) as rx:
        route = _route("down", "webhook", url=rx.url + "/down")
        assert deliveries.submit(route, _notification(_alert()), lambda n: None)
        assert not deliveries.submit(route, _notification(_alert()), lambda n: None)
        gate.set()
        assert deliveries.wait(10)
    deliveries.close()
    failed = recent_deliveries(store, failed_only=True)
    assert len(failed) == 2
    reasons = sorted(r.error or "" for r in failed)
    assert "HTTP 500" in reasons[0] and reasons[1].startswith(
        "not sent: 1 notifications already queued"
    )
    assert {r.http_status for r in failed} == {500, None}


def test_user_notifiers_register_the_same_way(store: Store) -> None:
    captured = capture_notifier("test-capture")
    try:
        deliveries = Deliveries(store)
        assert deliveries.submit(
            _route("mine", "test-capture"), _notification(_alert()), lambda n: None
        )
        assert deliveries.wait(10)
        deliveries.close()
        assert [n.route for n in captured.sent] == ["oncall"]
        captured.fail = True
        deliveries = Deliveries(store)
        deliveries.submit(_route("mine", "test-capture"), _notification(_alert()), lambda n: None)
        deliveries.wait(10)
        deliveries.close()
        (failure,) = recent_deliveries(store, failed_only=True)
        assert failure.error == "RuntimeError: capture told to fail"
    finally:
        NOTIFIERS.pop("test-capture")
