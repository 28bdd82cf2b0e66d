"""One data function per page; the HTML page and its JSON twin both render it.

Every view returns a typed context dataclass with ``to_dict`` for the JSON API and
named fields for the template.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from goldenloop.model import SessionDetail, SessionFilter, SessionSummary, Span
from goldenloop.store.base import Store
from goldenloop.web.filters import parse_session_query


class NotFound(LookupError):
    pass


@dataclass
class SessionListContext:
    filter: SessionFilter
    sessions: list[SessionSummary]
    limit: int
    offset: int
    query: list[tuple[str, str]]

    @property
    def next_offset(self) -> int | None:
        return self.offset + self.limit if len(self.sessions) == self.limit else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "sessions": [s.to_dict() for s in self.sessions],
            "limit": self.limit,
            "offset": self.offset,
            "next_offset": self.next_offset,
        }


@dataclass
class TraceContext:
    trace_id: str
    spans: list[Span]

    @property
    def depth(self) -> dict[str, int]:
        """Nesting depth per span id, for indenting the replay."""
        parents = {s.span_id: s.parent_id for s in self.spans}
        depths: dict[str, int] = {}
        for span_id in parents:
            depth, current, seen = 0, parents.get(span_id), set()
            while current and current in parents and current not in seen:
                seen.add(current)
                depth += 1
                current = parents[current]
            depths[span_id] = depth
        return depths

    def to_dict(self) -> dict[str, Any]:
        return {"trace_id": self.trace_id, "spans": [s.to_dict() for s in self.spans]}


def session_list(store: Store, params: Iterable[tuple[str, str]]) -> SessionListContext:
    query = list(params)
    flt, limit, offset = parse_session_query(query)
    sessions = store.list_sessions(flt, limit=limit, offset=offset)
    return SessionListContext(
        flt, sessions, limit, offset, [(k, v) for k, v in query if k != "offset"]
    )


def session_detail(store: Store, session_id: str) -> SessionDetail:
    detail = store.get_session(session_id)
    if detail is None:
        raise NotFound(f"no session {session_id!r}")
    return detail


def trace_detail(store: Store, trace_id: str) -> TraceContext:
    spans = store.get_trace(trace_id.lower())
    if not spans:
        raise NotFound(f"no trace {trace_id!r}")
    return TraceContext(trace_id.lower(), spans)
