"""A decode worker process: ``python -m goldenloop.ingest.worker``.

The server starts a few of these (``goldenloop.ingest.pool``) so protobuf decoding
and normalization, which are pure Python and hold the GIL, run on other cores while
the server process answers HTTP and DuckDB commits. The protocol over stdin/stdout is
length-prefixed frames:

* first frame from the server: the pickled ``DecodeOptions``;
* then two frames per request: the pickled ``TraceRequest`` without its body, then
  the body itself (raw, so the server never copies it into a pickle);
* one answer frame per request: ``T`` + the span table as an Arrow IPC stream, or
  ``E`` + a pickled ``(error class name, message, problems)``.

Only the server writes to a worker's stdin, so unpickling it is as trusted as the
server itself. The worker imports nothing beyond the ingest modules, which keeps it
small (~70 MB resident).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import pickle
import struct
import sys
import traceback
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

import pyarrow as pa

from goldenloop.ingest.arrow import to_ipc
from goldenloop.ingest.normalize import InvalidSpans
from goldenloop.ingest.request import (
    REQUEST_ERRORS,
    DecodeOptions,
    TraceRequest,
    decode_trace_request,
)

FRAME_HEADER = struct.Struct("!I")
#: Requests between two cyclic garbage collections in a worker.
_COLLECT_EVERY = 64
#: Pipe buffer size asked for on Linux.
PIPE_BYTES = 1 << 20
TABLE = b"T"
ERROR = b"E"
#: Error name for an unexpected exception (a bug, not bad input).
INTERNAL_ERROR = "InternalError"


def read_frame(stream: BinaryIO) -> bytes | None:
    """The next frame, or None at end of input."""
    header = stream.read(FRAME_HEADER.size)
    if len(header) < FRAME_HEADER.size:
        return None
    (size,) = FRAME_HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return payload


def answer(request: TraceRequest, options: DecodeOptions) -> tuple[bytes, bytes | pa.Buffer]:
    """The answer for one request: its kind (``TABLE`` or ``ERROR``) and its payload."""
    try:
        table = decode_trace_request(request, options)
    except REQUEST_ERRORS as exc:
        problems = exc.problems if isinstance(exc, InvalidSpans) else []
        return ERROR, pickle.dumps((type(exc).__name__, str(exc), problems))
    except Exception as exc:  # noqa: BLE001 - a bug; reported, and the worker lives on
        traceback.print_exc(file=sys.stderr)
        return ERROR, pickle.dumps((INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", []))
    return TABLE, to_ipc(table)


def write_answer(stdout: BinaryIO, kind: bytes, payload: bytes | pa.Buffer) -> None:
    """One answer frame: the kind byte then the payload, written without joining them."""
    stdout.write(FRAME_HEADER.pack(len(kind) + len(payload)))
    stdout.write(kind)
    stdout.write(payload)
    stdout.flush()


def widen_pipes(*fds: int) -> None:
    """Ask Linux for 1 MB pipe buffers (default 64 KB), so a 2 MB request crosses in
    two writes instead of thirty-two wake-ups. Elsewhere, or if refused, nothing."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if set_size is None:
        return
    for fd in fds:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, set_size, PIPE_BYTES)


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    first = read_frame(stdin)
    if first is None:
        return
    options: DecodeOptions = pickle.loads(first)
    # A request's objects are acyclic and die with it, so the cyclic collector's passes
    # over them are wasted work (~5% of decoding); collect between requests instead.
    collecting = gc.isenabled()
    gc.disable()
    served = 0
    try:
        while (header := read_frame(stdin)) is not None and (body := read_frame(stdin)) is not None:
            request: TraceRequest = dataclasses.replace(pickle.loads(header), body=body)
            write_answer(stdout, *answer(request, options))
            served += 1
            if served % _COLLECT_EVERY == 0:
                gc.collect()
    finally:
        if collecting:
            gc.enable()


if __name__ == "__main__":
    widen_pipes(sys.stdin.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, sys.stdout.buffer)
