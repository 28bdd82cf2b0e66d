"""The columnar simulation engine: its rows are what the server would store, its
traffic is the per-session engine's, and every sink and process count agrees."""

from __future__ import annotations

import math
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from live import LiveServer

from goldenloop.config import Settings
from goldenloop.ingest.arrow import span_batch_to_arrow
from goldenloop.ingest.normalize import normalize_spans
from goldenloop.pricing import Price, PriceTable
from goldenloop.sim import SimConfig, default_start, send_over_otlp, write_to_store
from goldenloop.sim.columnar import columnar_pieces, plan_batches
from goldenloop.sim.columnar.render import to_raw_spans
from goldenloop.sim.manifest import SimManifest
from goldenloop.sim.parallel import plan_parts
from goldenloop.sim.pieces import LoadPiece, part_pieces
from goldenloop.store.duckdb import DuckDBStore
from goldenloop.web.app import create_app

NOW_US = int(time.time() * 1_000_000)
WEEK = SimConfig(seed=11, start=default_start(7), days=7, sessions_per_day=700, engine="columnar")


def _pieces(config: SimConfig) -> list[LoadPiece]:
    return list(columnar_pieces(config, now_us=NOW_US))


def _manifest(config: SimConfig, pieces: list[LoadPiece]) -> SimManifest:
    manifest = SimManifest.for_config(config)
    for p in pieces:
        manifest.add(p.truth, spans=p.generated_spans, feedback=len(p.feedback),
                     outcomes=len(p.outcomes))  # fmt: skip
    return manifest


@pytest.fixture(scope="module")
def week() -> tuple[pa.Table, SimManifest, list[LoadPiece]]:
    pieces = _pieces(WEEK)
    return pa.concat_tables([p.table for p in pieces]), _manifest(WEEK, pieces), pieces


def _normalized_again(table: pa.Table, prices: PriceTable | None = None) -> pa.Table:
    raw = list(to_raw_spans(table))
    batch = normalize_spans(
        raw, default_project="unused", prices=prices or PriceTable(), now_us=NOW_US
    )
    return span_batch_to_arrow(batch)


# -- the rows are what the server stores -------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"text": "short", "openinference_share": 1.0, "explicit_cost_share": 1.0},
        {"explicit_cost_share": 0.0, "judge_share": 0.5, "seed": 3},
    ],
    ids=["default", "short-openinference-reported-cost", "computed-cost-many-judges"],
)
def test_stored_rows_are_what_normalizing_the_rendered_spans_gives(changes: dict[str, Any]) -> None:
    config = WEEK.replace(sessions_per_day=300, **changes)
    pieces = _pieces(config)
    assert sum(p.table.num_rows for p in pieces) > 10_000
    for piece in pieces:
        again = _normalized_again(piece.table)
        mismatched = [
            (a["name"], {k: (a[k], b[k]) for k in a if a[k] != b[k]})
            for a, b in zip(piece.table.to_pylist(), again.to_pylist(), strict=True)
            if a != b
        ]
        assert not mismatched[:3]


def test_a_price_table_override_prices_spans_that_report_no_cost() -> None:
    prices = PriceTable({"gpt-4o-mini": Price(1.0, 2.0)})  # only one model known
    config = WEEK.replace(days=1, sessions_per_day=400, explicit_cost_share=0.3)
    (piece, *_) = columnar_pieces(config, now_us=NOW_US, prices=prices)
    assert piece.table.to_pylist() == _normalized_again(piece.table, prices).to_pylist()
    rows = piece.table.filter(pc.equal(piece.table.column("kind"), "llm")).to_pylist()
    unknown = [r for r in rows if not r["model"].startswith("gpt-4o-mini")]
    assert unknown and any(r["cost_usd"] is None for r in unknown)  # unknown, not reported
    assert any(r["cost_usd"] is not None for r in unknown)  # reported by the app


# -- same traffic as the per-session engine ----------------------------------------------


def _traffic_stats(config: SimConfig) -> dict[str, float]:
    tables, manifest = [], SimManifest.for_config(config)
    for part in plan_parts(config):
        for p in part_pieces(config, part, prices=PriceTable(), now_us=NOW_US, default_project="d"):
            tables.append(p.table)
            manifest.add(p.truth, spans=p.generated_spans, feedback=len(p.feedback),
                         outcomes=len(p.outcomes))  # fmt: skip
    t = pa.concat_tables(tables)
    sessions = manifest.sessions
    stats = {
        "spans per session": t.num_rows / sessions,
        "turns per session": manifest.turns / sessions,
        "error spans": pc.sum(pc.equal(t.column("status"), "error")).as_py() / t.num_rows,
        "feedback per session": manifest.feedback / sessions,
        "outcomes per session": manifest.outcomes / sessions,
        "cost per session": pc.sum(t.column("cost_usd")).as_py() / sessions,
    }
    for kind, count in Counter(t.column("kind").to_pylist()).items():
        stats[f"share of {kind} spans"] = count / t.num_rows
    llm = t.filter(pc.equal(t.column("kind"), "llm"))
    for column in ("input_tokens", "output_tokens", "latency_ms"):
        stats[f"llm median {column}"] = pc.approximate_median(llm.column(column)).as_py()
    for column in ("input_text", "output_text"):
        stats[f"{column} bytes per span"] = (
            pc.sum(pc.binary_length(t.column(column))).as_py() / t.num_rows
        )
    for kind, ids in manifest.failures.items():
        stats[f"sessions with {kind}"] = len(ids) / sessions
    for name, truth in manifest.scenarios.items():
        stats[f"sessions hit by {name}"] = len(truth.sessions) / sessions
    return stats


