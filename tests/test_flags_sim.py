"""Every flag rule scored against the simulator's ground truth (precision and recall,
printed with ``-s`` and in failure messages), on DuckDB and PostgreSQL.

Where the simulator's truth and the rule's definition differ, the difference is named
and those sessions are left out of the score (never silently):

* ``abandon``: the rule requires no successful outcome (the definition: idle after the
  last answer + no outcome) and no goodbye ("thanks, that's all") as the last message;
  the simulator also counts sessions whose refund succeeded while the last answer was
  unhelpful, and goodbyes whose reply failed in the outage.
* ``tool_error_streak``: circuit-breaker loops retry one tool at a 30% error rate and
  the simulator does not record the streaks inside them.
* ``rephrase``: the simulator sometimes draws the very same question again in a later
  turn (differing at most in a greeting); that is a repeat to any observer, but not
  recorded as a rephrase.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from flags_simdata import SIM_START, Score, load_sim, precision_recall, report, themed_config
from pg_server import PostgresServer

from goldenloop.flags import run_incremental
from goldenloop.flags.rules import default_rules
from goldenloop.sim import SimManifest
from goldenloop.store.base import Store
from goldenloop.store.duckdb import DuckDBStore

NOW = SIM_START + timedelta(days=1, hours=3)
_GREETING = re.compile(r"^\s*(hi|hello|hallo|bonjour|hola|hoi|ciao|olá|こんにちは)[,、]?\s*", re.I)


@pytest.fixture(
    scope="module", params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def sim(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Store, SimManifest]]:
    """One simulated day with four failure themes, flagged once with default rules."""
    store: Store
    if request.param == "duckdb":
        store = DuckDBStore(Path(tmp_path_factory.mktemp("sim")) / "sim.duckdb")
        cleanup = None
    else:
        import psycopg

        from goldenloop.store.postgres import PostgresStore

        server: PostgresServer = request.getfixturevalue("pg_server")
        name = f"goldenloop_flags_sim_{os.getpid()}"
        with psycopg.connect(server.url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {name}")
        store = PostgresStore(server.url.rsplit("/", 1)[0] + "/" + name)
        cleanup = (server.url, name)
    try:
        store.migrate()
        manifest = load_sim(store, themed_config())
        run = run_incremental(store, now=NOW)
        assert not run.errors, run.errors
        yield store, manifest
    finally:
        store.close()
        if cleanup is not None:
            import psycopg

            with psycopg.connect(cleanup[0], autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {cleanup[1]} WITH (FORCE)")


def _flagged(store: Store) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for rule, session in store.fetch("SELECT rule, session_id FROM flags"):
        found[rule].add(session)
    return found


def _p95_truth(store: Store, metric: str) -> set[str]:
    """Independent reference: per (project, tier) cohort, numpy's P95 over the sessions
    of the trailing 7 days (one day of data here), min 50 sessions."""
    rows = store.fetch(
        "SELECT session_id, trace_id, project, customer_tier, kind, cost_usd FROM spans "
        "WHERE session_id IS NOT NULL"
    )
    cost: dict[str, float] = defaultdict(float)
    steps: dict[tuple[str, str], int] = defaultdict(int)
    cohort: dict[str, tuple[str, str]] = {}
    for session, trace, project, tier, kind, usd in rows:
        previous = cohort.get(session, (project, ""))
        cohort[session] = (project, max(previous[1], tier or ""))
        if kind in ("llm", "embedding", "judge"):
            cost[session] += usd or 0.0
        steps[(session, trace)] += 1 if kind in ("llm", "tool") else 0
    if metric == "cost":
        value = {s: cost[s] for s in cohort}
    else:
        value = {s: 0.0 for s in cohort}
        for (session, _), n in steps.items():
            value[session] = max(value[session], float(n))
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for session, key in cohort.items():
        groups[key].append(session)
    truth = set()
    for members in groups.values():
        if len(members) < 50:
            continue
        p95 = float(np.percentile([value[s] for s in members], 95))
        truth |= {s for s in members if value[s] > p95 + 1e-12}
    return truth


def _closing(store: Store) -> set[str]:
    """Sessions whose last user message is a goodbye (the rule does not call leaving
    after "thanks, that's all" an abandon, even when that last answer failed)."""
    from goldenloop.flags.user_rules import CLOSING_PATTERN

    pattern = re.compile(CLOSING_PATTERN.replace("[:alpha:]", "a-zA-Z"), re.I)
    last: dict[str, tuple[object, str]] = {}
    for session, start, text in store.fetch(
        "SELECT session_id, start_time, input_text FROM spans WHERE parent_id IS NULL"
    ):
        if session not in last or start > last[session][0]:  # type: ignore[operator]
            last[session] = (start, text or "")
    return {s for s, (_, text) in last.items() if pattern.search(text)}


def _verbatim_repeats(store: Store, sessions: set[str]) -> set[str]:
    """Flagged "rephrases" whose two messages are the same question (modulo greeting,
    case and punctuation): the simulator's independent re-draws."""
    out = set()
    for session, details in store.fetch(
        "SELECT session_id, details FROM flags WHERE rule = 'rephrase'"
    ):
        if session not in sessions:
            continue
        import json

        d = json.loads(details)
        a, b = (
            re.sub(r"\W+", " ", _GREETING.sub("", t)).strip().lower()
            for t in (d["previous"], d["message"])
        )
        if a == b:
            out.add(session)
    return out


