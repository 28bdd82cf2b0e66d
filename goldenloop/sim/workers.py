"""Worker processes that generate parts of a run and stream them back as Arrow.

Each worker is a plain subprocess, ``python -m goldenloop.sim.worker_main``, like the
server's decode workers (``goldenloop.ingest.pool``). This process writes the pickled
``WorkerJob`` to its stdin and closes it; for every chunk of every part of the job in
order, the worker generates it (``pieces.part_pieces``) and writes it to its
stdout: a pickled ``_PieceHeader`` (feedback, outcomes, ground truth) followed by the
spans as one Arrow IPC stream, then ``_PartDone`` after the part's last chunk (or
``_WorkerFailed`` with the traceback if it fails). Its stderr is this process's, so a
crash's traceback shows. Not ``multiprocessing``: its ``spawn`` re-imports the calling
script's ``__main__`` in every worker (so a script had to guard its entry point with
``if __name__ == "__main__":``), and ``fork`` would copy the loading process's DuckDB
connection and threads mid-operation.

Both ends wrap the pipe in a buffered file and Arrow reads and writes that file
directly. Measured on a 20,000-span chunk with full text (3.8 KB a span), this costs
the worker 0.6 µs and the reader 2.2 µs of CPU a span, against 6 µs and 4.4 µs for
``to_ipc`` bytes sent with ``Connection.send_bytes``: that path copies the stream
twice more and ``Connection.recv_bytes`` reassembles it in a ``BytesIO``. Asking Linux
for 1 MB pipes instead of 64 KB cut both sides by another 20–40%.

In this process a reader thread per worker sends its job, then keeps up to
``lookahead`` of its pieces ready; beyond that the worker blocks writing.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import subprocess
import sys
import threading
import traceback
from dataclasses import dataclass
from typing import BinaryIO, Final, TypeAlias

import pyarrow as pa

from goldenloop.ingest.arrow import SPAN_SCHEMA
from goldenloop.model import Feedback, Outcome
from goldenloop.pricing import PriceTable
from goldenloop.sim.config import SimConfig
from goldenloop.sim.gcpause import paused_gc
from goldenloop.sim.manifest import ChunkTruth
from goldenloop.sim.pieces import LoadPiece, part_pieces

#: The module a worker process runs.
WORKER_MODULE: Final = "goldenloop.sim.worker_main"
#: Pipe capacity asked of Linux (its default is 64 KB): fewer wake-ups per piece.
_PIPE_BYTES: Final = 1 << 20
_FILE_BUFFER: Final = 1 << 16
#: How long a worker that closed its output, or was terminated, may take to exit.
_EXIT_WAIT_S: Final = 5.0


class SimWorkerError(RuntimeError):
    """A simulation worker process failed; the message carries its traceback."""


@dataclass(frozen=True)
class WorkerJob:
    """What one worker generates: ``parts`` in order, normalized with these settings."""

    config: SimConfig
    parts: list[range]
    prices: PriceTable
    now_us: int
    default_project: str


@dataclass
class _PieceHeader:
    """Everything of a chunk but its spans, which follow as an Arrow IPC stream."""

    generated_spans: int
    feedback: list[Feedback]
    outcomes: list[Outcome]
    truth: ChunkTruth


@dataclass(frozen=True)
class _PartDone:
    pass


@dataclass(frozen=True)
class _WorkerFailed:
    traceback: str


_Received: TypeAlias = LoadPiece | _PartDone | BaseException


def _widen(fd: int) -> None:
    """Ask Linux for a 1 MB pipe (either end may ask); elsewhere pipes keep their size."""
    if sys.platform == "linux":
        import fcntl

        with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)


# -- the worker side ---------------------------------------------------------------------
def _write_part(out: BinaryIO, job: WorkerJob, part: range) -> None:
    pieces = part_pieces(
        job.config, part, prices=job.prices, now_us=job.now_us,
        default_project=job.default_project,
    )  # fmt: skip
    for piece in pieces:
        header = _PieceHeader(piece.generated_spans, piece.feedback, piece.outcomes, piece.truth)
        pickle.dump(header, out, protocol=pickle.HIGHEST_PROTOCOL)
        with pa.ipc.new_stream(out, SPAN_SCHEMA) as writer:
            # One record batch, not one per chunk: the loading process's DuckDB insert
            # is the slower end of the pipe, and many small batches cost it more.
            writer.write_table(piece.table.combine_chunks())
        out.flush()
    pickle.dump(_PartDone(), out)
    out.flush()


def _work(out: BinaryIO, job: WorkerJob) -> bool:
    """Write ``job``'s pieces to ``out``; False if it failed (the failure is sent)."""
    try:
        with paused_gc():
            for part in job.parts:
                _write_part(out, job, part)
    except BrokenPipeError:
        pass  # the reader stopped: it has what it needs, or it failed
    except BaseException:
        with contextlib.suppress(OSError):
            pickle.dump(_WorkerFailed(traceback.format_exc()), out)
            out.flush()
        return False
    return True


