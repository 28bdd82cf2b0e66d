"""Evals: graders, the runner, flaky detection and quarantine, reports, the pytest
plugin and shadow runs (see docs/evals.md and docs/shadow.md)."""
