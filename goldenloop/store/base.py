"""The Store protocol every backend implements, and the shared SQL both run.

Loop services talk to a store through ``fetch`` / ``execute`` with Postgres-flavoured
SQL and ``?`` placeholders; each backend translates placeholders for its driver.
Reads of the core model (traces, sessions) live in ``queries.py`` so both backends
answer them with the same statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from goldenloop.model import (
    Feedback,
    Outcome,
    SessionDetail,
    SessionFilter,
    SessionSummary,
    Span,
    SpanBatch,
)

if TYPE_CHECKING:
    import pyarrow as pa

Dialect = Literal["duckdb", "postgres"]


class StoreError(RuntimeError):
    """The store cannot be opened or used; the message says why and what to do."""


@runtime_checkable
class Store(Protocol):
    dialect: Dialect
    #: Human-readable location (file path or URL without password).
    location: str

    def migrate(self) -> list[int]:
        """Apply pending schema migrations; return the versions applied."""
        ...

    def schema_version(self) -> int: ...

    def close(self) -> None: ...

    def insert_spans(self, batch: SpanBatch, *, dedupe: bool = True) -> int:
        """Store spans in one transaction; return how many were new.

        With ``dedupe`` (the default) a span whose (trace_id, span_id) is already
        stored is skipped, so exporter retries are idempotent.
        """
        ...

    def insert_span_table(self, table: pa.Table, *, dedupe: bool = True) -> int:
        """``insert_spans`` for a table of ``goldenloop.ingest.arrow.SPAN_SCHEMA``."""
        ...

    def insert_feedback(self, items: Sequence[Feedback]) -> int: ...

    def insert_outcomes(self, items: Sequence[Outcome]) -> int: ...

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read query with ``?`` placeholders and return all rows."""
        ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one write statement with ``?`` placeholders in its own transaction."""
        ...

    def get_trace(self, trace_id: str) -> list[Span]: ...

    def get_session(self, session_id: str) -> SessionDetail | None: ...

    def list_sessions(
        self, flt: SessionFilter, *, limit: int = 50, offset: int = 0
    ) -> list[SessionSummary]: ...

    def count_spans(self) -> int: ...
