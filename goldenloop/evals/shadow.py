"""Shadow runs: replay a capped sample of anonymized production inputs through a
candidate and the baseline target, and compare them side by side.

Nothing here is shown to users: the inputs are read from the store, anonymized exactly
like a promotion (pseudonyms, secrets, PII; a session whose input still shows something
sensitive is skipped), sent to both targets, graded with the same criteria (graders or
an LLM judge), and logged to ``shadow_runs`` / ``shadow_results``. The sample is capped
twice: a share of sessions (``--sample 5%``, chosen by a stable hash, so re-running picks
the same sessions) and a hard maximum (``--max-sessions``).

Listing past runs lives in ``shadow_history`` (re-exported here), so the server can show
them without importing this module and the eval stack behind it.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from goldenloop.evals.judge import JudgeConfig
from goldenloop.evals.runner import Attempt, run_attempt
from goldenloop.evals.shadow_history import list_shadow_runs as list_shadow_runs
from goldenloop.evals.target import Target
from goldenloop.golden.anonymize import CaseAnonymizer, pii_engine, scan_for_leaks
from goldenloop.golden.promote import PromotionError, session_case_input, turns_upto
from goldenloop.golden.pseudonyms import PseudonymMap
from goldenloop.golden.schema import Case
from goldenloop.store.base import Store
from goldenloop.store.sql import naive_utc

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_PREVIEW = 300
SIDES = ("candidate", "baseline")


def parse_fraction(text: str) -> float:
    """``5%`` → 0.05; ``0.05`` → 0.05. Must be in (0, 1]."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(
            f"sample {text!r}: use a percentage like 5% or a fraction like 0.05"
        ) from None
    if not 0 < value <= 1:
        raise ValueError(f"sample {text!r} must be more than 0% and at most 100%")
    return value


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``48h``/``7d`` before now, or an ISO time."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"since {text!r}: use a duration like 48h or an ISO time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _bucket(session_id: str, seed: str) -> float:
    digest = hashlib.sha256(f"{seed}:{session_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def sample_sessions(
    store: Store,
    *,
    since: datetime,
    sample: float,
    max_sessions: int,
    until: datetime | None = None,
    project: str | None = None,
    seed: str = "goldenloop-shadow",
) -> list[str]:
    """A stable pseudo-random ``sample`` share of the sessions active since ``since``,
    at most ``max_sessions`` of them."""
    clauses = ["session_id IS NOT NULL", "start_time >= ?"]
    params: list[Any] = [naive_utc(since)]
    if until is not None:
        clauses.append("start_time < ?")
        params.append(naive_utc(until))
    if project:
        clauses.append("project = ?")
        params.append(project)
    rows = store.fetch(
        f"SELECT DISTINCT session_id FROM spans WHERE {' AND '.join(clauses)}", params
    )
    picked = sorted((b, str(r[0])) for r in rows if (b := _bucket(str(r[0]), seed)) < sample)
    return [session_id for _, session_id in picked[:max_sessions]]


@dataclass
class ShadowInput:
    session_id: str
    case: Case


def shadow_inputs(
    store: Store, session_ids: Sequence[str], criteria: Sequence[Mapping[str, Any]]
) -> tuple[list[ShadowInput], list[str]]:
    """Anonymized replay inputs; sessions that cannot be replayed safely are skipped."""
    engine = pii_engine()
    inputs, skipped = [], []
    today = datetime.now(UTC).date()
    for session_id in session_ids:
        detail = store.get_session(session_id)
        if detail is None:
            skipped.append(session_id)
            continue
        pseudonyms = PseudonymMap(store, detail.summary.project)  # never committed
        try:
            raw, links = session_case_input(detail, turns_upto(detail, None), pseudonyms)
        except PromotionError:
            skipped.append(session_id)
            continue
        anonymizer = CaseAnonymizer(engine, pseudonyms.mapping())
        clean = anonymizer.data(raw, "input")
        text = json.dumps(clean, ensure_ascii=False)
        if scan_for_leaks(text, engine, list(pseudonyms.mapping())):
            skipped.append(session_id)
            continue
        case = Case.model_validate({
            "id": links["session"], "input": clean,
            "criteria": list(criteria) or [{"type": "not-contains", "value": "\x00"}],
            "source": "manual", "created": today,
        })  # fmt: skip
        inputs.append(ShadowInput(session_id, case))
    return inputs, skipped


