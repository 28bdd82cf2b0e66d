"""Label matchers, as in Prometheus and Alertmanager: ``name=value``, ``name!=value``,
``name=~regex``, ``name!~regex`` (regexes match the whole value). Routes use them to
pick the alerts a notifier gets; silences use them to pick the alerts they mute.
A label an alert does not have has the empty value."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Op = Literal["=", "!=", "=~", "!~"]
_PARSE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


class MatcherError(ValueError):
    """A matcher is malformed; the message quotes it."""


@dataclass(frozen=True)
class Matcher:
    name: str
    op: Op
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def build(cls, name: str, op: str, value: str) -> Matcher:
        if op not in ("=", "!=", "=~", "!~"):
            raise MatcherError(f"matcher on {name!r}: unknown operator {op!r}")
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = re.compile(value)
            except re.error as exc:
                raise MatcherError(f"matcher {name}{op}{value!r}: bad regex: {exc}") from None
        return cls(name, op, value, regex)  # type: ignore[arg-type]

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self._regex is not None
        found = self._regex.fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{self.value}"'

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "op": self.op, "value": self.value}


def parse_matcher(text: str) -> Matcher:
    """``severity=page``, ``project=~"refund.*"``, ``locale!=en-US``."""
    match = _PARSE.match(text or "")
    if not match:
        raise MatcherError(
            f"matcher {text!r} must look like name=value, name!=value, name=~regex or name!~regex"
        )
    name, op, value = match.groups()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return Matcher.build(name, op, value)


def parse_matchers(value: Any, *, where: str = "matchers") -> tuple[Matcher, ...]:
    """A mapping ``{name: value}`` (equality), a list of matcher strings or
    ``{name, op, value}`` mappings, or one string."""
    if value is None:
        return ()
    try:
        if isinstance(value, str):
            return (parse_matcher(value),)
        if isinstance(value, Mapping):
            return tuple(Matcher.build(str(k), "=", str(v)) for k, v in value.items())
        if isinstance(value, list):
            result = []
            for item in value:
                if isinstance(item, str):
                    result.append(parse_matcher(item))
                elif isinstance(item, Mapping) and {"name", "value"} <= set(item):
                    result.append(
                        Matcher.build(
                            str(item["name"]), str(item.get("op", "=")), str(item["value"])
                        )
                    )
                else:
                    raise MatcherError(f"{item!r} is not a matcher")
            return tuple(result)
    except MatcherError as exc:
        raise MatcherError(f"{where}: {exc}") from None
    raise MatcherError(f"{where}: expected a mapping of label → value or a list of matchers")


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
