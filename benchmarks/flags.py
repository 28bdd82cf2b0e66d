"""Benchmark: flagging 1M sessions (~10M spans), and an incremental 10k-span batch.

    .venv/bin/python benchmarks/flags.py                         # 1M, 3M, 10M spans
    .venv/bin/python benchmarks/flags.py --sizes 1000000 --runs 3

Data: a simulated week (default scenarios, ``text="short"``) per size, bulk-loaded into
a DuckDB file under ``--dir`` (default /tmp/goldenloop-bench-flags) with its ground-truth
manifest, generated once and reused. Spans go through the simulator's bulk path
(``simulate`` → ``normalize_spans`` → ``insert_spans``); feedback and outcomes are loaded
as Arrow tables.

Per size, medians of ``--runs`` runs, each on a freshly opened store:

* **full**: every default rule over every session (the first run, no watermark), after
  the flag tables and cached baselines are emptied: the cost of flagging a store for the
  first time or of a complete backfill;
* **incremental**: then a new batch of ~10k spans (fresh sessions, ingested now) is
  inserted and ``run_incremental`` evaluates it. The first batch of a new day also
  computes that day's cohort baselines (a 7-day scan, once an hour at most); the
  median is over the following batches (steady state), the first is reported apart.

Also reported: spans and sessions, per-rule seconds of the median full run, flags per
rule, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from goldenloop.flags import run_incremental  # noqa: E402
from goldenloop.flags.rules import default_rules  # noqa: E402
from goldenloop.ingest.normalize import normalize_spans  # noqa: E402
from goldenloop.model import Feedback, Outcome  # noqa: E402
from goldenloop.pricing import PriceTable  # noqa: E402
from goldenloop.sim import SimConfig, SimManifest, simulate  # noqa: E402
from goldenloop.store.duckdb import DuckDBStore  # noqa: E402

START = datetime(2026, 6, 22, tzinfo=UTC)
DAYS = 7
SPANS_PER_SESSION = 9.5
FLAG_TABLES = ("flags", "flag_state", "flag_baselines", "flag_runs")


def _events_table(items: list[Feedback] | list[Outcome]) -> pa.Table:
    rows = [item.to_dict() for item in items]
    for row in rows:
        row["created_at"] = datetime.fromisoformat(row["created_at"]).replace(tzinfo=None)
        if "attributes" in row:
            row["attributes"] = json.dumps(row["attributes"])
    return pa.Table.from_pylist(rows)


def load_chunks(
    store: DuckDBStore, config: SimConfig, now_us: int, manifest: SimManifest | None
) -> int:
    prices, loaded, started = PriceTable(), 0, time.perf_counter()
    cursor = store._cursor()
    for chunk in simulate(config):
        batch = normalize_spans(
            chunk.spans, default_project="default", prices=prices, now_us=now_us
        )
        store.insert_spans(batch, dedupe=False)
        for table, items in (("feedback", chunk.feedback), ("outcomes", chunk.outcomes)):
            if items:
                events = _events_table(items)
                cursor.register("_events", events)
                names = ", ".join(events.column_names)
                cursor.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM _events")
                cursor.unregister("_events")
        if manifest is not None:
            manifest.add(chunk.truth, spans=len(chunk.spans), feedback=len(chunk.feedback),
                         outcomes=len(chunk.outcomes))  # fmt: skip
        loaded += len(batch)
        if manifest is not None:
            rate = loaded / (time.perf_counter() - started)
            print(f"\r  {loaded:,} spans ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)
    if manifest is not None:
        print(file=sys.stderr)
    return loaded


def build(path: Path, spans: int) -> None:
    """Generate ``spans`` spans of a simulated week (and its manifest) into a new file."""
    tmp = path.with_suffix(".part")
    tmp.unlink(missing_ok=True)
    store = DuckDBStore(tmp)
    store.migrate()
    config = SimConfig(
        seed=11, start=START, days=DAYS, sessions_per_day=int(spans / SPANS_PER_SESSION / DAYS * 1.1),
        text="short", max_spans=spans, chunk_spans=200_000,
    )  # fmt: skip
    manifest = SimManifest.for_config(config)
    load_chunks(store, config, int(START.timestamp() * 1e6) + DAYS * 86_400_000_000, manifest)
    _spread_ingest_times(store)
    store.close()
    path.with_suffix(".manifest.json").write_text(manifest.to_json())
    tmp.rename(path)


def _spread_ingest_times(store: DuckDBStore) -> None:
    """Bulk loading stamps every span with one ``ingested_at``; live traffic arrives a
    moment after each span ends. Stamp it so, or the engine's overlap window would see
    the whole week as "just ingested"."""
    distinct = store.fetch("SELECT count(DISTINCT ingested_at) FROM spans")[0][0]
    if distinct <= 1:
        store.execute("UPDATE spans SET ingested_at = end_time + INTERVAL '2 seconds'")
        store.execute("CHECKPOINT")


def _reset(store: DuckDBStore) -> None:
    for table in FLAG_TABLES:
        store.execute(f"DELETE FROM {table}")
    store.execute("CHECKPOINT")


def _batch_config(i: int) -> SimConfig:
    """A fresh ~10k-span batch of traffic right after the week (new sessions), ingested
    ten minutes apart."""
    return SimConfig(seed=1000 + i, start=START + timedelta(days=DAYS, hours=i), days=1 / 24,
                     sessions_per_day=40_000, text="short", max_spans=10_000, scenarios=())  # fmt: skip


def measure(path: Path, runs: int, batches: int) -> dict[str, Any]:
    now = START + timedelta(days=DAYS, hours=1)
    full_times: list[float] = []
    by_rule: list[dict[str, float]] = []
    flags: dict[str, int] = {}
    spans = sessions = 0
    for _ in range(runs):
        store = DuckDBStore(path)
        try:
            store.migrate()
            _spread_ingest_times(store)
            _reset(store)
            spans, sessions = (int(v) for v in store.fetch(
                "SELECT count(*), count(DISTINCT session_id) FROM spans")[0])  # fmt: skip
            started = time.perf_counter()
            run = run_incremental(store, default_rules(), now=now)
            full_times.append(time.perf_counter() - started)
            assert not run.errors, run.errors
            by_rule.append({k: v.seconds for k, v in run.by_rule.items()})
            flags = {k: v.new for k, v in run.by_rule.items()}
        finally:
            store.close()
    median_run = by_rule[full_times.index(statistics.median_low(full_times))]

    # Incremental batches on top of the last full run (a copy, so the dataset stays clean).
    work = path.with_suffix(".incremental.duckdb")
    work.unlink(missing_ok=True)
    shutil.copyfile(path, work)
    store = DuckDBStore(work)
    incremental: list[float] = []
    batch_spans: list[int] = []
    try:
        for i in range(batches + 1):
            ingest_us = int((now + timedelta(minutes=10 * (i + 1))).timestamp() * 1e6)
            batch_spans.append(load_chunks(store, _batch_config(i), ingest_us, None))
            clock = now + timedelta(minutes=10 * (i + 1) + 1)
            started = time.perf_counter()
            run = run_incremental(store, default_rules(), now=clock)
            incremental.append(time.perf_counter() - started)
            assert not run.errors, run.errors
    finally:
        store.close()
        work.unlink(missing_ok=True)
    return {
        "spans": spans,
        "sessions": sessions,
        "full_s": round(statistics.median(full_times), 3),
        "full_runs_s": [round(t, 3) for t in full_times],
        "full_by_rule_s": {k: round(v, 3) for k, v in median_run.items()},
        "flags": flags,
        "incremental_batch_spans": batch_spans[1:],
        "incremental_first_s": round(incremental[0], 3),
        "incremental_s": round(statistics.median(incremental[1:]), 3),
        "incremental_runs_s": [round(t, 3) for t in incremental],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/goldenloop-bench-flags"))
    parser.add_argument("--out", type=Path, help="Also write the results as JSON here.")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    results = []
    for size in args.sizes:
        path = args.dir / f"flags-{size}.duckdb"
        if not path.exists():
            print(f"building {path} ({size:,} spans)…", file=sys.stderr)
            build(path, size)
        result = {"target_spans": size, **measure(path, args.runs, args.batches)}
        results.append(result)
        print(json.dumps(result), flush=True)
    if len(results) > 1:
        a, b = results[0], results[-1]
        growth = (b["full_s"] / a["full_s"]) / (b["spans"] / a["spans"])
        print(f"full-run growth: {b['spans'] / a['spans']:.1f}× spans → "
              f"{b['full_s'] / a['full_s']:.1f}× time (ratio {growth:.2f}; 1.0 = linear)")  # fmt: skip
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_mb:,.0f} MB")
    if args.out:
        args.out.write_text(
            json.dumps({"results": results, "peak_rss_mb": round(peak_mb)}, indent=2)
        )


if __name__ == "__main__":
    main()
