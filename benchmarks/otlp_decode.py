"""OTLP/protobuf decoding: the compiled decoder against the pure-Python one.

Batches of ``--batch`` realistic simulator spans (~3.4 KB each: input/output text and
~15 attributes of strings, ints, doubles and string lists), encoded as OTLP/protobuf
the way ``benchmarks/ingest.py`` sends them, are decoded into RawSpans by

* ``compiled``  ``decode_protobuf``, which uses ``goldenloop.ingest._otlp_fast``
* ``python``    ``_decode_protobuf_python``: protobuf's message classes, walked in Python

Prints µs per span for each (median of ``--runs`` runs over all batches) and the
ratio. Both give identical spans; the script checks that before timing.

Usage: ``python benchmarks/otlp_decode.py [--spans 20000] [--batch 500] [--runs 5]
[--out FILE]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from goldenloop.ingest.otlp import FAST_DECODER, _decode_protobuf_python, decode_protobuf
from goldenloop.ingest.raw import RawSpan
from goldenloop.sim import SimConfig, encode_otlp, simulate
from goldenloop.sim.otlp import trace_batches


def build_bodies(spans: int, batch: int, seed: int) -> tuple[list[bytes], int]:
    raw: list[RawSpan] = []
    config = SimConfig(seed=seed, days=1, sessions_per_day=spans // 5, max_spans=spans)
    for chunk in simulate(config):
        raw.extend(chunk.spans)
    return [encode_otlp(b) for b in trace_batches(raw, batch)], len(raw)


def median_us_per_span(
    decode: Callable[[bytes], list[RawSpan]], bodies: list[bytes], spans: int, runs: int
) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        for body in bodies:
            decode(body)
        times.append(time.perf_counter() - started)
    return statistics.median(times) / spans * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    if not FAST_DECODER:
        sys.exit("the compiled decoder is not built: pip install -e . with a C compiler present")
    bodies, spans = build_bodies(args.spans, args.batch, args.seed)
    for body in bodies:
        if decode_protobuf(body) != _decode_protobuf_python(body):
            sys.exit("the two decoders disagree on a batch")
    size = sum(map(len, bodies)) / spans
    lines = [
        f"OTLP/protobuf decode, {len(bodies)} batches of ~{args.batch} spans "
        f"({spans:,} spans, {size:,.0f} B/span), median of {args.runs} runs"
    ]
    compiled = median_us_per_span(decode_protobuf, bodies, spans, args.runs)
    python = median_us_per_span(_decode_protobuf_python, bodies, spans, args.runs)
    lines += [
        f"compiled  {compiled:6.2f} µs/span",
        f"python    {python:6.2f} µs/span",
        f"ratio     {python / compiled:6.1f}× (python / compiled)",
    ]
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
