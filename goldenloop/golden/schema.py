"""The golden case schema: one YAML file per case, validated field by field.

A case file looks like this (every field is documented in docs/golden-set.md)::

    id: EU-12
    description: EU customer asks for the refund policy
    input:
      messages:
        - {role: user, content: "Can I return my shoes? I bought them last week."}
      attachments: []            # metadata only: name, media_type, size_bytes, sha256
      context:                   # what the app needs to reproduce the turn
        locale: de-DE
        tier: pro
        flags: {eu_banner: "on"}
        prompt_version: a1c0
    criteria:                    # one or more graders; all must pass
      - {type: contains, value: "14 days"}
      - {type: cites-source, sources: [eu-right-of-withdrawal]}
    tags: [policy, refund, locale:de-DE]
    source: incident-INC-7       # thumbs-down-YYYY-MM-DD | incident-INC-N | drift-YYYY-Www
                                 # | safety-probe | synthetic | manual
    split: golden                # golden | holdout
    created: 2026-06-29
    links: {incident: INC-7, flag: null, feedback: null, session: ses_kfqbzrwtmd}

Grader parameters are checked by the grader registry (``goldenloop.evals.graders``),
so a case with an unknown grader or a misspelled parameter is named by ``golden
validate`` before CI runs it.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Case ids: a letter or digit, then letters, digits, ``.``, ``_`` or ``-``.
CASE_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
TAG_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9:._/+-]{0,63}$"
SOURCE_PATTERN: Final = (
    r"^(thumbs-down-\d{4}-\d{2}-\d{2}|incident-INC-\d+|drift-\d{4}-W\d{2}"
    r"|safety-probe|synthetic|manual)$"
)
SOURCE_KINDS: Final = ("thumbs-down", "incident", "drift", "safety-probe", "synthetic", "manual")
#: Sources that come from production traffic (the "production-sourced share").
PRODUCTION_SOURCE_KINDS: Final = frozenset({"thumbs-down", "incident", "drift"})
SPLITS: Final = ("golden", "holdout")
Split = Literal["golden", "holdout"]
Role = Literal["system", "user", "assistant", "tool"]

_SOURCE_RE = re.compile(SOURCE_PATTERN)


def source_kind(source: str) -> str:
    """``thumbs-down-2026-06-29`` → ``thumbs-down``; ``incident-INC-7`` → ``incident``."""
    for kind in SOURCE_KINDS:
        if source == kind or source.startswith(kind + "-"):
            return kind
    raise ValueError(f"unknown source {source!r}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class Message(_Strict):
    role: Role
    content: str
    name: str | None = None


class Attachment(_Strict):
    """Metadata of a file the user attached; the bytes never enter the golden set."""

    name: str
    media_type: str = "application/octet-stream"
    size_bytes: Annotated[int, Field(ge=0)] | None = None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


class CaseContext(BaseModel):
    """Slice dimensions and anything else the target needs to reproduce the turn.

    The named fields are the usual ones; other keys (e.g. ``documents`` for a probe
    that injects through a retrieved document) are kept and passed to the target.
    """

    model_config = ConfigDict(extra="allow")

    locale: str | None = None
    tier: str | None = None
    flags: dict[str, str] = Field(default_factory=dict)
    prompt_version: str | None = None
    model: str | None = None
    index_version: str | None = None

    @field_validator("flags", mode="before")
    @classmethod
    def _flag_values_are_text(cls, value: Any) -> Any:
        # YAML reads `on`/`off` unquoted as booleans; a flag variant is text.
        if isinstance(value, dict):
            return {
                str(k): ("on" if v is True else "off" if v is False else v)
                for k, v in value.items()
            }
        return value


class CaseInput(_Strict):
    messages: Annotated[list[Message], Field(min_length=1)]
    attachments: list[Attachment] = Field(default_factory=list)
    context: CaseContext = Field(default_factory=CaseContext)


class CaseLinks(_Strict):
    """Lineage: where the case came from. Session and trace are pseudonyms."""

    incident: str | None = None
    flag: str | None = None
    feedback: str | None = None
    triage_item: str | None = None
    session: str | None = None
    trace: str | None = None


class Case(_Strict):
    id: Annotated[str, Field(pattern=CASE_ID_PATTERN)]
    description: str | None = None
    input: CaseInput
    criteria: Annotated[list[dict[str, Any]], Field(min_length=1)]
    tags: list[Annotated[str, Field(pattern=TAG_PATTERN)]] = Field(default_factory=list)
    source: Annotated[str, Field(pattern=SOURCE_PATTERN)]
    split: Split = "golden"
    created: date
    links: CaseLinks = Field(default_factory=CaseLinks)

    @field_validator("criteria")
    @classmethod
    def _criteria_have_a_type(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, spec in enumerate(value):
            kind = spec.get("type")
            if not isinstance(kind, str) or not kind:
                raise ValueError(f"criterion {i} needs a 'type' (the grader name)")
        return value

    @property
    def source_kind(self) -> str:
        return source_kind(self.source)

    @property
    def production_sourced(self) -> bool:
        """From production traffic: a production source, or promoted from a session."""
        return self.source_kind in PRODUCTION_SOURCE_KINDS or self.links.session is not None

    def to_yaml_dict(self) -> dict[str, Any]:
        """Plain data in the documented key order, without empty optional fields."""
        data = self.model_dump(mode="json", exclude_none=True)
        ctx = data["input"].get("context", {})
        if not ctx.get("flags"):
            ctx.pop("flags", None)
        if not data["input"].get("attachments"):
            data["input"].pop("attachments", None)
        if not data["input"].get("context"):
            data["input"].pop("context", None)
        if not data.get("links"):
            data.pop("links", None)
        order = ("id", "description", "input", "criteria", "tags", "source", "split",
                 "created", "links")  # fmt: skip
        return {key: data[key] for key in order if key in data}

    def target_input(self) -> dict[str, Any]:
        """What a target function receives: messages, attachments, context, case id."""
        data = self.input.model_dump(mode="json", exclude_none=True)
        data["case_id"] = self.id
        return data