def main() -> int:
    """A worker process: read the job from stdin, write its pieces to stdout."""
    # Keep the real stdout for the stream and point fd 1 and ``sys.stdout`` at stderr,
    # so nothing else (a stray print, a library writing to fd 1) can corrupt it.
    out_fd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    try:
        job = pickle.load(sys.stdin.buffer)  # written by the loading process: trusted
    except EOFError:
        return 1  # stopped before it sent the job
    sys.stdin.close()
    _widen(out_fd)
    out = open(out_fd, "wb", buffering=_FILE_BUFFER)
    try:
        ok = _work(out, job)
    finally:
        with contextlib.suppress(OSError):  # the reader may be gone
            out.close()
    return 0 if ok else 1


# -- the loading process's side ----------------------------------------------------------
class StreamCut(Exception):
    """A worker's stream ended before its next message was complete."""


def read_message(reader: BinaryIO) -> LoadPiece | _PartDone | _WorkerFailed:
    """The next message a worker wrote; ``StreamCut`` if the stream ends inside it."""
    try:
        message = pickle.load(reader)
        if isinstance(message, _PieceHeader):
            table = pa.ipc.open_stream(reader).read_all()
            return LoadPiece(
                table, message.generated_spans, message.feedback, message.outcomes,
                message.truth,
            )  # fmt: skip
    # Cut off mid-header: EOFError or UnpicklingError; mid-table: ArrowInvalid, or an
    # OSError ("expected to be able to read N bytes").
    except (EOFError, pickle.UnpicklingError, pa.ArrowInvalid, OSError):
        raise StreamCut from None
    assert isinstance(message, _PartDone | _WorkerFailed), message
    return message


class Workers:
    """Started worker processes, one per job, each with a reader thread in this process
    that sends it its job and keeps up to ``lookahead`` of its pieces ready."""

    def __init__(self, jobs: list[WorkerJob], *, lookahead: int) -> None:
        self._processes: list[subprocess.Popen[bytes]] = []
        self._readers: list[BinaryIO] = []
        self._ready: list[queue.Queue[_Received]] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        try:
            for index, job in enumerate(jobs):
                payload = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
                process = subprocess.Popen(
                    [sys.executable, "-m", WORKER_MODULE],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    bufsize=0,
                )
                self._processes.append(process)
                assert process.stdout is not None
                _widen(process.stdout.fileno())
                self._readers.append(
                    open(process.stdout.fileno(), "rb", buffering=_FILE_BUFFER, closefd=False)
                )
                self._ready.append(queue.Queue(maxsize=lookahead))
                thread = threading.Thread(
                    target=self._run,
                    args=(index, payload, len(job.parts)),
                    name=f"goldenloop-sim-reader-{index}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)
        except BaseException:
            self.stop()
            raise

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids, in job order."""
        return [process.pid for process in self._processes]

    def receive(self, index: int) -> LoadPiece | None:
        """Worker ``index``'s next piece, or None when its current part is done."""
        item = self._ready[index].get()
        if isinstance(item, BaseException):
            raise item
        return None if isinstance(item, _PartDone) else item

    def join(self) -> None:
        """Wait for workers that have sent everything, then release them."""
        for thread in self._threads:
            thread.join()
        for process in self._processes:
            try:
                process.wait(timeout=_EXIT_WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._close()

    def stop(self) -> None:
        """End the workers now (their remaining output is not needed, or loading failed)."""
        self._stopping.set()
        for process in self._processes:
            if process.poll() is None:
                process.terminate()  # its reader thread then reads end-of-file
        self.join()

    # -- reader threads ------------------------------------------------------------------
    def _run(self, index: int, payload: bytes, parts: int) -> None:
        stdin = self._processes[index].stdin
        assert stdin is not None
        # A worker that died before reading its job shows as end-of-file below.
        with contextlib.suppress(OSError):
            try:
                view = memoryview(payload)
                while view:  # a write may take only part (a signal between two)
                    view = view[os.write(stdin.fileno(), view) :]
            finally:
                stdin.close()
        self._read_all(index, parts)

    def _read_all(self, index: int, parts: int) -> None:
        done = 0
        while done < parts:
            item: _Received
            try:
                item = self._read(index)
            except BaseException as exc:  # handed to the consumer, who raises it
                item = exc
            if not self._hand_over(index, item) or isinstance(item, BaseException):
                return
            done += isinstance(item, _PartDone)

    def _read(self, index: int) -> LoadPiece | _PartDone:
        try:
            message = read_message(self._readers[index])
        except StreamCut:
            process = self._processes[index]
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=_EXIT_WAIT_S)
            status = (
                "closed its output"
                if process.returncode is None
                else f"exited with code {process.returncode}"
            )
            raise SimWorkerError(
                f"simulation worker {index} (pid {process.pid}) {status} in the middle of "
                "its work; its error, if any, is on stderr"
            ) from None
        if isinstance(message, _WorkerFailed):
            raise SimWorkerError(f"simulation worker {index} failed:\n{message.traceback}")
        return message

    def _hand_over(self, index: int, item: _Received) -> bool:
        """Queue ``item`` for the consumer; False if the workers are being stopped."""
        while not self._stopping.is_set():
            try:
                self._ready[index].put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _close(self) -> None:
        for reader in self._readers:
            reader.close()
        for process in self._processes:
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()
        self._processes, self._readers, self._threads = [], [], []
