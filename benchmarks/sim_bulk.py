"""Throughput of the simulator's bulk path: generate → normalize → insert into DuckDB.

Prints spans/s (median of ``--runs`` runs) for each size and engine (``--engines``),
per stage so the cost of each step is visible. The per-session engine (``sessions``):

* ``generate``      simulate() alone (RawSpans + feedback + outcomes, ~3 KB text/span)
* ``+normalize``    generate and ``normalize_spans`` (what the server runs per request)
* ``+arrow``        ... and the Arrow table: all a bulk worker process does but write it
                    to its pipe, so about the rate of one worker on an idle core
* ``bulk spans``    ``write_to_store(include_feedback=False)`` into a fresh DuckDB file,
                    once per ``--workers`` value (``0`` = in-process, ``auto`` = the
                    default for the size)
* ``bulk all``      ``write_to_store()`` with feedback and outcomes (only for sizes up to
                    ``--full-max``, because those inserts are row-at-a-time today)

The columnar engine (``columnar``) makes stored rows directly, so it has one generation
step, ``rows`` (``columnar_pieces``: spans as stored, feedback, outcomes, ground
truth), then the same bulk steps.

Usage: ``python benchmarks/sim_bulk.py [--sizes 100000 1000000] [--runs 3]
[--engines sessions columnar] [--workers 0 auto] [--text short] [--out FILE]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import cast

from goldenloop.ingest.arrow import span_batch_to_arrow
from goldenloop.ingest.normalize import normalize_spans
from goldenloop.pricing import PriceTable
from goldenloop.sim import SimConfig, default_start, simulate, write_to_store
from goldenloop.sim.columnar import columnar_pieces
from goldenloop.sim.config import TextMode
from goldenloop.sim.gcpause import paused_gc
from goldenloop.sim.parallel import auto_workers
from goldenloop.store.duckdb import DuckDBStore

SPANS_PER_SESSION = 9.5  # measured average with the default apps


def config_for(spans: int, text: TextMode) -> SimConfig:
    days = 7
    per_day = int(spans / SPANS_PER_SESSION / days * 1.15) + 10
    return SimConfig(
        seed=1,
        start=default_start(days),
        days=days,
        sessions_per_day=per_day,
        max_spans=spans,
        text=text,
    )


def columnar_rows(config: SimConfig) -> int:
    now_us = int(time.time() * 1e6)
    with paused_gc():
        return sum(p.table.num_rows for p in columnar_pieces(config, now_us=now_us))


def generate(config: SimConfig) -> int:
    with paused_gc():
        return sum(len(chunk.spans) for chunk in simulate(config))


def generate_normalize(config: SimConfig) -> int:
    prices, now_us, total = PriceTable(), int(time.time() * 1e6), 0
    with paused_gc():
        for chunk in simulate(config):
            total += len(
                normalize_spans(chunk.spans, default_project="bench", prices=prices, now_us=now_us)
            )
    return total


def generate_normalize_arrow(config: SimConfig) -> int:
    prices, now_us, total = PriceTable(), int(time.time() * 1e6), 0
    with paused_gc():
        for chunk in simulate(config):
            batch = normalize_spans(
                chunk.spans, default_project="bench", prices=prices, now_us=now_us
            )
            total += span_batch_to_arrow(batch).num_rows
    return total


def bulk(config: SimConfig, *, include_feedback: bool, workers: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        store = DuckDBStore(Path(tmp) / "bench.duckdb")
        store.migrate()
        try:
            manifest = write_to_store(
                store, config, include_feedback=include_feedback, workers=workers
            )
        finally:
            store.close()
    return manifest.spans


def median_rate(step: Callable[[SimConfig], int], config: SimConfig, runs: int) -> float:
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        spans = step(config)
        rates.append(spans / (time.perf_counter() - started))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--text", choices=["full", "short"], default="full")
    parser.add_argument(
        "--full-max",
        type=int,
        default=100_000,
        help="largest size for the run that also stores feedback/outcomes",
    )
    parser.add_argument(
        "--workers",
        nargs="+",
        default=["0", "auto"],
        help="worker processes for the bulk steps: numbers and/or 'auto'",
    )
    parser.add_argument(
        "--engines", nargs="+", choices=["sessions", "columnar"], default=["sessions", "columnar"]
    )
    parser.add_argument("--out", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    lines = [f"sim bulk path, text={args.text}, median of {args.runs} runs (spans/s)"]
    print(lines[0], flush=True)
    for size in args.sizes:
        for engine in args.engines:
            config = config_for(size, cast(TextMode, args.text)).replace(engine=engine)
            if engine == "columnar":
                steps: list[tuple[str, Callable[[SimConfig], int]]] = [("rows", columnar_rows)]
            else:
                steps = [
                    ("generate", generate),
                    ("+normalize", generate_normalize),
                    ("+arrow", generate_normalize_arrow),
                ]
            for choice in args.workers:
                workers = auto_workers(config) if choice == "auto" else int(choice)
                label = f"w={workers}" + (" (auto)" if choice == "auto" else "")
                steps.append(
                    (f"bulk spans {label}", partial(bulk, include_feedback=False, workers=workers))
                )
                if size <= args.full_max:
                    steps.append(
                        (f"bulk all {label}", partial(bulk, include_feedback=True, workers=workers))
                    )
            for label, step in steps:
                rate = median_rate(step, config, args.runs)
                line = f"{size:>9,} spans  {engine:<8} {label:<24} {rate:>10,.0f} spans/s"
                print(line, flush=True)
                lines.append(line)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
