"""Reading logged shadow runs back for the ``/evals`` page and its JSON twin.

Kept apart from ``shadow`` (which replays sessions through targets and so imports the
whole eval stack: HTTP client, graders, anonymizer) so that the server can list past
runs without loading any of that.
"""

from __future__ import annotations

import json
from typing import Any

from goldenloop.store.base import Store
from goldenloop.store.sql import utc


def list_shadow_runs(store: Store, *, limit: int = 20) -> list[dict[str, Any]]:
    """The newest ``limit`` shadow runs with their JSON summary, newest first."""
    rows = store.fetch(
        "SELECT id, started_at, finished_at, candidate, baseline, since_at, sample_fraction, "
        "max_sessions, sessions, summary FROM shadow_runs ORDER BY started_at DESC, id LIMIT ?",
        (limit,),
    )
    return [
        {
            "id": r[0],
            "started_at": utc(r[1]).isoformat(),
            "finished_at": utc(r[2]).isoformat(),
            "candidate": r[3],
            "baseline": r[4],
            "since": utc(r[5]).isoformat(),
            "sample": r[6],
            "max_sessions": r[7],
            "sessions": r[8],
            "summary": json.loads(r[9]),
        }  # fmt: skip
        for r in rows
    ]
