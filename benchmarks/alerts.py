"""Benchmark: alert evaluation per tick and 7-day backtests over a week of simulated traffic.

    .venv/bin/python benchmarks/alerts.py                          # 500, 1500, 5000 sessions/day
    .venv/bin/python benchmarks/alerts.py --sizes 1500 --runs 3

Data: for each size, a week of simulator traffic (default incident schedule,
``text="short"``, spans only) in a DuckDB file under ``--dir``, generated once and reused,
plus a clean week (no scenarios) for counting false pages. Rules: every built-in type
(an SLO burn-rate rule with the workbook's windows, success below SLO held 15 minutes,
spend velocity per project and tier, breaker spike, injection rise, tool errors week over
week per tool, review queue, P0 time-to-eval).

Measured, medians of ``--runs`` runs, each on a freshly opened store:

* **tick_cold_ms**: the first evaluation of all rules in a new evaluator (every series
  loaded over its full lookback: 3 days for burn rates, 7 days for same-hour baselines);
* **tick_warm_ms**: the following ticks (one minute apart; the series cache re-reads only
  the last 15 minutes), median over 10 ticks;
* **backtest_7d_ms**: replaying each rule at every minute of the week (10,080 evaluations),
  total over the rules and the slowest rule;
* **false pages per simulated week** on the clean week, and when the provider outage of
  the incident week first paged.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from goldenloop.alerts import backtest, parse_rule  # noqa: E402
from goldenloop.alerts.evaluator import Evaluator  # noqa: E402
from goldenloop.alerts.rules import AlertRule  # noqa: E402
from goldenloop.ingest.normalize import normalize_spans  # noqa: E402
from goldenloop.metrics.facts import ensure_turn_facts  # noqa: E402
from goldenloop.metrics.signals import SqlEnv  # noqa: E402
from goldenloop.pricing import PriceTable  # noqa: E402
from goldenloop.sim import SimConfig, SimManifest, simulate  # noqa: E402
from goldenloop.store.duckdb import DuckDBStore  # noqa: E402

START = datetime(2026, 6, 22, tzinfo=UTC)
DAYS = 7
TURNS_OK = {"name": "turns-ok", "objective": "99%", "sli": {"kind": "turn", "checks": ["no_error"]}}
RULES: list[dict[str, Any]] = [
    {"name": "answers-burn", "type": "slo_burn", "slo": TURNS_OK, "min_events": 20},
    {"name": "answers-below-slo", "type": "success_below_slo", "slo": TURNS_OK, "window": "30m"},
    {
        "name": "spend",
        "type": "spend_velocity",
        "usd_per_hour": 50,
        "by": ["project", "customer_tier"],
    },
    {"name": "breaker-spike", "type": "breaker_spike"},
    {"name": "injections", "type": "injection_rise"},
    {"name": "tool-errors", "type": "tool_error_wow"},
    {"name": "review-queue", "type": "review_queue", "max_depth": 50, "max_age": "48h"},
    {"name": "p0-overdue", "type": "p0_overdue"},
]


def _config(sessions_per_day: int, clean: bool) -> SimConfig:
    return SimConfig(seed=7, start=START, days=DAYS, sessions_per_day=sessions_per_day,
                     text="short", scenarios=() if clean else None)  # fmt: skip


def build(path: Path, config: SimConfig) -> SimManifest:
    """The week into a DuckDB file (reused when present; the manifest is kept beside it)."""
    manifest_path = path.with_suffix(".manifest.json")
    if path.exists() and manifest_path.exists():
        return SimManifest.from_dict(json.loads(manifest_path.read_text()))
    tmp = path.with_suffix(".part")
    tmp.unlink(missing_ok=True)
    store = DuckDBStore(tmp)
    store.migrate()
    manifest = SimManifest.for_config(config)
    now_us = int((START + timedelta(days=DAYS + 1)).timestamp() * 1_000_000)
    for chunk in simulate(config):
        store.insert_spans(normalize_spans(chunk.spans, default_project="default",
                                           prices=PriceTable(), now_us=now_us), dedupe=False)  # fmt: skip
        manifest.add(chunk.truth, spans=len(chunk.spans), feedback=len(chunk.feedback),
                     outcomes=len(chunk.outcomes))  # fmt: skip
    ensure_turn_facts(store, SqlEnv("duckdb"))
    store.close()
    tmp.rename(path)
    manifest_path.write_text(manifest.to_json())
    return manifest


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def measure_ticks(path: Path, rules: list[AlertRule], runs: int) -> dict[str, float]:
    cold, warm = [], []
    end = START + timedelta(days=DAYS)
    for _ in range(runs):
        store = DuckDBStore(path)
        evaluator = Evaluator(store)
        started = time.perf_counter()
        evaluator.evaluate(rules, end, dry_run=True)
        cold.append((time.perf_counter() - started) * 1000)
        ticks = []
        for minute in range(1, 11):
            started = time.perf_counter()
            evaluator.evaluate(rules, end + timedelta(minutes=minute), dry_run=True)
            ticks.append((time.perf_counter() - started) * 1000)
        warm.append(statistics.median(ticks))
        store.close()
    return {"tick_cold_ms": _median(cold), "tick_warm_ms": _median(warm)}


def measure_backtests(path: Path, rules: list[AlertRule], runs: int) -> dict[str, Any]:
    per_rule: dict[str, list[float]] = {r.name: [] for r in rules}
    for _ in range(runs):
        store = DuckDBStore(path)
        for rule in rules:
            started = time.perf_counter()
            backtest(store, rule, START, START + timedelta(days=DAYS))
            per_rule[rule.name].append((time.perf_counter() - started) * 1000)
        store.close()
    medians = {name: _median(values) for name, values in per_rule.items()}
    slowest = max(medians, key=lambda n: medians[n])
    return {"backtest_7d_total_ms": round(sum(medians.values()), 1),
            "backtest_7d_slowest": f"{slowest} {medians[slowest]} ms", "backtest_7d_ms": medians}  # fmt: skip


def false_pages(path: Path, rules: list[AlertRule]) -> dict[str, float]:
    store = DuckDBStore(path)
    try:
        return {rule.name: backtest(store, rule, START, START + timedelta(days=DAYS)).pages_per_week
                for rule in rules if rule.severity == "page"}  # fmt: skip
    finally:
        store.close()


def outage_detection(path: Path, manifest: SimManifest, rule: AlertRule) -> str:
    outage = manifest.scenarios["provider-outage"]
    start = datetime.fromisoformat(outage.start)
    store = DuckDBStore(path)
    try:
        pages = backtest(store, rule, start - timedelta(hours=1), start + timedelta(hours=3)).pages
    finally:
        store.close()
    if not pages or pages[0].fired_at is None:
        return "not paged"
    return f"paged {(pages[0].fired_at - start).total_seconds() / 60:.0f} min after onset"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1500, 5000],
                        help="sessions per day")  # fmt: skip
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/goldenloop-bench-alerts"))
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    rules = [parse_rule(r) for r in RULES]
    results = []
    for size in args.sizes:
        incident_path, clean_path = (
            args.dir / f"incident-{size}.duckdb",
            args.dir / f"clean-{size}.duckdb",
        )
        started = time.perf_counter()
        manifest = build(incident_path, _config(size, clean=False))
        build(clean_path, _config(size, clean=True))
        row: dict[str, Any] = {"sessions_per_day": size, "spans": manifest.spans,
                               "build_s": round(time.perf_counter() - started, 1)}  # fmt: skip
        row.update(measure_ticks(incident_path, rules, args.runs))
        row.update(measure_backtests(incident_path, rules, args.runs))
        row["false_pages_per_week"] = false_pages(clean_path, rules)
        row["outage"] = outage_detection(incident_path, manifest, rules[0])
        results.append(row)
        print(json.dumps(row, indent=2), flush=True)
    base = results[0]
    print("\nsize  spans    tick cold  tick warm  backtest 7d (all rules)  × spans  × backtest")
    for row in results:
        print(f"{row['sessions_per_day']:>5} {row['spans']:>8} {row['tick_cold_ms']:>8} ms "
              f"{row['tick_warm_ms']:>7} ms {row['backtest_7d_total_ms']:>14} ms "
              f"{row['spans'] / base['spans']:>10.1f} {row['backtest_7d_total_ms'] / base['backtest_7d_total_ms']:>10.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
