"""The triage queue (ranked, labelled items with trace replay), failure clustering and
the weekly review agenda."""
