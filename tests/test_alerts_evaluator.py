"""The evaluator's state machine and its history in the store, the engine tick, and the
background scheduler that must never take the server down."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from alerts_helpers import Captured, capture_notifier

from goldenloop.alerts import RULE_TYPES, RuleType, parse_rule, register_rule_type, save_config
from goldenloop.alerts.evaluator import Evaluator
from goldenloop.alerts.model import Sample
from goldenloop.alerts.notifiers import NOTIFIERS
from goldenloop.alerts.rules import RuleContext, RuleSpec
from goldenloop.alerts.runtime import recent_ticks
from goldenloop.alerts.scheduler import AlertEngine, AlertScheduler
from goldenloop.alerts.states import load_alerts, load_history
from goldenloop.metrics.windows import TimeWindow
from goldenloop.store.base import Store

T0 = datetime(2024, 6, 4, 10, 0, tzinfo=UTC)
#: What the scripted rules report: rule name → {series label value: value} (value > 1: active).
SCRIPT: dict[str, dict[str, float]] = {}


class Scripted:
    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def from_spec(cls, spec: RuleSpec) -> Scripted:
        return cls(spec.rule)

    def lookback(self) -> timedelta:
        return timedelta(0)

    def load(self, ctx: RuleContext, span: TimeWindow) -> Scripted:
        if self.name in SCRIPT and "boom" in SCRIPT[self.name]:
            raise RuntimeError("scripted failure")
        return self

    def evaluate(self, at: datetime) -> list[Sample]:
        return [Sample({"locale": k}, v > 1, v, {"value": v}, f"{self.name} {k}={v}")
                for k, v in SCRIPT.get(self.name, {}).items()]  # fmt: skip


@pytest.fixture(autouse=True)
def scripted() -> Iterator[None]:
    register_rule_type(RuleType("scripted", Scripted.from_spec, "test"))
    SCRIPT.clear()
    yield
    RULE_TYPES.pop("scripted")


def _rule(name: str = "r", hold: str = "2m") -> object:
    return parse_rule({"name": name, "type": "scripted", "for": hold, "labels": {"team": "core"}})


def test_pending_fires_after_for_then_resolves_with_history(store: Store) -> None:
    rule = _rule()
    evaluator = Evaluator(store)
    SCRIPT["r"] = {"de-DE": 5.0}
    evaluator.evaluate([rule], T0)  # type: ignore[list-item]
    (alert,) = load_alerts(store)
    assert (alert.status, alert.labels) == (
        "pending",
        {"alertname": "r", "severity": "ticket", "team": "core", "locale": "de-DE"},
    )
    evaluator.evaluate([rule], T0 + timedelta(minutes=1))  # type: ignore[list-item]
    assert load_alerts(store)[0].status == "pending"
    SCRIPT["r"] = {"de-DE": 7.0}
    evaluator.evaluate([rule], T0 + timedelta(minutes=2))  # type: ignore[list-item]
    (alert,) = load_alerts(store)
    assert (alert.status, alert.fired_at, alert.details.numbers_at_fire) == (
        "firing",
        T0 + timedelta(minutes=2),
        {"value": 7.0},
    )
    SCRIPT["r"] = {"de-DE": 0.5}
    evaluator.evaluate([rule], T0 + timedelta(minutes=3))  # type: ignore[list-item]
    assert load_alerts(store) == []
    (resolved,) = load_alerts(store, ("resolved",))
    assert resolved.resolved_at == T0 + timedelta(minutes=3) and resolved.id == alert.id
    changes = [(h.from_status, h.to_status) for h in reversed(load_history(store, rule="r"))]
    assert changes == [("inactive", "pending"), ("pending", "firing"), ("firing", "resolved")]


def test_a_pending_alert_that_clears_never_fires(store: Store) -> None:
    rule = _rule()
    evaluator = Evaluator(store)
    SCRIPT["r"] = {"de-DE": 5.0}
    evaluator.evaluate([rule], T0)  # type: ignore[list-item]
    SCRIPT["r"] = {}
    evaluator.evaluate([rule], T0 + timedelta(minutes=1))  # type: ignore[list-item]
    assert load_alerts(store, ("pending", "firing", "resolved")) == []
    assert [h.to_status for h in load_history(store, rule="r")] == ["inactive", "pending"]


def test_keep_firing_for_rides_out_a_flapping_condition(store: Store) -> None:
    rule = parse_rule({"name": "r", "type": "scripted", "for": "0s", "keep_firing_for": "3m"})
    evaluator = Evaluator(store)
    for minute, value in enumerate([5.0, 0.5, 5.0, 0.5, 0.5, 0.5]):
        SCRIPT["r"] = {"de-DE": value}
        evaluator.evaluate([rule], T0 + timedelta(minutes=minute))
    (resolved,) = load_alerts(store, ("pending", "firing", "resolved"))
    # One episode: fired at 0, cleared at 1 and 3 without resolving, resolved 3m after 2.
    assert (resolved.status, resolved.fired_at) == ("resolved", T0)
    assert resolved.resolved_at == T0 + timedelta(minutes=5)


def test_a_failing_rule_keeps_its_alerts_and_does_not_stop_the_others(store: Store) -> None:
    good, bad = _rule("good", "0s"), _rule("bad", "0s")
    evaluator = Evaluator(store)
    SCRIPT.update(good={"de-DE": 5.0}, bad={"fr-FR": 5.0})
    evaluator.evaluate([good, bad], T0)  # type: ignore[list-item]
    assert {a.rule for a in load_alerts(store)} == {"good", "bad"}
    SCRIPT["bad"] = {"boom": 1.0}
    report = evaluator.evaluate([good, bad], T0 + timedelta(minutes=1))  # type: ignore[list-item]
    assert report.errors == {"bad": "RuntimeError: scripted failure"}
    assert {(a.rule, a.status) for a in load_alerts(store)} == {
        ("good", "firing"),
        ("bad", "firing"),
    }


def test_alerts_of_a_removed_rule_resolve(store: Store) -> None:
    evaluator = Evaluator(store)
    SCRIPT["gone"] = {"de-DE": 5.0}
    evaluator.evaluate([_rule("gone", "0s")], T0)  # type: ignore[list-item]
    evaluator.evaluate([], T0 + timedelta(minutes=1))
    (alert,) = load_alerts(store, ("resolved",))
    assert alert.rule == "gone"


@pytest.fixture
def captured() -> Iterator[Captured]:
    sink = capture_notifier("engine-capture")
    yield sink
    NOTIFIERS.pop("engine-capture")


CONFIG = """
route: {group_wait: 0s}
rules:
  - {name: r, type: scripted, for: 0s, severity: page}
