"""The ``goldenloop`` command: a thin shell over the library.

Each command group lives in its own module and is registered here.
"""

from __future__ import annotations

import click

from goldenloop.cli import alerts, golden, metrics, serve, triage


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="goldenloop")
def main() -> None:
    """goldenloop: trace production, flag anomalies, triage, and turn failures into
    golden eval cases. Every command reads settings from GOLDENLOOP_* environment
    variables or a .env file; flags override them."""


for _command in (
    serve.serve,
    serve.demo,
    serve.simulate,
    *golden.COMMANDS,
    metrics.metrics,
    metrics.slo,
    metrics.regressions,
    *triage.COMMANDS,
    alerts.alerts,
):
    main.add_command(_command)

__all__ = ["main"]
