"""The weekly review agenda (``goldenloop report weekly``).

One page for the weekly triage meeting: the top ten flagged items by impact, the
biggest failure clusters, open incidents that lack an eval follow-up, pass-rate and
cost trends (this week vs last), how many production cases landed in the golden set
against the 5–10 a week target, and the time-to-eval clock.

Sections that depend on other parts of goldenloop (incidents, the golden-set index,
eval runs) read their tables when they exist and say plainly when they do not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from goldenloop.flags._sql import naive, table_columns, table_exists, utcnow
from goldenloop.flags.feedback import TimeToEval, time_to_eval
from goldenloop.model import BILLABLE_KINDS
from goldenloop.store.base import Store
from goldenloop.triage.clustering import Cluster, ClusterParams, cluster_flags, latest_run
from goldenloop.triage.queue import QueueFilter, TriageItem, count_items, list_items

GOLDEN_TARGET = (5, 10)
_BILLABLE = ", ".join(f"'{k}'" for k in BILLABLE_KINDS)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() + "Z" if value is not None else None


@dataclass
class DayStats:
    day: datetime
    sessions: int = 0
    cost_usd: float = 0.0
    judged: int = 0
    judge_passed: int = 0
    outcomes: int = 0
    outcomes_ok: int = 0
    thumbs_down: int = 0
    eval_runs: int = 0
    eval_pass_rate: float | None = None

    @property
    def judge_pass_rate(self) -> float | None:
        return self.judge_passed / self.judged if self.judged else None

    @property
    def success_rate(self) -> float | None:
        return self.outcomes_ok / self.outcomes if self.outcomes else None

    @property
    def cost_per_session(self) -> float | None:
        return self.cost_usd / self.sessions if self.sessions else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.date().isoformat(),
            "sessions": self.sessions,
            "cost_usd": round(self.cost_usd, 6),
            "cost_per_session": _round(self.cost_per_session, 6),
            "judge_pass_rate": _round(self.judge_pass_rate),
            "outcome_success_rate": _round(self.success_rate),
            "thumbs_down": self.thumbs_down,
            "eval_runs": self.eval_runs,
            "eval_pass_rate": _round(self.eval_pass_rate),
        }


def _round(value: float | None, digits: int = 4) -> float | None:
    return round(value, digits) if value is not None else None


@dataclass
class Trend:
    """Totals for one week."""

    sessions: int
    cost_usd: float
    judge_pass_rate: float | None
    outcome_success_rate: float | None
    thumbs_down_per_1k: float | None
    eval_pass_rate: float | None
    cost_per_successful_task: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "cost_usd": round(self.cost_usd, 6),
            "cost_per_session": _round(self.cost_usd / self.sessions, 6) if self.sessions else None,
            "cost_per_successful_task": _round(self.cost_per_successful_task, 6),
            "judge_pass_rate": _round(self.judge_pass_rate),
            "outcome_success_rate": _round(self.outcome_success_rate),
            "thumbs_down_per_1k_sessions": _round(self.thumbs_down_per_1k, 2),
            "eval_pass_rate": _round(self.eval_pass_rate),
        }


@dataclass
class Section:
    """A section fed by another module's table: ``available`` says whether it exists."""

    available: bool
    note: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"available": self.available, "note": self.note, "rows": self.rows}


@dataclass
class WeeklyReport:
    week_from: datetime
    week_to: datetime
    top_items: list[TriageItem]
    clusters: list[Cluster]
    incidents: Section
    days: list[DayStats]
    this_week: Trend
    last_week: Trend
    golden: Section
    golden_landed: int
    queue_counts: dict[str, int]
    time_to_eval: TimeToEval
    flags_this_week: dict[str, int]

    @property
    def golden_target_met(self) -> bool:
        return self.golden_landed >= GOLDEN_TARGET[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "week_from": _iso(self.week_from),
            "week_to": _iso(self.week_to),
            "top_items": [i.to_dict(self.week_to) for i in self.top_items],
            "clusters": [c.to_dict() for c in self.clusters],
            "incidents": self.incidents.to_dict(),
            "trends": {
                "this_week": self.this_week.to_dict(),
                "last_week": self.last_week.to_dict(),
                "days": [d.to_dict() for d in self.days],
            },
            "golden": {
                **self.golden.to_dict(),
                "landed_this_week": self.golden_landed,
                "target": list(GOLDEN_TARGET),
                "target_met": self.golden_target_met,
            },
            "queue": self.queue_counts,
            "time_to_eval": self.time_to_eval.to_dict(),
            "flags_this_week": self.flags_this_week,
        }


