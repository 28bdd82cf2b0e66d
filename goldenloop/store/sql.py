"""Behaviour shared by the SQL backends: migrations and the core reads.

A backend subclasses ``SqlStore`` and supplies a connection: ``fetch``, ``execute``,
``_run_in_transaction`` and ``insert_spans``. Every statement here is written once,
in SQL that both DuckDB and PostgreSQL accept.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from goldenloop.model import (
    BILLABLE_KINDS,
    SLICE_DIMENSIONS,
    SPAN_COLUMN_NAMES,
    Feedback,
    Outcome,
    SessionDetail,
    SessionFilter,
    SessionSummary,
    Span,
    SpanBatch,
    Turn,
)
from goldenloop.store.base import Dialect
from goldenloop.store.migrations import SCHEMA_MIGRATIONS_TABLE, all_migrations

if TYPE_CHECKING:
    import pyarrow as pa

_SPAN_SELECT = ", ".join(SPAN_COLUMN_NAMES)
_JSON_COLUMNS = {"feature_flags", "attributes", "resource", "events"}
_BILLABLE_SQL = ", ".join(f"'{k}'" for k in BILLABLE_KINDS)
_FILTERABLE = set(SLICE_DIMENSIONS) | {"session_id", "trace_id", "name", "status", "model"}


def utc(value: datetime) -> datetime:
    """Stores keep naive UTC timestamps; hand out aware ones."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def span_from_row(row: Sequence[Any]) -> Span:
    values = dict(zip(SPAN_COLUMN_NAMES, row, strict=True))
    for key in _JSON_COLUMNS:
        raw = values[key]
        values[key] = json.loads(raw) if raw else ({} if key != "events" else [])
    for key in ("start_time", "end_time", "ingested_at"):
        if values[key] is not None:
            values[key] = utc(values[key])
    return Span(**values)


