"""Alertmanager-style grouping, dedup, repeat, silences and resolved notifications,
driven by an injected clock (no sleeping)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from alerts_helpers import Captured, capture_notifier

from goldenloop.alerts.config import Grouping, RouteConfig
from goldenloop.alerts.delivery import Deliveries
from goldenloop.alerts.grouping import AlertGroup, Dispatcher, load_groups, needs_update
from goldenloop.alerts.matchers import parse_matchers
from goldenloop.alerts.model import Alert, fingerprint
from goldenloop.alerts.notifiers import NOTIFIERS
from goldenloop.alerts.silences import SilenceError, create_silence, expire_silence
from goldenloop.alerts.states import run_statements, upsert_alert
from goldenloop.store.base import Store

T0 = datetime(2024, 6, 4, 10, 0, tzinfo=UTC)
GROUPING = Grouping(("alertname",), timedelta(seconds=30), timedelta(minutes=5), timedelta(hours=4))


@pytest.fixture
def captured() -> Iterator[Captured]:
    sink = capture_notifier("grouping-capture")
    yield sink
    NOTIFIERS.pop("grouping-capture")


def _route(
    name: str = "team", matchers: object = None, grouping: Grouping = GROUPING
) -> RouteConfig:
    return RouteConfig(name, "grouping-capture", parse_matchers(matchers), grouping)


def _put(store: Store, locale: str, status: str = "firing", *, rule: str = "refund-burn",
         severity: str = "page", at: datetime = T0) -> Alert:  # fmt: skip
    labels = {"alertname": rule, "severity": severity, "locale": locale}
    alert = Alert(
        id=f"{rule}-{locale}", rule=rule, fingerprint=fingerprint(labels), labels=labels,
        severity=severity, status=status, active_at=at, last_eval_at=at,  # type: ignore[arg-type]
        fired_at=at, resolved_at=at if status == "resolved" else None, summary=f"{rule} {locale}",
    )  # fmt: skip
    run_statements(store, [upsert_alert(alert, at)])
    return alert


class Harness:
    def __init__(self, store: Store, captured: Captured, routes: list[RouteConfig]) -> None:
        self.store, self.captured, self.routes = store, captured, routes
        self.deliveries = Deliveries(store, sleep=lambda s: None)
        self.dispatcher = Dispatcher(store, self.deliveries, base_url="http://gl.test")

    def at(self, moment: datetime) -> list[tuple[str, str, list[tuple[str, str]]]]:
        """Dispatch at ``moment``; what was sent: (route, status, [(locale, alert status)])."""
        before = len(self.captured.sent)
        self.dispatcher.dispatch(self.routes, moment)
        assert self.deliveries.wait(10)
        return [
            (n.route, n.status, sorted((p.alert.labels["locale"], p.status) for p in n.alerts))
            for n in self.captured.sent[before:]
        ]


def test_first_notification_waits_for_group_wait(store: Store, captured: Captured) -> None:
    h = Harness(store, captured, [_route()])
    _put(store, "de-DE")
    assert h.at(T0) == []
    assert h.at(T0 + timedelta(seconds=29)) == []
    _put(store, "fr-FR", at=T0 + timedelta(seconds=20))  # arrives while the group waits
    assert h.at(T0 + timedelta(seconds=30)) == [
        ("team", "firing", [("de-DE", "firing"), ("fr-FR", "firing")])
    ]


def test_new_alerts_wait_for_the_group_interval_then_repeat_after_repeat_interval(
    store: Store, captured: Captured
) -> None:
    h = Harness(store, captured, [_route()])
    _put(store, "de-DE")
    h.at(T0)
    assert len(h.at(T0 + timedelta(seconds=30))) == 1
    _put(store, "fr-FR", at=T0 + timedelta(minutes=1))
    assert h.at(T0 + timedelta(minutes=1)) == []  # not before the next flush
    assert h.at(T0 + timedelta(minutes=5, seconds=30)) == [
        ("team", "firing", [("de-DE", "firing"), ("fr-FR", "firing")])
    ]
    # Unchanged: nothing at the following flushes …
    for minutes in (11, 60, 235):
        assert h.at(T0 + timedelta(minutes=minutes)) == []
    # … until repeat_interval (4h) after the last notification.
    assert h.at(T0 + timedelta(hours=4, minutes=6)) == [
        ("team", "firing", [("de-DE", "firing"), ("fr-FR", "firing")])
    ]


def test_resolved_alerts_are_notified_and_the_group_then_closes(
    store: Store, captured: Captured
) -> None:
    h = Harness(store, captured, [_route()])
    _put(store, "de-DE")
    _put(store, "fr-FR")
    h.at(T0)
    h.at(T0 + timedelta(seconds=30))
    _put(store, "de-DE", "resolved", at=T0 + timedelta(minutes=2))
    assert h.at(T0 + timedelta(minutes=5, seconds=30)) == [
        ("team", "firing", [("de-DE", "resolved"), ("fr-FR", "firing")])
    ]
    _put(store, "fr-FR", "resolved", at=T0 + timedelta(minutes=7))
    assert h.at(T0 + timedelta(minutes=10, seconds=30)) == [
        ("team", "resolved", [("fr-FR", "resolved")])
    ]
    assert h.at(T0 + timedelta(minutes=15, seconds=30)) == []
    assert load_groups(store) == []


def test_an_alert_that_resolves_before_the_first_flush_is_never_sent(
    store: Store, captured: Captured
) -> None:
    h = Harness(store, captured, [_route()])
    _put(store, "de-DE")
    h.at(T0)
    _put(store, "de-DE", "resolved", at=T0 + timedelta(seconds=10))
    assert h.at(T0 + timedelta(seconds=30)) == []
    assert load_groups(store) == []


def test_group_by_splits_notifications_and_routes_match_labels(
    store: Store, captured: Captured
) -> None:
    by_locale = Grouping(
        ("alertname", "locale"), timedelta(0), timedelta(minutes=5), timedelta(hours=4)
    )
    h = Harness(store, captured, [_route("oncall", {"severity": "page"}, by_locale),
                                  _route("tickets", ["severity=ticket"])])  # fmt: skip
    _put(store, "de-DE")
    _put(store, "fr-FR")
    _put(store, "en-US", severity="ticket", rule="slow-burn")
    sent = h.at(T0)
    assert sorted(sent) == [("oncall", "firing", [("de-DE", "firing")]),
                            ("oncall", "firing", [("fr-FR", "firing")])]  # fmt: skip
    assert h.at(T0 + timedelta(seconds=30)) == [("tickets", "firing", [("en-US", "firing")])]


def test_silences_mute_matching_alerts_until_they_end(store: Store, captured: Captured) -> None:
    h = Harness(store, captured, [_route()])
    silence = create_silence(
        store, ["locale=~fr-.*"], now=T0, duration=timedelta(hours=1), comment="known"
    )
    _put(store, "fr-FR")
    h.at(T0)
    assert h.at(T0 + timedelta(seconds=30)) == []  # the only alert is silenced
    _put(store, "de-DE", at=T0 + timedelta(minutes=1))
    assert h.at(T0 + timedelta(minutes=5, seconds=30)) == [
        ("team", "firing", [("de-DE", "firing")])
    ]
    expire_silence(store, silence.id, now=T0 + timedelta(minutes=6))
    assert h.at(T0 + timedelta(minutes=10, seconds=30)) == [
        ("team", "firing", [("de-DE", "firing"), ("fr-FR", "firing")])
    ]


def test_silences_end_at_their_end_time(store: Store, captured: Captured) -> None:
    h = Harness(store, captured, [_route()])
    create_silence(store, {"alertname": "refund-burn"}, now=T0, ends_at=T0 + timedelta(minutes=10))
    _put(store, "de-DE")
    for minutes in (0, 1, 6):
        assert h.at(T0 + timedelta(minutes=minutes)) == []
    assert h.at(T0 + timedelta(minutes=11)) == [("team", "firing", [("de-DE", "firing")])]


def test_a_failed_delivery_is_retried_at_the_next_flush(store: Store, captured: Captured) -> None:
    h = Harness(store, captured, [_route()])
    _put(store, "de-DE")
    h.at(T0)
    captured.fail = True
    assert h.at(T0 + timedelta(seconds=30)) == []
    captured.fail = False
    assert h.at(T0 + timedelta(minutes=1)) == []  # not before the group interval
    assert h.at(T0 + timedelta(minutes=5, seconds=30)) == [
        ("team", "firing", [("de-DE", "firing")])
    ]


@pytest.mark.parametrize(
    ("matchers", "message"),
    [
        ([], "at least one"),
        (["locale=~.*"], "must not match an empty label"),
        (["locale=~("], "bad regex"),
        (["nonsense"], "must look like name=value"),
    ],
)
def test_bad_silences_are_refused(store: Store, matchers: list[str], message: str) -> None:
    with pytest.raises(SilenceError, match=message):
        create_silence(store, matchers, now=T0, duration=timedelta(hours=1))


def test_needs_update_follows_alertmanager() -> None:
    group = AlertGroup("g", "r", "{}", {}, T0, T0, T0, {"a", "b"}, set())
    now, repeat = T0 + timedelta(minutes=5), timedelta(hours=4)
    assert not needs_update(group, {"a", "b"}, set(), now=now, repeat=repeat, send_resolved=True)
    assert needs_update(group, {"a", "b", "c"}, set(), now=now, repeat=repeat, send_resolved=True)
    assert needs_update(group, {"a"}, {"b"}, now=now, repeat=repeat, send_resolved=True)
    assert not needs_update(group, {"a"}, {"b"}, now=now, repeat=repeat, send_resolved=False)
    assert needs_update(
        group, {"a", "b"}, set(), now=T0 + repeat, repeat=repeat, send_resolved=True
    )
    never_sent = AlertGroup("g", "r", "{}", {}, T0, T0)
    assert needs_update(never_sent, {"a"}, set(), now=now, repeat=repeat, send_resolved=True)
    assert not needs_update(never_sent, set(), {"a"}, now=now, repeat=repeat, send_resolved=True)
