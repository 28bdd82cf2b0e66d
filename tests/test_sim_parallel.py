"""The simulator's bulk path stores the same rows and manifest with or without workers."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from goldenloop.ingest.normalize import normalize_spans
from goldenloop.pricing import PriceTable
from goldenloop.sim import SimConfig, SimManifest, parallel, simulate, write_to_store
from goldenloop.sim.generate import hourly_sessions
from goldenloop.sim.parallel import IN_PROCESS_MAX_SPANS, auto_workers, plan_parts
from goldenloop.sim.pieces import LoadPiece
from goldenloop.sim.workers import (
    SimWorkerError,
    StreamCut,
    WorkerJob,
    Workers,
    _write_part,
    read_message,
)
from goldenloop.store.base import Store
from goldenloop.store.duckdb import DuckDBStore

START = datetime(2026, 6, 22, tzinfo=UTC)
NOW_US = 1_790_000_000_000_000  # fixed, so ingested_at matches between loads
#: ~600 sessions over 12 hours in chunks of 400 spans: several parts per worker.
WHOLE_RUN = SimConfig(seed=5, start=START, days=0.5, sessions_per_day=1200, chunk_spans=400)
#: Hours of ~1,000 spans in chunks of 150, cut by max_spans: the cut falls inside a part
#: that is several chunks long, so the regenerated piece is not the part's first.
CUT_RUN = SimConfig(
    seed=9, start=START, days=0.5, sessions_per_day=2400, chunk_spans=150, max_spans=4321
)

Snapshot = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]


def _child_pids() -> set[int]:
    """This process's child processes, exited but unreaped ones (zombies) included."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if int(fields[1]) == os.getpid():  # fields: state, ppid, ...
            children.add(int(stat.parent.name))
    return children


def _snapshot(store: Store) -> Snapshot:
    return (
        store.fetch("SELECT * FROM spans ORDER BY trace_id, span_id"),
        store.fetch("SELECT * FROM feedback ORDER BY id"),
        store.fetch("SELECT * FROM outcomes ORDER BY id"),
    )


def _load(path: Path, config: SimConfig, workers: int) -> tuple[Snapshot, SimManifest]:
    store = DuckDBStore(path)
    store.migrate()
    try:
        manifest = write_to_store(store, config, now_us=NOW_US, workers=workers)
        return _snapshot(store), manifest
    finally:
        store.close()


def _load_chunk_by_chunk(path: Path, config: SimConfig) -> tuple[Snapshot, SimManifest]:
    """The reference: what ``write_to_store`` did before it had workers."""
    store = DuckDBStore(path)
    store.migrate()
    manifest = SimManifest.for_config(config)
    try:
        for chunk in simulate(config):
            batch = normalize_spans(
                chunk.spans, default_project="default", prices=PriceTable(), now_us=NOW_US
            )
            store.insert_spans(batch, dedupe=False)
            if chunk.feedback:
                store.insert_feedback(chunk.feedback)
            if chunk.outcomes:
                store.insert_outcomes(chunk.outcomes)
            manifest.add(chunk.truth, spans=len(chunk.spans), feedback=len(chunk.feedback),
                         outcomes=len(chunk.outcomes))  # fmt: skip
        return _snapshot(store), manifest
    finally:
        store.close()


@pytest.mark.parametrize("config", [WHOLE_RUN, CUT_RUN], ids=["whole-run", "max-spans-cut"])
def test_in_process_and_one_or_two_workers_store_what_chunk_by_chunk_loading_stores(
    tmp_path: Path, config: SimConfig
) -> None:
    reference, manifest = _load_chunk_by_chunk(tmp_path / "reference.duckdb", config)
    spans, feedback, outcomes = reference
    assert len(spans) == manifest.spans and feedback and outcomes
    if config.max_spans is not None:
        assert config.max_spans <= manifest.spans < config.max_spans + 100
    children = _child_pids()
    for workers in (0, 1, 2):
        rows, loaded_manifest = _load(tmp_path / f"w{workers}.duckdb", config, workers)
        assert rows == reference, f"{workers} worker(s)"
        assert loaded_manifest.to_dict() == manifest.to_dict(), f"{workers} worker(s)"
        assert _child_pids() == children, f"{workers} worker(s) left behind"


@pytest.mark.postgres
def test_workers_load_postgresql_like_the_in_process_path(pg_url: str) -> None:
    from goldenloop.store.postgres import PostgresStore

    store = PostgresStore(pg_url)
    store.migrate()
    try:
        manifest = write_to_store(store, CUT_RUN, now_us=NOW_US, workers=0)
        in_process = _snapshot(store)
        for table in ("spans", "feedback", "outcomes"):
            store.execute(f"DELETE FROM {table}")
        parallel_manifest = write_to_store(store, CUT_RUN, now_us=NOW_US, workers=2)
        assert _snapshot(store) == in_process
        assert parallel_manifest.to_dict() == manifest.to_dict()
    finally:
        store.close()


