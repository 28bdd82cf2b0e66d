"""Flags, triage and clustering schema (migrations 20–29).

* ``flags``: one row per (rule, session) the flag engine matched, with its reason,
  score, severity and whether it entered the queue (``queued``) or was held back by
  sampling (``sampled_out``) or the rule's daily cap (``capped``). The id is
  ``md5(rule || ':' || session_id)``, so re-running a rule never flags a session twice.
* ``flag_state``: the engine's watermark (``ingested_at`` of the newest span already
  evaluated) and the time of its last run.
* ``flag_runs``: one row per engine run (incremental or backfill) with per-rule counts.
* ``flag_baselines``: rolling P95 per cohort (project × tier), metric and day.
* ``flag_config``: the saved rule configuration (YAML) the server's loop uses.
* ``triage_items``: the annotation queue. One item groups the sessions that share a
  dedupe key (project, failure, prompt, normalized question); it carries impact,
  priority, label, owner, notes, failure-mode tags, pass/fail criteria and the
  time-to-eval clock.
* ``triage_members``: which sessions an item covers; ``triage_labels``: label history;
  ``triage_runs``: each queue refresh; ``triage_notifications``: close-the-loop hooks.
* ``cluster_runs`` / ``clusters``: recurring failure themes of flagged sessions.
"""

from __future__ import annotations

from goldenloop.store.migrations import Migration

