"""What an eval run produced: per-case results, run totals, baseline comparison, gate.

These are pydantic models so one shape serves the JSON report, a baseline file, the
store and ``POST /api/v1/eval-runs`` (which names any bad field).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["pass", "fail", "error"]


class GraderOutcome(BaseModel):
    model_config = ConfigDict(extra="ignore")
    grader: str
    passed: bool
    error: bool = False
    score: float | None = None
    detail: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class CaseResult(BaseModel):
    model_config = ConfigDict(extra="ignore")

    case_id: str = Field(min_length=1, max_length=128)
    split: str = "golden"
    tags: list[str] = Field(default_factory=list)
    status: Status
    #: Outcome of each attempt (``--repeat N`` gives N).
    outcomes: list[bool] = Field(default_factory=list)
    flaky: bool = False
    quarantined: bool = False
    quarantine_reason: str | None = None
    latency_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    grader_cost_usd: float = 0.0
    error: str | None = None
    graders: list[GraderOutcome] = Field(default_factory=list)
    output_preview: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def attempts(self) -> int:
        return len(self.outcomes)

    @property
    def passes(self) -> int:
        return sum(self.outcomes)

    def failure_message(self) -> str:
        if self.error:
            return self.error
        failed = [g for g in self.graders if not g.passed]
        lines = [f"{g.grader}: {g.detail}" for g in failed] or ["failed"]
        if self.flaky:
            lines.append(f"flaky: passed {self.passes} of {self.attempts} attempts")
        return "\n".join(lines)


class BaselineComparison(BaseModel):
    baseline_id: str
    baseline_pass_rate: float | None
    pass_rate: float | None
    common_cases: int
    regressions: list[str] = Field(default_factory=list)
    fixed: list[str] = Field(default_factory=list)
    new_cases: list[str] = Field(default_factory=list)
    missing_cases: list[str] = Field(default_factory=list)
    max_drop: float = 0.0

    @property
    def pass_rate_regressed(self) -> bool:
        if self.pass_rate is None or self.baseline_pass_rate is None:
            return False
        return self.pass_rate < self.baseline_pass_rate - self.max_drop - 1e-9


class Gate(BaseModel):
    passed: bool
    reasons: list[str] = Field(default_factory=list)


class TagStats(BaseModel):
    cases: int
    passed: int

    @property
    def pass_rate(self) -> float:
        return self.passed / self.cases if self.cases else 0.0


class EvalRun(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=128)
    started_at: datetime
    finished_at: datetime
    target: str
    case_dir: str | None = None
    split: str | None = None
    repeat: int = Field(1, ge=1)
    label: str | None = None
    results: list[CaseResult] = Field(default_factory=list)
    comparison: BaselineComparison | None = None
    gate: Gate = Field(default_factory=lambda: Gate(passed=True))
    #: The eval-debt section: quarantined, flaky and failing holdout cases.
    debt: list[dict[str, Any]] = Field(default_factory=list)

    # -- totals ---------------------------------------------------------------------
    def _count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def passed(self) -> int:
        return self._count("pass")

    @property
    def failed(self) -> int:
        return self._count("fail")

    @property
    def errored(self) -> int:
        return self._count("error")

    @property
    def flaky(self) -> list[str]:
        return [r.case_id for r in self.results if r.flaky]

    @property
    def quarantined(self) -> list[str]:
        return [r.case_id for r in self.results if r.quarantined]

    @property
    def pass_rate(self) -> float | None:
        """Share of non-quarantined cases that passed (None when there are none)."""
        gated = [r for r in self.results if not r.quarantined]
        return round(sum(r.passed for r in gated) / len(gated), 6) if gated else None

    @property
    def failing(self) -> list[str]:
        """Non-quarantined cases that did not pass: these fail CI."""
        return [r.case_id for r in self.results if not r.passed and not r.quarantined]

    @property
    def cost_usd(self) -> float:
        return round(sum(r.cost_usd + r.grader_cost_usd for r in self.results), 8)

    @property
    def input_tokens(self) -> int:
        return sum(r.input_tokens for r in self.results)

    @property
    def output_tokens(self) -> int:
        return sum(r.output_tokens for r in self.results)

    def latency_quantile(self, q: float) -> float | None:
        values = sorted(r.latency_ms for r in self.results if r.latency_ms is not None)
        if not values:
            return None
        if len(values) == 1:
            return round(values[0], 3)
        return round(statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1], 3)

    def by_tag(self) -> dict[str, TagStats]:
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for r in self.results:
            for tag in [f"split:{r.split}", *r.tags]:
                counts[tag][0] += 1
                counts[tag][1] += int(r.passed)
        return {tag: TagStats(cases=c, passed=p) for tag, (c, p) in sorted(counts.items())}

    def summary(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "passed": self.passed,
            "failed": self.failed,
            "errored": self.errored,
            "pass_rate": self.pass_rate,
            "flaky": self.flaky,
            "quarantined": self.quarantined,
            "failing": self.failing,
            "cost_usd": self.cost_usd,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "latency_p50_ms": self.latency_quantile(0.5),
            "latency_p95_ms": self.latency_quantile(0.95),
            "by_tag": {
                t: {"cases": s.cases, "passed": s.passed, "pass_rate": round(s.pass_rate, 4)}
                for t, s in self.by_tag().items()
            },
        }

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["summary"] = self.summary()
        return data


def compare_runs(run: EvalRun, baseline: EvalRun, *, max_drop: float = 0.0) -> BaselineComparison:
    """Regressions (passed in the baseline, not now) and pass rates on the common cases."""
    now = {r.case_id: r for r in run.results}
    before = {r.case_id: r for r in baseline.results}
    common = sorted(set(now) & set(before))
    gated = [c for c in common if not now[c].quarantined]

    def rate(results: dict[str, CaseResult]) -> float | None:
        return round(sum(results[c].passed for c in gated) / len(gated), 6) if gated else None

    return BaselineComparison(
        baseline_id=baseline.id,
        baseline_pass_rate=rate(before),
        pass_rate=rate(now),
        common_cases=len(common),
        regressions=[c for c in gated if before[c].passed and not now[c].passed],
        fixed=[c for c in common if not before[c].passed and now[c].passed],
        new_cases=sorted(set(now) - set(before)),
        missing_cases=sorted(set(before) - set(now)),
        max_drop=max_drop,
    )


def gate(run: EvalRun) -> Gate:
    """CI verdict: fail on any non-quarantined failure or a regression vs the baseline."""
    reasons = []
    if run.failing:
        reasons.append(f"{len(run.failing)} case(s) failed: {', '.join(run.failing[:20])}")
    comparison = run.comparison
    if comparison is not None:
        if comparison.regressions:
            reasons.append(
                f"{len(comparison.regressions)} regression(s) vs {comparison.baseline_id}: "
                + ", ".join(comparison.regressions[:20])
            )
        if comparison.pass_rate_regressed:
            reasons.append(
                f"pass rate {comparison.pass_rate:.1%} is below the baseline's "
                f"{comparison.baseline_pass_rate:.1%} on {comparison.common_cases} common cases"
            )
    return Gate(passed=not reasons, reasons=reasons)
