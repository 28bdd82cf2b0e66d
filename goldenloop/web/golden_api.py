"""Golden set and eval pages with their JSON twins, plus the eval-run and promotion API.

* ``/golden`` ↔ ``GET /api/v1/golden/cases``: indexed cases and coverage.
* ``/evals`` ↔ ``GET /api/v1/eval-runs``: run history (and recent shadow runs).
* ``/evals/{run_id}`` ↔ ``GET /api/v1/eval-runs/{run_id}``: one run, case by case.
* ``POST /api/v1/eval-runs``: store a run sent by ``goldenloop eval run --server``.
* ``POST /api/v1/golden/promote``: anonymize a session into a case and hand back its
  YAML (the server writes no files; the team commits the case to its repo).

Production ids never leave through these routes: the pseudonym map is read by
``goldenloop golden reveal`` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field

from goldenloop.evals.history import (
    BaselineError,
    RunNotFound,
    RunRow,
    list_runs,
    load_run,
    run_from_json,
    save_run,
)
from goldenloop.evals.results import EvalRun
from goldenloop.evals.shadow_history import list_shadow_runs
from goldenloop.golden.coverage import CoverageReport, coverage_from_index
from goldenloop.golden.index import IndexedCase, list_indexed_cases
from goldenloop.store.base import Store
from goldenloop.web.ingest_api import error_response, state_of


class BadParam(ValueError):
    pass


def _int_param(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadParam(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise BadParam(f"{name} must be between {low} and {high}")
    return value


# -- data functions (one per page) -------------------------------------------------------


@dataclass
class GoldenContext:
    cases: list[IndexedCase]
    coverage: CoverageReport
    set_name: str | None
    include_removed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "set_name": self.set_name,
            "include_removed": self.include_removed,
            "coverage": self.coverage.to_dict(),
            "cases": [c.to_dict() for c in self.cases],
        }


def golden_context(store: Store, params: Mapping[str, str]) -> GoldenContext:
    unknown = set(params) - {"set", "removed"}
    if unknown:
        raise BadParam(f"unknown parameter(s) {sorted(unknown)}; use set, removed")
    removed = params.get("removed", "false").lower()
    if removed not in ("true", "false", "1", "0"):
        raise BadParam("removed must be true or false")
    include_removed = removed in ("true", "1")
    set_name = params.get("set") or None
    cases = list_indexed_cases(store, include_removed=include_removed, set_name=set_name)
    return GoldenContext(cases, coverage_from_index(store, set_name=set_name), set_name,
                         include_removed)  # fmt: skip


@dataclass
class EvalRunsContext:
    runs: list[RunRow]
    shadow_runs: list[dict[str, Any]]
    limit: int
    offset: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": [r.to_dict() for r in self.runs],
            "shadow_runs": self.shadow_runs,
            "limit": self.limit,
            "offset": self.offset,
            "next_offset": self.offset + self.limit if len(self.runs) == self.limit else None,
        }


def eval_runs_context(store: Store, params: Mapping[str, str]) -> EvalRunsContext:
    unknown = set(params) - {"limit", "offset"}
    if unknown:
        raise BadParam(f"unknown parameter(s) {sorted(unknown)}; use limit, offset")
    limit = _int_param(params, "limit", 50, 1, 500)
    offset = _int_param(params, "offset", 0, 0, 10_000_000)
    return EvalRunsContext(
        list_runs(store, limit=limit, offset=offset), list_shadow_runs(store, limit=10), limit,
        offset,
    )  # fmt: skip


@dataclass
class EvalRunContext:
    run: EvalRun

    def to_dict(self) -> dict[str, Any]:
        return self.run.to_dict()


def eval_run_context(store: Store, run_id: str) -> EvalRunContext:
    return EvalRunContext(load_run(store, run_id))


# -- JSON --------------------------------------------------------------------------------


def _templates(request: Request) -> Jinja2Templates:
    from goldenloop.web.app import templates

    return templates


def api_golden_cases(request: Request) -> Response:
    """Indexed golden cases with coverage (``set=NAME``, ``removed=true``)."""
    try:
        context = golden_context(state_of(request).store, request.query_params)
    except BadParam as exc:
        return error_response(400, str(exc))
    return JSONResponse(context.to_dict())


def api_golden_coverage(request: Request) -> Response:
    """Coverage of the indexed golden set (``set=NAME``)."""
    try:
        context = golden_context(state_of(request).store, request.query_params)
    except BadParam as exc:
        return error_response(400, str(exc))
    return JSONResponse(context.coverage.to_dict())


def api_eval_runs(request: Request) -> Response:
    """Eval run history, newest first (``limit``, ``offset``), and recent shadow runs."""
    try:
        context = eval_runs_context(state_of(request).store, request.query_params)
    except BadParam as exc:
        return error_response(400, str(exc))
    return JSONResponse(context.to_dict())


def api_eval_run(request: Request, run_id: str) -> Response:
    """One eval run with every case result (``latest`` for the newest)."""
    try:
        return JSONResponse(eval_run_context(state_of(request).store, run_id).to_dict())
    except RunNotFound as exc:
        return error_response(404, str(exc))


async def api_store_eval_run(request: Request) -> Response:
    """Store a run (the JSON report of ``goldenloop eval run``)."""
    try:
        body = await request.json()
    except ValueError:
        return error_response(400, "body must be the JSON report of an eval run")
    try:
        run = run_from_json(body)
    except BaselineError as exc:
        return error_response(422, str(exc))
    save_run(state_of(request).store, run)
    return JSONResponse({"id": run.id, "status": "stored", "url": f"/evals/{run.id}"},
                        status_code=201)  # fmt: skip


class PromoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_or_item: Annotated[str, Field(min_length=1, max_length=256)]
    case_id: Annotated[str | None, Field(max_length=64)] = None
    criteria: Annotated[list[dict[str, Any]], Field(min_length=1)]
    split: Literal["golden", "holdout"] = "golden"
    source: str | None = None
    tags: list[str] = Field(default_factory=list)
    description: str | None = None
    incident: str | None = None
    turn: str | None = None


def api_promote(request: Request, body: PromoteIn) -> Response:
    """Anonymize a session (or triage item) into a case; answers its YAML and report."""
    from goldenloop.golden.casefiles import CaseFileError
    from goldenloop.golden.promote import PromotionError, PromotionRefused, promote_session

    try:
        result = promote_session(
            state_of(request).store, body.session_or_item, body.case_id, body.criteria, None,
            body.split, body.source, tags=body.tags, description=body.description,
            incident=body.incident, upto_turn=body.turn,
        )  # fmt: skip
    except PromotionRefused as exc:
        return error_response(422, str(exc).split("\n")[0], [str(leak) for leak in exc.leaks])
    except CaseFileError as exc:
        return error_response(422, "the case is invalid", [str(p) for p in exc.problems])
    except PromotionError as exc:
        status = 404 if str(exc).startswith("no session") else 422
        return error_response(status, str(exc))
    return JSONResponse(result.to_dict(), status_code=201)


# -- pages -------------------------------------------------------------------------------


def _error_page(request: Request, message: str, status: int) -> Response:
    return _templates(request).TemplateResponse(
        request, "error.html", {"message": message}, status_code=status
    )


def page_golden(request: Request) -> Response:
    try:
        context = golden_context(state_of(request).store, request.query_params)
    except BadParam as exc:
        return _error_page(request, str(exc), 400)
    return _templates(request).TemplateResponse(request, "golden.html", {"page": context})


def page_eval_runs(request: Request) -> Response:
    try:
        context = eval_runs_context(state_of(request).store, request.query_params)
    except BadParam as exc:
        return _error_page(request, str(exc), 400)
    return _templates(request).TemplateResponse(request, "golden_evals.html", {"page": context})


def page_eval_run(request: Request, run_id: str) -> Response:
    try:
        context = eval_run_context(state_of(request).store, run_id)
    except RunNotFound as exc:
        return _error_page(request, str(exc), 404)
    return _templates(request).TemplateResponse(request, "golden_eval_run.html", {"page": context})
