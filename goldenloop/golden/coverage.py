"""Golden-set coverage: case counts, production-sourced share, coverage by tag, growth
by week and time-to-eval.

Works from the store's index (``coverage_from_index``) or straight from a directory
(``coverage_from_dir``), so CI can report coverage without a store.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from goldenloop.golden.casefiles import CaseSet, load_case_dir
from goldenloop.golden.index import IndexedCase, list_indexed_cases
from goldenloop.store.base import Store

#: Target time-to-eval for P0 categories, in hours.
TIME_TO_EVAL_TARGET_HOURS = 72.0


@dataclass(frozen=True)
class CoverageRow:
    case_id: str
    split: str
    source_kind: str
    production: bool
    tags: tuple[str, ...]
    created: date
    time_to_eval_hours: float | None = None
    last_passed: bool | None = None


@dataclass(frozen=True)
class TagCoverage:
    tag: str
    cases: int
    share: float
    golden: int
    holdout: int

    def to_dict(self) -> dict[str, Any]:
        return {"tag": self.tag, "cases": self.cases, "share": self.share,
                "golden": self.golden, "holdout": self.holdout}  # fmt: skip


@dataclass
class CoverageReport:
    total: int
    by_split: dict[str, int]
    by_source: dict[str, int]
    production_sourced: int
    by_tag: list[TagCoverage]
    weekly: list[tuple[str, int, int]] = field(default_factory=list)
    time_to_eval_median_hours: float | None = None
    time_to_eval_p90_hours: float | None = None
    time_to_eval_over_target: int = 0
    never_passed: list[str] = field(default_factory=list)

    @property
    def production_share(self) -> float:
        return self.production_sourced / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_split": self.by_split,
            "by_source": self.by_source,
            "production_sourced": self.production_sourced,
            "production_share": round(self.production_share, 4),
            "by_tag": [t.to_dict() for t in self.by_tag],
            "weekly": [{"week": w, "added": a, "total": t} for w, a, t in self.weekly],
            "time_to_eval_median_hours": self.time_to_eval_median_hours,
            "time_to_eval_p90_hours": self.time_to_eval_p90_hours,
            "time_to_eval_target_hours": TIME_TO_EVAL_TARGET_HOURS,
            "time_to_eval_over_target": self.time_to_eval_over_target,
            "never_passed": self.never_passed,
        }


def _iso_week(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def coverage_report(rows: Iterable[CoverageRow]) -> CoverageReport:
    items = list(rows)
    total = len(items)
    tag_counts: Counter[str] = Counter()
    tag_split: Counter[tuple[str, str]] = Counter()
    for row in items:
        for tag in set(row.tags):
            tag_counts[tag] += 1
            tag_split[(tag, row.split)] += 1
    by_tag = [
        TagCoverage(
            tag, n, round(n / total, 4), tag_split[(tag, "golden")], tag_split[(tag, "holdout")]
        )  # fmt: skip
        for tag, n in sorted(tag_counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    weeks = Counter(_iso_week(r.created) for r in items)
    weekly, running = [], 0
    for week in sorted(weeks):
        running += weeks[week]
        weekly.append((week, weeks[week], running))
    tte = [r.time_to_eval_hours for r in items if r.time_to_eval_hours is not None]
    return CoverageReport(
        total=total,
        by_split=dict(Counter(r.split for r in items)),
        by_source=dict(Counter(r.source_kind for r in items)),
        production_sourced=sum(1 for r in items if r.production),
        by_tag=by_tag,
        weekly=weekly,
        time_to_eval_median_hours=round(statistics.median(tte), 2) if tte else None,
        time_to_eval_p90_hours=round(_quantile(tte, 0.9), 2) if tte else None,
        time_to_eval_over_target=sum(1 for h in tte if h > TIME_TO_EVAL_TARGET_HOURS),
        never_passed=sorted(r.case_id for r in items if r.last_passed is False),
    )


def _row_from_index(case: IndexedCase) -> CoverageRow:
    created = case.created_at.date() if isinstance(case.created_at, datetime) else case.created_at
    return CoverageRow(
        case.case_id, case.split, case.source_kind, case.production, tuple(case.tags), created,
        case.time_to_eval_hours, case.last_passed,
    )  # fmt: skip


def coverage_from_index(store: Store, *, set_name: str | None = None) -> CoverageReport:
    return coverage_report(_row_from_index(c) for c in list_indexed_cases(store, set_name=set_name))


def coverage_from_cases(cases: CaseSet) -> CoverageReport:
    return coverage_report(
        CoverageRow(
            c.case.id,
            c.case.split,
            c.case.source_kind,
            c.case.production_sourced,
            tuple(c.case.tags),
            c.case.created,
        )  # fmt: skip
        for c in cases.cases
    )


def coverage_from_dir(root: Path) -> CoverageReport:
    return coverage_from_cases(load_case_dir(root))
