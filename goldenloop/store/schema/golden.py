"""Golden set and evals schema (migrations 30–39).

* ``golden_cases``: the store-side index of case files (the files themselves live in
  the user's repo); coverage, time-to-eval and the production-sourced share read it.
* ``id_map``: pseudonym → production id. The only place production identifiers of a
  promoted case survive; read by admins only (``goldenloop golden reveal``).
* ``eval_runs`` / ``eval_results``: one row per run and per case of a run.
* ``shadow_runs`` / ``shadow_results``: replays of production inputs through a
  candidate and a baseline target.
"""

from __future__ import annotations

from goldenloop.store.migrations import Migration

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        30,
        "golden case index and the admin-only pseudonym map",
        statements=(
            """CREATE TABLE golden_cases (
                case_id TEXT PRIMARY KEY,
                set_name TEXT NOT NULL,
                source TEXT NOT NULL,
                source_kind TEXT NOT NULL,
                production BOOLEAN NOT NULL,
                split TEXT NOT NULL,
                tags TEXT NOT NULL,
                created_at TIMESTAMP NOT NULL,
                origin_at TIMESTAMP,
                promoted_at TIMESTAMP,
                synced_at TIMESTAMP NOT NULL,
                removed_at TIMESTAMP,
                first_pass_at TIMESTAMP,
                first_pass_run TEXT,
                last_run_id TEXT,
                last_passed BOOLEAN,
                incident_id TEXT,
                flag_id TEXT,
                feedback_id TEXT,
                session_pseudonym TEXT,
                path TEXT,
                content_hash TEXT NOT NULL
            )""",
            """CREATE TABLE id_map (
                pseudonym TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                production_id TEXT NOT NULL,
                project TEXT,
                case_id TEXT,
                created_at TIMESTAMP NOT NULL
            )""",
            "CREATE INDEX id_map_production_idx ON id_map (kind, production_id)",
        ),
    ),
    Migration(
        31,
        "eval runs and per-case results",
        statements=(
            """CREATE TABLE eval_runs (
                id TEXT PRIMARY KEY,
                started_at TIMESTAMP NOT NULL,
                finished_at TIMESTAMP NOT NULL,
                target TEXT NOT NULL,
                case_dir TEXT,
                split TEXT,
                repeat_count INTEGER NOT NULL,
                total INTEGER NOT NULL,
                passed INTEGER NOT NULL,
                failed INTEGER NOT NULL,
                errored INTEGER NOT NULL,
                flaky INTEGER NOT NULL,
                quarantined INTEGER NOT NULL,
                pass_rate DOUBLE PRECISION,
                cost_usd DOUBLE PRECISION NOT NULL,
                input_tokens BIGINT NOT NULL,
                output_tokens BIGINT NOT NULL,
                latency_p50_ms DOUBLE PRECISION,
                latency_p95_ms DOUBLE PRECISION,
                baseline_id TEXT,
                gate_passed BOOLEAN NOT NULL,
                label TEXT,
                summary TEXT NOT NULL
            )""",
            """CREATE TABLE eval_results (
                run_id TEXT NOT NULL,
                case_id TEXT NOT NULL,
                split TEXT NOT NULL,
                tags TEXT NOT NULL,
                status TEXT NOT NULL,
                passed BOOLEAN NOT NULL,
                flaky BOOLEAN NOT NULL,
                quarantined BOOLEAN NOT NULL,
                attempts INTEGER NOT NULL,
                passes INTEGER NOT NULL,
                latency_ms DOUBLE PRECISION,
                input_tokens BIGINT,
                output_tokens BIGINT,
                cost_usd DOUBLE PRECISION,
                error TEXT,
                graders TEXT NOT NULL,
                output_preview TEXT,
                PRIMARY KEY (run_id, case_id)
            )""",
            "CREATE INDEX eval_runs_started_idx ON eval_runs (started_at)",
        ),
    ),
    Migration(
        32,
        "shadow runs: candidate vs baseline on sampled production inputs",
        statements=(
            """CREATE TABLE shadow_runs (
                id TEXT PRIMARY KEY,
                started_at TIMESTAMP NOT NULL,
                finished_at TIMESTAMP NOT NULL,
                candidate TEXT NOT NULL,
                baseline TEXT NOT NULL,
                since_at TIMESTAMP NOT NULL,
                sample_fraction DOUBLE PRECISION NOT NULL,
                max_sessions INTEGER NOT NULL,
                sessions INTEGER NOT NULL,
                summary TEXT NOT NULL
            )""",
            """CREATE TABLE shadow_results (
                run_id TEXT NOT NULL,
                session_id TEXT NOT NULL,
                side TEXT NOT NULL,
                passed BOOLEAN,
                latency_ms DOUBLE PRECISION,
                input_tokens BIGINT,
                output_tokens BIGINT,
                cost_usd DOUBLE PRECISION,
                error TEXT,
                graders TEXT NOT NULL,
                output_preview TEXT,
                PRIMARY KEY (run_id, session_id, side)
            )""",
        ),
    ),
)
