"""Alerts schema (migrations 40–49).

* ``alert_config``: the saved alerts configuration file (rules, notifiers, grouping)
  that the server's scheduler uses (``goldenloop alerts apply FILE``).
* ``alert_rules``: rules defined through the API, one JSON definition per name.
* ``alert_states``: one row per alert episode (a rule × label set that became active):
  pending → firing → resolved, with the numbers that tripped it and its exemplar.
* ``alert_history``: every state transition, for the page and for audits.
* ``alert_groups``: Alertmanager-style aggregation groups per notifier (route) and
  group key, with their flush timer and notification log (which alerts were last
  notified as firing / resolved, and when).
* ``alert_silences``: label matchers that mute alerts until an end time.
* ``alert_notifications``: every delivery attempt's outcome, failures included.
* ``alert_ticks``: one row per evaluation tick (duration, counts, rule errors), so a
  broken scheduler is visible.
* ``alert_lease``: which process evaluates (several servers share one PostgreSQL).
"""

from __future__ import annotations

from goldenloop.store.migrations import Migration

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        40,
        "alert rules, saved alerts config, alert states and their history",
        statements=(
            """CREATE TABLE alert_config (
                name TEXT PRIMARY KEY,
                source TEXT NOT NULL,
                body TEXT NOT NULL,
                updated_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE alert_rules (
                name TEXT PRIMARY KEY,
                definition TEXT NOT NULL,
                created_at TIMESTAMP NOT NULL,
                updated_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE alert_states (
                id TEXT PRIMARY KEY,
                rule TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                labels TEXT NOT NULL,
                severity TEXT NOT NULL,
                status TEXT NOT NULL,
                active_at TIMESTAMP NOT NULL,
                fired_at TIMESTAMP,
                resolved_at TIMESTAMP,
                last_eval_at TIMESTAMP NOT NULL,
                value DOUBLE PRECISION,
                summary TEXT,
                numbers TEXT NOT NULL,
                details TEXT,
                updated_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE alert_history (
                id TEXT PRIMARY KEY,
                alert_id TEXT NOT NULL,
                rule TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                labels TEXT NOT NULL,
                from_status TEXT NOT NULL,
                to_status TEXT NOT NULL,
                changed_at TIMESTAMP NOT NULL,
                value DOUBLE PRECISION,
                summary TEXT,
                recorded_at TIMESTAMP NOT NULL
            )""",
        ),
        postgres_only=(
            "CREATE INDEX alert_states_status_idx ON alert_states (status, rule)",
            "CREATE INDEX alert_history_rule_idx ON alert_history (rule, changed_at)",
            "CREATE INDEX alert_history_at_idx ON alert_history (changed_at)",
        ),
    ),
    Migration(
        41,
        "alert groups, silences, notification log, evaluation ticks, evaluator lease",
        statements=(
            """CREATE TABLE alert_groups (
                id TEXT PRIMARY KEY,
                route TEXT NOT NULL,
                group_key TEXT NOT NULL,
                labels TEXT NOT NULL,
                created_at TIMESTAMP NOT NULL,
                next_flush_at TIMESTAMP NOT NULL,
                last_sent_at TIMESTAMP,
                last_firing TEXT NOT NULL,
                last_resolved TEXT NOT NULL,
                updated_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE alert_silences (
                id TEXT PRIMARY KEY,
                matchers TEXT NOT NULL,
                starts_at TIMESTAMP NOT NULL,
                ends_at TIMESTAMP NOT NULL,
                created_by TEXT,
                comment TEXT,
                created_at TIMESTAMP NOT NULL,
                expired_at TIMESTAMP
            )""",
            """CREATE TABLE alert_notifications (
                id TEXT PRIMARY KEY,
                route TEXT NOT NULL,
                notifier TEXT NOT NULL,
                group_key TEXT NOT NULL,
                status TEXT NOT NULL,
                alert_count INTEGER NOT NULL,
                ok BOOLEAN NOT NULL,
                attempts INTEGER NOT NULL,
                http_status INTEGER,
                error TEXT,
                created_at TIMESTAMP NOT NULL,
                finished_at TIMESTAMP NOT NULL
            )""",
            """CREATE TABLE alert_ticks (
                id TEXT PRIMARY KEY,
                source TEXT NOT NULL,
                evaluated_at TIMESTAMP NOT NULL,
                started_at TIMESTAMP NOT NULL,
                duration_ms DOUBLE PRECISION NOT NULL,
                rules INTEGER NOT NULL,
                pending INTEGER NOT NULL,
                firing INTEGER NOT NULL,
                notifications INTEGER NOT NULL,
                errors TEXT NOT NULL
            )""",
            """CREATE TABLE alert_lease (
                name TEXT PRIMARY KEY,
                holder TEXT NOT NULL,
                expires_at TIMESTAMP NOT NULL
            )""",
        ),
        postgres_only=(
            "CREATE UNIQUE INDEX alert_groups_key_idx ON alert_groups (route, group_key)",
            "CREATE INDEX alert_notifications_created_idx ON alert_notifications (created_at)",
            "CREATE INDEX alert_ticks_started_idx ON alert_ticks (started_at)",
        ),
    ),
)
