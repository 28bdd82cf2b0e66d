"""Simulator traffic for the metric tests, through the simulator's bulk path."""

from __future__ import annotations

from goldenloop.sim import SimConfig, SimManifest, write_to_store
from goldenloop.store.base import Store


def load_sim(store: Store, config: SimConfig) -> SimManifest:
    """Generate ``config``'s traffic into ``store``; return the ground truth."""
    return write_to_store(store, config)
