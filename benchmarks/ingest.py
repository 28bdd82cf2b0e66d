"""End-to-end OTLP ingest throughput into the DuckDB store.

A real ``goldenloop serve`` process on a temporary DuckDB file receives OTLP/protobuf
batches of 500 realistic simulator spans (~3.5 KB each, with input/output text) over 4
concurrent keep-alive connections. A span counts only once the server acknowledged its
request, which it does only after the batch committed, so the rate is of durable
spans. The server's auto-flag loop is off unless ``--flag-loop`` (it is separate work
that competes for the same two cores). Reported besides spans/s: the server's peak
RSS, the peak PSS of the server plus its decode workers (what the process tree really
holds), and CPU microseconds per span in the server and in the workers.

To send more spans than the pool holds (100k spans, a few simulated hours), the
pool is sent in rounds: each round rewrites the first four bytes of every trace id,
so it is new data that the server must store, not a duplicate it can skip, and moves
every timestamp back by the pool's time span per round still to come, so the run
arrives in time order, as production traffic does (replaying the same hours ten times
would make every duplicate check scan ten copies of them). All bodies of a run
are prepared before its clock starts, so the load generator takes no CPU from the
server while it runs, and they are sent with ``http.client``.

    python benchmarks/ingest.py                 # 100k and 1M spans, 3 runs each
    python benchmarks/ingest.py --sizes 200000 --runs 1 [--flag-loop] [--workers N]
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
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
from urllib.parse import urlsplit

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from goldenloop.ingest.raw import RawSpan
from goldenloop.sim import SimConfig, encode_otlp, simulate
from goldenloop.sim.otlp import trace_batches

BATCH_SPANS = 500
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "4"))
POOL_SPANS = 100_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass
class Pool:
    bodies: list[bytes]
    counts: list[int]
    #: Simulated time the pool covers, first span start to last span end.
    span_ns: int


def build_pool(spans: int = POOL_SPANS, seed: int = 11) -> Pool:
    """Encoded bodies of ~500 spans each (traces never split)."""
    raw: list[RawSpan] = []
    for chunk in simulate(SimConfig(seed=seed, days=2, sessions_per_day=50_000, max_spans=spans)):
        raw.extend(chunk.spans)
    bodies, counts = [], []
    for batch in trace_batches(raw, BATCH_SPANS):
        bodies.append(encode_otlp(batch))
        counts.append(len(batch))
    first = min(s.start_time_unix_nano for s in raw)
    last = max(s.end_time_unix_nano for s in raw)
    return Pool(bodies, counts, last - first + 1_000_000_000)


def _for_round(body: bytes, round_no: int, rounds: int, pool_span_ns: int) -> bytes:
    """The body as round ``round_no`` of ``rounds`` sends it: new trace ids, and times
    moved back by the pool's span of time per round still to come, so the whole run
    arrives in time order and its last round is the pool's own time."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    prefix = struct.pack(">I", round_no + 1)
    shift = (rounds - 1 - round_no) * pool_span_ns
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                span.trace_id = prefix + span.trace_id[4:]
                span.start_time_unix_nano -= shift
                span.end_time_unix_nano -= shift
                for event in span.events:
                    event.time_unix_nano -= shift
    return request.SerializeToString()


