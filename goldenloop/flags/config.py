"""Flag rule and queue configuration from YAML, validated with errors that name the
file, line, rule and key.

::

    plugins: [mycompany.goldenloop_rules]   # modules that register extra rules
    defaults: {daily_cap: 100}              # policy for every rule
    rules:
      tool_error_streak: {min_streak: 3}
      cost_p95: {window_days: 14, daily_cap: 50, sample_rate: 0.5}
      guardrail_low_confidence: {enabled: false}
    queue:
      top_n: 25                             # items opened per refresh
      tier_weights: {free: 1, pro: 3, enterprise: 10}
      refresh_hour: 2                       # nightly refresh at 02:00 UTC
      p0_target_hours: 72
    notify:
      - {type: webhook, url: "https://example.com/hooks/goldenloop"}

Each rule's keys are its parameters plus the policy keys ``enabled``,
``sample_rate``, ``daily_cap``, ``min_score`` and ``severity``. Rules the file does not
mention run with their defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from goldenloop.flags.rules import (
    DEFAULT_POLICIES,
    RULES,
    ConfiguredRule,
    RulePolicy,
    priority_of,
    rule_names,
)
from goldenloop.store.base import Store

POLICY_KEYS = tuple(f.name for f in dataclasses.fields(RulePolicy))
_TOP_KEYS = ("plugins", "defaults", "rules", "queue", "notify")


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the place and the fix."""


@dataclass(frozen=True)
class QueueSettings:
    #: Backlog items opened into the annotation queue per refresh (highest impact first).
    top_n: int = 25
    tier_weights: dict[str, float] = field(
        default_factory=lambda: {"free": 1.0, "pro": 3.0, "enterprise": 10.0}
    )
    #: Weight of sessions with no or an unknown tier.
    default_tier_weight: float = 1.0
    #: UTC hour of the nightly queue refresh in ``goldenloop serve``.
    refresh_hour: int = 2
    #: Time-to-eval target for P0 items (hours from first report to merged case).
    p0_target_hours: int = 72
    #: An item resolves when its linked golden case passes in an eval run of one of
    #: these splits (after the case merged).
    resolve_splits: tuple[str, ...] = ("holdout",)

    def __post_init__(self) -> None:
        if self.top_n < 0:
            raise ValueError(f"top_n: must be 0 or more, got {self.top_n}")
        if not 0 <= self.refresh_hour <= 23:
            raise ValueError(f"refresh_hour: must be 0–23, got {self.refresh_hour}")
        if self.p0_target_hours <= 0:
            raise ValueError(f"p0_target_hours: must be positive, got {self.p0_target_hours}")
        for tier, weight in self.tier_weights.items():
            if weight <= 0:
                raise ValueError(f"tier_weights: {tier} must be positive, got {weight}")

    def weight_of(self, tier: str | None) -> float:
        return self.tier_weights.get(tier or "", self.default_tier_weight)


@dataclass(frozen=True)
class NotifierSpec:
    type: str
    options: dict[str, Any]


@dataclass(frozen=True)
class FlagConfig:
    rules: tuple[ConfiguredRule, ...]
    queue: QueueSettings = field(default_factory=QueueSettings)
    notify: tuple[NotifierSpec, ...] = ()
    source: str = "defaults"

    def rule(self, name: str) -> ConfiguredRule | None:
        return next((r for r in self.rules if r.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rules": [
                {
                    "name": r.name,
                    "description": r.rule.description,
                    **dataclasses.asdict(r.policy),
                    "severity": r.severity,
                    "priority": priority_of(r.severity),
                    "params": _params_of(r.rule),
                }
                for r in self.rules
            ],
            "queue": dataclasses.asdict(self.queue),
            "notify": [{"type": n.type, **_redacted(n.options)} for n in self.notify],
        }


def _redacted(options: Mapping[str, Any]) -> dict[str, Any]:
    secret = ("secret", "token", "password", "authorization")
    return {k: ("***" if any(s in k.lower() for s in secret) else v) for k, v in options.items()}


def _params_of(rule: Any) -> dict[str, Any]:
    names = inspect.signature(type(rule)).parameters
    return {name: getattr(rule, name) for name in names if hasattr(rule, name)}


# -- YAML with line numbers -------------------------------------------------------------


def _line_map(
    node: yaml.Node | None, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]
) -> None:
    if node is None:
        return
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            key_path = (*path, key.value)
            out[key_path] = key.start_mark.line + 1
            _line_map(value, key_path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*path, i), out)


class _Reader:
    def __init__(self, text: str, source: str) -> None:
        self.source = source
        try:
            self.data = yaml.safe_load(text) if text.strip() else {}
            node = yaml.compose(text) if text.strip() else None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"{source}{where}: not valid YAML: {problem}") from None
        self.lines: dict[tuple[Any, ...], int] = {}
        _line_map(node, (), self.lines)

    def error(self, path: tuple[Any, ...], message: str) -> ConfigError:
        line = None
        for n in range(len(path), -1, -1):
            line = self.lines.get(path[:n])
            if line is not None:
                break
        where = f" line {line}" if line else ""
        dotted = ".".join(str(p) for p in path)
        return ConfigError(f"{self.source}{where}: {dotted + ': ' if dotted else ''}{message}")