_JSON_VALID_FUNCTION = """CREATE OR REPLACE FUNCTION goldenloop_json_valid(value TEXT)
RETURNS BOOLEAN LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM value::json;
    RETURN TRUE;
EXCEPTION WHEN others THEN
    RETURN FALSE;
END;
$$"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        20,
        "flags, flag engine state, runs, cohort baselines and saved rule config",
        statements=(
            """CREATE TABLE flags (
                id TEXT PRIMARY KEY,
                rule TEXT NOT NULL,
                session_id TEXT NOT NULL,
                project TEXT NOT NULL,
                customer_tier TEXT,
                trace_id TEXT,
                reason TEXT NOT NULL,
                score DOUBLE PRECISION,
                severity INTEGER NOT NULL,
                status TEXT NOT NULL,
                event_time TIMESTAMP NOT NULL,
                event_day TIMESTAMP NOT NULL,
                details TEXT,
                run_id TEXT NOT NULL,
                created_at TIMESTAMP NOT NULL,
                item_id TEXT
            )""",
            """CREATE TABLE flag_state (
                name TEXT PRIMARY KEY,
                watermark TIMESTAMP,
                last_run_at TIMESTAMP,
                updated_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE flag_runs (
                id TEXT PRIMARY KEY,
                mode TEXT NOT NULL,
                started_at TIMESTAMP NOT NULL,
                finished_at TIMESTAMP,
                range_from TIMESTAMP,
                range_to TIMESTAMP,
                watermark TIMESTAMP,
                spans_seen BIGINT,
                flags_new INTEGER,
                flags_queued INTEGER,
                by_rule TEXT,
                errors TEXT
            )""",
            """CREATE TABLE flag_baselines (
                project TEXT NOT NULL,
                customer_tier TEXT NOT NULL,
                metric TEXT NOT NULL,
                day TIMESTAMP NOT NULL,
                window_days INTEGER NOT NULL,
                p95 DOUBLE PRECISION,
                samples BIGINT NOT NULL,
                computed_at TIMESTAMP NOT NULL,
                PRIMARY KEY (project, customer_tier, metric, day)
            )""",
            """CREATE TABLE flag_config (
                name TEXT PRIMARY KEY,
                source TEXT NOT NULL,
                body TEXT NOT NULL,
                updated_at TIMESTAMP NOT NULL
            )""",
        ),
        postgres_only=(
            _JSON_VALID_FUNCTION,
            "CREATE INDEX flags_rule_day_idx ON flags (rule, event_day)",
            "CREATE INDEX flags_session_idx ON flags (session_id)",
            "CREATE INDEX flags_pending_idx ON flags (status, item_id)",
            "CREATE INDEX flags_created_idx ON flags (created_at)",
            "CREATE INDEX IF NOT EXISTS spans_ingested_idx ON spans (ingested_at)",
        ),
    ),
    Migration(
        21,
        "triage queue: items, members, label history, refresh runs, notifications",
        statements=(
            """CREATE TABLE triage_items (
                id TEXT PRIMARY KEY,
                dedupe_key TEXT NOT NULL UNIQUE,
                project TEXT NOT NULL,
                source TEXT NOT NULL,
                primary_rule TEXT NOT NULL,
                rules TEXT NOT NULL,
                category TEXT,
                title TEXT NOT NULL,
                question TEXT,
                prompt_hash TEXT,
                session_id TEXT NOT NULL,
                trace_id TEXT,
                frequency INTEGER NOT NULL,
                revenue_tier TEXT,
                tier_weight DOUBLE PRECISION NOT NULL,
                severity INTEGER NOT NULL,
                impact DOUBLE PRECISION NOT NULL,
                priority TEXT NOT NULL,
                status TEXT NOT NULL,
                first_seen_at TIMESTAMP NOT NULL,
                last_seen_at TIMESTAMP NOT NULL,
                created_at TIMESTAMP NOT NULL,
                queued_at TIMESTAMP,
                due_at TIMESTAMP,
                label TEXT,
                owner TEXT,
                notes TEXT,
                failure_modes TEXT NOT NULL,
                criteria TEXT,
                labelled_at TIMESTAMP,
                golden_case_id TEXT,
                case_merged_at TIMESTAMP,
                resolved_at TIMESTAMP,
                resolution TEXT,
                updated_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE triage_members (
                item_id TEXT NOT NULL,
                session_id TEXT NOT NULL,
                added_at TIMESTAMP NOT NULL,
                PRIMARY KEY (item_id, session_id)
            )""",
            """CREATE TABLE triage_labels (
                id TEXT PRIMARY KEY,
                item_id TEXT NOT NULL,
                label TEXT NOT NULL,
                owner TEXT,
                notes TEXT,
                failure_modes TEXT NOT NULL,
                criteria TEXT,
                created_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE triage_runs (
                id TEXT PRIMARY KEY,
                started_at TIMESTAMP NOT NULL,
                finished_at TIMESTAMP NOT NULL,
                flags_folded INTEGER NOT NULL,
                items_created INTEGER NOT NULL,
                items_opened INTEGER NOT NULL,
                items_resolved INTEGER NOT NULL
            )""",
            """CREATE TABLE triage_notifications (
                id TEXT PRIMARY KEY,
                item_id TEXT NOT NULL,
                notifier TEXT NOT NULL,
                event TEXT NOT NULL,
                ok BOOLEAN NOT NULL,
                error TEXT,
                created_at TIMESTAMP NOT NULL
            )""",
        ),
        postgres_only=(
            "CREATE INDEX triage_items_status_idx ON triage_items (status, impact)",
            "CREATE INDEX triage_members_session_idx ON triage_members (session_id)",
            "CREATE INDEX triage_labels_item_idx ON triage_labels (item_id)",
        ),
    ),
    Migration(
        22,
        "failure clusters of flagged sessions",
        statements=(
            """CREATE TABLE cluster_runs (
                id TEXT PRIMARY KEY,
                created_at TIMESTAMP NOT NULL,
                window_from TIMESTAMP NOT NULL,
                window_to TIMESTAMP NOT NULL,
                embedder TEXT NOT NULL,
                seed INTEGER NOT NULL,
                sessions INTEGER NOT NULL,
                cluster_count INTEGER NOT NULL,
                params TEXT NOT NULL
            )""",
            """CREATE TABLE clusters (
                run_id TEXT NOT NULL,
                cluster_id INTEGER NOT NULL,
                rank INTEGER NOT NULL,
                label TEXT NOT NULL,
                top_terms TEXT NOT NULL,
                size INTEGER NOT NULL,
                this_week INTEGER NOT NULL,
                last_week INTEGER NOT NULL,
                share DOUBLE PRECISION NOT NULL,
                rules TEXT NOT NULL,
                exemplars TEXT NOT NULL,
                members TEXT NOT NULL,
                PRIMARY KEY (run_id, cluster_id)
            )""",
        ),
    ),
)
