"""Promote a triaged production session into an anonymized golden case.

``promote_session`` reads the session from the store, builds the case input from its
turns (the user messages, earlier answers as history, context from the slice
dimensions), replaces production ids with pseudonyms, removes secrets and PII, then
re-scans the exact YAML about to be written. If anything sensitive survived it refuses
with a ``PromotionRefused`` listing what (masked) and where; nothing is written and no
pseudonym is stored. Otherwise it writes the file, stores the new pseudonyms in the
admin-only ``id_map`` and indexes the case.

``session_or_item`` is a session id or, when the triage queue is installed, a triage
item id (``triage_items.id``): the item's session, failing trace, criteria, failure
modes and first-seen time are used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml

from goldenloop.golden.anonymize import (
    AnonymizationReport,
    AnonymizerConfig,
    CaseAnonymizer,
    Leak,
    load_anonymizer_config,
    pii_engine,
    scan_for_leaks,
)
from goldenloop.golden.casefiles import (
    LoadedCase,
    case_from_data,
    content_hash,
    dump_case,
    next_case_id,
    write_case,
)
from goldenloop.golden.index import upsert_case
from goldenloop.golden.pseudonyms import PseudonymMap
from goldenloop.golden.schema import Case, Split
from goldenloop.model import SessionDetail, Span, Turn
from goldenloop.store.base import Store
from goldenloop.store.sql import utc

_ATTACHMENT_KEYS = ("goldenloop.attachments", "gen_ai.input.attachments", "attachments")


class PromotionError(ValueError):
    """The promotion cannot start: unknown session, bad criteria, id taken, …"""


class PromotionRefused(PromotionError):
    """Anonymization left PII, a secret or a production id in the case; nothing written."""

    def __init__(self, case_id: str, leaks: list[Leak]) -> None:
        self.leaks = leaks
        lines = "\n".join(f"  - {leak}" for leak in leaks)
        super().__init__(
            f"refusing to write case {case_id}: {len(leaks)} sensitive value(s) survived "
            f"anonymization (shown masked):\n{lines}\nAdd a pattern to _anonymize.yaml or "
            "edit the input, then promote again."
        )


@dataclass
class TriageItem:
    id: str
    session_id: str
    trace_id: str | None
    criteria: list[dict[str, Any]]
    tags: list[str]
    source: str | None
    first_seen_at: datetime | None
    flag_id: str | None
    #: The reviewer's pass/fail criteria when written as prose, not grader specs.
    rubric: str | None = None


@dataclass
class PromotionResult:
    case: Case
    path: Path | None
    yaml_text: str
    report: AnonymizationReport
    origin_at: datetime | None
    triage_item: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "case_id": self.case.id,
            "path": str(self.path) if self.path else None,
            "source": self.case.source,
            "split": self.case.split,
            "origin_at": self.origin_at.isoformat() if self.origin_at else None,
            "triage_item": self.triage_item,
            "anonymization": self.report.to_dict(),
            "warnings": self.warnings,
            "yaml": self.yaml_text,
        }


# -- reading the session ----------------------------------------------------------------


def _table_exists(store: Store, name: str) -> bool:
    rows = store.fetch(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", (name,)
    )
    return bool(rows and rows[0][0])


def _parse_list(raw: Any) -> list[Any]:
    if raw is None or raw == "":
        return []
    if isinstance(raw, list):
        return raw
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return []
    return value if isinstance(value, list) else []


def find_triage_item(store: Store, item_id: str) -> TriageItem | None:
    """The triage queue's item (None when the queue is not installed or has no such id)."""
    if not _table_exists(store, "triage_items"):
        return None
    rows = store.fetch(
        "SELECT id, session_id, trace_id, criteria, failure_modes, source, first_seen_at "
        "FROM triage_items WHERE id = ?",
        (item_id,),
    )
    if not rows:
        return None
    r = rows[0]
    flag_id = None
    if _table_exists(store, "flags"):
        flags = store.fetch(
            "SELECT id FROM flags WHERE item_id = ? ORDER BY created_at LIMIT 1", (item_id,)
        )
        flag_id = str(flags[0][0]) if flags else None
    criteria = [c for c in _parse_list(r[3]) if isinstance(c, dict)]
    rubric = str(r[3]).strip() if r[3] and not criteria and str(r[3]).strip() else None
    tags = [str(t) for t in _parse_list(r[4])]
    return TriageItem(
        id=str(r[0]), session_id=str(r[1]), trace_id=r[2], criteria=criteria, tags=tags,
        source=r[5], first_seen_at=utc(r[6]) if r[6] else None, flag_id=flag_id,
        rubric=rubric,
    )  # fmt: skip


