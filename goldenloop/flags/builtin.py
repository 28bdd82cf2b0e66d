"""Import the built-in rules so they register themselves (same path as a user's rules)."""

from __future__ import annotations

from goldenloop.flags import cohort_rules, span_rules, user_rules

__all__ = ["cohort_rules", "span_rules", "user_rules"]
