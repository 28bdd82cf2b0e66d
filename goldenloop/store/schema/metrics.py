"""Metrics and SLOs schema (migrations 10–19): SLOs defined through the API, the
PostgreSQL helpers the metric SQL needs, and the turn facts table.

``metric_turns`` holds one row per turn (trace): its dimensions and per-turn aggregates
over its spans (``TURN_FACT_FEATURES``), maintained incrementally by
``goldenloop.metrics.facts`` so turn and session metrics never regroup the spans table.
``metric_sessions`` rolls the turn facts up per session (first turn's start, the
largest dimension values, summed features) and counts the session's feedback and
outcome events. ``metric_state`` keeps the refresh
watermark.
"""

from __future__ import annotations

from goldenloop.store.migrations import Migration

#: Dimension columns of a turn fact (same names as the spans columns they come from).
TURN_FACT_DIMENSIONS: tuple[str, ...] = (
    "project", "user_id", "customer_tier", "locale", "prompt_hash", "index_version", "model",
    "model_version", "provider", "kind", "status", "name", "tool_name", "error_type",
    "stop_reason", "feature_flags",
)  # fmt: skip
#: Per-turn aggregates (the built-in turn features of goldenloop.metrics.catalog).
TURN_FACT_FEATURES: tuple[tuple[str, str], ...] = (
    ("root_latency_ms", "DOUBLE PRECISION"), ("root_error", "BIGINT"), ("span_count", "BIGINT"),
    ("error_spans", "BIGINT"), ("cost_usd", "DOUBLE PRECISION"), ("tokens", "BIGINT"),
    ("llm_calls", "BIGINT"), ("llm_errors", "BIGINT"), ("max_tokens_stops", "BIGINT"),
    ("tool_calls", "BIGINT"), ("tool_errors", "BIGINT"), ("invalid_tool_calls", "BIGINT"),
    ("redundant_calls", "BIGINT"), ("parse_errors", "BIGINT"), ("guardrail_blocks", "BIGINT"),
    ("injection_attempts", "BIGINT"), ("policy_violations", "BIGINT"), ("escalations", "BIGINT"),
    ("breaker_trips", "BIGINT"), ("empty_answers", "BIGINT"), ("judge_scored", "BIGINT"),
    ("judge_passed", "BIGINT"), ("judge_score_sum", "DOUBLE PRECISION"),
    ("iterations", "DOUBLE PRECISION"),
)  # fmt: skip


#: Per-session counts of feedback and outcome events (all of the session's events).
SESSION_EVENT_COUNTS: tuple[str, ...] = ("fb_up", "fb_down", "oc_succeeded", "oc_failed")


def _facts_table(table: str, key: str, extra: list[str]) -> str:
    columns = [f"{key} TEXT NOT NULL", *extra, "ts TIMESTAMP NOT NULL"]
    columns += [f"{name} TEXT" for name in TURN_FACT_DIMENSIONS]
    columns += [f"{name} {kind}" for name, kind in TURN_FACT_FEATURES]
    return f"CREATE TABLE {table} (\n  " + ",\n  ".join(columns) + "\n)"


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        10,
        "slos defined through the API",
        statements=(
            """CREATE TABLE slos (
                name TEXT PRIMARY KEY,
                definition TEXT NOT NULL,
                created_at TIMESTAMP NOT NULL,
                updated_at TIMESTAMP NOT NULL
            )""",
        ),
    ),
    Migration(
        11,
        "metric helpers: JSON validity on PostgreSQL, root-span time index",
        statements=(),
        # PostgreSQL 15 has no IS JSON / json_valid; DuckDB has json_valid built in.
        postgres_only=(
            """CREATE OR REPLACE FUNCTION goldenloop_json_valid(value TEXT) RETURNS BOOLEAN
            LANGUAGE plpgsql IMMUTABLE AS $$
            BEGIN
                IF value IS NULL THEN
                    RETURN FALSE;
                END IF;
                PERFORM value::json;
                RETURN TRUE;
            EXCEPTION WHEN others THEN
                RETURN FALSE;
            END
            $$""",
            "CREATE INDEX spans_root_start_idx ON spans (start_time) WHERE parent_id IS NULL",
        ),
    ),
    Migration(
        12,
        "turn facts (metric_turns) and their refresh state",
        statements=(
            _facts_table("metric_turns", "trace_id", ["session_id TEXT"]),
            """CREATE TABLE metric_state (
                name TEXT PRIMARY KEY,
                value TEXT NOT NULL,
                updated_at TIMESTAMP NOT NULL
            )""",
        ),
        postgres_only=(
            "CREATE UNIQUE INDEX metric_turns_trace_idx ON metric_turns (trace_id)",
            "CREATE INDEX metric_turns_ts_idx ON metric_turns (ts)",
            "CREATE INDEX metric_turns_session_idx ON metric_turns (session_id)",
            "CREATE INDEX IF NOT EXISTS spans_ingested_idx ON spans (ingested_at)",
        ),
    ),
    Migration(
        13,
        "session facts (metric_sessions)",
        statements=(
            _facts_table(
                "metric_sessions",
                "session_id",
                ["turn_count BIGINT", *(f"{name} BIGINT" for name in SESSION_EVENT_COUNTS)],
            ),
        ),
        postgres_only=(
            "CREATE UNIQUE INDEX metric_sessions_session_idx ON metric_sessions (session_id)",
            "CREATE INDEX metric_sessions_ts_idx ON metric_sessions (ts)",
            # the refresh finds feedback and outcomes that arrived since the last one
            "CREATE INDEX feedback_created_idx ON feedback (created_at)",
            "CREATE INDEX outcomes_created_idx ON outcomes (created_at)",
        ),
    ),
)