@dataclass
class ShadowResult:
    session_id: str
    side: str
    passed: bool | None
    latency_ms: float | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    error: str | None
    graders: list[dict[str, Any]]
    output_preview: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SideSummary:
    sessions: int
    passed: int | None
    errors: int
    cost_usd: float
    input_tokens: int
    output_tokens: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None

    @property
    def pass_rate(self) -> float | None:
        return None if self.passed is None or not self.sessions else self.passed / self.sessions

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "pass_rate": self.pass_rate}


@dataclass
class ShadowRun:
    id: str
    started_at: datetime
    finished_at: datetime
    candidate: str
    baseline: str
    since: datetime
    sample: float
    max_sessions: int
    graded: bool
    results: list[ShadowResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def side(self, name: str) -> SideSummary:
        rows = [r for r in self.results if r.side == name]
        latencies = sorted(r.latency_ms for r in rows if r.latency_ms is not None)

        def q(p: float) -> float | None:
            if not latencies:
                return None
            if len(latencies) == 1:
                return round(latencies[0], 3)
            return round(
                statistics.quantiles(latencies, n=100, method="inclusive")[int(p * 100) - 1], 3
            )

        return SideSummary(
            sessions=len(rows),
            passed=sum(1 for r in rows if r.passed) if self.graded else None,
            errors=sum(1 for r in rows if r.error),
            cost_usd=round(sum(r.cost_usd for r in rows), 8),
            input_tokens=sum(r.input_tokens for r in rows),
            output_tokens=sum(r.output_tokens for r in rows),
            latency_p50_ms=q(0.5),
            latency_p95_ms=q(0.95),
        )

    def flips(self) -> dict[str, list[str]]:
        """Sessions where the candidate fixed or broke what the baseline did."""
        by = {(r.session_id, r.side): r for r in self.results}
        sessions = sorted({r.session_id for r in self.results})
        better, worse = [], []
        for s in sessions:
            c, b = by.get((s, "candidate")), by.get((s, "baseline"))
            if c is None or b is None or c.passed is None or b.passed is None:
                continue
            if c.passed and not b.passed:
                better.append(s)
            elif b.passed and not c.passed:
                worse.append(s)
        return {"candidate_better": better, "candidate_worse": worse}

    def summary(self) -> dict[str, Any]:
        return {
            "candidate": self.side("candidate").to_dict(),
            "baseline": self.side("baseline").to_dict(),
            **self.flips(),
            "skipped": len(self.skipped),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "candidate": self.candidate,
            "baseline": self.baseline,
            "since": self.since.isoformat(),
            "sample": self.sample,
            "max_sessions": self.max_sessions,
            "graded": self.graded,
            "summary": self.summary(),
            "results": [r.to_dict() for r in self.results],
        }


@dataclass
class ShadowOptions:
    since: datetime
    sample: float = 0.05
    max_sessions: int = 200
    project: str | None = None
    criteria: list[dict[str, Any]] = field(default_factory=list)
    judge: JudgeConfig | None = None
    concurrency: int = 4
    candidate_context: dict[str, str] = field(default_factory=dict)
    baseline_context: dict[str, str] = field(default_factory=dict)
    seed: str = "goldenloop-shadow"

    def __post_init__(self) -> None:
        if not 0 < self.sample <= 1:
            raise ValueError("sample must be in (0, 1]")
        if self.max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")


def _result(session_id: str, side: str, attempt: Attempt, graded: bool) -> ShadowResult:
    output = attempt.output
    preview = None
    if output is not None and output.text:
        preview = CaseAnonymizer(pii_engine()).text(output.text[:_PREVIEW], "output")
    return ShadowResult(
        session_id=session_id, side=side,
        passed=(attempt.passed if graded and attempt.error is None else (False if graded else None)),
        latency_ms=round(attempt.latency_ms, 3) if attempt.latency_ms is not None else None,
        input_tokens=(output.input_tokens or 0) if output else 0,
        output_tokens=(output.output_tokens or 0) if output else 0,
        cost_usd=(output.cost_usd or 0.0) if output else 0.0, error=attempt.error,
        graders=[g.to_dict() for g in attempt.grades] if graded else [], output_preview=preview,
    )  # fmt: skip


def run_shadow(
    store: Store,
    candidate: Target,
    baseline: Target,
    options: ShadowOptions,
    *,
    progress: Callable[[int], None] | None = None,
    save: bool = True,
) -> ShadowRun:
    started = datetime.now(UTC)
    sessions = sample_sessions(
        store, since=options.since, sample=options.sample, max_sessions=options.max_sessions,
        project=options.project, seed=options.seed,
    )  # fmt: skip
    inputs, skipped = shadow_inputs(store, sessions, options.criteria)
    graded = bool(options.criteria)
    jobs = [(i, side) for i in inputs for side in SIDES]
    with httpx.Client(timeout=60.0) as http:

        def work(job: tuple[ShadowInput, str]) -> ShadowResult:
            item, side = job
            target = candidate if side == "candidate" else baseline
            context = options.candidate_context if side == "candidate" else options.baseline_context
            attempt = run_attempt(
                item.case, target, judge=options.judge, http=http, context=context
            )
            return _result(item.session_id, side, attempt, graded)

        results = []
        with ThreadPoolExecutor(max_workers=options.concurrency) as pool:
            for result in pool.map(work, jobs):
                results.append(result)
                if progress is not None:
                    progress(1)
    run = ShadowRun(
        id=uuid.uuid4().hex, started_at=started, finished_at=datetime.now(UTC),
        candidate=getattr(candidate, "name", "candidate"),
        baseline=getattr(baseline, "name", "baseline"), since=options.since,
        sample=options.sample, max_sessions=options.max_sessions, graded=graded,
        results=results, skipped=skipped,
    )  # fmt: skip
    if save:
        save_shadow_run(store, run)
    return run


def save_shadow_run(store: Store, run: ShadowRun) -> None:
    store.execute(
        "INSERT INTO shadow_runs (id, started_at, finished_at, candidate, baseline, since_at, "
        "sample_fraction, max_sessions, sessions, summary) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (run.id, naive_utc(run.started_at), naive_utc(run.finished_at), run.candidate,
         run.baseline, naive_utc(run.since), run.sample, run.max_sessions,
         len({r.session_id for r in run.results}), json.dumps(run.summary())),
    )  # fmt: skip
    columns = ("run_id", "session_id", "side", "passed", "latency_ms", "input_tokens",
               "output_tokens", "cost_usd", "error", "graders", "output_preview")  # fmt: skip
    marks = "(" + ", ".join("?" for _ in columns) + ")"
    rows = [
        (
            run.id,
            r.session_id,
            r.side,
            r.passed,
            r.latency_ms,
            r.input_tokens,
            r.output_tokens,
            r.cost_usd,
            r.error,
            json.dumps(r.graders),
            r.output_preview,
        )  # fmt: skip
        for r in run.results
    ]
    for start in range(0, len(rows), 200):
        chunk = rows[start : start + 200]
        store.execute(
            f"INSERT INTO shadow_results ({', '.join(columns)}) VALUES "
            + ", ".join(marks for _ in chunk),
            [v for row in chunk for v in row],
        )
