"""`flag`, `triage …` and `report weekly`: thin shells over goldenloop.flags and
goldenloop.triage."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from goldenloop.cli._common import (
    console,
    json_option,
    load_cli_settings,
    open_cli_store,
    print_json,
    store_options,
)
from goldenloop.flags import (
    ConfigError,
    FlagConfig,
    FlagRun,
    backfill,
    load_config,
    refresh_queue,
    resolve_item,
    run_incremental,
    save_config,
    saved_config,
)
from goldenloop.store import Store
from goldenloop.triage.clustering import ClusterParams, cluster_flags
from goldenloop.triage.embedders import EMBEDDERS, EmbedderError
from goldenloop.triage.labels import FAILURE_MODES, LABELS, LabelError, LabelRequest, apply_label
from goldenloop.triage.queue import ITEM_STATUSES, QueueFilter, item_detail, list_items
from goldenloop.triage.weekly import GOLDEN_TARGET, weekly_report

out = Console()
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, option: str, *, now: datetime | None = None) -> datetime:
    """``24h``/``7d`` (that long ago) or an ISO-8601 time (naive means UTC)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a duration like 24h/7d nor an ISO-8601 time", param_hint=option
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@contextmanager
def _store(db: str | None, database_url: str | None) -> Iterator[Store]:
    store = open_cli_store(load_cli_settings(db=db, database_url=database_url))
    try:
        yield store
    finally:
        store.close()


def _config(store: Store, rules: str | None) -> FlagConfig:
    try:
        return load_config(rules) if rules else saved_config(store)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _print_run(run: FlagRun) -> None:
    table = Table(title=f"flag run ({run.mode}) · {run.spans_seen} spans · {run.seconds:.2f}s")
    for column in ("rule", "new", "queued", "sampled out", "capped", "seconds", "error"):
        table.add_column(column, justify="right" if column not in ("rule", "error") else "left")
    for name, o in run.by_rule.items():
        table.add_row(name, str(o.new), str(o.queued), str(o.sampled_out), str(o.capped),
                      f"{o.seconds:.3f}", o.error or "")  # fmt: skip
    out.print(table)


@click.command()
@store_options
@click.option(
    "--since", help="Backfill from this time (ISO-8601) or this long ago (24h, 7d) to now."
)
@click.option(
    "--backfill",
    nargs=2,
    metavar="FROM TO",
    help="Backfill sessions that started in [FROM, TO) (ISO-8601 times or durations ago).",
)
@click.option(
    "--rules", type=click.Path(dir_okay=False), help="Rule config (YAML); default: the saved one."
)
@click.option(
    "--save-rules", is_flag=True, help="Validate --rules and make it the config `serve` uses."
)
@click.option("--check", is_flag=True, help="Only validate the config and print it; flag nothing.")
@json_option
def flag(
    db: str | None,
    database_url: str | None,
    since: str | None,
    backfill: tuple[str, str] | None,
    rules: str | None,
    save_rules: bool,
    check: bool,
    as_json: bool,
) -> None:
    """Flag sessions worth human review: new data since the last run (default), or a
    time range with --since / --backfill. Every flag states its reason."""
    if save_rules and not rules:
        raise click.UsageError("--save-rules needs --rules FILE")
    if since and backfill:
        raise click.UsageError("use either --since or --backfill, not both")
    with _store(db, database_url) as store:
        config = _config(store, rules)
        if save_rules:
            assert rules is not None
            save_config(store, Path(rules).read_text(encoding="utf-8"), str(rules))
            console.print(f"saved {rules} as the rule config `goldenloop serve` uses")
        if check:
            if as_json:
                print_json(config.to_dict())
            else:
                _print_config(config)
            return
        run = _run(store, config, since, backfill)
    if as_json:
        print_json(run.to_dict())
    else:
        _print_run(run)
    if run.errors:
        raise click.ClickException(f"{len(run.errors)} rule(s) failed: {', '.join(run.errors)}")


def _run(
    store: Store, config: FlagConfig, since: str | None, window: tuple[str, str] | None
) -> FlagRun:
    with console.status("flagging…"):
        if since:
            return backfill(store, parse_when(since, "--since"), datetime.now(UTC), config.rules)
        if window:
            start, end = (parse_when(window[0], "--backfill"), parse_when(window[1], "--backfill"))
            try:
                return backfill(store, start, end, config.rules)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="--backfill") from None
        return run_incremental(store, config.rules)


def _print_config(config: FlagConfig) -> None:
    table = Table(title=f"flag rules ({config.source})")
    for column in ("rule", "on", "severity", "sample", "daily cap", "parameters"):
        table.add_column(column)
    for item in config.to_dict()["rules"]:
        params = ", ".join(f"{k}={v}" for k, v in item["params"].items())
        table.add_row(item["name"], "yes" if item["enabled"] else "no", item["priority"],
                      f"{item['sample_rate']:g}", str(item["daily_cap"]), params)  # fmt: skip
    out.print(table)


# -- triage -----------------------------------------------------------------------------------


