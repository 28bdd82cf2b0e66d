"""The alerts configuration: rules, notifiers (routes) and grouping, from a YAML/JSON
file, plus rules defined through the API.

::

    evaluation_interval: 1m
    route:                         # grouping defaults for every notifier
      group_by: [alertname, severity]
      group_wait: 30s              # wait this long to batch a new group's first alerts
      group_interval: 5m           # then send changes (new alerts, resolved) at most this often
      repeat_interval: 4h          # and repeat an unchanged firing group after this long
    rules:
      - name: refund-burn
        type: slo_burn
        slo: refund-answers-ok
    notifiers:
      - name: oncall
        type: pagerduty
        match: {severity: page}    # label matchers; omitted: every alert
        routing_key: ${PAGERDUTY_ROUTING_KEY}
      - name: team
        type: slack
        url: ${SLACK_WEBHOOK_URL}

``${NAME}`` in a notifier option is read from the environment when the file is loaded.
The server uses the configuration saved in the store (``goldenloop alerts apply FILE``
or ``PUT /api/v1/alerts/config``); the CLI can read a file directly
(``--alerts-file``). Rules created through the API live in ``alert_rules``; a name is
unique across the file and the API.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from goldenloop.alerts.matchers import Matcher, MatcherError, parse_matchers
from goldenloop.alerts.notifiers import NOTIFIERS, mask_options
from goldenloop.alerts.rules import AlertRule, RuleError, parse_rule, parse_rules
from goldenloop.metrics.windows import WindowError, format_duration, parse_duration
from goldenloop.store.base import Store

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TOP = {"evaluation_interval", "route", "rules", "notifiers"}
_GROUPING = {"group_by", "group_wait", "group_interval", "repeat_interval"}
_ROUTE_KEYS = _GROUPING | {"name", "type", "match", "matchers", "send_resolved"}
_SAVED = "alerts"


class AlertConfigError(ValueError):
    """The alerts configuration cannot be used; the message names the place and key."""


class RuleConflict(AlertConfigError):
    """An API request tried to change a rule that belongs to the config file."""


@dataclass(frozen=True)
class Grouping:
    group_by: tuple[str, ...] = ("alertname", "severity")
    group_wait: timedelta = timedelta(seconds=30)
    group_interval: timedelta = timedelta(minutes=5)
    repeat_interval: timedelta = timedelta(hours=4)

    def to_dict(self) -> dict[str, Any]:
        return {
            "group_by": list(self.group_by),
            "group_wait": format_duration(self.group_wait),
            "group_interval": format_duration(self.group_interval),
            "repeat_interval": format_duration(self.repeat_interval),
        }


@dataclass(frozen=True)
class RouteConfig:
    """One notifier: which alerts it gets, how they are grouped, and its options."""

    name: str
    type: str
    matchers: tuple[Matcher, ...] = ()
    grouping: Grouping = field(default_factory=Grouping)
    send_resolved: bool = True
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "matchers": [str(m) for m in self.matchers],
            **self.grouping.to_dict(),
            "send_resolved": self.send_resolved,
            "options": mask_options(self.options),
        }


@dataclass(frozen=True)
class AlertsConfig:
    rules: tuple[AlertRule, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    grouping: Grouping = field(default_factory=Grouping)
    evaluation_interval: timedelta = timedelta(minutes=1)
    source: str = "none"

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "evaluation_interval": format_duration(self.evaluation_interval),
            "route": self.grouping.to_dict(),
            "rules": [r.to_dict() for r in self.rules],
            "notifiers": [r.to_dict() for r in self.routes],
        }


def _duration(value: Any, where: str, *, zero: bool = False) -> timedelta:
    if zero and str(value).strip().lower() in ("0", "0s"):
        return timedelta(0)
    try:
        return parse_duration(str(value), name=where)
    except WindowError as exc:
        raise AlertConfigError(str(exc)) from None


def _grouping(data: Any, where: str, base: Grouping) -> Grouping:
    if data is None:
        return base
    if not isinstance(data, Mapping):
        raise AlertConfigError(f"{where}: expected a mapping")
    group_by = data.get("group_by", list(base.group_by))
    if isinstance(group_by, str):
        group_by = [group_by]
    if not isinstance(group_by, list) or not all(isinstance(g, str) for g in group_by):
        raise AlertConfigError(f"{where}.group_by: expected a list of label names (or ['...'])")
    return Grouping(
        tuple(group_by),
        _duration(data["group_wait"], f"{where}.group_wait", zero=True) if "group_wait" in data else base.group_wait,
        _duration(data["group_interval"], f"{where}.group_interval") if "group_interval" in data else base.group_interval,
        _duration(data["repeat_interval"], f"{where}.repeat_interval") if "repeat_interval" in data else base.repeat_interval,
    )  # fmt: skip


def _expand(value: Any, where: str) -> Any:
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise AlertConfigError(f"{where}: environment variable {name} is not set")
            return os.environ[name]

        return _ENV.sub(lookup, value)
    if isinstance(value, list):
        return [_expand(v, where) for v in value]
    if isinstance(value, Mapping):
        return {k: _expand(v, f"{where}.{k}") for k, v in value.items()}
    return value


def parse_route(data: Any, where: str, base: Grouping) -> RouteConfig:
    if not isinstance(data, Mapping):
        raise AlertConfigError(f"{where}: expected a mapping with name, type and options")
    name, kind = data.get("name"), data.get("type")
    if not isinstance(name, str) or not name.strip():
        raise AlertConfigError(f"{where}.name: required")
    where = f"notifier {name!r}"
    notifier = NOTIFIERS.get(str(kind))
    if notifier is None:
        raise AlertConfigError(
            f"{where}.type: {kind!r} is not a notifier; use one of {', '.join(sorted(NOTIFIERS))}"
        )
    try:
        matchers = parse_matchers(data.get("matchers", data.get("match")), where=f"{where}.match")
    except MatcherError as exc:
        raise AlertConfigError(str(exc)) from None
    send_resolved = data.get("send_resolved", True)
    if not isinstance(send_resolved, bool):
        raise AlertConfigError(f"{where}.send_resolved: expected true or false")
    options = {k: _expand(v, f"{where}.{k}") for k, v in data.items() if k not in _ROUTE_KEYS}
    try:
        notifier.check(options)
    except ValueError as exc:
        raise AlertConfigError(f"{where}: {exc}") from None
    grouping = _grouping({k: v for k, v in data.items() if k in _GROUPING} or None, where, base)
    return RouteConfig(name.strip(), str(kind), matchers, grouping, send_resolved, options)


def parse_alerts_config(data: Any, *, source: str = "file") -> AlertsConfig:
    if data is None:
        return AlertsConfig(source=source)
    if not isinstance(data, Mapping):
        raise AlertConfigError(
            "expected a mapping with rules, notifiers, route, evaluation_interval"
        )
    unknown = sorted(set(map(str, data)) - _TOP)
    if unknown:
        raise AlertConfigError(
            f"unknown section(s) {', '.join(unknown)}; use {', '.join(sorted(_TOP))}"
        )
    interval = _duration(data.get("evaluation_interval", "1m"), "evaluation_interval")
    if interval < timedelta(minutes=1) or interval % timedelta(minutes=1):
        raise AlertConfigError("evaluation_interval: use whole minutes (1m or more)")
    grouping = _grouping(data.get("route"), "route", Grouping())
    unknown_route = sorted(set(data.get("route") or {}) - _GROUPING)
    if unknown_route:
        raise AlertConfigError(f"route: unknown key(s) {', '.join(unknown_route)}")
    try:
        rules = tuple(parse_rules(data.get("rules"), origin="file"))
    except RuleError as exc:
        raise AlertConfigError(str(exc)) from None
    raw_routes = data.get("notifiers") or []
    if not isinstance(raw_routes, list):
        raise AlertConfigError("notifiers: expected a list")
    routes = tuple(parse_route(r, f"notifiers[{i}]", grouping) for i, r in enumerate(raw_routes))
    names = [r.name for r in routes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise AlertConfigError(f"notifiers: duplicate name(s) {', '.join(duplicates)}")
    return AlertsConfig(rules, routes, grouping, interval, source)


def parse_config_text(text: str, *, source: str, json_format: bool = False) -> AlertsConfig:
    try:
        data = json.loads(text) if json_format else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise AlertConfigError(
            f"{source}: not valid {'JSON' if json_format else 'YAML'}: {exc}"
        ) from None
    try:
        return parse_alerts_config(data, source=source)
    except AlertConfigError as exc:
        raise AlertConfigError(f"{source}: {exc}") from None


def load_alerts_file(path: str | Path) -> AlertsConfig:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise AlertConfigError(f"{file}: cannot read the alerts config: {exc.strerror}") from None
    return parse_config_text(text, source=str(file), json_format=file.suffix == ".json")


# -- the saved configuration (what the server uses) ------------------------------------------
def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def save_config(store: Store, text: str, *, source: str) -> AlertsConfig:
    """Validate ``text`` and save it as the configuration the server evaluates."""
    config = parse_config_text(text, source=source, json_format=text.lstrip().startswith("{"))
    store.execute(
        "INSERT INTO alert_config (name, source, body, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET source = excluded.source, body = excluded.body, "
        "updated_at = excluded.updated_at",
        [_SAVED, source, text, _now()],
    )
    return config


def saved_config(store: Store) -> AlertsConfig:
    """The saved configuration (empty when none was applied)."""
    rows = store.fetch("SELECT source, body FROM alert_config WHERE name = ?", [_SAVED])
    if not rows:
        return AlertsConfig(source="none")
    source, body = rows[0]
    config = parse_config_text(
        body, source=f"saved ({source})", json_format=body.lstrip().startswith("{")
    )
    return config


# -- rules defined through the API ------------------------------------------------------------
@dataclass
class RuleSet:
    """File rules plus API rules (names are unique across both), and API rules that no
    longer parse (a rule type was removed) with the reason."""

    rules: list[AlertRule]
    invalid: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> AlertRule | None:
        return next((r for r in self.rules if r.name == name), None)


def api_rules(store: Store) -> tuple[list[AlertRule], dict[str, str]]:
    rules, invalid = [], {}
    for name, definition in store.fetch("SELECT name, definition FROM alert_rules ORDER BY name"):
        try:
            rules.append(parse_rule(json.loads(definition), origin="api"))
        except (RuleError, ValueError) as exc:
            invalid[str(name)] = str(exc)
    return rules, invalid


def rule_set(store: Store, config: AlertsConfig) -> RuleSet:
    names = {r.name for r in config.rules}
    stored, invalid = api_rules(store)
    return RuleSet([*config.rules, *(r for r in stored if r.name not in names)], invalid)


def save_rule(store: Store, data: Any, config: AlertsConfig) -> tuple[AlertRule, bool]:
    """Validate and store an API rule (replacing one of the same name); True when new."""
    try:
        rule = parse_rule(data, origin="api")
    except RuleError as exc:
        raise AlertConfigError(str(exc)) from None
    if any(r.name == rule.name for r in config.rules):
        raise RuleConflict(
            f"rule {rule.name!r} is defined in the config file ({config.source}); edit it there"
        )
    now = _now()
    existed = bool(store.fetch("SELECT 1 FROM alert_rules WHERE name = ?", [rule.name]))
    definition = json.dumps(rule.definition, default=str)
    if existed:
        store.execute("UPDATE alert_rules SET definition = ?, updated_at = ? WHERE name = ?",
                      [definition, now, rule.name])  # fmt: skip
    else:
        store.execute("INSERT INTO alert_rules (name, definition, created_at, updated_at) "
                      "VALUES (?, ?, ?, ?)", [rule.name, definition, now, now])  # fmt: skip
    return rule, not existed


def delete_rule(store: Store, name: str, config: AlertsConfig) -> bool:
    if any(r.name == name for r in config.rules):
        raise RuleConflict(
            f"rule {name!r} is defined in the config file ({config.source}); remove it there"
        )
    existed = bool(store.fetch("SELECT 1 FROM alert_rules WHERE name = ?", [name]))
    if existed:
        store.execute("DELETE FROM alert_rules WHERE name = ?", [name])
    return existed
