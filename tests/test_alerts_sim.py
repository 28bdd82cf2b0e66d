"""Rules against simulated production traffic: they fire on an injected incident,
inside its window, with an exemplar from the incident; and a clean week pages nobody."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from alerts_helpers import clean_config, incident_config, load_sim

from goldenloop.alerts import backtest, parse_rule
from goldenloop.alerts.evaluator import Evaluator
from goldenloop.alerts.states import load_alerts
from goldenloop.store.base import Store

TURNS_OK = {"name": "turns-ok", "objective": "99%", "sli": {"kind": "turn", "checks": ["no_error"]}}
#: The page-severity rules a team would start with.
PAGE_RULES: list[dict[str, Any]] = [
    {"name": "answers-burn", "type": "slo_burn", "slo": TURNS_OK, "min_events": 20},
    {"name": "answers-below-slo", "type": "success_below_slo", "slo": TURNS_OK, "window": "30m",
     "min_events": 20},
    {"name": "breaker-spike", "type": "breaker_spike"},
]  # fmt: skip


def test_burn_rule_pages_during_the_provider_outage_and_nowhere_else(store: Store) -> None:
    manifest = load_sim(store, incident_config())
    outage = manifest.scenarios["provider-outage"]
    start, end = datetime.fromisoformat(outage.start), datetime.fromisoformat(outage.end)
    rule = parse_rule(PAGE_RULES[0])
    sim_start = datetime.fromisoformat(manifest.config["start"])
    result = backtest(store, rule, sim_start, sim_start + timedelta(days=2))
    assert result.pages, "the outage did not page"
    for page in result.pages:
        assert page.fired_at is not None
        # Inside the outage (a page needs the hour window to fill up with failures).
        assert start <= page.fired_at <= end, page
    first = result.pages[0].fired_at
    assert first is not None and first - start <= timedelta(minutes=50)


def test_outage_page_carries_an_exemplar_from_the_outage(store: Store) -> None:
    manifest = load_sim(store, incident_config())
    outage = manifest.scenarios["provider-outage"]
    rule = parse_rule(PAGE_RULES[0])
    start = datetime.fromisoformat(outage.start)
    fired = backtest(store, rule, start, start + timedelta(hours=1)).pages[0].fired_at
    assert fired is not None
    Evaluator(store).evaluate([rule], fired)
    (alert,) = [a for a in load_alerts(store) if a.severity == "page"]
    exemplar = alert.details.exemplar
    assert exemplar is not None
    assert exemplar.session_id in outage.sessions
    assert exemplar.trace_id and exemplar.prompt_version and exemplar.model
    assert alert.details.slice.get("project")  # the affected project, from the exemplar


def test_a_clean_simulated_week_pages_nobody(store: Store) -> None:
    config = clean_config()
    load_sim(store, config)
    lines = []
    for definition in PAGE_RULES:
        rule = parse_rule(definition)
        result = backtest(store, rule, config.start, config.end)
        lines.append(f"{rule.name:20s} {result.evaluations} evaluations, "
                     f"false pages per simulated week: {result.pages_per_week:.2f}")  # fmt: skip
        assert result.pages == [], (rule.name, [p.to_dict() for p in result.pages])
    print("\n" + "\n".join(lines))


def test_success_below_slo_pages_once_the_outage_held_for_15_minutes(store: Store) -> None:
    manifest = load_sim(store, incident_config())
    outage = manifest.scenarios["provider-outage"]
    start, end = datetime.fromisoformat(outage.start), datetime.fromisoformat(outage.end)
    config = incident_config()
    result = backtest(store, parse_rule(PAGE_RULES[1]), config.start, config.end)
    assert result.pages
    for page in result.pages:
        assert page.fired_at is not None and page.pending_at is not None
        assert page.fired_at - page.pending_at == timedelta(minutes=15)  # the `for` hold
        # Failures stay in the 30-minute window for half an hour after the outage.
        assert start + timedelta(minutes=15) <= page.fired_at <= end + timedelta(minutes=30), page
        assert (
            page.numbers_at_fire["p_value"] is not None and page.numbers_at_fire["p_value"] < 0.05
        )


def test_breaker_spike_stays_quiet_at_low_volume(store: Store) -> None:
    """300 sessions a day trip the breaker a few times; min_bad and the baseline keep it
    from paging on them."""
    config = incident_config()
    load_sim(store, config)
    assert backtest(store, parse_rule(PAGE_RULES[2]), config.start, config.end).pages == []