def _user_text(raw: str | None) -> str | None:
    """The user's message from a root span's input (plain text or a JSON message list)."""
    if raw is None or not raw.strip():
        return None
    stripped = raw.strip()
    if stripped.startswith("["):
        try:
            messages = json.loads(stripped)
        except json.JSONDecodeError:
            return raw
        if isinstance(messages, list):
            users = [
                m.get("content") for m in messages
                if isinstance(m, dict) and m.get("role") == "user"
                and isinstance(m.get("content"), str)
            ]  # fmt: skip
            if users:
                return str(users[-1])
    return raw


def _first(spans: Sequence[Span], attr: str) -> Any:
    return next((getattr(s, attr) for s in spans if getattr(s, attr)), None)


def _attachments(spans: Sequence[Span]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for span in spans:
        for key in _ATTACHMENT_KEYS:
            for item in _parse_list(span.attributes.get(key)):
                if not isinstance(item, dict) or not item.get("name"):
                    continue
                entry: dict[str, Any] = {"name": str(item["name"])}
                media = item.get("media_type") or item.get("mime_type") or item.get("type")
                if media:
                    entry["media_type"] = str(media)
                size = item.get("size_bytes", item.get("size"))
                if isinstance(size, int) and size >= 0:
                    entry["size_bytes"] = size
                if entry not in found:
                    found.append(entry)
    return found


def turns_upto(detail: SessionDetail, trace_id: str | None) -> list[Turn]:
    turns = detail.turns
    if trace_id:
        index = next(
            (i for i, t in enumerate(turns) if trace_id in (t.trace_id, t.message_id)), None
        )
        if index is None:
            raise PromotionError(f"session {detail.summary.session_id!r} has no turn {trace_id!r}")
        turns = turns[: index + 1]
    return turns


def session_case_input(
    detail: SessionDetail, turns: Sequence[Turn], pseudonyms: PseudonymMap
) -> tuple[dict[str, Any], dict[str, str]]:
    """The raw case input and the links (pseudonyms), before PII/secret removal."""
    messages: list[dict[str, str]] = []
    for turn in turns:
        text = _user_text(turn.input_text)
        if text is None:
            continue
        messages.append({"role": "user", "content": text})
        if turn is not turns[-1] and turn.output_text:
            messages.append({"role": "assistant", "content": turn.output_text})
    if not messages or messages[-1]["role"] != "user":
        raise PromotionError(
            f"session {detail.summary.session_id!r} has no user message to replay "
            "(its root spans carry no input text)"
        )
    last = turns[-1]
    spans = [s for s in detail.spans if s.trace_id == last.trace_id] or detail.spans
    context: dict[str, Any] = {
        "locale": _first(spans, "locale") or detail.summary.locale,
        "tier": _first(spans, "customer_tier") or detail.summary.customer_tier,
        "flags": next((s.feature_flags for s in spans if s.feature_flags), {}),
        "prompt_version": _first(spans, "prompt_hash") or detail.summary.prompt_hash,
        "model": _first(spans, "model") or detail.summary.model,
        "index_version": _first(spans, "index_version"),
    }
    data: dict[str, Any] = {
        "messages": messages,
        "context": {k: v for k, v in context.items() if v},
    }
    included = {t.trace_id for t in turns}
    attachments = _attachments([s for s in detail.spans if s.trace_id in included])
    if attachments:
        data["attachments"] = attachments
    # Pseudonyms for every production id the case could mention.
    session_id = detail.summary.session_id
    links = {"session": pseudonyms.get("session", session_id),
             "trace": pseudonyms.get("trace", last.trace_id)}  # fmt: skip
    for turn in detail.turns:
        pseudonyms.get("trace", turn.trace_id)
        if turn.message_id != turn.trace_id:
            pseudonyms.get("message", turn.message_id)
    for user in {s.user_id for s in detail.spans if s.user_id}:
        pseudonyms.get("user", user)
    return data, links


def _default_source(detail: SessionDetail, item: TriageItem | None) -> tuple[str, datetime | None]:
    downs = sorted((f for f in detail.feedback if f.rating == "down"), key=lambda f: f.created_at)
    if item and item.source and any(w in item.source for w in ("feedback", "thumbs")):
        when = item.first_seen_at or (downs[0].created_at if downs else None)
        if when:
            return f"thumbs-down-{when.date().isoformat()}", when
    if downs:
        return f"thumbs-down-{downs[0].created_at.date().isoformat()}", downs[0].created_at
    return "manual", item.first_seen_at if item else detail.summary.end_time


# -- promotion --------------------------------------------------------------------------


def promote_session(
    store: Store,
    session_or_item: str,
    case_id: str | None,
    criteria: Sequence[Mapping[str, Any]] | None,
    out_dir: Path | None,
    split: Split = "golden",
    source: str | None = None,
    *,
    tags: Sequence[str] = (),
    description: str | None = None,
    incident: str | None = None,
    upto_turn: str | None = None,
    config: AnonymizerConfig | None = None,
    id_prefix: str = "case",
    overwrite: bool = False,
    now: datetime | None = None,
) -> PromotionResult:
    """Build, anonymize, verify and write one case (see the module docstring).

    ``out_dir=None`` builds and verifies the case without writing a file (the API uses
    it to hand the YAML back); pseudonyms and the index row are stored either way.
    """
    now = now or datetime.now(UTC)
    item = find_triage_item(store, session_or_item)
    session_id = item.session_id if item else session_or_item
    detail = store.get_session(session_id)
    if detail is None:
        hint = "" if _table_exists(store, "triage_items") else " (no triage queue installed)"
        raise PromotionError(f"no session or triage item {session_or_item!r}{hint}")
    criteria_list = [dict(c) for c in (criteria or (item.criteria if item else []))]
    if not criteria_list and not (item and item.rubric):
        raise PromotionError("a case needs at least one criterion (e.g. --criteria FILE)")
    if config is None:
        config = load_anonymizer_config(out_dir) if out_dir else AnonymizerConfig()
    engine = pii_engine(config)
    pseudonyms = PseudonymMap(store, detail.summary.project)
    turns = turns_upto(detail, upto_turn or (item.trace_id if item else None))
    raw_input, links = session_case_input(detail, turns, pseudonyms)
    default_source, origin_at = _default_source(detail, item)
    if case_id is None:
        case_id = next_case_id(out_dir, id_prefix) if out_dir else f"{id_prefix}-{now:%Y%m%d%H%M%S}"

    anonymizer = CaseAnonymizer(engine, pseudonyms.mapping())
    clean_input = anonymizer.data(raw_input, "input")
    if not criteria_list and item and item.rubric:
        # The reviewer wrote pass/fail criteria in prose: an LLM judge grades against them.
        rubric = anonymizer.text(item.rubric, "criteria")
        criteria_list = [{"type": "llm-judge", "name": "reviewer-criteria", "rubric": rubric}]
    data: dict[str, Any] = {
        "id": case_id,
        "input": clean_input,
        "criteria": criteria_list,
        "tags": list(dict.fromkeys([*tags, *(item.tags if item else [])])),
        "source": source or default_source,
        "split": split,
        "created": now.date() if isinstance(now, datetime) else date.today(),
        "links": {
            **links,
            "incident": incident,
            "triage_item": item.id if item else None,
            "flag": item.flag_id if item else None,
            "feedback": next((f.id for f in detail.feedback if f.rating == "down"), None),
        },
    }
    if description:
        data["description"] = anonymizer.text(description, "description")
    case = case_from_data(data, f"{case_id}.yaml")
    text = dump_case(case)

    production_ids = list(pseudonyms.mapping())
    leaks = scan_for_leaks(text, engine, production_ids)
    if leaks:
        raise PromotionRefused(case_id, leaks)

    path = None
    if out_dir is not None:
        try:
            path = write_case(case, out_dir, overwrite=overwrite, text=text)
        except FileExistsError as exc:
            raise PromotionError(str(exc)) from None
    pseudonyms.commit(case_id)
    loaded = LoadedCase(case, path or Path(f"{case_id}.yaml"), content_hash(text))
    set_name = Path(out_dir).resolve().name if out_dir else "api"
    upsert_case(
        store, loaded, set_name=set_name, root=Path(out_dir) if out_dir else None,
        promoted_at=now, origin_at=origin_at, now=now,
    )  # fmt: skip
    if item is not None:
        _link_triage_item(store, item.id, case_id, now)
    return PromotionResult(case, path, text, anonymizer.report, origin_at,
                           item.id if item else None)  # fmt: skip


def _link_triage_item(store: Store, item_id: str, case_id: str, when: datetime) -> None:
    """Stop the triage item's time-to-eval clock (through the triage queue's own API)."""
    try:
        from goldenloop.triage.labels import link_golden_case
    except ImportError:  # the triage queue is not part of this installation
        return
    link_golden_case(store, item_id, case_id, merged_at=when)
