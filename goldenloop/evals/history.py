"""Eval runs in the store: save, load, list, and pick a baseline.

A run is one ``eval_runs`` row (totals plus the JSON summary) and one ``eval_results``
row per case. Saving also updates the golden-case index (latest result, first pass).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from goldenloop.evals.results import BaselineComparison, CaseResult, EvalRun, Gate, GraderOutcome
from goldenloop.golden.index import record_case_outcomes
from goldenloop.store.base import Store
from goldenloop.store.sql import naive_utc, utc

_RUN_COLUMNS = (
    "id", "started_at", "finished_at", "target", "case_dir", "split", "repeat_count", "total",
    "passed", "failed", "errored", "flaky", "quarantined", "pass_rate", "cost_usd",
    "input_tokens", "output_tokens", "latency_p50_ms", "latency_p95_ms", "baseline_id",
    "gate_passed", "label", "summary",
)  # fmt: skip
_RESULT_COLUMNS = (
    "run_id", "case_id", "split", "tags", "status", "passed", "flaky", "quarantined",
    "attempts", "passes", "latency_ms", "input_tokens", "output_tokens", "cost_usd", "error",
    "graders", "output_preview",
)  # fmt: skip
_CHUNK = 200


class RunNotFound(LookupError):
    pass


class BaselineError(ValueError):
    pass


def save_run(store: Store, run: EvalRun) -> None:
    """Store a run and its results (replacing a run with the same id)."""
    summary = {
        **run.summary(),
        "outcomes": {r.case_id: r.outcomes for r in run.results},
        "grader_cost_usd": {r.case_id: r.grader_cost_usd for r in run.results},
        "quarantine_reasons": {
            r.case_id: r.quarantine_reason for r in run.results if r.quarantined
        },
        "comparison": run.comparison.model_dump(mode="json") if run.comparison else None,
        "gate": run.gate.model_dump(mode="json"),
        "debt": run.debt,
    }
    store.execute("DELETE FROM eval_results WHERE run_id = ?", (run.id,))
    store.execute("DELETE FROM eval_runs WHERE id = ?", (run.id,))
    values = (
        run.id, naive_utc(run.started_at), naive_utc(run.finished_at), run.target, run.case_dir,
        run.split, run.repeat, run.total, run.passed, run.failed, run.errored, len(run.flaky),
        len(run.quarantined), run.pass_rate, run.cost_usd, run.input_tokens, run.output_tokens,
        run.latency_quantile(0.5), run.latency_quantile(0.95),
        run.comparison.baseline_id if run.comparison else None, run.gate.passed, run.label,
        json.dumps(summary),
    )  # fmt: skip
    store.execute(
        f"INSERT INTO eval_runs ({', '.join(_RUN_COLUMNS)}) "
        f"VALUES ({', '.join('?' for _ in _RUN_COLUMNS)})",
        values,
    )
    rows = [
        (
            run.id,
            r.case_id,
            r.split,
            json.dumps(r.tags),
            r.status,
            r.passed,
            r.flaky,
            r.quarantined,
            r.attempts,
            r.passes,
            r.latency_ms,
            r.input_tokens,
            r.output_tokens,
            r.cost_usd,
            r.error,
            json.dumps([g.model_dump() for g in r.graders]),
            r.output_preview,
        )  # fmt: skip
        for r in run.results
    ]
    marks = "(" + ", ".join("?" for _ in _RESULT_COLUMNS) + ")"
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        store.execute(
            f"INSERT INTO eval_results ({', '.join(_RESULT_COLUMNS)}) VALUES "
            + ", ".join(marks for _ in chunk),
            [value for row in chunk for value in row],
        )
    record_case_outcomes(store, run.id, run.finished_at, {r.case_id: r.passed for r in run.results})


@dataclass(frozen=True)
class RunRow:
    """One line of the run history (no per-case results)."""

    id: str
    started_at: datetime
    finished_at: datetime
    target: str
    case_dir: str | None
    split: str | None
    repeat: int
    total: int
    passed: int
    failed: int
    errored: int
    flaky: int
    quarantined: int
    pass_rate: float | None
    cost_usd: float
    input_tokens: int
    output_tokens: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    baseline_id: str | None
    gate_passed: bool
    label: str | None

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["started_at"] = self.started_at.isoformat()
        data["finished_at"] = self.finished_at.isoformat()
        return data


def _run_row(r: Sequence[Any]) -> RunRow:
    values = list(r[:-1])
    values[1], values[2] = utc(values[1]), utc(values[2])
    values[20] = bool(values[20])
    return RunRow(*values)


def list_runs(store: Store, *, limit: int = 50, offset: int = 0) -> list[RunRow]:
    rows = store.fetch(
        f"SELECT {', '.join(_RUN_COLUMNS)} FROM eval_runs "
        "ORDER BY started_at DESC, id LIMIT ? OFFSET ?",
        (limit, offset),
    )
    return [_run_row(r) for r in rows]


def load_run(store: Store, run_id: str) -> EvalRun:
    """A stored run with all its results; ``latest`` is the most recent run."""
    if run_id == "latest":
        latest = store.fetch("SELECT id FROM eval_runs ORDER BY started_at DESC, id LIMIT 1")
        if not latest:
            raise RunNotFound("no eval run is stored yet")
        run_id = str(latest[0][0])
    rows = store.fetch(f"SELECT {', '.join(_RUN_COLUMNS)} FROM eval_runs WHERE id = ?", (run_id,))
    if not rows:
        raise RunNotFound(f"no eval run {run_id!r}")
    head = _run_row(rows[0])
    summary = json.loads(rows[0][-1])
    result_rows = store.fetch(
        f"SELECT {', '.join(_RESULT_COLUMNS)} FROM eval_results WHERE run_id = ? ORDER BY case_id",
        (run_id,),
    )
    outcomes = summary.get("outcomes", {})
    reasons = summary.get("quarantine_reasons", {})
    grader_costs = summary.get("grader_cost_usd", {})
    results = []
    for r in result_rows:
        v = dict(zip(_RESULT_COLUMNS, r, strict=True))
        results.append(
            CaseResult(
                case_id=v["case_id"],
                split=v["split"],
                tags=json.loads(v["tags"]),
                status=v["status"],
                outcomes=outcomes.get(v["case_id"], [bool(v["passed"])] * int(v["attempts"])),
                flaky=bool(v["flaky"]),
                quarantined=bool(v["quarantined"]),
                quarantine_reason=reasons.get(v["case_id"]),
                latency_ms=v["latency_ms"],
                input_tokens=int(v["input_tokens"] or 0),
                output_tokens=int(v["output_tokens"] or 0),
                cost_usd=float(v["cost_usd"] or 0.0),
                grader_cost_usd=float(grader_costs.get(v["case_id"], 0.0)),
                error=v["error"],
                graders=[GraderOutcome(**g) for g in json.loads(v["graders"])],
                output_preview=v["output_preview"],
            )  # fmt: skip
        )
    comparison = summary.get("comparison")
    return EvalRun(
        id=head.id, started_at=head.started_at, finished_at=head.finished_at, target=head.target,
        case_dir=head.case_dir, split=head.split, repeat=head.repeat, label=head.label,
        results=results,
        comparison=BaselineComparison(**comparison) if comparison else None,
        gate=Gate(**summary["gate"]) if summary.get("gate") else Gate(passed=head.gate_passed),
        debt=summary.get("debt", []),
    )  # fmt: skip


def run_from_json(data: Any) -> EvalRun:
    """A run from its JSON report (raises ``BaselineError`` naming bad fields)."""
    try:
        return EvalRun.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:10]
        )
        raise BaselineError(f"not an eval run report: {problems}") from None


def load_baseline(ref: str, store: Store | None) -> EvalRun:
    """``ref`` is a JSON report file written by ``--json``, a stored run id, or ``latest``."""
    path = Path(ref)
    if path.suffix == ".json" or path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise BaselineError(f"cannot read baseline {ref}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise BaselineError(f"baseline {ref} is not JSON: {exc}") from None
        return run_from_json(data)
    if store is None:
        raise BaselineError(f"baseline {ref!r} is not a file and no store is open to look it up")
    try:
        return load_run(store, ref)
    except RunNotFound as exc:
        raise BaselineError(str(exc)) from None