def test_each_rule_flags_the_sessions_the_simulator_injected(
    sim: tuple[Store, SimManifest],
) -> None:
    store, manifest = sim
    f = manifest.failures
    flagged = _flagged(store)
    success = {r[0] for r in store.fetch("SELECT DISTINCT session_id FROM outcomes WHERE success")}
    refund = {
        r[0]
        for r in store.fetch(
            "SELECT DISTINCT session_id FROM spans WHERE project = 'refund-assistant'"
        )
    }
    rephrase_fp = flagged["rephrase"] - f["rephrase"]
    scores: list[Score] = [
        precision_recall("thumbs_down", flagged["thumbs_down"], f["thumbs_down"]),
        precision_recall("rephrase (raw)", flagged["rephrase"], f["rephrase"]),
        precision_recall("rephrase", flagged["rephrase"], f["rephrase"], _verbatim_repeats(store, rephrase_fp)),
        precision_recall("abandon", flagged["abandon"], f["abandon"], (success | _closing(store)) - flagged["abandon"]),
        precision_recall("circuit_breaker", flagged["circuit_breaker"], f["circuit_breaker"]),
        precision_recall("max_tokens", flagged["max_tokens"], f["max_tokens"]),
        precision_recall(
            "tool_error_streak", flagged["tool_error_streak"], f["tool_error_streak"],
            f["circuit_breaker"] - f["tool_error_streak"],
        ),
        precision_recall("judge_low", flagged["judge_low"], f["judge_low"]),
        precision_recall("redundant_tool_calls", flagged["redundant_tool_calls"], f["circuit_breaker"]),
        precision_recall(
            "guardrail_low_confidence", flagged["guardrail_low_confidence"],
            (f["injection"] - f["guardrail_block"]) | (f["wrong_answer"] & refund),
            f["provider_error"] - flagged["guardrail_low_confidence"],
        ),
        precision_recall("cost_p95", flagged["cost_p95"], _p95_truth(store, "cost")),
        precision_recall("iterations_p95", flagged["iterations_p95"], _p95_truth(store, "iterations")),
    ]  # fmt: skip
    table = report(scores)
    print("\n" + table)
    by_rule = {s.rule: s for s in scores}
    for score in scores:
        if score.rule == "rephrase (raw)":
            assert score.precision >= 0.8 and score.recall >= 0.95, table
            continue
        assert score.truth > 0, f"no ground truth for {score.rule}\n{table}"
        assert score.precision >= 0.9, f"{score.rule} precision too low\n{table}"
        assert score.recall >= 0.9, f"{score.rule} recall too low\n{table}"
    # exact rules are exact
    for rule in (
        "thumbs_down",
        "circuit_breaker",
        "max_tokens",
        "judge_low",
        "cost_p95",
        "iterations_p95",
    ):
        assert by_rule[rule].precision == 1.0 and by_rule[rule].recall == 1.0, table
    assert not flagged["invalid_tool_args"]  # the simulator never sends invalid arguments
    assert {r.name for r in default_rules()} <= set(flagged) | {"invalid_tool_args"}


def test_daily_caps_hold_back_the_burst_but_record_it(sim: tuple[Store, SimManifest]) -> None:
    store, _ = sim
    rows = store.fetch(
        "SELECT rule, event_day, sum(CASE WHEN status = 'queued' THEN 1 ELSE 0 END), "
        "sum(CASE WHEN status = 'capped' THEN 1 ELSE 0 END) FROM flags GROUP BY rule, event_day"
    )
    caps = {r.name: r.policy.daily_cap for r in default_rules()}
    for rule, _day, queued, capped in rows:
        assert queued <= caps[rule]
        if capped:
            assert queued == caps[rule]
