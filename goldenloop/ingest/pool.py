"""Decode big trace requests in worker processes, small ones in the server.

Decoding and normalizing OTLP is pure Python, so in one process it competes for the
GIL with HTTP handling and with the writer thread that hands batches to DuckDB. With
a pool of ``ingest_workers`` processes (``goldenloop.ingest.worker``) the Python work
of several requests runs on every core while the server only moves bytes: a request
body goes down a pipe, an Arrow IPC table comes back (one buffer copy each way).
The pipes are read and written by blocking calls in pool threads, and each worker holds
two requests at once, so its next body is already waiting when it finishes one.

Requests up to ``inline_max_bytes`` are decoded in the server process, where a pipe
round trip would cost more than the work. Workers start on the first big request, so a
server that only sees small ones (or tests) never pays for them. A worker that dies
is replaced; the request it held gets ``DecodeWorkerCrashed`` (the handler answers
503, the exporter retries) and nothing already accepted is affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pyarrow as pa

from goldenloop.ingest.arrow import from_ipc
from goldenloop.ingest.normalize import InvalidSpans
from goldenloop.ingest.otlp import BodyTooLarge, OtlpDecodeError
from goldenloop.ingest.request import DecodeOptions, TraceRequest, decode_trace_request
from goldenloop.ingest.worker import FRAME_HEADER, TABLE, widen_pipes

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Requests a worker holds at once: one decoding, one waiting in its pipe.
IN_FLIGHT = 2
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
    """One worker process, spoken to with blocking I/O from a pool thread.

    The exchange runs outside the event loop on purpose: asyncio's stream reader
    collects a pipe's chunks in a growing buffer and copies the answer out of it, all
    while holding the GIL; a blocking ``readinto`` fills one buffer of the announced
    size in the kernel with the GIL released.
    """

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        assert process.stdin is not None and process.stdout is not None
        self._stdin = process.stdin
        self._stdout = process.stdout
        # Up to IN_FLIGHT calls share the worker: each sends its request under the send
        # lock, taking a ticket, and reads its answer when its ticket is served (the
        # worker answers in order).
        self._send_lock = threading.Lock()
        self._turn = threading.Condition()
        self._next_ticket = 0
        self._serving = 0
        self._broken = False

    @classmethod
    def start(cls, options: DecodeOptions) -> _Worker:
        process = subprocess.Popen(
            [sys.executable, "-m", "goldenloop.ingest.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        worker = cls(process)
        widen_pipes(worker._stdin.fileno(), worker._stdout.fileno())
        worker._send(pickle.dumps(options))
        return worker

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def _send(self, *payloads: bytes) -> None:
        for payload in payloads:
            # Header and payload written apart: joining them would copy the body again.
            self._write(FRAME_HEADER.pack(len(payload)))
            self._write(payload)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._stdin.fileno(), view)
            if not written:
                raise ConnectionError("decode worker closed its input")
            view = view[written:]

    def _read_exactly(self, size: int) -> bytearray:
        buffer = bytearray(size)
        view = memoryview(buffer)
        while view:
            got = os.readv(self._stdout.fileno(), [view])
            if not got:
                raise ConnectionError("decode worker closed its output")
            view = view[got:]
        return buffer

    def call(self, request: TraceRequest) -> bytearray:
        """Send one request and wait for its answer frame (blocking). A second call may
        send its request while the worker still decodes this one, so the worker finds
        its next body waiting in the pipe instead of idling through the hand-over."""
        header = pickle.dumps(dataclasses.replace(request, body=b""))
        with self._send_lock:
            ticket = self._next_ticket
            self._next_ticket += 1
            try:
                self._send(header, request.body)
            except OSError:
                self._break()
                raise
        with self._turn:
            while self._serving != ticket and not self._broken:
                self._turn.wait()
            if self._broken:
                raise ConnectionError("decode worker failed on an earlier request")
        try:
            (size,) = FRAME_HEADER.unpack(self._read_exactly(FRAME_HEADER.size))
            answer = self._read_exactly(size)
        except OSError:
            self._break()
            raise
        with self._turn:
            self._serving += 1
            self._turn.notify_all()
        return answer

    def _break(self) -> None:
        with self._turn:
            self._broken = True
            self._turn.notify_all()

    def stop(self) -> None:
        if self.alive:
            with contextlib.suppress(OSError):
                self._stdin.close()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pipe in (self._stdin, self._stdout):
            with contextlib.suppress(OSError):
                pipe.close()


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
        self._threads: ThreadPoolExecutor | None = None
        self._closed = False

    @property
    def running_workers(self) -> int:
        return sum(1 for w in self._all if w.alive)

    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self._all if w.alive]

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

    async def _in_thread(self, call: Callable[..., _T], *args: object) -> _T:
        if self._threads is None:
            # One thread per call in flight (plus one for starting and stopping workers).
            self._threads = ThreadPoolExecutor(
                self.size * IN_FLIGHT + 1, thread_name_prefix="decode-pipe"
            )
        return await asyncio.get_running_loop().run_in_executor(self._threads, call, *args)

    async def _exchange(self, request: TraceRequest) -> bytearray:
        """One call on a worker. The idle queue holds ``IN_FLIGHT`` slots per worker;
        slots of a worker that was replaced are dropped when they come up."""
        idle = await self._ensure_started()
        worker = await idle.get()
        while worker not in self._all:
            worker = await idle.get()
        try:
            answer = await self._in_thread(worker.call, request)
        except ConnectionError as exc:
            if worker in self._all:
                log.error("decode worker %d died (%s); starting a new one", worker.process.pid, exc)
                await self._replace(worker, idle)
            raise DecodeWorkerCrashed("a decode worker died while decoding this request") from None
        idle.put_nowait(worker)
        return answer

    async def _ensure_started(self) -> asyncio.Queue[_Worker]:
        if self._idle is not None:
            return self._idle
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._idle is None:
                idle: asyncio.Queue[_Worker] = asyncio.Queue()
                for _ in range(self.size):
                    worker = await self._in_thread(_Worker.start, self.options)
                    self._all.add(worker)
                    for _ in range(IN_FLIGHT):
                        idle.put_nowait(worker)
                self._idle = idle
        return self._idle

    async def _replace(self, dead: _Worker, idle: asyncio.Queue[_Worker]) -> None:
        self._all.discard(dead)
        await self._in_thread(dead.stop)
        fresh = await self._in_thread(_Worker.start, self.options)
        self._all.add(fresh)
        for _ in range(IN_FLIGHT):
            idle.put_nowait(fresh)

    async def stop(self) -> None:
        self._closed = True
        workers, self._all = list(self._all), set()
        self._idle = None
        await asyncio.gather(*(self._in_thread(w.stop) for w in workers))
        if self._threads is not None:
            self._threads.shutdown(wait=False)
            self._threads = None
