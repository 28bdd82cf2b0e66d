"""Which incoming spans might already be stored: a Bloom filter over span keys.

Exporters retry, so every span batch is checked against the stored spans before it
is inserted. Asking DuckDB for every batch means a join over the batch's time range
on every commit (~9 µs per ingested span on 2 cores). Almost every span is new, so
the embedded store first asks this filter, which answers "certainly new" for nearly
all of them in a few numpy operations; only the suspects (a filter hit, or a start
time older than what the filter covers) go to the exact query, and a batch without
suspects skips it.

Correctness never rests on the filter. A Bloom filter has no false negatives: every
key it was given answers "maybe". The filter is given every key the store inserts
once it exists, and at load time the newest ``capacity`` stored keys; every stored
key it was not given has a start time at or before ``horizon``, and spans that old
are always suspects. Memory stays bounded: keys go into the current generation, and
when it is full the older generation is dropped and the horizon moves up to the
newest start time that generation held.

Keys are hashed from the hex ids (32 characters of trace id, 16 of span id, as
normalization writes them) without touching Python objects. A table whose ids are not
all of that shape gets no hashes, and its spans are all suspects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

#: Keys per generation. Two generations of 2M keys at 16 bits each hold 8 MB.
CAPACITY = 2_000_000
BITS_PER_KEY = 16
#: Probes per key; with 16 bits per key the false-positive rate at capacity is ~0.1%.
HASHES = 6
#: Start time of "older than anything the filter has ever been told about".
NO_HORIZON = np.iinfo(np.int64).min

_HEX_VALUES = np.full(256, 255, dtype=np.uint8)
for _value, _char in enumerate(b"0123456789abcdef"):
    _HEX_VALUES[_char] = _value
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(values: U64) -> U64:
    """splitmix64's finalizer: spreads ids that are not random (tests, counters)."""
    values = values ^ (values >> np.uint64(30))
    values = values * _MIX_1
    values = values ^ (values >> np.uint64(27))
    values = values * _MIX_2
    return values ^ (values >> np.uint64(31))


def _hex_words(column: pa.ChunkedArray | pa.Array, width: int) -> U64 | None:
    """Each value (``width`` lowercase hex characters) as ``width // 16`` uint64 words,
    shape (rows, words); None when any value is null or not exactly that shape."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    rows = len(array)
    if array.null_count or array.type != pa.string():
        return None
    _, offsets_buffer, data_buffer = array.buffers()
    assert offsets_buffer is not None
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[array.offset : array.offset + rows + 1]
    first = int(offsets[0])
    if int(offsets[-1]) - first != rows * width or (rows and np.any(np.diff(offsets) != width)):
        return None
    if not rows:
        return np.empty((0, width // 16), dtype=np.uint64)
    assert data_buffer is not None
    chars = np.frombuffer(data_buffer, dtype=np.uint8)[first : first + rows * width]
    nibbles = _HEX_VALUES[chars].reshape(rows, width)
    if np.any(nibbles == 255):
        return None
    packed = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
    return packed.view(">u8").astype(np.uint64).reshape(rows, width // 16)


def key_hashes(table: pa.Table) -> U64 | None:
    """One 64-bit hash per span key (trace_id, span_id), or None (see module doc)."""
    trace = _hex_words(table.column("trace_id"), 32)
    span = _hex_words(table.column("span_id"), 16)
    if trace is None or span is None:
        return None
    with np.errstate(over="ignore"):
        mixed = _mix(trace[:, 0]) ^ _mix(trace[:, 1] * _GOLDEN)
        return _mix(mixed + span[:, 0])


def start_micros(table: pa.Table) -> I64:
    column = table.column("start_time").cast(pa.int64())
    return np.asarray(column.to_numpy(), dtype=np.int64)


@dataclass
class _Generation:
    bits_log2: int
    words: U64 = field(init=False)
    keys: int = 0
    newest_start: int = NO_HORIZON

    def __post_init__(self) -> None:
        self.words = np.zeros(1 << (self.bits_log2 - 6), dtype=np.uint64)

    def _probes(self, hashes: U64) -> U64:
        """(HASHES, n) bit positions by double hashing."""
        with np.errstate(over="ignore"):
            step = _mix(hashes ^ _GOLDEN) | np.uint64(1)
            rounds = np.arange(HASHES, dtype=np.uint64)[:, None]
            return (hashes[None, :] + rounds * step[None, :]) & np.uint64((1 << self.bits_log2) - 1)

    def might_contain(self, hashes: U64) -> Mask:
        probes = self._probes(hashes)
        bits = (self.words[probes >> np.uint64(6)] >> (probes & np.uint64(63))) & np.uint64(1)
        result: Mask = np.all(bits == 1, axis=0)
        return result

    def add(self, hashes: U64, starts: I64) -> None:
        probes = self._probes(hashes).ravel()
        np.bitwise_or.at(
            self.words, probes >> np.uint64(6), np.uint64(1) << (probes & np.uint64(63))
        )
        self.keys += len(hashes)
        if len(starts):
            self.newest_start = max(self.newest_start, int(starts.max()))


class SpanKeyFilter:
    """Stored-span keys, approximately: ``suspects`` never misses a stored key."""

    def __init__(self, *, capacity: int = CAPACITY, horizon: int = NO_HORIZON) -> None:
        self.capacity = capacity
        self.horizon = horizon
        self._bits_log2 = max(6, int(np.ceil(np.log2(max(1, capacity) * BITS_PER_KEY))))
        self._current = _Generation(self._bits_log2)
        self._previous: _Generation | None = None

    @property
    def keys(self) -> int:
        return self._current.keys + (self._previous.keys if self._previous else 0)

    @property
    def nbytes(self) -> int:
        previous = self._previous.words.nbytes if self._previous else 0
        return int(self._current.words.nbytes) + previous

    def suspects(self, hashes: U64, starts: I64) -> Mask:
        """True for each span that might be stored: a filter hit, or older than the
        horizon."""
        result = starts <= self.horizon
        result |= self._current.might_contain(hashes)
        if self._previous is not None:
            result |= self._previous.might_contain(hashes)
        return result

    def add(self, hashes: U64, starts: I64) -> None:
        """Remember keys just stored (``hashes`` and ``starts`` row-aligned)."""
        begin = 0
        while begin < len(hashes):
            if self._current.keys >= self.capacity:
                self._rotate()
            end = min(len(hashes), begin + self.capacity - self._current.keys)
            self._current.add(hashes[begin:end], starts[begin:end])
            begin = end

    def _rotate(self) -> None:
        if self._previous is not None:
            self.horizon = max(self.horizon, self._previous.newest_start)
        self._previous = self._current
        self._current = _Generation(self._bits_log2)
