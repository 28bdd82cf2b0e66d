"""Core schema: spans, feedback, outcomes (migration 1)."""

from __future__ import annotations

from goldenloop.store.migrations import Migration, spans_table_sql

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "spans, feedback, outcomes",
        statements=(
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
        duckdb_only=(spans_table_sql("duckdb"),),
        postgres_only=(
            spans_table_sql("postgres"),
            "ALTER TABLE spans ADD PRIMARY KEY (trace_id, span_id)",
            "CREATE INDEX spans_session_idx ON spans (session_id)",
            "CREATE INDEX spans_start_idx ON spans (start_time)",
            "CREATE INDEX feedback_session_idx ON feedback (session_id)",
            "CREATE INDEX outcomes_session_idx ON outcomes (session_id)",
        ),
    ),
)