def _suggest(name: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: tuple[Any, ...], reader: _Reader) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], path, reader)
    if origin is typing.Literal:
        if value not in args:
            raise reader.error(path, f"must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise reader.error(path, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise reader.error(path, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise reader.error(path, f"must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise reader.error(path, f"must be text, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise reader.error(path, f"must be a list, got {value!r}")
        item_type = args[0] if args else Any
        return tuple(_coerce(v, item_type, (*path, i), reader) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise reader.error(path, f"must be a mapping, got {value!r}")
        key_type, value_type = args if args else (Any, Any)
        return {
            _coerce(k, key_type, (*path, k), reader): _coerce(v, value_type, (*path, k), reader)
            for k, v in value.items()
        }
    return value


def _build(cls: Any, values: Mapping[str, Any], path: tuple[Any, ...], reader: _Reader) -> Any:
    """Instantiate ``cls`` from YAML values, checking names and types; a ValueError
    ``"key: why"`` from the constructor is reported at that key."""
    params = inspect.signature(cls).parameters
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in params:
            known = ", ".join(params) or "none"
            raise reader.error(
                (*path, key), f"unknown key{_suggest(str(key), params)}; known keys: {known}"
            )
        kwargs[key] = _coerce(value, hints.get(key, Any), (*path, key), reader)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        key, sep, rest = message.partition(": ")
        if sep and key in params:
            raise reader.error((*path, key), rest) from None
        raise reader.error(path, message) from None


def _mapping(value: Any, path: tuple[Any, ...], reader: _Reader) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise reader.error(path, f"must be a mapping, got {type(value).__name__}")
    return value


def parse_config(text: str, source: str = "<rules>") -> FlagConfig:
    """Validate a YAML rule configuration; raise ConfigError naming what is wrong."""
    reader = _Reader(text, source)
    data = _mapping(reader.data, (), reader)
    for key in data:
        if key not in _TOP_KEYS:
            raise reader.error(
                (key,),
                f"unknown section{_suggest(str(key), _TOP_KEYS)}; use {', '.join(_TOP_KEYS)}",
            )
    plugins = data.get("plugins") or []
    if not isinstance(plugins, list):
        raise reader.error(("plugins",), "must be a list of module names")
    for i, module in enumerate(plugins):
        try:
            importlib.import_module(str(module))
        except ImportError as exc:
            raise reader.error(("plugins", i), f"cannot import {module!r}: {exc}") from None
    names = rule_names()
    defaults = _mapping(data.get("defaults"), ("defaults",), reader)
    for key in defaults:
        if key not in POLICY_KEYS:
            raise reader.error(
                ("defaults", key),
                f"unknown policy key{_suggest(str(key), POLICY_KEYS)}; use {', '.join(POLICY_KEYS)}",
            )
    _build(RulePolicy, defaults, ("defaults",), reader)
    rules_section = _mapping(data.get("rules"), ("rules",), reader)
    for name in rules_section:
        if name not in RULES:
            raise reader.error(
                ("rules", name),
                f"unknown rule{_suggest(str(name), names)}; known rules: {', '.join(names)}",
            )
    configured = []
    for name in names:
        cls = RULES[name]
        values = _mapping(rules_section.get(name), ("rules", name), reader)
        base = dataclasses.asdict(DEFAULT_POLICIES.get(name, RulePolicy()))
        own = {k: v for k, v in values.items() if k in POLICY_KEYS}
        policy = _build(RulePolicy, {**base, **defaults, **own}, ("rules", name), reader)
        params = {k: v for k, v in values.items() if k not in POLICY_KEYS}
        rule = _build(cls, params, ("rules", name), reader)
        configured.append(ConfiguredRule(rule, policy))
    queue = _build(
        QueueSettings, _mapping(data.get("queue"), ("queue",), reader), ("queue",), reader
    )
    notify = []
    raw_notify = data.get("notify") or []
    if not isinstance(raw_notify, list):
        raise reader.error(
            ("notify",), "must be a list of notifiers like {type: webhook, url: ...}"
        )
    from goldenloop.flags.notify import NOTIFIERS

    for i, entry in enumerate(raw_notify):
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            raise reader.error(("notify", i), "each notifier needs a 'type' (e.g. webhook)")
        kind = entry["type"]
        if kind not in NOTIFIERS:
            raise reader.error(
                ("notify", i, "type"),
                f"unknown notifier {kind!r}{_suggest(kind, NOTIFIERS)}; known: {', '.join(NOTIFIERS)}",
            )
        options = {k: v for k, v in entry.items() if k != "type"}
        try:
            NOTIFIERS[kind].check(options)
        except ValueError as exc:
            raise reader.error(("notify", i), str(exc)) from None
        notify.append(NotifierSpec(kind, options))
    return FlagConfig(tuple(configured), queue, tuple(notify), source)


def load_config(path: str | Path) -> FlagConfig:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read rule config {file}: {exc.strerror or exc}") from None
    return parse_config(text, str(file))


def default_config() -> FlagConfig:
    return parse_config("", "defaults")


# -- the saved configuration the server uses -----------------------------------------------

_SAVED = "rules"


def save_config(store: Store, text: str, source: str) -> FlagConfig:
    """Validate and store a configuration; the server's flag loop picks it up."""
    config = parse_config(text, source)
    from goldenloop.flags._sql import utcnow

    store.execute(
        "INSERT INTO flag_config (name, source, body, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET source = excluded.source, body = excluded.body, "
        "updated_at = excluded.updated_at",
        (_SAVED, source, text, utcnow()),
    )
    return config


def saved_config(store: Store) -> FlagConfig:
    """The saved configuration, or the defaults when none was saved."""
    rows = store.fetch("SELECT source, body FROM flag_config WHERE name = ?", (_SAVED,))
    if not rows:
        return default_config()
    source, body = rows[0]
    return parse_config(body, f"saved config (from {source})")