def test_traffic_matches_the_per_session_engine() -> None:
    """Both engines draw the same model, so every rate agrees within sampling noise:
    shares of sessions by a two-proportion z-test (|z| < 4.5: scenario effects
    cluster in time, so the noise is wider than binomial), the rest within 15%."""
    config = WEEK.replace(sessions_per_day=1500, seed=5)
    columnar = _traffic_stats(config)
    sessions = _traffic_stats(config.replace(engine="sessions"))
    assert columnar.keys() == sessions.keys()
    n = 7 * 1500
    far = {}
    for key, expected in sessions.items():
        got = columnar[key]
        if key.startswith("sessions "):
            pooled = (expected + got) / 2
            noise = math.sqrt(max(pooled * (1 - pooled), 1e-9) * 2 / n)
            if abs(got - expected) > 4.5 * noise:
                far[key] = (expected, got)
        elif abs(got - expected) > 0.15 * abs(expected):
            far[key] = (expected, got)
    assert not far


# -- deterministic, whichever process or sink ----------------------------------------------


def test_same_seed_gives_the_same_rows_and_manifest(week: Any) -> None:
    table, manifest, _ = week
    pieces = _pieces(WEEK)
    assert pa.concat_tables([p.table for p in pieces]).equals(table)
    assert _manifest(WEEK, pieces).to_dict() == manifest.to_dict()
    other = _pieces(WEEK.replace(seed=12))
    assert other[0].table.column("span_id") != pieces[0].table.column("span_id")


def test_batches_are_whole_hours_of_about_the_chunk_size() -> None:
    batches = plan_batches(WEEK)
    assert batches[0].start == 0 and batches[-1].stop == 7 * 24
    assert all(a.stop == b.start for a, b in zip(batches, batches[1:], strict=False))
    assert len(batches) == len(plan_batches(WEEK.replace(chunk_spans=20_000)))
    assert len(plan_batches(WEEK.replace(chunk_spans=2_000))) > 3 * len(batches)


def _stored(store: DuckDBStore) -> list[tuple[Any, ...]]:
    return store.fetch("SELECT * EXCLUDE (ingested_at) FROM spans ORDER BY span_id")


def test_workers_and_in_process_store_the_same_rows_and_ground_truth(tmp_path: Path) -> None:
    config = WEEK.replace(days=3, sessions_per_day=1200, max_spans=30_000)
    results = []
    for workers in (0, 2):
        store = DuckDBStore(tmp_path / f"w{workers}.duckdb")
        store.migrate()
        manifest = write_to_store(store, config, workers=workers, now_us=NOW_US)
        results.append((_stored(store), manifest.to_dict(), store.fetch(
            "SELECT count(*) FROM feedback")[0][0]))  # fmt: skip
        store.close()
    assert results[0] == results[1]
    rows, manifest, feedback = results[0]
    assert 30_000 <= len(rows) == manifest["totals"]["spans"] < 30_100
    assert feedback == manifest["totals"]["feedback"] > 0


def test_max_spans_stops_after_the_session_that_reaches_it() -> None:
    for budget in (1, 2_345, 9_999):
        pieces = _pieces(WEEK.replace(max_spans=budget))
        table = pa.concat_tables([p.table for p in pieces])
        manifest = _manifest(WEEK, pieces)
        assert table.num_rows >= budget
        sessions = table.column("session_id").to_pylist()
        last = pieces[-1].table.column("session_id").to_pylist()
        starts = {}
        for row in pieces[-1].table.to_pylist():
            if row["parent_id"] is None:
                starts[row["session_id"]] = min(
                    row["start_time"], starts.get(row["session_id"], row["start_time"])
                )
        latest = max(starts, key=starts.__getitem__)  # the session that reached the budget
        assert table.num_rows - last.count(latest) < budget
        assert manifest.sessions == len(set(sessions))
        assert manifest.turns == pc.count_distinct(table.column("trace_id")).as_py()
        assert sum(manifest.sessions_by_project.values()) == manifest.sessions
        kept = set(sessions)
        assert all(ids <= kept for ids in manifest.failures.values())
        assert all(p.session_id in kept for piece in pieces for p in piece.feedback)


