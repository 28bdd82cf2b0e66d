"""Importing this module registers the built-in rule types and notifiers."""

from __future__ import annotations

from goldenloop.alerts import queue_rules, rate_rules, slo_rules
from goldenloop.alerts.notifiers import pagerduty, slack, webhook

__all__ = ["pagerduty", "queue_rules", "rate_rules", "slack", "slo_rules", "webhook"]
