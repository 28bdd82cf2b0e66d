"""Reports of an eval run: JUnit XML and JSON for CI, a rich summary for people.

JUnit: one ``<testcase>`` per case (classname ``goldenloop.<split>``); a failing case
is a ``<failure>`` with every failed grader's detail, a target or grader error an
``<error>``, and a quarantined case that did not pass is ``<skipped>`` with its
quarantine reason, so CI dashboards show it without failing the build. Flaky cases
carry a ``flaky`` property.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from rich.console import Console
from rich.table import Table

from goldenloop.evals.results import EvalRun


def junit_xml(run: EvalRun) -> str:
    suite = ET.Element(
        "testsuite",
        {
            "name": f"goldenloop {run.case_dir or run.target}",
            "tests": str(run.total),
            "failures": str(
                sum(1 for r in run.results if r.status == "fail" and not r.quarantined)
            ),
            "errors": str(sum(1 for r in run.results if r.status == "error" and not r.quarantined)),
            "skipped": str(sum(1 for r in run.results if r.quarantined and not r.passed)),
            "time": f"{(run.finished_at - run.started_at).total_seconds():.3f}",
            "timestamp": run.started_at.isoformat(),
        },
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("run_id", run.id),
        ("target", run.target),
        ("pass_rate", "" if run.pass_rate is None else f"{run.pass_rate:.4f}"),
        ("cost_usd", f"{run.cost_usd:.6f}"),
        ("gate", "passed" if run.gate.passed else "failed: " + "; ".join(run.gate.reasons)),
    ):
        ET.SubElement(props, "property", {"name": name, "value": value})
    for r in run.results:
        seconds = (r.latency_ms or 0.0) / 1000
        case = ET.SubElement(
            suite,
            "testcase",
            {"classname": f"goldenloop.{r.split}", "name": r.case_id, "time": f"{seconds:.3f}"},
        )
        if r.flaky or r.tags:
            case_props = ET.SubElement(case, "properties")
            if r.flaky:
                ET.SubElement(
                    case_props, "property", {"name": "flaky", "value": f"{r.passes}/{r.attempts}"}
                )
            if r.tags:
                ET.SubElement(case_props, "property", {"name": "tags", "value": ",".join(r.tags)})
        if r.passed:
            continue
        message = r.failure_message()
        if r.quarantined:
            ET.SubElement(
                case, "skipped", {"message": f"quarantined: {r.quarantine_reason}"}
            ).text = message
        elif r.status == "error":
            ET.SubElement(case, "error", {"message": message.split("\n")[0][:200]}).text = message
        else:
            ET.SubElement(case, "failure", {"message": message.split("\n")[0][:200]}).text = message
    ET.indent(suite)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"
    )


def write_junit(run: EvalRun, path: Path) -> None:
    Path(path).write_text(junit_xml(run), encoding="utf-8")


def write_json(run: EvalRun, path: Path) -> None:
    Path(path).write_text(json.dumps(run.to_dict(), indent=2), encoding="utf-8")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def print_run(run: EvalRun, console: Console, *, verbose: bool = False) -> None:
    """Cases (failing ones, or all with ``verbose``), tags, baseline, eval debt, verdict."""
    shown = [r for r in run.results if verbose or not r.passed or r.flaky]
    if shown:
        table = Table(title="cases", show_lines=False)
        for column in ("case", "split", "status", "latency ms", "cost $", "details"):
            table.add_column(column)
        for r in shown:
            status = r.status + (" (flaky)" if r.flaky else "") + (" [q]" if r.quarantined else "")
            detail = "" if r.passed else r.failure_message().replace("\n", "; ")
            table.add_row(
                r.case_id, r.split, status,
                f"{r.latency_ms:.0f}" if r.latency_ms is not None else "",
                f"{r.cost_usd + r.grader_cost_usd:.5f}", detail[:160],
            )  # fmt: skip
        console.print(table)
    tags = Table(title="pass rate by tag")
    for column in ("tag", "cases", "passed", "pass rate"):
        tags.add_column(column)
    for tag, stats in run.by_tag().items():
        tags.add_row(tag, str(stats.cases), str(stats.passed), _pct(stats.pass_rate))
    console.print(tags)
    if run.comparison is not None:
        c = run.comparison
        console.print(
            f"baseline {c.baseline_id}: pass rate {_pct(c.baseline_pass_rate)} → "
            f"{_pct(c.pass_rate)} on {c.common_cases} common cases; "
            f"regressions {c.regressions or 'none'}; fixed {c.fixed or 'none'}"
        )
    if run.debt:
        debt = Table(title="eval debt")
        for column in ("case", "kind", "age (days)", "detail"):
            debt.add_column(column)
        for item in run.debt:
            age = item.get("age_days")
            debt.add_row(item["case_id"], item["kind"], "" if age is None else str(age),
                         item["detail"])  # fmt: skip
        console.print(debt)
    p50, p95 = run.latency_quantile(0.5), run.latency_quantile(0.95)
    console.print(
        f"run {run.id}: {run.passed}/{run.total} passed ({_pct(run.pass_rate)} of gated cases), "
        f"{run.failed} failed, {run.errored} errors, {len(run.flaky)} flaky, "
        f"{len(run.quarantined)} quarantined · cost ${run.cost_usd:.5f} · tokens "
        f"{run.input_tokens}/{run.output_tokens} · latency p50 "
        f"{'n/a' if p50 is None else f'{p50:.0f} ms'} p95 {'n/a' if p95 is None else f'{p95:.0f} ms'}"
    )
    if run.gate.passed:
        console.print("[green]gate passed[/]")
    else:
        for reason in run.gate.reasons:
            console.print(f"[red]gate failed:[/] {reason}")
