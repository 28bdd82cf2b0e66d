"""`golden …`, `promote`, `eval run` and `shadow`: the golden set and evals from the shell."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from goldenloop.cli._common import (
    cli_store,
    json_option,
    print_json,
    store_options,
)
from goldenloop.cli._golden_options import criteria_option_values
from goldenloop.cli.golden_evals import eval_group, shadow

# -- golden ------------------------------------------------------------------------------


@click.group()
def golden() -> None:
    """Work with a golden-set directory: validate, sync, probes, coverage, reveal."""


@golden.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@json_option
def validate(directory: Path, as_json: bool) -> None:
    """Check every case file of DIRECTORY; name each bad file and field."""
    from goldenloop.golden.casefiles import scan_case_dir

    cases, problems = scan_case_dir(directory)
    if as_json:
        print_json({"cases": len(cases), "problems": [p.to_dict() for p in problems]})
    else:
        for problem in problems:
            click.echo(str(problem))
        click.echo(f"{len(cases)} valid case(s), {len(problems)} problem(s) in {directory}")
    if problems:
        sys.exit(1)


@golden.command()
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--set-name", help="Name of the set in the index (default: the directory name).")
@store_options
@json_option
def sync(
    directory: Path, set_name: str | None, db: str | None, database_url: str | None, as_json: bool
) -> None:
    """Update the store's case index from DIRECTORY (added, changed, removed cases)."""
    from goldenloop.golden.index import sync_case_dir

    with cli_store(db, database_url) as store:
        result = sync_case_dir(store, directory, set_name=set_name)
    if as_json:
        print_json(result.to_dict())
    else:
        for problem in result.problems:
            click.echo(f"skipped: {problem}")
        click.echo(
            f"set {result.set_name}: {len(result.added)} added, {len(result.updated)} updated, "
            f"{len(result.unchanged)} unchanged, {len(result.removed)} marked removed"
        )
    if result.problems:
        sys.exit(1)


@golden.command("import-probes")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--category", "categories", multiple=True, help="Only these probe categories.")
@click.option(
    "--leak-marker", multiple=True, help="Text of your system prompt that must never appear."
)
@click.option("--forbid-tool", multiple=True, help="A tool the probes must not trigger.")
@click.option("--with-judge", is_flag=True, help="Add an llm-judge criterion to every probe.")
@click.option(
    "--split", type=click.Choice(["golden", "holdout"]), default="golden", show_default=True
)
@json_option
def import_probes(
    directory: Path,
    categories: tuple[str, ...],
    leak_marker: tuple[str, ...],
    forbid_tool: tuple[str, ...],
    with_judge: bool,
    split: str,
    as_json: bool,
) -> None:
    """Add the built-in prompt-injection probes to DIRECTORY as cases."""
    from goldenloop.golden.probes import ProbeOptions
    from goldenloop.golden.probes import import_probes as run_import

    options = ProbeOptions(tuple(leak_marker), tuple(forbid_tool), with_judge, split)  # type: ignore[arg-type]
    try:
        result = run_import(directory, categories=categories or None, options=options)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--category") from None
    if as_json:
        print_json(result.to_dict())
    else:
        click.echo(
            f"{len(result.written)} probe(s) written to {directory}, "
            f"{len(result.skipped)} already present"
        )


@golden.command()
@click.argument("pseudonym")
@store_options
@json_option
def reveal(pseudonym: str, db: str | None, database_url: str | None, as_json: bool) -> None:
    """Show the production id behind a pseudonym (admins: needs direct store access)."""
    from goldenloop.golden.pseudonyms import reveal as lookup

    with cli_store(db, database_url) as store:
        mapping = lookup(store, pseudonym)
    if mapping is None:
        raise click.ClickException(f"no pseudonym {pseudonym!r} in this store's id_map")
    if as_json:
        print_json(mapping.to_dict())
    else:
        click.echo(
            f"{mapping.pseudonym} = {mapping.kind} {mapping.production_id} "
            f"(project {mapping.project}, case {mapping.case_id})"
        )