def test_a_failing_worker_reports_its_traceback(tmp_path: Path) -> None:
    children = _child_pids()
    store = DuckDBStore(tmp_path / "x.duckdb")
    store.migrate()
    try:
        # Spans 56 years after "now" fail validation inside the worker.
        with pytest.raises(SimWorkerError, match="InvalidSpans"):
            write_to_store(store, WHOLE_RUN, now_us=0, workers=1)
        assert store.count_spans() == 0
    finally:
        store.close()
    assert _child_pids() == children


def test_a_killed_worker_is_reported_with_its_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker 1 is killed while it still has most of its ~70 MB to send (far more than
    its pipe and lookahead hold), so the loader meets the truncated stream."""
    killed: list[int] = []

    class KillingWorkers(Workers):
        def receive(self, index: int) -> LoadPiece | None:
            piece = super().receive(index)
            if not killed:
                os.kill(self.pids[1], signal.SIGKILL)
                killed.append(self.pids[1])
            return piece

    monkeypatch.setattr(parallel, "Workers", KillingWorkers)
    children = _child_pids()
    big = SimConfig(seed=3, start=START, days=1, sessions_per_day=4000, chunk_spans=400)
    store = DuckDBStore(tmp_path / "x.duckdb")
    store.migrate()
    try:
        with pytest.raises(SimWorkerError) as raised:
            write_to_store(store, big, now_us=NOW_US, workers=2)
    finally:
        store.close()
    assert f"worker 1 (pid {killed[0]}) exited with code {-signal.SIGKILL}" in str(raised.value)
    assert "stderr" in str(raised.value)
    assert _child_pids() == children


def test_a_script_without_a_main_guard_can_start_workers(tmp_path: Path) -> None:
    """Workers run ``python -m goldenloop.sim.worker_main``: they neither re-run nor
    re-import the calling script (under ``spawn`` this script would fail, and print
    ``loading`` once more per worker)."""
    script = tmp_path / "load.py"
    script.write_text(
        textwrap.dedent(
            f"""\
            import sys
            from datetime import datetime, UTC
            from goldenloop.sim import SimConfig, write_to_store
            from goldenloop.store.duckdb import DuckDBStore

            print("loading", flush=True)
            store = DuckDBStore(sys.argv[1])
            store.migrate()
            config = SimConfig(seed=5, start=datetime.fromisoformat({START.isoformat()!r}),
                               days=0.5, sessions_per_day=1200, chunk_spans=400)
            write_to_store(store, config, now_us={NOW_US}, workers=2)
            print(store.count_spans())
            store.close()
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "script.duckdb")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    store = DuckDBStore(tmp_path / "in-process.duckdb")
    store.migrate()
    try:
        write_to_store(store, WHOLE_RUN, now_us=NOW_US, workers=0)
        in_process = store.count_spans()
    finally:
        store.close()
    assert in_process > 0
    assert result.stdout.split() == ["loading", str(in_process)]


def test_parts_cover_every_hour_once_in_order() -> None:
    for config in (WHOLE_RUN, CUT_RUN, SimConfig(seed=1, start=START, days=7)):
        parts = plan_parts(config)
        assert len(parts) > 2
        hours = [hour for part in parts for hour in part]
        assert hours == list(range(len(hourly_sessions(config))))


def test_small_runs_stay_in_process_unless_workers_are_asked_for(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    one_per_core = min(cores, 4) if cores > 1 else 0
    big = SimConfig(seed=1, start=START, days=7, sessions_per_day=2000)  # ~130,000 spans
    assert auto_workers(big) == one_per_core
    assert auto_workers(big.replace(max_spans=IN_PROCESS_MAX_SPANS)) == one_per_core
    assert auto_workers(big.replace(max_spans=IN_PROCESS_MAX_SPANS - 1)) == 0
    assert auto_workers(WHOLE_RUN) == 0  # ~5,700 spans
    assert auto_workers(big.replace(engine="columnar")) == 0  # generation keeps up in-process
    store = DuckDBStore(tmp_path / "x.duckdb")
    try:
        with pytest.raises(ValueError, match="workers"):
            write_to_store(store, WHOLE_RUN, workers=-1)
    finally:
        store.close()


def test_a_stream_cut_anywhere_is_reported_as_cut() -> None:
    """Wherever a dying worker's stream ends (inside a pickled header or inside the
    Arrow table that follows it), the reader sees StreamCut, never another error."""
    first_part = plan_parts(WHOLE_RUN)[0]
    job = WorkerJob(WHOLE_RUN, [first_part], PriceTable(), NOW_US, "default")
    out = io.BytesIO()
    _write_part(out, job, first_part)
    stream = out.getvalue()
    whole = io.BytesIO(stream)
    boundaries, pieces = [0], 0
    while (message := read_message(whole)) is not None:
        boundaries.append(whole.tell())
        if not isinstance(message, LoadPiece):
            break
        pieces += 1
    assert pieces >= 2 and boundaries[-1] == len(stream)
    first_table = boundaries[1]
    cuts = {1, 2, 10, 100, first_table // 2, first_table - 8, first_table - 1}
    cuts |= set(range(boundaries[1] + 1, boundaries[2], max(1, first_table // 97)))
    for cut in sorted(cuts):
        truncated = io.BytesIO(stream[:cut])
        with pytest.raises(StreamCut):
            while True:
                read_message(truncated)