def _day_stats(store: Store, start: datetime, end: datetime) -> dict[datetime, DayStats]:
    days = {
        start + timedelta(days=i): DayStats(start + timedelta(days=i))
        for i in range((end - start).days)
    }
    spans = store.fetch(
        "SELECT date_trunc('day', start_time), count(DISTINCT session_id), "
        f"sum(CASE WHEN kind IN ({_BILLABLE}) THEN coalesce(cost_usd, 0) ELSE 0 END), "
        "sum(CASE WHEN kind = 'judge' AND score IS NOT NULL THEN 1 ELSE 0 END), "
        "sum(CASE WHEN kind = 'judge' AND score >= 0.5 THEN 1 ELSE 0 END) "
        "FROM spans WHERE start_time >= ? AND start_time < ? GROUP BY 1",
        (start, end),
    )
    for day, sessions, cost, judged, passed in spans:
        stats = days.get(day)
        if stats is not None:
            stats.sessions, stats.cost_usd = int(sessions), float(cost or 0.0)
            stats.judged, stats.judge_passed = int(judged or 0), int(passed or 0)
    for day, total, ok in store.fetch(
        "SELECT date_trunc('day', created_at), count(*), "
        "sum(CASE WHEN success THEN 1 ELSE 0 END) FROM outcomes "
        "WHERE created_at >= ? AND created_at < ? GROUP BY 1",
        (start, end),
    ):
        if day in days:
            days[day].outcomes, days[day].outcomes_ok = int(total), int(ok or 0)
    for day, downs in store.fetch(
        "SELECT date_trunc('day', created_at), count(*) FROM feedback WHERE rating = 'down' "
        "AND created_at >= ? AND created_at < ? GROUP BY 1",
        (start, end),
    ):
        if day in days:
            days[day].thumbs_down = int(downs)
    if table_exists(store, "eval_runs"):
        for day, runs, rate in store.fetch(
            "SELECT date_trunc('day', started_at), count(*), avg(pass_rate) FROM eval_runs "
            "WHERE started_at >= ? AND started_at < ? GROUP BY 1",
            (start, end),
        ):
            if day in days:
                days[day].eval_runs = int(runs)
                days[day].eval_pass_rate = float(rate) if rate is not None else None
    return days


def _trend(days: list[DayStats]) -> Trend:
    sessions = sum(d.sessions for d in days)
    cost = sum(d.cost_usd for d in days)
    judged = sum(d.judged for d in days)
    outcomes = sum(d.outcomes for d in days)
    ok = sum(d.outcomes_ok for d in days)
    evals = [
        (d.eval_runs, d.eval_pass_rate)
        for d in days
        if d.eval_runs and d.eval_pass_rate is not None
    ]
    runs = sum(n for n, _ in evals)
    return Trend(
        sessions=sessions,
        cost_usd=cost,
        judge_pass_rate=sum(d.judge_passed for d in days) / judged if judged else None,
        outcome_success_rate=ok / outcomes if outcomes else None,
        thumbs_down_per_1k=1000 * sum(d.thumbs_down for d in days) / sessions if sessions else None,
        eval_pass_rate=sum(n * (r or 0.0) for n, r in evals) / runs if runs else None,
        cost_per_successful_task=cost / ok if ok else None,
    )