@golden.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--set-name", help="With the index: only this set.")
@store_options
@json_option
def coverage(
    directory: Path | None, set_name: str | None, db: str | None, database_url: str | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Case counts, production-sourced share, coverage by tag and time-to-eval, from
    DIRECTORY or (without one) from the store's index."""
    from goldenloop.golden.casefiles import CaseFileError
    from goldenloop.golden.coverage import coverage_from_dir, coverage_from_index

    if directory is not None:
        try:
            report = coverage_from_dir(directory)
        except CaseFileError as exc:
            raise click.ClickException(str(exc)) from None
    else:
        with cli_store(db, database_url) as store:
            report = coverage_from_index(store, set_name=set_name)
    if as_json:
        print_json(report.to_dict())
        return
    click.echo(
        f"{report.total} case(s): {report.by_split}; production-sourced "
        f"{report.production_sourced} ({report.production_share:.0%}); sources {report.by_source}"
    )
    if report.time_to_eval_median_hours is not None:
        click.echo(
            f"time-to-eval: median {report.time_to_eval_median_hours} h, p90 "
            f"{report.time_to_eval_p90_hours} h, {report.time_to_eval_over_target} over 72 h"
        )
    for tag in report.by_tag:
        click.echo(f"  {tag.tag:<32} {tag.cases:>5}  {tag.share:6.1%}")


# -- promote -----------------------------------------------------------------------------


@click.command()
@click.argument("session_or_item")
@click.option("--id", "case_id", help="Case id such as EU-12 (default: next PREFIX-N).")
@click.option("--id-prefix", default="case", show_default=True, help="Prefix for generated ids.")
@click.option(
    "--criteria", multiple=True,
    help="Criterion or list of criteria: a YAML/JSON file or inline YAML (repeatable).",
)  # fmt: skip
@click.option("--to", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Golden-set directory to write the case into.")  # fmt: skip
@click.option(
    "--split", type=click.Choice(["golden", "holdout"]), default="golden", show_default=True
)
@click.option("--source", help="e.g. thumbs-down-2026-06-29, incident-INC-7 (default: derived).")
@click.option("--tag", "tags", multiple=True, help="Tag (repeatable): failure mode, feature, …")
@click.option("--description", help="One line saying what the case checks.")
@click.option("--incident", help="Incident id to link, e.g. INC-7.")
@click.option("--turn", help="Trace or message id of the failing turn (default: the last).")
@click.option("--overwrite", is_flag=True, help="Replace an existing file with the same id.")
@store_options
@json_option
def promote(
    session_or_item: str, case_id: str | None, id_prefix: str, criteria: tuple[str, ...],
    out_dir: Path, split: str, source: str | None, tags: tuple[str, ...],
    description: str | None, incident: str | None, turn: str | None, overwrite: bool,
    db: str | None, database_url: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Write an anonymized golden case from a session (or triage item) into --to DIR.

    PII, secrets and production ids are removed first; a case that would still contain
    any is refused. Secrets found are listed so they can be rotated."""
    from goldenloop.golden.anonymize import AnonymizeConfigError
    from goldenloop.golden.casefiles import CaseFileError
    from goldenloop.golden.promote import PromotionError, promote_session

    with cli_store(db, database_url) as store:
        try:
            result = promote_session(
                store, session_or_item, case_id, criteria_option_values(criteria) or None, out_dir,
                split, source, tags=tags, description=description,  # type: ignore[arg-type]
                incident=incident, upto_turn=turn, id_prefix=id_prefix, overwrite=overwrite,
            )  # fmt: skip
        except (PromotionError, CaseFileError, AnonymizeConfigError) as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        print_json(result.to_dict())
        return
    report = result.report
    click.echo(f"wrote {result.path} ({result.case.source}, {result.case.split})")
    if report.pii:
        click.echo("PII replaced: " + ", ".join(f"{k} ×{v}" for k, v in sorted(report.pii.items())))
    for secret in report.secrets:
        click.echo(
            f"SECRET {secret.kind} in {secret.location} (fingerprint {secret.fingerprint}) "
            f"replaced by {secret.placeholder}: rotate it"
        )


COMMANDS = (golden, promote, eval_group, shadow)
__all__ = ["COMMANDS"]
