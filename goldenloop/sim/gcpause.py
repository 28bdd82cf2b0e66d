"""Pausing the cyclic garbage collector while the simulator runs.

The simulator allocates millions of small acyclic objects; the collector's passes over
them cost about a quarter of the generation time and free nothing (reference counting
frees them), so every bulk path — in this process and in its workers — pauses it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
