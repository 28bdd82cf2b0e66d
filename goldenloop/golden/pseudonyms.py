"""Production ids → pseudonyms, and the admin-only way back.

A promoted case names its user, session, messages and traces only by pseudonyms
(``usr_…``, ``ses_…``, ``msg_…``, ``trc_…``). The mapping back to production ids lives
only in the store's ``id_map`` table, which no API route exposes: an admin with access
to the store reconnects a case to its trace with ``goldenloop golden reveal PSEUDONYM``.
The same production id always gets the same pseudonym, so two cases from one user
can be recognised as such without revealing who it is.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from goldenloop.store.base import Store
from goldenloop.store.sql import naive_utc, utc

KIND_PREFIX: Final[dict[str, str]] = {
    "user": "usr",
    "session": "ses",
    "message": "msg",
    "trace": "trc",
}


#: Consonants only: a pseudonym can never look like a phone number, a card number or
#: a word (random hex such as ``0412345654`` is a valid phone number in some regions).
_ALPHABET: Final = "bcdfghjkmnpqrstvwxz"


def _random_letters(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


@dataclass(frozen=True)
class IdMapping:
    pseudonym: str
    kind: str
    production_id: str
    project: str | None
    case_id: str | None
    created_at: datetime

    def to_dict(self) -> dict[str, str | None]:
        return {
            "pseudonym": self.pseudonym,
            "kind": self.kind,
            "production_id": self.production_id,
            "project": self.project,
            "case_id": self.case_id,
            "created_at": self.created_at.isoformat(),
        }


class PseudonymMap:
    """Pseudonyms for one promotion; new ones are stored only on ``commit``."""

    def __init__(self, store: Store, project: str | None = None) -> None:
        self._store = store
        self._project = project
        self._pending: dict[tuple[str, str], str] = {}
        self._known: dict[tuple[str, str], str] = {}

    def get(self, kind: str, production_id: str) -> str:
        if kind not in KIND_PREFIX:
            raise ValueError(f"unknown id kind {kind!r}; use one of {sorted(KIND_PREFIX)}")
        key = (kind, production_id)
        if key in self._known:
            return self._known[key]
        if key in self._pending:
            return self._pending[key]
        rows = self._store.fetch(
            "SELECT pseudonym FROM id_map WHERE kind = ? AND production_id = ? "
            "ORDER BY created_at LIMIT 1",
            (kind, production_id),
        )
        if rows:
            self._known[key] = str(rows[0][0])
            return self._known[key]
        pseudonym = f"{KIND_PREFIX[kind]}_{_random_letters(10)}"
        self._pending[key] = pseudonym
        return pseudonym

    def mapping(self) -> dict[str, str]:
        """production id → pseudonym for everything handed out so far."""
        return {pid: p for (_, pid), p in {**self._known, **self._pending}.items()}

    def commit(self, case_id: str | None) -> int:
        """Store the new pseudonyms; returns how many."""
        now = naive_utc(datetime.now(UTC))
        for (kind, production_id), pseudonym in self._pending.items():
            self._store.execute(
                "INSERT INTO id_map (pseudonym, kind, production_id, project, case_id, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (pseudonym, kind, production_id, self._project, case_id, now),
            )
        count = len(self._pending)
        self._known.update(self._pending)
        self._pending.clear()
        return count


def reveal(store: Store, pseudonym: str) -> IdMapping | None:
    """The production id behind a pseudonym (admins only: this reads ``id_map``)."""
    rows = store.fetch(
        "SELECT pseudonym, kind, production_id, project, case_id, created_at FROM id_map "
        "WHERE pseudonym = ?",
        (pseudonym.strip(),),
    )
    if not rows:
        return None
    r = rows[0]
    return IdMapping(r[0], r[1], r[2], r[3], r[4], utc(r[5]))