def incidents_without_evals(store: Store) -> Section:
    """Open incidents with no golden case linked to them."""
    if not table_exists(store, "incidents"):
        return Section(False, "incident tracking not configured (no incidents table yet)")
    columns = table_columns(store, "incidents")
    key = next((c for c in ("id", "incident_id") if c in columns), None)
    if key is None:
        return Section(False, "the incidents table has no id column this report understands")
    title = next((c for c in ("title", "summary", "name") if c in columns), key)
    opened = next((c for c in ("opened_at", "started_at", "created_at") if c in columns), None)
    status_filter = (
        "AND lower(coalesce(i.status, 'open')) NOT IN ('closed', 'resolved')"
        if "status" in columns
        else ""
    )
    linked = ""
    if table_exists(store, "golden_cases") and "incident_id" in table_columns(
        store, "golden_cases"
    ):
        linked = f"AND NOT EXISTS (SELECT 1 FROM golden_cases g WHERE g.incident_id = i.{key})"
    rows = store.fetch(
        f"SELECT i.{key}, i.{title}, {('i.' + opened) if opened else 'NULL'} FROM incidents i "
        f"WHERE TRUE {status_filter} {linked} ORDER BY 3, 1"
    )
    note = (
        "open incidents without a linked golden case"
        if linked
        else ("open incidents (no golden-case index to check follow-ups against)")
    )
    return Section(
        True,
        note,
        [{"id": str(r[0]), "title": str(r[1]), "opened_at": _iso(r[2])} for r in rows],
    )


def golden_landed(store: Store, start: datetime, end: datetime) -> tuple[Section, int]:
    if not table_exists(store, "golden_cases"):
        return Section(False, "no golden-case index yet (golden_cases table missing): 0 landed"), 0
    columns = table_columns(store, "golden_cases")
    when = "coalesce(promoted_at, created_at)" if "promoted_at" in columns else "created_at"
    production = "AND production" if "production" in columns else ""
    live = "AND removed_at IS NULL" if "removed_at" in columns else ""
    rows = store.fetch(
        f"SELECT case_id, source, {when} FROM golden_cases WHERE {when} >= ? AND {when} < ? "
        f"{production} {live} ORDER BY 3, 1",
        (start, end),
    )
    cases = [{"case_id": r[0], "source": r[1], "landed_at": _iso(r[2])} for r in rows]
    note = f"production-sourced cases that landed this week (target {GOLDEN_TARGET[0]}–{GOLDEN_TARGET[1]})"
    return Section(True, note, cases), len(cases)


def weekly_report(
    store: Store,
    *,
    now: datetime | None = None,
    top: int = 10,
    clusters: int = 5,
    cluster_params: ClusterParams | None = None,
) -> WeeklyReport:
    """The agenda for the week ending ``now`` (default: now). Clusters come from the
    latest clustering run when it is less than a day old, else a fresh run."""
    end = naive(now) if now else utcnow()
    today = end.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    week_from = end - timedelta(days=7)
    items = list_items(
        store,
        QueueFilter(statuses=("backlog", "open", "labelled"), seen_since=week_from),
        limit=top,
        now=end,
    )
    run = latest_run(store)
    if run is None or run.window_to < end - timedelta(days=1) or run.window_to > end:
        run = cluster_flags(store, cluster_params, now=end)
    stats = _day_stats(store, today - timedelta(days=14), today)
    ordered = [stats[d] for d in sorted(stats)]
    golden, landed = golden_landed(store, week_from, end)
    flag_counts = {
        str(r[0]): int(r[1])
        for r in store.fetch(
            "SELECT rule, count(*) FROM flags WHERE event_time >= ? AND event_time < ? "
            "GROUP BY rule ORDER BY rule",
            (week_from, end),
        )
    }
    return WeeklyReport(
        week_from=week_from,
        week_to=end,
        top_items=items,
        clusters=run.clusters[:clusters],
        incidents=incidents_without_evals(store),
        days=ordered[7:],
        this_week=_trend(ordered[7:]),
        last_week=_trend(ordered[:7]),
        golden=golden,
        golden_landed=landed,
        queue_counts=count_items(store),
        time_to_eval=time_to_eval(store, now=end),
        flags_this_week=flag_counts,
    )