@click.group()
def triage() -> None:
    """The triage queue: ranked, deduped items to label (list, show, label, refresh…)."""


def _items_table(items: list[Any], now: datetime) -> Table:
    table = Table(title="triage queue (impact = frequency × tier weight × severity)")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("item", no_wrap=True, min_width=12)
    table.add_column("pri", no_wrap=True)
    table.add_column("impact", justify="right", no_wrap=True)
    table.add_column("freq", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("title", overflow="fold", min_width=20)
    for rank, item in enumerate(items, start=1):
        pri = item.priority + ("!" if item.is_overdue(now) else "")
        status = item.label or item.status
        table.add_row(str(rank), item.id, pri, f"{item.impact:g}", str(item.frequency), status,
                      item.title)  # fmt: skip
    table.caption = (
        "! = P0 past its time-to-eval target" if any(i.is_overdue(now) for i in items) else None
    )
    return table


@triage.command("list")
@store_options
@click.option("--status", "statuses", multiple=True, type=click.Choice(ITEM_STATUSES),
              help="Statuses to show (repeatable; default open).")  # fmt: skip
@click.option("--all", "all_statuses", is_flag=True, help="Every status.")
@click.option("--priority", type=click.Choice(["P0", "P1", "P2", "P3"]))
@click.option("--project")
@click.option("--overdue", is_flag=True, help="Only P0 items past their time-to-eval target.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=25, show_default=True)
@json_option
def triage_list(db: str | None, database_url: str | None, statuses: tuple[str, ...],
                all_statuses: bool, priority: str | None, project: str | None, overdue: bool,
                limit: int, as_json: bool) -> None:  # fmt: skip
    """List queue items, highest impact first."""
    chosen = ITEM_STATUSES if all_statuses else (statuses or ("open",))
    now = datetime.now(UTC).replace(tzinfo=None)
    flt = QueueFilter(
        statuses=tuple(chosen), priority=priority, project=project, overdue_only=overdue
    )
    with _store(db, database_url) as store:
        items = list_items(store, flt, limit=limit, now=now)
    if as_json:
        print_json({"items": [i.to_dict(now) for i in items]})
        return
    if not items:
        console.print("no items; run `goldenloop flag` then `goldenloop triage refresh`")
        return
    out.print(_items_table(items, now))


@triage.command("show")
@store_options
@click.argument("item_id")
@json_option
def triage_show(db: str | None, database_url: str | None, item_id: str, as_json: bool) -> None:
    """One item: its flags, sessions, labels and the trace replay of its session."""
    with _store(db, database_url) as store:
        detail = item_detail(store, item_id)
    if detail is None:
        raise click.ClickException(
            f"no triage item {item_id!r}; see `goldenloop triage list --all`"
        )
    if as_json:
        print_json(detail.to_dict())
        return
    item = detail.item
    out.print(f"[bold]{item.title}[/]  ({item.id})")
    out.print(f"{item.priority} · impact {item.impact:g} = {item.frequency} × {item.tier_weight:g} "
              f"({item.revenue_tier or 'no tier'}) × {item.severity} · {item.status}"
              f"{' · label ' + item.label if item.label else ''}")  # fmt: skip
    if item.question:
        out.print(f"question: {item.question}")
    for f in detail.flags:
        out.print(f"  flag {f.rule}: {f.reason}")
    if detail.replay is not None:
        table = Table(title=f"trace replay: session {item.session_id}")
        for column in ("turn", "span", "kind", "status", "tool / model", "input → output"):
            table.add_column(column)
        for span in detail.replay.spans:
            io = " → ".join(x[:60] for x in (span.input_text, span.output_text) if x)
            who = span.tool_name or span.model or ""
            table.add_row(span.trace_id[:8], span.name, span.kind,
                          span.status + (f" ({span.error_type})" if span.error_type else ""),
                          who + (f" {span.tool_args[:40]}" if span.tool_args else ""), io)  # fmt: skip
        out.print(table)


@triage.command("label")
@store_options
@click.argument("item_id")
@click.argument("label", type=click.Choice(LABELS))
@click.option("--owner", help="Who follows up.")
@click.option("--notes")
@click.option(
    "--tag", "tags", multiple=True, help=f"Failure mode (repeatable): {', '.join(FAILURE_MODES)}."
)
@click.option("--criteria", help="Pass/fail criteria for the golden case.")
@json_option
def triage_label(db: str | None, database_url: str | None, item_id: str, label: str,
                 owner: str | None, notes: str | None, tags: tuple[str, ...],
                 criteria: str | None, as_json: bool) -> None:  # fmt: skip
    """Label an item add-to-eval, known-issue, expected-behavior or needs-product-decision."""
    try:
        request = LabelRequest.build(
            label, owner=owner, notes=notes, failure_modes=tags, criteria=criteria
        )
        with _store(db, database_url) as store:
            item = apply_label(store, item_id, request)
    except LabelError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        print_json(item.to_dict())
    else:
        console.print(
            f"{item.id} labelled {item.label}" + (f" (owner {item.owner})" if item.owner else "")
        )


@triage.command("refresh")
@store_options
@click.option(
    "--rules", type=click.Path(dir_okay=False), help="Config with queue settings; default: saved."
)
@json_option
def triage_refresh(
    db: str | None, database_url: str | None, rules: str | None, as_json: bool
) -> None:
    """Run the nightly queue job now: dedupe new flags into items, rank, open the top
    items, resolve items whose golden case passes in holdout."""
    with _store(db, database_url) as store:
        config = _config(store, rules)
        result = refresh_queue(store, config.queue, notify=config.notify)
    if as_json:
        print_json(result.to_dict())
    else:
        console.print(
            f"folded {result.flags_folded} flags: {result.items_created} new items, "
            f"{result.items_updated} updated, {result.items_opened} opened, "
            f"{result.items_resolved} resolved"
        )


@triage.command("resolve")
@store_options
@click.argument("item_id")
@click.option("--note", default="resolved by hand", show_default=True)
@json_option
def triage_resolve(
    db: str | None, database_url: str | None, item_id: str, note: str, as_json: bool
) -> None:
    """Mark an item resolved and run the notification hooks of the saved config."""
    with _store(db, database_url) as store:
        config = _config(store, None)
        try:
            item = resolve_item(store, item_id, note, notify=config.notify)
        except LookupError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        print_json(item.to_dict())
    else:
        console.print(f"{item.id} resolved: {note}")


@triage.command("clusters")
@store_options
@click.option(
    "--k", type=click.IntRange(1, 200), help="Number of clusters (default: chosen by silhouette)."
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--weeks", type=click.IntRange(1, 52), default=2, show_default=True)
@click.option("--embedder", type=click.Choice(sorted(EMBEDDERS)), default="lsa", show_default=True)
@json_option
def triage_clusters(db: str | None, database_url: str | None, k: int | None, seed: int,
                    weeks: int, embedder: str, as_json: bool) -> None:  # fmt: skip
    """Cluster recently flagged sessions into recurring failure themes."""
    params = ClusterParams(k=k, seed=seed, weeks=weeks, embedder=embedder)
    with _store(db, database_url) as store, console.status("clustering…"):
        try:
            run = cluster_flags(store, params)
        except EmbedderError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        print_json(run.to_dict())
        return
    table = Table(title=f"failure themes · {run.sessions} flagged sessions")
    for column in ("#", "theme", "size", "share", "this wk", "last wk", "trend", "exemplars"):
        table.add_column(column)
    for c in run.clusters:
        table.add_row(str(c.rank), c.label, str(c.size), f"{c.share:.0%}", str(c.this_week),
                      str(c.last_week), c.trend, ", ".join(c.exemplars))  # fmt: skip
    out.print(table)


# -- report weekly ----------------------------------------------------------------------------


@click.group()
def report() -> None:
    """Reports for reviews and meetings."""


@report.command("weekly")
@store_options
@click.option("--end", help="End of the week (ISO-8601; default now).")
@json_option
def report_weekly(db: str | None, database_url: str | None, end: str | None, as_json: bool) -> None:
    """The weekly triage agenda: top flagged items, clusters, incidents lacking evals,
    pass-rate and cost trends, golden cases landed vs the 5–10 target."""
    now = parse_when(end, "--end") if end else None
    with _store(db, database_url) as store, console.status("building the weekly report…"):
        rep = weekly_report(store, now=now)
    if as_json:
        print_json(rep.to_dict())
        return
    data = rep.to_dict()
    out.print(f"[bold]Weekly review[/] {data['week_from'][:10]} → {data['week_to'][:10]}")
    out.print(_items_table(rep.top_items, rep.week_to))
    clusters = Table(title="biggest failure themes")
    for column in ("#", "theme", "size", "share", "trend"):
        clusters.add_column(column)
    for c in rep.clusters:
        clusters.add_row(str(c.rank), c.label, str(c.size), f"{c.share:.0%}", c.trend)
    out.print(clusters)
    out.print(f"[bold]Incidents lacking eval follow-up:[/] {rep.incidents.note}")
    for row in rep.incidents.rows:
        out.print(f"  {row['id']}: {row['title']}")
    trends = data["trends"]
    for key in ("sessions", "cost_usd", "cost_per_session", "cost_per_successful_task",
                "judge_pass_rate", "outcome_success_rate", "thumbs_down_per_1k_sessions",
                "eval_pass_rate"):  # fmt: skip
        out.print(f"  {key}: {trends['last_week'][key]} → {trends['this_week'][key]}")
    lo, hi = GOLDEN_TARGET
    out.print(
        f"[bold]Golden cases landed this week:[/] {rep.golden_landed} (target {lo}–{hi}) — {rep.golden.note}"
    )
    tte = rep.time_to_eval
    out.print(f"[bold]Time-to-eval:[/] median {tte.median_hours}h over {tte.merged} merged; "
              f"{len(tte.p0_overdue)} P0 overdue (target {tte.target_hours}h)")  # fmt: skip


COMMANDS = (flag, triage, report)
__all__ = ["COMMANDS", "parse_when"]
