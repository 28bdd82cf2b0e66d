"""Decode big trace requests in worker processes, small ones in the server.

Decoding and normalizing OTLP is pure Python, so in one process it competes for the
GIL with HTTP handling and with the writer thread that hands batches to DuckDB. With
a pool of ``ingest_workers`` processes (``goldenloop.ingest.worker``) the Python work
of several requests runs on every core while the server only moves bytes: a request
body goes down a pipe, an Arrow IPC table comes back (one buffer copy each way).

Requests up to ``inline_max_bytes`` are decoded in the server process, where a pipe
round trip would cost more than the work. Workers start on the first big request, so a
server that only sees small ones (or tests) never pays for them. A worker that dies
is replaced; the request it held gets ``DecodeWorkerCrashed`` (the handler answers
503, the exporter retries) and nothing already accepted is affected.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import pickle
import sys
from collections.abc import Callable

import pyarrow as pa

from goldenloop.ingest.arrow import from_ipc
from goldenloop.ingest.normalize import InvalidSpans
from goldenloop.ingest.otlp import BodyTooLarge, OtlpDecodeError
from goldenloop.ingest.request import DecodeOptions, TraceRequest, decode_trace_request
from goldenloop.ingest.worker import FRAME_HEADER, PIPE_BYTES, TABLE

log = logging.getLogger(__name__)

#: Bodies up to this size are decoded in the server process (~20 spans of 3 KB).
INLINE_MAX_BYTES = 64 * 1024
#: How many times larger a compressed body is assumed to be once inflated.
_COMPRESSION_RATIO = 8

_ERRORS: dict[str, Callable[[str, list[str]], Exception]] = {
    "OtlpDecodeError": lambda message, _: OtlpDecodeError(message),
    "BodyTooLarge": lambda message, _: BodyTooLarge(message),
    "InvalidSpans": lambda _, problems: InvalidSpans(problems),
}


class DecodeWorkerCrashed(RuntimeError):
    """The worker decoding this request died; the request may be retried."""


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, options: DecodeOptions) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "goldenloop.ingest.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=PIPE_BYTES,
        )
        worker = cls(process)
        await worker._send(pickle.dumps(options))
        return worker

    async def _send(self, *payloads: bytes) -> None:
        assert self.process.stdin is not None
        for payload in payloads:
            # Header and payload written apart: joining them would copy the body again.
            self.process.stdin.write(FRAME_HEADER.pack(len(payload)))
            self.process.stdin.write(payload)
        await self.process.stdin.drain()

    async def call(self, request: TraceRequest) -> bytes:
        assert self.process.stdout is not None
        header = pickle.dumps(dataclasses.replace(request, body=b""))
        await self._send(header, request.body)
        header = await self.process.stdout.readexactly(FRAME_HEADER.size)
        (size,) = FRAME_HEADER.unpack(header)
        return await self.process.stdout.readexactly(size)

    async def stop(self) -> None:
        if self.process.returncode is None:
            if self.process.stdin is not None:
                self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), timeout=5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


class DecodePool:
    def __init__(
        self, options: DecodeOptions, workers: int, *, inline_max_bytes: int = INLINE_MAX_BYTES
    ) -> None:
        self.options = options
        self.size = max(0, workers)
        self.inline_max_bytes = inline_max_bytes
        self._idle: asyncio.Queue[_Worker] | None = None
        self._all: set[_Worker] = set()
        self._starting: asyncio.Lock | None = None
        self._closed = False

    @property
    def running_workers(self) -> int:
        return sum(1 for w in self._all if w.process.returncode is None)

    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self._all if w.process.returncode is None]

    async def decode(self, request: TraceRequest) -> pa.Table:
        """The request's span table; raises what ``decode_trace_request`` raises."""
        if self.size == 0 or self._closed or self._is_small(request):
            return decode_trace_request(request, self.options)
        # Shielded: a handler cancelled mid-exchange must not leave an unread answer in
        # a worker's pipe, where the next request would read it as its own.
        payload = await asyncio.shield(asyncio.ensure_future(self._exchange(request)))
        if payload[:1] == TABLE:
            return from_ipc(memoryview(payload)[1:])  # no copy of the table
        name, message, problems = pickle.loads(payload[1:])
        make = _ERRORS.get(name)
        if make is None:
            raise RuntimeError(f"decoding failed: {message}")
        raise make(message, problems)

    def _is_small(self, request: TraceRequest) -> bool:
        """Small enough to decode here. A compressed body is counted at a typical
        inflation ratio, so a small gzip body that hides a big batch still goes to a
        worker instead of holding the event loop."""
        encoding = (request.content_encoding or "identity").strip().lower()
        ratio = 1 if encoding in ("", "identity") else _COMPRESSION_RATIO
        return len(request.body) * ratio <= self.inline_max_bytes

    async def _exchange(self, request: TraceRequest) -> bytes:
        idle = await self._ensure_started()
        worker = await idle.get()
        try:
            return await worker.call(request)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.error("decode worker %d died (%s); starting a new one", worker.process.pid, exc)
            worker = await self._replace(worker)
            raise DecodeWorkerCrashed("a decode worker died while decoding this request") from None
        finally:
            idle.put_nowait(worker)

    async def _ensure_started(self) -> asyncio.Queue[_Worker]:
        if self._idle is not None:
            return self._idle
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._idle is None:
                idle: asyncio.Queue[_Worker] = asyncio.Queue()
                workers = await asyncio.gather(
                    *(_Worker.start(self.options) for _ in range(self.size))
                )
                for worker in workers:
                    self._all.add(worker)
                    idle.put_nowait(worker)
                self._idle = idle
        return self._idle

    async def _replace(self, dead: _Worker) -> _Worker:
        self._all.discard(dead)
        if dead.process.returncode is None:
            dead.process.kill()
        await dead.process.wait()
        fresh = await _Worker.start(self.options)
        self._all.add(fresh)
        return fresh

    async def stop(self) -> None:
        self._closed = True
        workers, self._all = list(self._all), set()
        self._idle = None
        await asyncio.gather(*(w.stop() for w in workers))