def _proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_kb(pid: int, path: str, key: str) -> int:
    for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def _children(pid: int) -> list[int]:
    """Child processes of every thread of ``pid`` (decode workers are started from a
    pool thread, and Linux lists a child under the thread that forked it)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children.extend(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return children


class Server:
    """``goldenloop serve`` on a temporary DuckDB file, plus what it costs.

    A sampler thread reads, every 0.2 s, the server's RSS and the PSS of the server
    and its decode workers (PSS splits shared library pages fairly between processes,
    so the sum is what the tree really holds)."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        exe = Path(sys.executable).parent / "goldenloop"
        command = [str(exe) if exe.exists() else shutil.which("goldenloop") or "goldenloop"]
        self.process = subprocess.Popen(
            [*command, "serve", "--db", str(workdir / "bench.duckdb"), "--port", str(self.port)],
            env={**os.environ, "GOLDENLOOP_LOG_LEVEL": "warning", **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("server did not start")
        self.peak_tree_pss_kb = 0
        self.peak_rss_kb = 0
        self.worker_cpu: dict[int, float] = {}
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        pid = self.process.pid
        while self._sampling:
            try:
                pids = [pid, *_children(pid)]
                pss = sum(_proc_kb(p, "smaps_rollup", "Pss:") for p in pids)
                self.peak_tree_pss_kb = max(self.peak_tree_pss_kb, pss)
                self.peak_rss_kb = max(self.peak_rss_kb, _proc_kb(pid, "status", "VmRSS:"))
                for child in pids[1:]:
                    self.worker_cpu[child] = _proc_cpu_seconds(child)
            except OSError:
                pass
            time.sleep(0.2)

    def cpu_seconds(self) -> float:
        return _proc_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self._sampling = False
        self._sampler.join()
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=60)


def _post_all(
    url: str, jobs: list[tuple[bytes, int]], acked: list[int], retries: list[int]
) -> None:
    """One keep-alive connection posting its share of the bodies, in order."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=120)
    headers = {"Content-Type": "application/x-protobuf"}
    try:
        for body, count in jobs:
            while True:
                connection.request("POST", "/v1/traces", body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                if response.status in (429, 503):
                    retries[0] += 1
                    time.sleep(float(response.getheader("retry-after") or "1"))
                    continue
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status} from /v1/traces")
                break
            acked[0] += count
    finally:
        connection.close()


def run_once(pool: Pool, total: int, env: dict[str, str]) -> dict[str, float]:
    # Every body the run sends is prepared before the clock starts, so the load
    # generator costs the shared 2 cores as little as possible while it runs.
    jobs: list[tuple[bytes, int]] = []
    rounds = -(-total // sum(pool.counts))
    planned = round_no = 0
    while planned < total:
        for body, count in zip(pool.bodies, pool.counts, strict=True):
            if planned >= total:
                break
            jobs.append((_for_round(body, round_no, rounds, pool.span_ns), count))
            planned += count
        round_no += 1
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp), env)
        try:
            acked, retries = [0], [0]
            threads = [
                threading.Thread(
                    target=_post_all, args=(server.url, jobs[i::CONNECTIONS], acked, retries)
                )
                for i in range(CONNECTIONS)
            ]
            cpu_before = server.cpu_seconds()
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
            server_cpu = server.cpu_seconds() - cpu_before
            health = httpx.get(server.url + "/healthz").json()
            return {
                "spans": acked[0],
                "stored": health["committed_spans"],
                "spans_per_commit": health["committed_spans"] / max(1, health["commits"]),
                "seconds": elapsed,
                "spans_per_s": acked[0] / elapsed,
                "peak_rss_mb": server.peak_rss_kb / 1024,
                "peak_tree_pss_mb": server.peak_tree_pss_kb / 1024,
                "server_cpu_us_per_span": server_cpu / acked[0] * 1e6,
                "worker_cpu_us_per_span": sum(server.worker_cpu.values()) / acked[0] * 1e6,
                "retries": retries[0],
            }
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--flag-loop",
        action="store_true",
        help="keep the server's auto-flag loop on (default: off, to time ingest alone)",
    )
    parser.add_argument("--workers", type=int, help="GOLDENLOOP_INGEST_WORKERS for the server")
    args = parser.parse_args()
    env = {} if args.flag_loop else {"GOLDENLOOP_FLAG_INTERVAL_S": "0"}
    if args.workers is not None:
        env["GOLDENLOOP_INGEST_WORKERS"] = str(args.workers)
    t0 = time.perf_counter()
    pool = build_pool()
    mean_bytes = sum(map(len, pool.bodies)) / sum(pool.counts)
    print(
        f"pool: {sum(pool.counts)} spans in {len(pool.bodies)} bodies, {mean_bytes:.0f} "
        f"bytes/span, {pool.span_ns / 3.6e12:.1f} h of simulated time "
        f"(built in {time.perf_counter() - t0:.1f}s); server env {env}"
    )
    for size in args.sizes:
        results = [run_once(pool, size, env) for _ in range(args.runs)]
        rates = [r["spans_per_s"] for r in results]
        med = {key: statistics.median(r[key] for r in results) for key in results[0]}
        print(
            f"{size:>9} spans: median {med['spans_per_s']:,.0f} spans/s "
            f"(runs: {', '.join(f'{r:,.0f}' for r in rates)}); peak server RSS "
            f"{med['peak_rss_mb']:.0f} MB, peak PSS server+workers {med['peak_tree_pss_mb']:.0f} MB; "
            f"CPU/span: server {med['server_cpu_us_per_span']:.0f} us, workers "
            f"{med['worker_cpu_us_per_span']:.0f} us; 429 retries {sum(r['retries'] for r in results)}, "
            f"stored/acked {results[-1]['stored']}/{results[-1]['spans']}, "
            f"{med['spans_per_commit']:,.0f} spans/commit"
        )


if __name__ == "__main__":
    main()
