"""Anonymization and promotion cost: how it grows with text size and session length.

Measures, as medians of 3 runs on this machine:

* building the Presidio engine (no_op NLP engine, pattern recognizers; once per process);
* anonymizing one text (secrets + PII + consistent placeholders) of 200 B … 20 KB made
  of realistic support-chat sentences with PII and secrets sprinkled in;
* the secret detector alone on the same texts;
* promoting a stored session of 1 … 32 turns into a case (read, anonymize, re-scan,
  write, index) on a DuckDB store.

    python benchmarks/anonymize.py
    python benchmarks/anonymize.py --runs 1 --sizes 200 2000
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from goldenloop.golden.anonymize import AnonymizerConfig, CaseAnonymizer, PiiEngine, pii_engine
from goldenloop.golden.promote import promote_session
from goldenloop.golden.secrets import find_secrets
from goldenloop.model import SpanBatch
from goldenloop.store.duckdb import DuckDBStore

SENTENCES = (
    "I ordered the running shoes last week and they arrived damaged. ",
    "Can I get a refund to my card or do I have to send them back first? ",
    "My email is {email} and you can call me on {phone}. ",
    "The order number is ORD-{order} and it was delivered on 2026-06-2{day}. ",
    "Please refund to IBAN DE89 3704 0044 0532 0130 00 if the card does not work. ",
    "Our integration uses key sk-proj-{token} for the webhook. ",
    "Trace 4bf92f3577b34da6a3ce929d0e0e4736 shows the timeout on span 00f067aa0ba902b7. ",
    "The assistant said refunds take 7 days and cost a 15% restocking fee, is that right? ",
    "I live in Berlin and shop here every month, usually for my kids. ",
)


def make_text(size: int, rng: random.Random) -> str:
    parts, length = [], 0
    while length < size:
        sentence = rng.choice(SENTENCES).format(
            email=f"user{rng.randint(1, 999)}@example.com",
            phone=f"+49 30 {rng.randint(1000000, 9999999)}",
            order=f"{rng.randint(100000, 999999)}",
            day=rng.randint(0, 9),
            token="".join(rng.choice("abcdefghijkLMNOPQRS0123456789") for _ in range(40)),
        )
        parts.append(sentence)
        length += len(sentence)
    return "".join(parts)[:size]


def median_seconds(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def store_session(store: DuckDBStore, session_id: str, turns: int, rng: random.Random) -> None:
    batch = SpanBatch()
    base = datetime(2026, 6, 29, 14, tzinfo=UTC)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for t in range(turns):
        start = base + timedelta(minutes=t)
        us = (start - epoch) // timedelta(microseconds=1)
        row = {name: None for name in batch.columns}
        row.update(
            project="bench", trace_id=f"{session_id}-{t:04d}".ljust(32, "0")[:32],
            span_id=f"{t:016x}", session_id=session_id, message_id=f"m-{session_id}-{t}",
            name="invoke_agent", kind="agent", start_time=us, end_time=us + 900_000,
            latency_ms=900.0, status="ok", user_id="user-bench-1", locale="de-DE",
            customer_tier="pro", prompt_hash="a9f2", feature_flags="{}", attributes="{}",
            resource="{}", events="[]", input_text=make_text(400, rng),
            output_text=make_text(300, rng), ingested_at=us,
        )  # fmt: skip
        batch.append_row(row)
    store.insert_spans(batch)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 2000, 20000])
    parser.add_argument("--turns", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    rng = random.Random(7)

    start = time.perf_counter()
    PiiEngine(AnonymizerConfig())
    print(f"engine build (cold, includes imports): {time.perf_counter() - start:.2f} s")
    build = median_seconds(lambda: PiiEngine(AnonymizerConfig()), args.runs)
    print(f"engine build (warm): {build * 1000:.2f} ms")
    engine = pii_engine()
    CaseAnonymizer(engine).text(make_text(500, rng))  # warm caches

    print("\ntext bytes | anonymize ms | KB/s | secrets-only ms")
    previous: tuple[float, int] | None = None
    for size in args.sizes:
        text = make_text(size, rng)
        anon = median_seconds(lambda text=text: CaseAnonymizer(engine).text(text), args.runs)
        secrets = median_seconds(lambda text=text: find_secrets(text), args.runs)
        growth = ""
        if previous is not None:
            growth = f"  (x{anon / previous[0]:.1f} for x{size / previous[1]:.0f} size)"
        print(
            f"{size:>10} | {anon * 1000:>12.1f} | {size / anon / 1024:>5.0f} | {secrets * 1000:>8.2f}{growth}"
        )
        previous = (anon, size)

    print("\nturns | promote ms (read, anonymize, re-scan, write, index)")
    with tempfile.TemporaryDirectory() as tmp:
        store = DuckDBStore(Path(tmp) / "bench.duckdb")
        store.migrate()
        try:
            for turns in args.turns:
                times = []
                for run in range(args.runs):
                    session = f"bench-{turns}-{run}"
                    store_session(store, session, turns, rng)
                    begin = time.perf_counter()
                    promote_session(store, session, f"B-{turns}-{run}",
                                    [{"type": "contains", "value": "x"}], Path(tmp) / "golden")  # fmt: skip
                    times.append(time.perf_counter() - begin)
                print(f"{turns:>5} | {statistics.median(times) * 1000:>8.0f}")
        finally:
            store.close()


if __name__ == "__main__":
    sys.exit(main())
