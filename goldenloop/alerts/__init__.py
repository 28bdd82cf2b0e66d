"""Alerts that wake the right person: burn-rate and symptom rules, grouping, silences
and notifiers.

Importing the package registers the built-in rule types (``slo_burn``,
``success_below_slo``, ``spend_velocity``, ``breaker_spike``, ``injection_rise``,
``tool_error_wow``, ``review_queue``, ``p0_overdue``) and notifiers (``webhook``,
``slack``, ``pagerduty``). See docs/alerts.md.
"""

from __future__ import annotations

from goldenloop.alerts import builtin
from goldenloop.alerts.backtest import BacktestResult, Episode, backtest
from goldenloop.alerts.config import (
    AlertConfigError,
    AlertsConfig,
    RouteConfig,
    RuleConflict,
    load_alerts_file,
    parse_alerts_config,
    save_config,
    saved_config,
)
from goldenloop.alerts.model import Alert, Exemplar, Sample
from goldenloop.alerts.notifiers import NOTIFIERS, Notifier, register_notifier
from goldenloop.alerts.rules import (
    RULE_TYPES,
    AlertRule,
    RuleError,
    RuleType,
    parse_rule,
    register_rule_type,
)
from goldenloop.alerts.scheduler import (
    AlertEngine,
    AlertScheduler,
    start_alert_scheduler,
    stop_alert_scheduler,
)
from goldenloop.alerts.slo_rules import budget_consumed, burn_rate_for, burn_rates

__all__ = [
    "NOTIFIERS",
    "RULE_TYPES",
    "Alert",
    "AlertConfigError",
    "AlertEngine",
    "AlertRule",
    "AlertScheduler",
    "AlertsConfig",
    "BacktestResult",
    "Episode",
    "Exemplar",
    "Notifier",
    "RouteConfig",
    "RuleConflict",
    "RuleError",
    "RuleType",
    "Sample",
    "backtest",
    "budget_consumed",
    "builtin",
    "burn_rate_for",
    "burn_rates",
    "load_alerts_file",
    "parse_alerts_config",
    "parse_rule",
    "register_notifier",
    "register_rule_type",
    "save_config",
    "saved_config",
    "start_alert_scheduler",
    "stop_alert_scheduler",
]
