"""Benchmark: the overview query set and the regression finder on 1M/3M/10M spans.

    .venv/bin/python benchmarks/metrics.py                      # 1M, 3M, 10M
    .venv/bin/python benchmarks/metrics.py --sizes 1000000 --runs 3

Data: a week of simulator traffic (default scenarios, ``text="short"``) written through
the simulator's bulk path (``goldenloop.sim.write_to_store``) into a DuckDB file per
size under ``--dir`` (default /tmp/goldenloop-bench), generated once and reused.

Turn and session facts are rebuilt from scratch once per size (``facts_build_s``, what
the first query after a bulk load pays); then, medians of ``--runs`` runs, each on a
freshly opened store (facts up to date, nothing else cached):

* **overview**: the overview page's query set: headline + per-hour series over 7 days
  (success rates, latency P50/P95, cost, error rates, turns), latency P50/P95 by span
  kind × model, cost by customer tier, and the slice table by locale;
* **regressions**: the slice regression finder, last 2h against the 7 days before, over
  every default dimension plus every feature flag, with its explanations;
* **slos**: three SLOs (judge, latency, turn-quality) with burn rates.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from goldenloop.metrics.burn import evaluate_slos  # noqa: E402
from goldenloop.metrics.config import MetricsConfig  # noqa: E402
from goldenloop.metrics.facts import ensure_turn_facts  # noqa: E402
from goldenloop.metrics.regressions import RegressionQuery, find_regressions  # noqa: E402
from goldenloop.metrics.signals import SqlEnv  # noqa: E402
from goldenloop.metrics.slo import SloSet, parse_slos  # noqa: E402
from goldenloop.metrics.windows import TimeWindow  # noqa: E402
from goldenloop.sim import SimConfig, write_to_store  # noqa: E402
from goldenloop.store.duckdb import DuckDBStore  # noqa: E402
from goldenloop.web.overview import overview_data  # noqa: E402

START = datetime(2026, 6, 22, tzinfo=UTC)
DAYS = 7
SPANS_PER_SESSION = 9.5  # measured on the simulator's default mix
SLOS = parse_slos([
    {"name": "refund-correct", "objective": "95%",
     "sli": {"kind": "judge", "judge": "answer_correctness", "filter": {"project": "refund-assistant"}}},
    {"name": "enterprise-latency", "objective": "95%",
     "sli": {"kind": "latency", "threshold_ms": 8000, "filter": {"customer_tier": "enterprise"}}},
    {"name": "good-turns", "objective": "99%", "sli": {"kind": "turn"}},
])  # fmt: skip


def build(path: Path, spans: int) -> None:
    """Generate ``spans`` spans of a simulated week into a new DuckDB file through the
    simulator's bulk path."""
    tmp = path.with_suffix(".part")
    tmp.unlink(missing_ok=True)
    store = DuckDBStore(tmp)
    store.migrate()
    config = SimConfig(
        seed=11, start=START, days=DAYS, sessions_per_day=int(spans / SPANS_PER_SESSION / DAYS * 1.1),
        text="short", max_spans=spans, chunk_spans=200_000,
    )  # fmt: skip
    loaded, started = 0, time.perf_counter()

    def progress(count: int) -> None:
        nonlocal loaded
        loaded += count
        rate = loaded / (time.perf_counter() - started)
        print(f"\r  {loaded:,} spans ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)

    write_to_store(store, config, progress)
    print(file=sys.stderr)
    store.close()
    tmp.rename(path)


def _median(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def build_facts(path: Path) -> float:
    """Rebuild the turn and session facts from scratch; seconds taken."""
    store = DuckDBStore(path)
    try:
        store.execute("DELETE FROM metric_state")
        started = time.perf_counter()
        ensure_turn_facts(store, SqlEnv(store.dialect))
        return time.perf_counter() - started
    finally:
        store.close()


def measure(path: Path, runs: int) -> dict[str, Any]:
    end = START + timedelta(days=DAYS)
    results: dict[str, Any] = {"facts_build_s": build_facts(path)}

    def fresh() -> DuckDBStore:
        return DuckDBStore(path)

    def overview() -> Any:
        store = fresh()
        try:
            return overview_data(store, MetricsConfig(), SloSet([]), [("end", end.isoformat())])
        finally:
            store.close()

    def regressions() -> Any:
        store = fresh()
        try:
            window = TimeWindow.last("2h", end=regression_end)
            return find_regressions(store, RegressionQuery(window, window.before("7d")))
        finally:
            store.close()

    def slos() -> Any:
        store = fresh()
        try:
            return evaluate_slos(store, SLOS, now=end)
        finally:
            store.close()

    # The EU prompt regression of the default schedule runs from day 3 14:00 UTC.
    regression_end = START + timedelta(days=3, hours=16)
    store = fresh()
    results["spans"] = store.count_spans()
    results["turns"] = store.fetch("SELECT count(*) FROM spans WHERE parent_id IS NULL")[0][0]
    store.close()
    results["overview_s"], _ = _median(overview, runs)
    results["regressions_s"], report = _median(regressions, runs)
    results["slos_s"], _ = _median(slos, runs)
    results["top_findings"] = [f.summary for f in report.findings[:3]]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,3000000,10000000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default="/tmp/goldenloop-bench")
    parser.add_argument("--generate-only", action="store_true")
    args = parser.parse_args()
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        path = folder / f"metrics-{size}.duckdb"
        if not path.exists():
            print(f"generating {size:,} spans into {path}", file=sys.stderr)
            build(path, size)
        if args.generate_only:
            continue
        result = measure(path, args.runs)
        rows.append(result)
        print(json.dumps(result), flush=True)
    if len(rows) > 1:
        base = rows[0]
        for row in rows[1:]:
            growth = {
                k: round(row[k] / base[k], 2) for k in ("overview_s", "regressions_s", "slos_s")
            }
            print(f"{base['spans']:,} → {row['spans']:,} spans ({row['spans'] / base['spans']:.1f}x): "
                  f"time grows {growth}")  # fmt: skip


if __name__ == "__main__":
    main()
