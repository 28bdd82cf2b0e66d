"""The store-side index of golden cases.

The case files live in the team's repository; the store keeps one row per case (id,
source, split, tags, created, lineage, when it was promoted and when it first passed)
so coverage, time-to-eval and the production-sourced share can be charted without the
repository. Rows are written when a case is promoted and when a set is synced
(``goldenloop golden sync DIR``); a case whose file disappeared is marked removed, not
deleted, so history stays.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from goldenloop.golden.casefiles import LoadedCase, Problem, scan_case_dir
from goldenloop.store.base import Store
from goldenloop.store.sql import naive_utc, utc

_COLUMNS = (
    "case_id", "set_name", "source", "source_kind", "production", "split", "tags",
    "created_at", "origin_at", "promoted_at", "synced_at", "removed_at", "first_pass_at",
    "first_pass_run", "last_run_id", "last_passed", "incident_id", "flag_id", "feedback_id",
    "session_pseudonym", "path", "content_hash",
)  # fmt: skip


@dataclass(frozen=True)
class IndexedCase:
    case_id: str
    set_name: str
    source: str
    source_kind: str
    production: bool
    split: str
    tags: list[str]
    created_at: datetime
    origin_at: datetime | None
    promoted_at: datetime | None
    synced_at: datetime
    removed_at: datetime | None
    first_pass_at: datetime | None
    first_pass_run: str | None
    last_run_id: str | None
    last_passed: bool | None
    incident_id: str | None
    flag_id: str | None
    feedback_id: str | None
    session_pseudonym: str | None
    path: str | None
    content_hash: str

    @property
    def time_to_eval_hours(self) -> float | None:
        """Hours from the production failure to the promoted case."""
        if self.origin_at is None or self.promoted_at is None:
            return None
        return max((self.promoted_at - self.origin_at).total_seconds() / 3600, 0.0)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name in _COLUMNS:
            value = getattr(self, name)
            data[name] = value.isoformat() if isinstance(value, datetime) else value
        data["time_to_eval_hours"] = self.time_to_eval_hours
        return data


def _as_datetime(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return naive_utc(value)
    return datetime.combine(value, time())


def upsert_case(
    store: Store,
    loaded: LoadedCase,
    *,
    set_name: str,
    root: Path | None = None,
    promoted_at: datetime | None = None,
    origin_at: datetime | None = None,
    now: datetime | None = None,
) -> None:
    """Insert or refresh a case's index row. Promotion and first-pass times are kept."""
    case = loaded.case
    now = naive_utc(now or datetime.now(UTC))
    path = str(loaded.path.relative_to(root)) if root else str(loaded.path)
    values = (
        case.id, set_name, case.source, case.source_kind, case.production_sourced, case.split,
        json.dumps(case.tags), _as_datetime(case.created),
        naive_utc(origin_at) if origin_at else None,
        naive_utc(promoted_at) if promoted_at else None,
        now, None, None, None, None, None, case.links.incident, case.links.flag,
        case.links.feedback, case.links.session, path, loaded.content_hash,
    )  # fmt: skip
    keep = {"first_pass_at", "first_pass_run", "last_run_id", "last_passed"}
    updates = ", ".join(
        f"{c} = coalesce(excluded.{c}, golden_cases.{c})"
        if c in ("origin_at", "promoted_at")
        else f"{c} = excluded.{c}"
        for c in _COLUMNS
        if c != "case_id" and c not in keep
    )
    store.execute(
        f"INSERT INTO golden_cases ({', '.join(_COLUMNS)}) "
        f"VALUES ({', '.join('?' for _ in _COLUMNS)}) "
        f"ON CONFLICT (case_id) DO UPDATE SET {updates}",
        values,
    )


@dataclass
class SyncResult:
    set_name: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "set_name": self.set_name,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "problems": [p.to_dict() for p in self.problems],
        }


def sync_case_dir(
    store: Store, root: Path, *, set_name: str | None = None, now: datetime | None = None
) -> SyncResult:
    """Bring the index in line with a directory: add, refresh, mark removed.

    Invalid files are reported in ``problems`` and left out; their index rows (if any)
    are kept as they were rather than marked removed.
    """
    root = Path(root)
    name = set_name or root.resolve().name
    cases, problems = scan_case_dir(root)
    result = SyncResult(name, problems=problems)
    existing = {
        r[0]: (r[1], r[2])
        for r in store.fetch(
            "SELECT case_id, content_hash, removed_at FROM golden_cases WHERE set_name = ?",
            (name,),
        )
    }
    for loaded in cases.cases:
        before = existing.get(loaded.case.id)
        if before is None:
            result.added.append(loaded.case.id)
        elif before[0] != loaded.content_hash or before[1] is not None:
            result.updated.append(loaded.case.id)
        else:
            result.unchanged.append(loaded.case.id)
            continue
        upsert_case(store, loaded, set_name=name, root=root, now=now)
    bad_paths = {p.path for p in problems}
    present = {c.case.id for c in cases.cases}
    stamp = naive_utc(now or datetime.now(UTC))
    for case_id, (_, removed_at) in existing.items():
        if case_id in present or removed_at is not None:
            continue
        rows = store.fetch("SELECT path FROM golden_cases WHERE case_id = ?", (case_id,))
        if rows and rows[0][0] in bad_paths:
            continue
        store.execute("UPDATE golden_cases SET removed_at = ? WHERE case_id = ?", (stamp, case_id))
        result.removed.append(case_id)
    return result


def record_case_outcomes(
    store: Store, run_id: str, finished_at: datetime, outcomes: Mapping[str, bool]
) -> None:
    """Note each indexed case's latest result and the first run it passed in."""
    stamp = naive_utc(finished_at)
    for case_id, passed in outcomes.items():
        store.execute(
            "UPDATE golden_cases SET last_run_id = ?, last_passed = ?, "
            "first_pass_at = CASE WHEN first_pass_at IS NULL AND ? THEN ? ELSE first_pass_at END, "
            "first_pass_run = CASE WHEN first_pass_run IS NULL AND ? THEN ? "
            "ELSE first_pass_run END "
            "WHERE case_id = ?",
            (run_id, passed, passed, stamp, passed, run_id, case_id),
        )


def _row(r: tuple[Any, ...]) -> IndexedCase:
    v = dict(zip(_COLUMNS, r, strict=True))
    for key in ("created_at", "origin_at", "promoted_at", "synced_at", "removed_at",
                "first_pass_at"):  # fmt: skip
        if v[key] is not None:
            v[key] = utc(v[key])
    v["tags"] = json.loads(v["tags"] or "[]")
    v["production"] = bool(v["production"])
    v["last_passed"] = None if v["last_passed"] is None else bool(v["last_passed"])
    return IndexedCase(**v)


def list_indexed_cases(
    store: Store, *, include_removed: bool = False, set_name: str | None = None
) -> list[IndexedCase]:
    clauses, params = [], []
    if not include_removed:
        clauses.append("removed_at IS NULL")
    if set_name:
        clauses.append("set_name = ?")
        params.append(set_name)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = store.fetch(
        f"SELECT {', '.join(_COLUMNS)} FROM golden_cases {where} ORDER BY created_at, case_id",
        params,
    )
    return [_row(r) for r in rows]
