"""Parameter models of the built-in graders: what each criterion type accepts.

Each is a pydantic model with ``extra="forbid"``, so a misspelled parameter is named
by ``goldenloop golden validate`` before a run.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, field_validator


class Spec(BaseModel):
    """Parameters every criterion accepts."""

    model_config = ConfigDict(extra="forbid")
    type: str
    #: A label for reports (defaults to the type).
    name: str | None = None


class FieldSpec(Spec):
    field: str = "text"


class ExactSpec(FieldSpec):
    value: Any
    case_sensitive: bool = True
    strip: bool = True


class ContainsSpec(FieldSpec):
    value: str | None = None
    values: list[str] = Field(default_factory=list)
    mode: str = Field("all", pattern="^(all|any)$")
    case_sensitive: bool = False

    def needles(self) -> list[str]:
        found = ([self.value] if self.value is not None else []) + self.values
        if not found:
            raise ValueError("give 'value' or 'values'")
        return found


class RegexSpec(FieldSpec):
    pattern: str
    flags: list[str] = Field(default_factory=list)
    match: bool = True

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return value

    @field_validator("flags")
    @classmethod
    def _known_flags(cls, value: list[str]) -> list[str]:
        bad = [f for f in value if f.upper() not in ("IGNORECASE", "MULTILINE", "DOTALL")]
        if bad:
            raise ValueError(f"unknown flags {bad}; use IGNORECASE, MULTILINE, DOTALL")
        return value


class JsonSchemaSpec(FieldSpec):
    schema_: dict[str, Any] = Field(alias="schema")

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            jsonschema.Draft202012Validator.check_schema(value)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON schema: {exc.message}") from None
        return value


class NumericSpec(FieldSpec):
    expected: float
    tolerance: float = Field(0.0, ge=0)
    relative: float | None = Field(None, ge=0)
    #: For ``field: text``: a regex whose first group (or whole match) is the number.
    pattern: str = r"-?\d+(?:[.,]\d+)?"


class CitesSourceSpec(Spec):
    sources: list[str] = Field(default_factory=list)
    all: bool = False
    min: int = Field(1, ge=1)
    #: How citations appear in the text when the target does not return a list.
    pattern: str = r"\[([A-Za-z0-9][A-Za-z0-9._:/-]*)\]"


class ExpectedCall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    #: Exact values, or ``{regex: PATTERN}`` for a string argument.
    args: dict[str, Any] = Field(default_factory=dict)
    #: JSON schema the arguments must satisfy.
    args_schema: dict[str, Any] | None = None


class ToolCallsSpec(Spec):
    expect: list[ExpectedCall] = Field(default_factory=list)
    forbid: list[str] = Field(default_factory=list)
    ordered: bool = False
    max_calls: int | None = Field(None, ge=0)


class PythonSpec(Spec):
    function: str = Field(pattern=r"^[\w.]+:[\w.]+$")
    params: dict[str, Any] = Field(default_factory=dict)
    threshold: float = 0.5


class JudgeSpec(Spec):
    rubric: str
    threshold: float = Field(0.5, ge=0, le=1)
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
