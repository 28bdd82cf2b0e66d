"""The weekly review: top items, clusters, incidents, trends and golden cases landed."""

from __future__ import annotations

from datetime import timedelta

from conftest import BASE_TIME
from flags_helpers import add_feedback, add_outcome, llm, load, only, scored, turn

from goldenloop.flags import refresh_queue, run_incremental
from goldenloop.flags._sql import naive
from goldenloop.store.base import Store
from goldenloop.triage.weekly import weekly_report

NOW = BASE_TIME + timedelta(days=9)
#: Day 0 of the two weeks, half past midnight (the report's days are calendar days).
DAY0 = BASE_TIME.replace(hour=0, minute=30) - timedelta(days=4)


def _traffic(store: Store) -> None:
    """Two weeks: last week cheap and judged well; this week pricier and worse."""
    rows = []
    for day in range(14):
        when = DAY0 + timedelta(days=day)
        worse = day >= 7
        for n in range(3):
            session = f"d{day}-{n}"
            rows.append(turn(session, 1, start=when + timedelta(minutes=n), children=[
                llm(cost_usd=0.002 if worse else 0.001),
                scored("judge", 0.3 if worse and n == 0 else 0.9, "judge answer_correctness"),
            ]))  # fmt: skip
    load(store, *rows)
    for day in range(7, 14):
        when = DAY0 + timedelta(days=day)
        add_feedback(store, f"d{day}-0", when=when + timedelta(minutes=1))
        add_outcome(store, f"d{day}-1", success=True, when=when + timedelta(minutes=2))


def test_weekly_report_brings_the_agenda_together(store: Store) -> None:
    _traffic(store)
    run_incremental(store, [*only("thumbs_down"), *only("judge_low")], now=NOW)
    refresh_queue(store, now=NOW)
    report = weekly_report(store, now=NOW)
    data = report.to_dict()
    assert 1 <= len(report.top_items) <= 10
    assert all(i.last_seen_at >= naive(NOW - timedelta(days=7)) for i in report.top_items)
    assert report.clusters and sum(c.size for c in report.clusters) <= 7
    assert data["incidents"] == {
        "available": False,
        "note": "incident tracking not configured (no incidents table yet)",
        "rows": [],
    }
    this, last = data["trends"]["this_week"], data["trends"]["last_week"]
    assert this["cost_per_session"] > last["cost_per_session"]
    assert this["judge_pass_rate"] < last["judge_pass_rate"] == 1.0
    assert this["thumbs_down_per_1k_sessions"] > 0 and last["thumbs_down_per_1k_sessions"] == 0
    assert len(data["trends"]["days"]) == 7
    assert data["golden"]["landed_this_week"] == 0 and data["golden"]["target_met"] is False
    assert data["flags_this_week"]["thumbs_down"] == 7


def test_golden_cases_landed_this_week_count_production_cases_only(store: Store) -> None:
    from test_flags_feedback import _insert

    landed = naive(NOW - timedelta(days=2))
    for case_id, production, when in (("EU-1", True, landed), ("EU-2", True, landed),
                                      ("SYN-1", False, landed), ("OLD-1", True, landed - timedelta(days=20))):  # fmt: skip
        _insert(store, "golden_cases", {"case_id": case_id, "source": "manual", "source_kind": "manual",
                                        "production": production, "split": "golden", "created_at": when,
                                        "promoted_at": when, "synced_at": when})  # fmt: skip
    report = weekly_report(store, now=NOW)
    assert report.golden_landed == 2 and [c["case_id"] for c in report.golden.rows] == [
        "EU-1",
        "EU-2",
    ]
    assert not report.golden_target_met