def test_the_otlp_sink_and_the_bulk_path_store_the_same_rows(tmp_path: Path) -> None:
    config = WEEK.replace(days=0.5, sessions_per_day=2000)
    bulk = DuckDBStore(tmp_path / "bulk.duckdb")
    bulk.migrate()
    bulk_manifest = write_to_store(bulk, config, workers=0, now_us=NOW_US)
    served = DuckDBStore(tmp_path / "served.duckdb")
    served.migrate()
    with LiveServer(create_app(Settings(), served)) as server:
        sent = send_over_otlp(server.url, config, batch_spans=300)
    assert sent.to_dict() == bulk_manifest.to_dict()
    assert _stored(served) == _stored(bulk)
    assert served.fetch("SELECT count(*) FROM feedback") == bulk.fetch(
        "SELECT count(*) FROM feedback"
    )


# -- ground truth is what the rows show ----------------------------------------------------


def test_ground_truth_is_what_the_rows_show(week: Any) -> None:
    table, manifest, pieces = week
    rows = table.to_pylist()
    failures = manifest.failures

    def sessions_where(predicate: Any) -> set[str]:
        return {r["session_id"] for r in rows if predicate(r)}

    def failed(kind: str) -> Any:
        return lambda r: r["kind"] == kind and r["status"] == "error"

    assert failures["tool_error"] == sessions_where(failed("tool")) != set()
    assert failures["provider_error"] == sessions_where(failed("llm")) != set()
    assert failures["circuit_breaker"] == sessions_where(
        lambda r: r["error_type"] == "CircuitBreakerOpen"
    )
    assert failures["max_tokens"] == sessions_where(
        lambda r: r["kind"] == "llm" and r["stop_reason"] == "max_tokens"
    )
    assert failures["guardrail_block"] == sessions_where(
        lambda r: r["kind"] == "guardrail" and r["score"] >= 0.9
    )
    assert failures["judge_low"] == sessions_where(
        lambda r: r["kind"] == "judge" and r["score"] < 0.5
    )
    downs = {f.session_id for p in pieces for f in p.feedback if f.rating == "down"}
    assert failures["thumbs_down"] == downs != set()
    regression = manifest.scenarios["eu-prompt-regression"]
    start = datetime.fromisoformat(regression.start).replace(tzinfo=None)
    end = datetime.fromisoformat(regression.end).replace(tzinfo=None) + timedelta(minutes=30)
    hit = [r for r in rows if r["session_id"] in regression.sessions and r["parent_id"] is None]
    assert hit and all(r["locale"] in ("de-DE", "fr-FR") for r in hit)
    assert any(r["prompt_hash"] == "a9f2" for r in hit)
    assert all(start <= r["start_time"] <= end for r in hit if r["prompt_hash"] == "a9f2")
    outage = manifest.scenarios["provider-outage"]
    errors = [r for r in rows if r["kind"] == "llm" and r["status"] == "error"]
    assert {r["session_id"] for r in errors} <= outage.sessions


def test_an_unknown_engine_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"engine: unknown 'fast'.*sessions.*columnar"):
        SimConfig(engine="fast")  # type: ignore[arg-type]


def test_the_flag_rules_find_what_the_columnar_engine_injected(tmp_path: Path) -> None:
    """The detectors see the columnar engine's traffic as they see the per-session
    engine's (``test_flags_sim``): the rules whose ground truth is exact flag exactly
    the sessions the manifest lists."""
    from flags_simdata import SIM_START, load_sim, themed_config

    from goldenloop.flags import run_incremental

    store = DuckDBStore(tmp_path / "flags.duckdb")
    store.migrate()
    manifest = load_sim(store, themed_config().replace(engine="columnar"))
    run = run_incremental(store, now=SIM_START + timedelta(days=1, hours=3))
    assert not run.errors, run.errors
    flagged: dict[str, set[str]] = {}
    for rule, session in store.fetch("SELECT rule, session_id FROM flags"):
        flagged.setdefault(rule, set()).add(session)
    failures = manifest.failures
    for rule in ("thumbs_down", "circuit_breaker", "max_tokens", "judge_low"):
        assert failures[rule], rule
        assert flagged.get(rule, set()) == failures[rule], rule
    # A breaker loop has failure streaks of its own; the manifest lists streaks of retries.
    streaks = flagged.get("tool_error_streak", set())
    assert failures["tool_error_streak"] <= streaks
    assert streaks - failures["tool_error_streak"] <= failures["circuit_breaker"]
    rephrased = flagged.get("rephrase", set())
    assert len(rephrased & failures["rephrase"]) >= 0.9 * len(failures["rephrase"]) > 0
    # The abandon rule leaves out sessions that ended in a goodbye or a successful
    # outcome, which the manifest still lists (test_flags_sim scores that part).
    assert flagged.get("abandon") and flagged["abandon"] <= failures["abandon"]
    assert not flagged.get("invalid_tool_args")
