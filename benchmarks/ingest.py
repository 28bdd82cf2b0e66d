"""End-to-end OTLP ingest throughput into the DuckDB store.

A real ``goldenloop serve`` process on a temporary DuckDB file receives OTLP/protobuf
batches of 500 realistic simulator spans (~3.5 KB each, with input/output text) over 4
concurrent keep-alive connections. A span counts only once the server acknowledged its
request, which it does only after the batch committed, so the rate is of durable
spans. Peak server RSS (VmHWM) is read from /proc.

To send more spans than the pre-encoded pool holds without paying protobuf encoding
in the load generator (which would steal the server's CPU on a 2-core machine), each
round rewrites the first four bytes of every trace id in the encoded bodies (the
simulator's ids are generated with those bytes zeroed here), so every round is new
data that the server must store, not a duplicate it can skip.

    python benchmarks/ingest.py                 # 100k and 1M spans, 3 runs each
    python benchmarks/ingest.py --sizes 200000 --runs 1
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from goldenloop.ingest.raw import RawSpan
from goldenloop.sim import SimConfig, encode_otlp, simulate
from goldenloop.sim.otlp import trace_batches

BATCH_SPANS = 500
CONNECTIONS = 4
POOL_SPANS = 100_000
_TRACE_TAG = b"\x0a\x10"  # Span.trace_id: field 1, length-delimited, 16 bytes
_ZERO_PREFIX = b"\x00\x00\x00\x00"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_pool(spans: int = POOL_SPANS, seed: int = 11) -> tuple[list[bytes], list[int]]:
    """Encoded bodies of ~500 spans each, trace ids starting with four zero bytes."""
    raw: list[RawSpan] = []
    for chunk in simulate(SimConfig(seed=seed, days=2, sessions_per_day=50_000, max_spans=spans)):
        raw.extend(chunk.spans)
    bodies, counts = [], []
    for batch in trace_batches(raw, BATCH_SPANS):
        rewritten = [dataclasses.replace(s, trace_id="00000000" + s.trace_id[8:]) for s in batch]
        bodies.append(encode_otlp(rewritten))
        counts.append(len(rewritten))
    return bodies, counts


def _for_round(body: bytes, round_no: int) -> bytes:
    return body.replace(_TRACE_TAG + _ZERO_PREFIX, _TRACE_TAG + struct.pack(">I", round_no + 1))


class Server:
    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        exe = Path(sys.executable).parent / "goldenloop"
        command = [str(exe) if exe.exists() else shutil.which("goldenloop") or "goldenloop"]
        self.process = subprocess.Popen(
            [*command, "serve", "--db", str(workdir / "bench.duckdb"), "--port", str(self.port)],
            env={**os.environ, "GOLDENLOOP_LOG_LEVEL": "warning"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=60)


def run_once(bodies: list[bytes], counts: list[int], total: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp))
        try:
            jobs: list[tuple[int, int]] = []  # (round, body index)
            planned = 0
            round_no = 0
            while planned < total:
                for index, count in enumerate(counts):
                    if planned >= total:
                        break
                    jobs.append((round_no, index))
                    planned += count
                round_no += 1
            lock = threading.Lock()
            acked = [0]
            retries = [0]

            def worker(my_jobs: list[tuple[int, int]]) -> None:
                with httpx.Client(timeout=120) as client:
                    for rnd, index in my_jobs:
                        body = _for_round(bodies[index], rnd)
                        while True:
                            response = client.post(
                                server.url + "/v1/traces",
                                content=body,
                                headers={"content-type": "application/x-protobuf"},
                            )
                            if response.status_code in (429, 503):
                                retries[0] += 1
                                time.sleep(float(response.headers.get("retry-after", "1")))
                                continue
                            response.raise_for_status()
                            break
                        with lock:
                            acked[0] += counts[index]

            threads = [
                threading.Thread(target=worker, args=(jobs[i::CONNECTIONS],))
                for i in range(CONNECTIONS)
            ]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
            stored = httpx.get(server.url + "/healthz").json()["committed_spans"]
            return {
                "spans": acked[0],
                "stored": stored,
                "seconds": elapsed,
                "spans_per_s": acked[0] / elapsed,
                "peak_rss_mb": server.peak_rss_mb(),
                "retries": retries[0],
            }
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    t0 = time.perf_counter()
    bodies, counts = build_pool()
    mean_bytes = sum(map(len, bodies)) / sum(counts)
    print(
        f"pool: {sum(counts)} spans in {len(bodies)} bodies, {mean_bytes:.0f} bytes/span "
        f"(built in {time.perf_counter() - t0:.1f}s)"
    )
    for size in args.sizes:
        results = [run_once(bodies, counts, size) for _ in range(args.runs)]
        rates = [r["spans_per_s"] for r in results]
        rss = [r["peak_rss_mb"] for r in results]
        print(
            f"{size:>9} spans: median {statistics.median(rates):,.0f} spans/s "
            f"(runs: {', '.join(f'{r:,.0f}' for r in rates)}), peak server RSS "
            f"median {statistics.median(rss):.0f} MB (max {max(rss):.0f}), "
            f"429 retries {sum(r['retries'] for r in results)}, "
            f"stored/acked {results[-1]['stored']}/{results[-1]['spans']}"
        )


if __name__ == "__main__":
    main()
