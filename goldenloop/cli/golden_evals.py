"""`eval run` and `shadow`: run golden sets against targets and shadow candidates."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from goldenloop.cli._common import (
    cli_store,
    console,
    json_option,
    print_json,
    progress_bar,
    store_options,
)
from goldenloop.cli._golden_options import (
    criteria_option_values,
    judge_config,
    judge_options,
    key_values,
)

# -- eval --------------------------------------------------------------------------------


@click.group("eval")
def eval_group() -> None:
    """Run golden sets against a target."""


@eval_group.command("run")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--target", "target_spec", help="Python target as module:function.")
@click.option("--target-url", help="HTTP target: POST {'input': case_input} as JSON.")
@click.option("--split", type=click.Choice(["golden", "holdout"]), help="Only this split.")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              help="Run each case N times; cases whose outcome varies are flaky.")  # fmt: skip
@click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True)
@click.option(
    "--context", multiple=True, help="KEY=VALUE set on every case (e.g. prompt_version=a1c0)."
)
@click.option("--baseline", help="Baseline run: a JSON report file, a stored run id, or 'latest'.")
@click.option("--max-drop", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Pass-rate drop vs the baseline tolerated before failing.")  # fmt: skip
@click.option("--quarantine", type=click.Path(dir_okay=False, path_type=Path),
              help="Quarantine list (default DIR/_quarantine.yaml).")  # fmt: skip
@click.option("--quarantine-flaky", is_flag=True,
              help="Add newly flaky cases to the quarantine list.")  # fmt: skip
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="Write JUnit XML.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the JSON report (usable as a later --baseline).")  # fmt: skip
@click.option("--label", help="Free label stored with the run (git sha, prompt version, …).")
@click.option("--server", help="Send the run to this goldenloop server instead of the store.")
@click.option("--no-save", is_flag=True, help="Do not store the run.")
@click.option("--verbose", "-v", is_flag=True, help="List passing cases too.")
@judge_options
@store_options
def eval_run(
    directory: Path, target_spec: str | None, target_url: str | None, split: str | None,
    repeat: int, concurrency: int, context: tuple[str, ...], baseline: str | None,
    max_drop: float, quarantine: Path | None, quarantine_flaky: bool, junit: Path | None,
    json_path: Path | None, label: str | None, server: str | None, no_save: bool,
    verbose: bool, judge_url: str | None, judge_model: str | None, judge_api_key: str | None,
    db: str | None, database_url: str | None,
) -> None:  # fmt: skip
    """Run the cases of DIRECTORY; exit 1 when a non-quarantined case fails or the pass
    rate regresses vs --baseline."""
    from goldenloop.evals import reports
    from goldenloop.evals.flaky import (
        QUARANTINE_FILE,
        QuarantineError,
        add_to_quarantine,
        load_quarantine,
    )
    from goldenloop.evals.history import BaselineError, load_baseline, save_run
    from goldenloop.evals.remote import RemoteError, fetch_run, send_run
    from goldenloop.evals.runner import RunOptions, run_eval, select_cases
    from goldenloop.evals.target import TargetError, load_target
    from goldenloop.golden.casefiles import CaseFileError, load_case_dir

    try:
        cases = load_case_dir(directory)
        quarantine_path = quarantine or directory / QUARANTINE_FILE
        quarantined = load_quarantine(quarantine_path)
        target = load_target(target_spec, url=target_url)
    except (CaseFileError, QuarantineError, TargetError) as exc:
        raise click.ClickException(str(exc)) from None
    judge = judge_config(judge_url, judge_model, judge_api_key)
    use_store = not server and not no_save
    with ExitStack() as stack:
        store = None
        if use_store or (baseline and not server):
            store = stack.enter_context(cli_store(db, database_url))
        base = None
        if baseline:
            try:
                if server and not Path(baseline).is_file():
                    base = fetch_run(server, baseline)
                else:
                    base = load_baseline(baseline, store)
            except BaselineError as exc:
                raise click.ClickException(str(exc)) from None
        options = RunOptions(
            split=split, repeat=repeat, concurrency=concurrency, judge=judge,
            quarantine=quarantined, baseline=base, max_drop=max_drop, label=label,
            case_dir=str(directory), context=key_values(context, "--context"),
        )  # fmt: skip
        selected = select_cases([c.case for c in cases.cases], split)
        with progress_bar("evaluating", len(selected) * repeat, unit="attempts") as advance:
            run = run_eval(selected, target, options, progress=advance)
        if quarantine_flaky and run.flaky:
            added = add_to_quarantine(
                quarantine_path, run.flaky, "flaky (added by --quarantine-flaky)"
            )
            if added:
                console.print(f"quarantined {added} in {quarantine_path}")
        reports.print_run(run, console, verbose=verbose)
        if junit:
            reports.write_junit(run, junit)
        if json_path:
            reports.write_json(run, json_path)
        if server:
            try:
                console.print(f"sent to {send_run(server, run)}")
            except RemoteError as exc:
                raise click.ClickException(str(exc)) from None
        elif store is not None and not no_save:
            save_run(store, run)
            console.print(f"stored run {run.id} in {store.location}")
    if not run.gate.passed:
        sys.exit(1)


# -- shadow ------------------------------------------------------------------------------


@click.command()
@click.option("--candidate", required=True, help="Candidate target: module:function or URL.")
@click.option("--baseline", required=True, help="Baseline target: module:function or URL.")
@click.option("--sample", default="5%", show_default=True, help="Share of sessions to replay.")
@click.option("--max-sessions", type=click.IntRange(min=1), default=200, show_default=True,
              help="Hard cap on sessions replayed.")  # fmt: skip
@click.option(
    "--since", default="48h", show_default=True, help="Sessions since (48h, 7d, ISO time)."
)
@click.option("--project", help="Only sessions of this project.")
@click.option(
    "--criteria", multiple=True, help="Criteria applied to both sides (file or inline YAML)."
)
@click.option("--candidate-context", multiple=True, help="KEY=VALUE for the candidate's inputs.")
@click.option("--baseline-context", multiple=True, help="KEY=VALUE for the baseline's inputs.")
@click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True)
@judge_options
@store_options
@json_option
def shadow(
    candidate: str, baseline: str, sample: str, max_sessions: int, since: str,
    project: str | None, criteria: tuple[str, ...], candidate_context: tuple[str, ...],
    baseline_context: tuple[str, ...], concurrency: int, judge_url: str | None,
    judge_model: str | None, judge_api_key: str | None, db: str | None,
    database_url: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Replay a capped sample of anonymized production inputs through a candidate and
    the baseline; compare pass rate, cost and latency side by side (nothing is shown
    to users; outcomes are logged in the store)."""
    from goldenloop.evals.shadow import ShadowOptions, parse_fraction, parse_since, run_shadow
    from goldenloop.evals.target import TargetError, load_target

    def target(spec: str) -> Any:
        url = spec if spec.startswith(("http://", "https://")) else None
        return load_target(None if url else spec, url=url)

    try:
        options = ShadowOptions(
            since=parse_since(since), sample=parse_fraction(sample), max_sessions=max_sessions,
            project=project, criteria=criteria_option_values(criteria),
            judge=judge_config(judge_url, judge_model, judge_api_key), concurrency=concurrency,
            candidate_context=key_values(candidate_context, "--candidate-context"),
            baseline_context=key_values(baseline_context, "--baseline-context"),
        )  # fmt: skip
        candidate_target, baseline_target = target(candidate), target(baseline)
    except (ValueError, TargetError) as exc:
        raise click.UsageError(str(exc)) from None
    with cli_store(db, database_url) as store:
        with progress_bar("shadowing", None, unit="calls") as advance:
            run = run_shadow(store, candidate_target, baseline_target, options, progress=advance)
    if as_json:
        print_json(run.to_dict())
        return
    summary = run.summary()
    for side in ("candidate", "baseline"):
        s = summary[side]
        rate = "n/a (no criteria)" if s["pass_rate"] is None else f"{s['pass_rate']:.1%}"
        click.echo(
            f"{side:<9} sessions {s['sessions']:>4}  pass {rate:>8}  errors {s['errors']:>3}  "
            f"cost ${s['cost_usd']:.5f}  p50 {s['latency_p50_ms']} ms  p95 {s['latency_p95_ms']} ms"
        )
    click.echo(
        f"candidate better on {len(summary['candidate_better'])}, worse on "
        f"{len(summary['candidate_worse'])}; {summary['skipped']} session(s) skipped; run {run.id}"
    )
