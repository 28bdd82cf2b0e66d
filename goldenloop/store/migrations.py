"""Versioned schema migrations, applied in order at start-up.

Each migration has statements for both backends plus optional backend-only ones.
A migration is applied in one transaction together with its row in
``schema_migrations``, so an interrupted upgrade leaves the previous version intact.
Never edit a released migration: add a new one.
"""

from __future__ import annotations

from dataclasses import dataclass

from goldenloop.model import SPAN_COLUMNS, ColumnType

_SQL_TYPES: dict[ColumnType, str] = {
    "text": "TEXT",
    "bigint": "BIGINT",
    "double": "DOUBLE PRECISION",
    "timestamp": "TIMESTAMP",
    "json": "TEXT",
}


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]
    duckdb_only: tuple[str, ...] = ()
    postgres_only: tuple[str, ...] = ()

    def statements_for(self, dialect: str) -> tuple[str, ...]:
        extra = self.duckdb_only if dialect == "duckdb" else self.postgres_only
        return self.statements + extra


def _spans_table() -> str:
    cols = ",\n  ".join(f"{name} {_SQL_TYPES[kind]}" for name, kind in SPAN_COLUMNS)
    return f"CREATE TABLE spans (\n  {cols}\n)"


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "spans, feedback, outcomes",
        statements=(
            _spans_table(),
            """CREATE TABLE feedback (
                id TEXT PRIMARY KEY,
                project TEXT NOT NULL,
                session_id TEXT NOT NULL,
                message_id TEXT,
                rating TEXT NOT NULL,
                category TEXT,
                comment TEXT,
                prompt_hash TEXT,
                model_hash TEXT,
                user_id TEXT,
                created_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE outcomes (
                id TEXT PRIMARY KEY,
                project TEXT NOT NULL,
                session_id TEXT NOT NULL,
                message_id TEXT,
                name TEXT NOT NULL,
                success BOOLEAN NOT NULL,
                value DOUBLE PRECISION,
                attributes TEXT,
                created_at TIMESTAMP NOT NULL
            )""",
        ),
        # DuckDB: no index on spans (an ART index slows bulk loads badly); the writer
        # dedupes with an anti-join restricted by start_time, which zone maps prune.
        postgres_only=(
            "ALTER TABLE spans ADD PRIMARY KEY (trace_id, span_id)",
            "CREATE INDEX spans_session_idx ON spans (session_id)",
            "CREATE INDEX spans_start_idx ON spans (start_time)",
            "CREATE INDEX feedback_session_idx ON feedback (session_id)",
            "CREATE INDEX outcomes_session_idx ON outcomes (session_id)",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version

SCHEMA_MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TIMESTAMP NOT NULL
)"""
