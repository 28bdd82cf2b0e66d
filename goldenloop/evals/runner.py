"""The eval runner: every case of a golden set through a target, graded, gated.

``run_eval`` runs each selected case ``repeat`` times on a thread pool of
``concurrency`` workers, grades each attempt with the case's criteria, and returns an
``EvalRun`` with per-case pass/fail, grader details, latency, tokens and cost, flaky
marks, quarantine marks, the comparison with a baseline run and the CI gate.
``goldenloop eval run`` and the pytest plugin are thin shells over it.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from goldenloop.evals.flaky import Quarantine, eval_debt, is_flaky
from goldenloop.evals.graders import GradeContext, GradeResult, grade
from goldenloop.evals.judge import JudgeConfig
from goldenloop.evals.results import (
    CaseResult,
    EvalRun,
    GraderOutcome,
    Status,
    compare_runs,
    gate,
)
from goldenloop.evals.target import Target, TargetOutput
from goldenloop.golden.schema import Case
from goldenloop.pricing import PriceTable

_PREVIEW_CHARS = 500


@dataclass
class RunOptions:
    split: str | None = None
    repeat: int = 1
    concurrency: int = 4
    judge: JudgeConfig | None = None
    quarantine: Quarantine = field(default_factory=Quarantine)
    baseline: EvalRun | None = None
    #: Allowed pass-rate drop vs the baseline before the gate fails (0.0: none).
    max_drop: float = 0.0
    label: str | None = None
    case_dir: str | None = None
    prices: PriceTable = field(default_factory=PriceTable)
    #: Context values set on every case (``--context prompt_version=a1c0``): the
    #: version under test, rather than the one a production case was captured under.
    context: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.repeat < 1:
            raise ValueError("repeat must be at least 1")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.split not in (None, "golden", "holdout"):
            raise ValueError("split must be golden or holdout")
        if not 0.0 <= self.max_drop <= 1.0:
            raise ValueError("max_drop must be between 0 and 1")


@dataclass
class Attempt:
    passed: bool
    grades: list[GradeResult]
    latency_ms: float | None
    output: TargetOutput | None
    error: str | None = None

    @property
    def status(self) -> Status:
        if self.error or any(g.error for g in self.grades):
            return "error"
        return "pass" if self.passed else "fail"


def run_attempt(
    case: Case,
    target: Target,
    *,
    judge: JudgeConfig | None = None,
    http: httpx.Client | None = None,
    prices: PriceTable | None = None,
    context: dict[str, str] | None = None,
) -> Attempt:
    """Call the target once and grade the answer with every criterion of the case."""
    case_input = case.target_input()
    if context:
        case_input["context"] = {**case_input.get("context", {}), **context}
    start = time.perf_counter()
    try:
        output = target(case_input)
    except Exception as exc:  # the target is the user's code: any failure is a result
        latency = (time.perf_counter() - start) * 1000
        return Attempt(False, [], latency, None, f"target raised {type(exc).__name__}: {exc}")
    latency = (time.perf_counter() - start) * 1000
    if output.cost_usd is None and prices is not None:
        output.cost_usd = prices.cost(output.model, output.input_tokens, output.output_tokens)
    ctx = GradeContext(case_id=case.id, case_input=case_input, judge=judge, http=http)
    grades = [grade(spec, output, ctx) for spec in case.criteria]
    return Attempt(all(g.passed for g in grades), grades, latency, output)


def _case_result(case: Case, attempts: Sequence[Attempt], quarantine: Quarantine) -> CaseResult:
    outcomes = [a.passed for a in attempts]
    statuses = [a.status for a in attempts]
    if all(outcomes):
        status: Status = "pass"
    elif all(s == "error" for s in statuses):
        status = "error"
    else:
        status = "fail"
    # Report the first failing attempt (the interesting one), else the last.
    shown = next((a for a in attempts if not a.passed), attempts[-1])
    latencies = [a.latency_ms for a in attempts if a.latency_ms is not None]
    outputs = [a.output for a in attempts if a.output is not None]
    grader_errors = [g for g in shown.grades if g.error]
    error = shown.error or (
        "; ".join(f"{g.grader}: {g.detail}" for g in grader_errors) if grader_errors and
        status == "error" else None
    )  # fmt: skip
    return CaseResult(
        case_id=case.id,
        split=case.split,
        tags=list(case.tags),
        status=status,
        outcomes=outcomes,
        flaky=is_flaky(outcomes),
        quarantined=case.id in quarantine,
        quarantine_reason=quarantine.reason(case.id),
        latency_ms=round(statistics.median(latencies), 3) if latencies else None,
        input_tokens=sum(o.input_tokens or 0 for o in outputs),
        output_tokens=sum(o.output_tokens or 0 for o in outputs),
        cost_usd=round(sum(o.cost_usd or 0.0 for o in outputs), 8),
        grader_cost_usd=round(sum(g.cost_usd for a in attempts for g in a.grades), 8),
        error=error,
        graders=[GraderOutcome(**g.to_dict()) for g in shown.grades],
        output_preview=shown.output.text[:_PREVIEW_CHARS] if shown.output else None,
    )


def select_cases(cases: Sequence[Case], split: str | None) -> list[Case]:
    return [c for c in cases if split is None or c.split == split]


def run_eval(
    cases: Sequence[Case],
    target: Target,
    options: RunOptions | None = None,
    *,
    progress: Callable[[int], None] | None = None,
    run_id: str | None = None,
) -> EvalRun:
    """Run, grade, compare with the baseline and gate (see the module docstring)."""
    options = options or RunOptions()
    selected = select_cases(cases, options.split)
    started = datetime.now(UTC)
    jobs = [(case, n) for case in selected for n in range(options.repeat)]
    attempts: dict[str, list[Attempt]] = {case.id: [] for case in selected}
    with httpx.Client(timeout=options.judge.timeout if options.judge else 60.0) as http:

        def work(job: tuple[Case, int]) -> tuple[str, Attempt]:
            case, _ = job
            attempt = run_attempt(
                case, target, judge=options.judge, http=http, prices=options.prices,
                context=options.context,
            )  # fmt: skip
            return case.id, attempt

        with ThreadPoolExecutor(max_workers=options.concurrency) as pool:
            for case_id, attempt in pool.map(work, jobs):
                attempts[case_id].append(attempt)
                if progress is not None:
                    progress(1)
    results = [_case_result(c, attempts[c.id], options.quarantine) for c in selected]
    run = EvalRun(
        id=run_id or uuid.uuid4().hex,
        started_at=started,
        finished_at=datetime.now(UTC),
        target=getattr(target, "name", type(target).__name__),
        case_dir=options.case_dir,
        split=options.split,
        repeat=options.repeat,
        label=options.label,
        results=results,
    )
    return finalize_run(run, options.quarantine, options.baseline, max_drop=options.max_drop)


def finalize_run(
    run: EvalRun,
    quarantine: Quarantine,
    baseline: EvalRun | None,
    *,
    max_drop: float = 0.0,
) -> EvalRun:
    """Attach the baseline comparison, the eval-debt section and the gate verdict."""
    if baseline is not None:
        run.comparison = compare_runs(run, baseline, max_drop=max_drop)
    run.debt = [d.to_dict() for d in eval_debt(run, quarantine)]
    run.gate = gate(run)
    return run