def turns_from_spans(spans: Sequence[Span]) -> list[Turn]:
    """Group spans by trace; the root span (no parent in the trace) describes the turn."""
    by_trace: dict[str, list[Span]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    turns = []
    for trace_id, members in by_trace.items():
        ids = {s.span_id for s in members}
        roots = [s for s in members if not s.parent_id or s.parent_id not in ids]
        root = min(roots or members, key=lambda s: s.start_time)
        billable = [s for s in members if s.kind in BILLABLE_KINDS]
        llm_spans = [s for s in members if s.kind == "llm"]
        models = [s.model for s in llm_spans if s.model]
        stops = [s.stop_reason for s in llm_spans if s.stop_reason]
        turns.append(
            Turn(
                trace_id=trace_id,
                message_id=root.message_id or trace_id,
                session_id=root.session_id,
                name=root.name,
                start_time=min(s.start_time for s in members),
                end_time=max(s.end_time for s in members),
                latency_ms=root.latency_ms,
                status="error" if root.status == "error" else "ok",
                input_text=root.input_text,
                output_text=root.output_text,
                span_count=len(members),
                error_count=sum(1 for s in members if s.status == "error"),
                input_tokens=sum(s.input_tokens or 0 for s in billable),
                output_tokens=sum(s.output_tokens or 0 for s in billable),
                cost_usd=round(sum(s.cost_usd or 0.0 for s in billable), 10),
                stop_reason=root.stop_reason or (stops[-1] if stops else None),
                model=root.model or (models[-1] if models else None),
            )
        )
    turns.sort(key=lambda t: t.start_time)
    return turns


def _summary_from_spans(
    session_id: str, spans: Sequence[Span], turns: Sequence[Turn]
) -> SessionSummary:
    def first(attr: str) -> Any:
        return next((getattr(s, attr) for s in spans if getattr(s, attr)), None)

    return SessionSummary(
        session_id=session_id,
        project=spans[0].project,
        start_time=min(s.start_time for s in spans),
        end_time=max(s.end_time for s in spans),
        turn_count=len(turns),
        span_count=len(spans),
        error_count=sum(1 for s in spans if s.status == "error"),
        input_tokens=sum(t.input_tokens for t in turns),
        output_tokens=sum(t.output_tokens for t in turns),
        cost_usd=round(sum(t.cost_usd for t in turns), 10),
        user_id=first("user_id"),
        customer_tier=first("customer_tier"),
        locale=first("locale"),
        model=first("model"),
        prompt_hash=first("prompt_hash"),
    )


def session_filter_sql(flt: SessionFilter) -> tuple[str, list[Any]]:
    """WHERE clause (over spans) that selects the sessions matching ``flt``."""
    clauses = ["session_id IS NOT NULL"]
    params: list[Any] = []
    if flt.project:
        clauses.append("project = ?")
        params.append(flt.project)
    if flt.since:
        clauses.append("start_time >= ?")
        params.append(naive_utc(flt.since))
    if flt.until:
        clauses.append("start_time < ?")
        params.append(naive_utc(flt.until))
    for name, value in flt.dimensions:
        if name not in _FILTERABLE:
            raise ValueError(
                f"cannot filter by {name!r}; use one of {', '.join(sorted(_FILTERABLE))} "
                "or attr.NAME for a span attribute"
            )
        clauses.append(f"{name} = ?")
        params.append(value)
    for key, value in flt.attributes:
        clauses.append("(attributes::json ->> ?) = ?")
        params.extend([key, value])
    for key, value in flt.feature_flags:
        clauses.append("(feature_flags::json ->> ?) = ?")
        params.extend([key, value])
    return " AND ".join(clauses), params


class SqlStore(ABC):
    dialect: Dialect
    location: str

    # -- backend hooks ---------------------------------------------------------------
    @abstractmethod
    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    @abstractmethod
    def _run_in_transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None: ...

    @abstractmethod
    def insert_spans(self, batch: SpanBatch, *, dedupe: bool = True) -> int: ...

    @abstractmethod
    def insert_span_table(self, table: pa.Table, *, dedupe: bool = True) -> int: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def _insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> int:
        """Insert rows, skipping ones whose primary key exists; return rows inserted."""

    # -- migrations ------------------------------------------------------------------
    def schema_version(self) -> int:
        self.execute(SCHEMA_MIGRATIONS_TABLE)
        rows = self.fetch("SELECT max(version) FROM schema_migrations")
        return int(rows[0][0] or 0)

    def applied_versions(self) -> set[int]:
        self.execute(SCHEMA_MIGRATIONS_TABLE)
        return {int(row[0]) for row in self.fetch("SELECT version FROM schema_migrations")}

    def migrate(self) -> list[int]:
        """Apply every migration not yet recorded, in version order. Versions are
        reserved per feature, so a database may hold 20–41 but still lack 10–13 (a
        feature added later); those are applied too, not skipped."""
        done = self.applied_versions()
        applied = []
        for migration in all_migrations():
            if migration.version in done:
                continue
            statements: list[tuple[str, Sequence[Any]]] = [
                (sql, ()) for sql in migration.statements_for(self.dialect)
            ]
            statements.append(
                (
                    "INSERT INTO schema_migrations (version, description, applied_at) "
                    "VALUES (?, ?, ?)",
                    (migration.version, migration.description, naive_utc(datetime.now(UTC))),
                )
            )
            self._run_in_transaction(statements)
            applied.append(migration.version)
        return applied

    # -- small writes ------------------------------------------------------------------
    def insert_feedback(self, items: Sequence[Feedback]) -> int:
        columns = (
            "id", "project", "session_id", "message_id", "rating", "category", "comment",
            "prompt_hash", "model_hash", "user_id", "created_at",
        )  # fmt: skip
        rows = [
            (
                f.id,
                f.project,
                f.session_id,
                f.message_id,
                f.rating,
                f.category,
                f.comment,
                f.prompt_hash,
                f.model_hash,
                f.user_id,
                naive_utc(f.created_at),
            )  # fmt: skip
            for f in items
        ]
        return self._insert_rows("feedback", columns, rows)

    def insert_outcomes(self, items: Sequence[Outcome]) -> int:
        columns = (
            "id", "project", "session_id", "message_id", "name", "success", "value",
            "attributes", "created_at",
        )  # fmt: skip
        rows = [
            (
                o.id,
                o.project,
                o.session_id,
                o.message_id,
                o.name,
                o.success,
                o.value,
                json.dumps(o.attributes),
                naive_utc(o.created_at),
            )  # fmt: skip
            for o in items
        ]
        return self._insert_rows("outcomes", columns, rows)

    # -- core reads --------------------------------------------------------------------
    def count_spans(self) -> int:
        return int(self.fetch("SELECT count(*) FROM spans")[0][0])

    def get_trace(self, trace_id: str) -> list[Span]:
        rows = self.fetch(
            f"SELECT {_SPAN_SELECT} FROM spans WHERE trace_id = ? ORDER BY start_time, span_id",
            (trace_id,),
        )
        return [span_from_row(r) for r in rows]

    def get_session(self, session_id: str) -> SessionDetail | None:
        rows = self.fetch(
            f"SELECT {_SPAN_SELECT} FROM spans WHERE trace_id IN "
            "(SELECT DISTINCT trace_id FROM spans WHERE session_id = ?) "
            "ORDER BY start_time, span_id",
            (session_id,),
        )
        if not rows:
            return None
        spans = [span_from_row(r) for r in rows]
        turns = turns_from_spans(spans)
        return SessionDetail(
            summary=_summary_from_spans(session_id, spans, turns),
            turns=turns,
            spans=spans,
            feedback=self._feedback_for(session_id),
            outcomes=self._outcomes_for(session_id),
        )

    def _feedback_for(self, session_id: str) -> list[Feedback]:
        rows = self.fetch(
            "SELECT id, project, session_id, message_id, rating, category, comment, "
            "prompt_hash, model_hash, user_id, created_at FROM feedback "
            "WHERE session_id = ? ORDER BY created_at, id",
            (session_id,),
        )
        return [
            Feedback(*r[:10], created_at=utc(r[10]))  # type: ignore[misc]
            for r in rows
        ]

    def _outcomes_for(self, session_id: str) -> list[Outcome]:
        rows = self.fetch(
            "SELECT id, project, session_id, message_id, name, success, value, attributes, "
            "created_at FROM outcomes WHERE session_id = ? ORDER BY created_at, id",
            (session_id,),
        )
        return [
            Outcome(
                id=r[0],
                project=r[1],
                session_id=r[2],
                message_id=r[3],
                name=r[4],
                success=bool(r[5]),
                value=r[6],
                attributes=json.loads(r[7] or "{}"),
                created_at=utc(r[8]),
            )  # fmt: skip
            for r in rows
        ]

    def list_sessions(
        self, flt: SessionFilter, *, limit: int = 50, offset: int = 0
    ) -> list[SessionSummary]:
        where, params = session_filter_sql(flt)
        sql = f"""
            SELECT session_id, min(project), min(start_time), max(end_time),
                   count(DISTINCT trace_id), count(*),
                   sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END),
                   sum(CASE WHEN kind IN ({_BILLABLE_SQL}) THEN coalesce(input_tokens, 0)
                       ELSE 0 END),
                   sum(CASE WHEN kind IN ({_BILLABLE_SQL}) THEN coalesce(output_tokens, 0)
                       ELSE 0 END),
                   sum(CASE WHEN kind IN ({_BILLABLE_SQL}) THEN coalesce(cost_usd, 0)
                       ELSE 0 END),
                   max(user_id), max(customer_tier), max(locale), max(model), max(prompt_hash)
            FROM spans
            WHERE session_id IN (SELECT session_id FROM spans WHERE {where})
            GROUP BY session_id
            ORDER BY max(end_time) DESC, session_id
            LIMIT ? OFFSET ?
        """
        rows = self.fetch(sql, [*params, limit, offset])
        return [
            SessionSummary(
                session_id=r[0],
                project=r[1],
                start_time=utc(r[2]),
                end_time=utc(r[3]),
                turn_count=int(r[4]),
                span_count=int(r[5]),
                error_count=int(r[6]),
                input_tokens=int(r[7] or 0),
                output_tokens=int(r[8] or 0),
                cost_usd=round(float(r[9] or 0.0), 10),
                user_id=r[10],
                customer_tier=r[11],
                locale=r[12],
                model=r[13],
                prompt_hash=r[14],
            )  # fmt: skip
            for r in rows
        ]