notifiers:
  - {name: team, type: engine-capture, match: {severity: page}}
"""


def test_engine_tick_evaluates_dispatches_and_records(store: Store, captured: Captured) -> None:
    save_config(store, CONFIG, source="test")
    SCRIPT["r"] = {"de-DE": 5.0}
    engine = AlertEngine(store, base_url="http://gl.test", source="test")
    report = engine.tick(T0)
    assert engine.deliveries.wait(10)
    assert report.errors == {}
    assert report.evaluation is not None and report.evaluation.firing == 1
    assert [n.status for n in captured.sent] == ["firing"]
    (tick,) = recent_ticks(store)
    assert (tick.source, tick.firing, tick.notifications) == ("test", 1, 1)
    # A second engine (another server on the same database) does not evaluate meanwhile.
    other = AlertEngine(store, base_url="http://gl.test", source="other")
    assert (other.tick(T0 + timedelta(minutes=1)).skipped or "").startswith("another process")
    engine.release()
    assert other.tick(T0 + timedelta(minutes=1)).skipped is None
    for e in (engine, other):
        e.deliveries.close()


def test_engine_reports_a_broken_config_instead_of_raising(store: Store) -> None:
    engine = AlertEngine(store, base_url="http://gl.test", alerts_file="/nonexistent/alerts.yaml")
    report = engine.tick(T0)
    assert "cannot read the alerts config" in report.errors["config"]
    assert recent_ticks(store)[0].errors == report.errors
    engine.deliveries.close()


def test_the_scheduler_survives_every_failure_and_shows_it(store: Store) -> None:
    calls = threading.Event()

    def broken_runtime() -> object:
        calls.set()
        raise RuntimeError("config store unreachable")

    engine = AlertEngine(store, base_url="http://gl.test", runtime=broken_runtime)  # type: ignore[arg-type]
    scheduler = AlertScheduler(engine, initial_delay_s=0.0, dispatch_every_s=0.05).start()
    try:
        assert calls.wait(10)
        report = scheduler.run_once()
        assert report.errors["config"] == "RuntimeError: config store unreachable"
        assert scheduler.running
        assert scheduler.status()["last_error"] == "config: RuntimeError: config store unreachable"
    finally:
        scheduler.stop()
    assert not scheduler.running
