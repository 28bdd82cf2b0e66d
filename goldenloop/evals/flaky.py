"""Flaky cases, the quarantine list, and the eval-debt section of a run.

``--repeat N`` runs each case N times; a case whose outcome varies is *flaky*. A team
can quarantine a case by listing it in the set's ``_quarantine.yaml``::

    # Quarantined cases still run and are reported; they do not fail CI.
    - id: EU-15
      reason: judge disagrees about 1 run in 5
      since: 2026-07-01
      owner: ana

Quarantined cases are never silently dropped: every run lists them in its eval-debt
section with their age, together with flaky cases nobody quarantined yet and failing
holdout cases.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

import yaml

from goldenloop.evals.results import EvalRun

QUARANTINE_FILE: Final = "_quarantine.yaml"


class QuarantineError(ValueError):
    pass


@dataclass(frozen=True)
class QuarantineEntry:
    id: str
    reason: str
    since: date | None = None
    owner: str | None = None

    def age_days(self, today: date) -> int | None:
        return (today - self.since).days if self.since else None


@dataclass
class Quarantine:
    entries: dict[str, QuarantineEntry] = field(default_factory=dict)
    path: Path | None = None

    def __contains__(self, case_id: object) -> bool:
        return case_id in self.entries

    def reason(self, case_id: str) -> str | None:
        entry = self.entries.get(case_id)
        return entry.reason if entry else None


def is_flaky(outcomes: Sequence[bool]) -> bool:
    """The outcome varied between attempts."""
    return len(set(outcomes)) > 1


def _parse(data: Any) -> dict[str, QuarantineEntry]:
    if data is None:
        return {}
    if not isinstance(data, list):
        raise QuarantineError("must be a list of {id, reason, since, owner}")
    entries: dict[str, QuarantineEntry] = {}
    for i, item in enumerate(data):
        if isinstance(item, str):
            item = {"id": item}
        if not isinstance(item, dict) or not item.get("id"):
            raise QuarantineError(f"entry {i}: needs an 'id'")
        unknown = set(item) - {"id", "reason", "since", "owner"}
        if unknown:
            raise QuarantineError(f"entry {i}: unknown field(s) {sorted(unknown)}")
        if not item.get("reason"):
            raise QuarantineError(f"entry {i} ({item['id']}): needs a 'reason'")
        since = item.get("since")
        if since is not None and not isinstance(since, date):
            try:
                since = date.fromisoformat(str(since))
            except ValueError:
                raise QuarantineError(f"entry {i}: since must be a date (YYYY-MM-DD)") from None
        entries[str(item["id"])] = QuarantineEntry(
            str(item["id"]), str(item["reason"]), since, item.get("owner")
        )
    return entries


def load_quarantine(path: Path | None) -> Quarantine:
    """The quarantine list at ``path`` (empty when the file does not exist)."""
    if path is None or not Path(path).is_file():
        return Quarantine(path=Path(path) if path else None)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return Quarantine(_parse(data), Path(path))
    except (yaml.YAMLError, QuarantineError) as exc:
        raise QuarantineError(f"{path}: {exc}") from None


def quarantine_problems(root: Path) -> list[Any]:
    from goldenloop.golden.casefiles import Problem

    path = Path(root) / QUARANTINE_FILE
    try:
        load_quarantine(path)
    except QuarantineError as exc:
        return [Problem(QUARANTINE_FILE, "", str(exc).split(": ", 1)[-1])]
    return []


def add_to_quarantine(
    path: Path, case_ids: Iterable[str], reason: str, *, today: date | None = None
) -> list[str]:
    """Append cases to the quarantine file (keeping what is there); returns the new ids."""
    current = load_quarantine(path)
    today = today or datetime.now(UTC).date()
    added = [c for c in dict.fromkeys(case_ids) if c not in current]
    if not added:
        return []
    existing = (
        Path(path).read_text(encoding="utf-8")
        if Path(path).is_file()
        else ("# Quarantined cases still run and are reported; they do not fail CI.\n")
    )
    if existing and not existing.endswith("\n"):
        existing += "\n"
    block = yaml.safe_dump(
        [{"id": c, "reason": reason, "since": today} for c in added],
        sort_keys=False,
        allow_unicode=True,
    )
    Path(path).write_text(existing + block, encoding="utf-8")
    return added


@dataclass(frozen=True)
class DebtItem:
    case_id: str
    kind: str  # quarantined | flaky | holdout-failing
    detail: str
    age_days: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"case_id": self.case_id, "kind": self.kind, "detail": self.detail,
                "age_days": self.age_days}  # fmt: skip


def eval_debt(run: EvalRun, quarantine: Quarantine, *, today: date | None = None) -> list[DebtItem]:
    """Quarantined cases (with age and current status), flaky cases not yet quarantined,
    failing holdout cases, and quarantine entries whose case no longer exists."""
    today = today or datetime.now(UTC).date()
    items: list[DebtItem] = []
    seen = set()
    for r in run.results:
        seen.add(r.case_id)
        if r.case_id in quarantine:
            entry = quarantine.entries[r.case_id]
            status = "passes now; consider releasing it" if r.passed and not r.flaky else r.status
            items.append(DebtItem(r.case_id, "quarantined", f"{entry.reason} ({status})",
                                  entry.age_days(today)))  # fmt: skip
        elif r.flaky:
            items.append(DebtItem(r.case_id, "flaky",
                                  f"passed {r.passes} of {r.attempts} attempts; not quarantined"))  # fmt: skip
        elif r.split == "holdout" and not r.passed:
            items.append(DebtItem(r.case_id, "holdout-failing", r.failure_message().split("\n")[0]))
    for case_id, entry in sorted(quarantine.entries.items()):
        if case_id not in seen:
            items.append(DebtItem(case_id, "quarantined", f"{entry.reason} (case not in this run)",
                                  entry.age_days(today)))  # fmt: skip
    return items
