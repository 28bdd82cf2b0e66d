"""`alerts list|check|backtest|silence|apply|validate`: thin shells over goldenloop.alerts.

Commands read the store named by --db/--database-url; with --server they ask a running
goldenloop server instead (a server holds its DuckDB file, so other processes cannot
open it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from goldenloop.alerts.backtest import backtest as run_backtest
from goldenloop.alerts.config import AlertConfigError, load_alerts_file, save_config
from goldenloop.alerts.model import STATUSES
from goldenloop.alerts.runtime import AlertsRuntime, load_runtime
from goldenloop.alerts.scheduler import AlertEngine
from goldenloop.alerts.silences import SilenceError, create_silence, expire_silence, list_silences
from goldenloop.alerts.states import load_alerts
from goldenloop.cli._common import (
    console,
    json_option,
    load_cli_settings,
    open_cli_store,
    print_json,
    store_options,
)
from goldenloop.cli.metrics import slo_file_option
from goldenloop.metrics.config import MetricsConfigError
from goldenloop.metrics.windows import WindowError, parse_duration, parse_time
from goldenloop.store import Store

F = TypeVar("F", bound=Callable[..., Any])
out = Console()


def alerts_file_option(fn: F) -> F:
    return click.option(
        "--alerts-file", envvar="GOLDENLOOP_ALERTS_FILE", type=click.Path(dir_okay=False),
        help="Alerts config (YAML/JSON) to use instead of the one saved in the store.",
    )(fn)  # fmt: skip


def server_option(fn: F) -> F:
    return click.option(
        "--server", help="Ask this running goldenloop server (URL) instead of opening the store."
    )(fn)


@contextmanager
def _store(db: str | None, database_url: str | None) -> Iterator[Store]:
    store = open_cli_store(load_cli_settings(db=db, database_url=database_url))
    try:
        yield store
    finally:
        store.close()


def _runtime(store: Store, alerts_file: str | None, slo_file: str | None) -> AlertsRuntime:
    try:
        return load_runtime(store, alerts_file=alerts_file, slo_file=slo_file)
    except (AlertConfigError, MetricsConfigError) as exc:
        raise click.ClickException(str(exc)) from None


def _when(text: str, option: str, now: datetime) -> datetime:
    try:
        return now - parse_duration(text, name=option)
    except WindowError:
        pass
    try:
        return parse_time(text, name=option)
    except WindowError:
        raise click.BadParameter(f"{text!r} is neither a duration like 7d nor an ISO-8601 time",
                                 param_hint=option) from None  # fmt: skip


def _api(server: str, method: str, path: str, **kwargs: Any) -> Any:
    import httpx  # only --server needs it; `goldenloop serve` imports this module too

    try:
        response = httpx.request(method, server.rstrip("/") + path, timeout=300, **kwargs)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {server}: {exc}") from None
    if response.status_code >= 400:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        raise click.ClickException(f"{server} answered {response.status_code}: {message}")
    return response.json() if response.content else None


@click.group()
def alerts() -> None:
    """Alert rules, their state, silences and notifications (see docs/alerts.md)."""


# -- list ---------------------------------------------------------------------------------------
@alerts.command("list")
@store_options
@alerts_file_option
@slo_file_option
@server_option
@click.option("--state", type=click.Choice(STATUSES), help="Only alerts in this state.")
@json_option
def list_command(db: str | None, database_url: str | None, alerts_file: str | None, slo_file: str | None,
                 server: str | None, state: str | None, as_json: bool) -> None:  # fmt: skip
    """Rules and alerts (firing, pending, resolved in the last 24 h)."""
    if server:
        data = _api(server, "GET", "/api/v1/alerts", params={"state": state} if state else None)
        rules = data["rules"]
        alert_rows = [a for status in STATUSES for a in data["alerts"].get(status, [])]
    else:
        now = datetime.now(UTC)
        base_url = load_cli_settings(db=db, database_url=database_url).base_url
        with _store(db, database_url) as store:
            runtime = _runtime(store, alerts_file, slo_file)
            rules = [r.to_dict() for r in runtime.rules.rules]
            statuses = (state,) if state else STATUSES
            recent = load_alerts(store, statuses, resolved_since=now - timedelta(hours=24))
            alert_rows = [a.to_dict(base_url) for a in recent]
    if as_json:
        print_json({"rules": rules, "alerts": alert_rows})
        return
    table = Table("rule", "type", "severity", "for", "origin", title="Rules")
    for r in rules:
        table.add_row(r["name"], r["type"], r["severity"], r["for"], r["origin"])
    out.print(table)
    table = Table("status", "rule", "severity", "labels", "since", "summary", title="Alerts")
    for a in alert_rows:
        labels = ", ".join(
            f"{k}={v}" for k, v in a["labels"].items() if k not in ("alertname", "severity")
        )
        since = a["resolved_at"] if a["status"] == "resolved" else (a["fired_at"] or a["active_at"])
        table.add_row(a["status"], a["rule"], a["severity"], labels, since, a["summary"])
    out.print(table)


# -- check --------------------------------------------------------------------------------------
@alerts.command()
@store_options
@alerts_file_option
@slo_file_option
@click.option("--at", "at_text", help="Evaluate at this ISO-8601 time instead of now.")
@click.option("--dry-run", is_flag=True, help="Evaluate and print; store nothing, notify nobody.")
@click.option(
    "--force", is_flag=True, help="Evaluate even when a server holds the evaluator lease."
)
@click.option("--wait", "wait_s", type=float, default=60.0, show_default=True,
              help="Seconds to wait for notifications to be delivered.")  # fmt: skip
@json_option
def check(db: str | None, database_url: str | None, alerts_file: str | None, slo_file: str | None,
          at_text: str | None, dry_run: bool, force: bool, wait_s: float, as_json: bool) -> None:  # fmt: skip
    """Evaluate every rule once and send due notifications (for cron: run it every
    minute). Exits 1 when a rule or the configuration failed."""
    settings = load_cli_settings(db=db, database_url=database_url)
    now = parse_time(at_text, name="--at") if at_text else datetime.now(UTC)
    store = open_cli_store(settings)
    engine = AlertEngine(store, base_url=settings.base_url, alerts_file=alerts_file,
                         slo_file=slo_file or settings.slo_file or None, source="cli")  # fmt: skip
    try:
        report = engine.tick(now, dry_run=dry_run, force=force)
        delivered = engine.deliveries.wait(wait_s)
        if not dry_run:
            engine.release()
    finally:
        engine.deliveries.close()
        store.close()
    if as_json:
        print_json(report.to_dict() | {"deliveries_finished": delivered})
    else:
        _print_tick(report.to_dict(), delivered)
    if report.errors:
        raise SystemExit(1)


def _print_tick(data: dict[str, Any], delivered: bool) -> None:
    if data["skipped"]:
        console.print(f"skipped: {data['skipped']}")
    evaluation = data["evaluation"]
    if evaluation:
        table = Table(
            "rule", "series", "active", "ms", "error", title=f"Evaluated at {evaluation['at']}"
        )
        for r in evaluation["rules"]:
            table.add_row(
                r["rule"],
                str(r["samples"]),
                str(r["active"]),
                f"{r['duration_ms']:.0f}",
                r["error"] or "",
            )
        out.print(table)
        for t in evaluation["transitions"]:
            click.echo(f"{t['rule']}: {t['from']} → {t['to']}  {t['summary']}")
        click.echo(f"{evaluation['firing']} firing, {evaluation['pending']} pending")
    dispatch = data["dispatch"]
    if dispatch:
        for q in dispatch["queued"]:
            click.echo(
                f"notified {q['route']}: {q['status']} ({q['alerts']} alert(s)) {q['group_key']}"
            )
    if not delivered:
        console.print(
            "[yellow]some notifications were still being delivered when --wait ran out[/]"
        )
    for name, error in data["errors"].items():
        console.print(f"[red]{name}: {error}[/]")


# -- backtest -----------------------------------------------------------------------------------
@alerts.command()
@click.argument("rule")
@store_options
@alerts_file_option
@slo_file_option
@server_option
@click.option(
    "--since", default="7d", show_default=True, help="Replay from (7d, 24h or an ISO time)."
)
@click.option("--until", help="Replay until (ISO time or a duration ago); default now.")
@click.option("--step", default="1m", show_default=True, help="Evaluation interval to replay at.")
@json_option
def backtest(rule: str, db: str | None, database_url: str | None, alerts_file: str | None,
             slo_file: str | None, server: str | None, since: str, until: str | None, step: str,
             as_json: bool) -> None:  # fmt: skip
    """When would RULE have fired? Replays history at the evaluation interval
    (nothing is stored, nobody is notified)."""
    if server:
        params = {"rule": rule, "since": since, "step": step, **({"until": until} if until else {})}
        data = _api(server, "GET", "/api/v1/alerts/backtest", params=params)
    else:
        now = datetime.now(UTC)
        start, end = _when(since, "--since", now), (_when(until, "--until", now) if until else now)
        try:
            interval = parse_duration(step, name="--step")
        except WindowError as exc:
            raise click.BadParameter(str(exc), param_hint="--step") from None
        with _store(db, database_url) as store:
            runtime = _runtime(store, alerts_file, slo_file)
            found = runtime.rules.get(rule)
            if found is None:
                names = ", ".join(r.name for r in runtime.rules.rules) or "none"
                raise click.ClickException(f"no alert rule {rule!r} (rules: {names})")
            try:
                result = run_backtest(store, found, start, end, step=interval,
                                      signals=runtime.signals, slos=runtime.slos)  # fmt: skip
            except ValueError as exc:
                raise click.ClickException(str(exc)) from None
        data = result.to_dict()
    if as_json:
        print_json(data)
        return
    table = Table("pending", "fired", "resolved", "severity", "labels", "summary",
                  title=f"{rule}: {data['since']} → {data['until']}")  # fmt: skip
    for e in data["episodes"]:
        labels = ", ".join(
            f"{k}={v}" for k, v in e["labels"].items() if k not in ("alertname", "severity")
        )
        table.add_row(e["pending_at"], e["fired_at"] or "–", e["resolved_at"] or ("firing" if e["fired_at"] else "–"),
                      e["severity"], labels, e["summary"])  # fmt: skip
    out.print(table)
    click.echo(f"{data['evaluations']} evaluations: {data['fired']} fired ({data['pages']} pages, "
              f"{data['pages_per_week']} pages/week), {data['pending_only']} pending only; "
              f"loaded in {data['load_ms']:.0f} ms, replayed in {data['evaluate_ms']:.0f} ms")  # fmt: skip


# -- silence ------------------------------------------------------------------------------------
@alerts.group()
def silence() -> None:
    """Mute alerts that match label matchers until an end time."""


@silence.command("add")
@click.argument("matchers", nargs=-1, required=True)
@store_options
@server_option
@click.option("--for", "duration", default="2h", show_default=True, help="How long (30m, 2h, 1d).")
@click.option("--until", "until", help="End time (ISO-8601) instead of --for.")
@click.option("--comment", help="Why (shown on the alerts page).")
@click.option("--author", help="Who (shown on the alerts page).")
@json_option
def silence_add(matchers: tuple[str, ...], db: str | None, database_url: str | None, server: str | None,
                duration: str, until: str | None, comment: str | None, author: str | None,
                as_json: bool) -> None:  # fmt: skip
    """Add a silence: MATCHERS like alertname=refund-burn 'locale=~de-.*' severity!=page."""
    body: dict[str, Any] = {"matchers": list(matchers), "comment": comment, "created_by": author}
    body.update({"ends_at": until} if until else {"duration": duration})
    if server:
        data = _api(server, "POST", "/api/v1/alerts/silences", json=body)
    else:
        now = datetime.now(UTC)
        with _store(db, database_url) as store:
            try:
                ends = parse_time(until, name="--until") if until else None
                length = None if until else parse_duration(duration, name="--for")
                created = create_silence(store, list(matchers), now=now, ends_at=ends, duration=length,
                                         created_by=author, comment=comment)  # fmt: skip
            except (SilenceError, WindowError) as exc:
                raise click.ClickException(str(exc)) from None
        data = created.to_dict(now)
    if as_json:
        print_json(data)
    else:
        click.echo(f"silence {data['id']} until {data['ends_at']}: {', '.join(data['matchers'])}")


@silence.command("list")
@store_options
@server_option
@click.option("--expired", is_flag=True, help="Include silences that ended in the last week.")
@json_option
def silence_list(
    db: str | None, database_url: str | None, server: str | None, expired: bool, as_json: bool
) -> None:
    """Active and pending silences."""
    if server:
        rows = _api(
            server, "GET", "/api/v1/alerts/silences", params={"expired": str(expired).lower()}
        )["silences"]
    else:
        now = datetime.now(UTC)
        with _store(db, database_url) as store:
            rows = [s.to_dict(now) for s in list_silences(store, now=now, include_expired=expired)]
    if as_json:
        print_json({"silences": rows})
        return
    table = Table("id", "state", "matchers", "ends", "by", "comment", title="Silences")
    for s in rows:
        table.add_row(
            s["id"],
            s["state"],
            ", ".join(s["matchers"]),
            s["ends_at"],
            s["created_by"] or "",
            s["comment"] or "",
        )
    out.print(table)


@silence.command("expire")
@click.argument("silence_id")
@store_options
@server_option
def silence_expire(
    silence_id: str, db: str | None, database_url: str | None, server: str | None
) -> None:
    """End a silence now."""
    if server:
        _api(server, "DELETE", f"/api/v1/alerts/silences/{silence_id}")
    else:
        with _store(db, database_url) as store:
            if not expire_silence(store, silence_id, now=datetime.now(UTC)):
                raise click.ClickException(f"no active silence {silence_id!r}")
    click.echo(f"silence {silence_id} expired")


# -- apply / validate ---------------------------------------------------------------------------
@alerts.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@store_options
@server_option
def apply(file: str, db: str | None, database_url: str | None, server: str | None) -> None:
    """Validate FILE and save it as the alerts configuration the server evaluates."""
    text = Path(file).read_text(encoding="utf-8")
    if server:
        data = _api(
            server, "PUT", "/api/v1/alerts/config", content=text.encode(), params={"source": file}
        )
        rules, notifiers = len(data["rules"]), len(data["notifiers"])
    else:
        with _store(db, database_url) as store:
            try:
                config = save_config(store, text, source=file)
            except AlertConfigError as exc:
                raise click.ClickException(str(exc)) from None
        rules, notifiers = len(config.rules), len(config.routes)
    click.echo(f"applied {file}: {rules} rule(s), {notifiers} notifier(s)")


@alerts.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def validate(file: str) -> None:
    """Check an alerts config file; name every bad rule and key."""
    try:
        config = load_alerts_file(file)
    except AlertConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{file}: {len(config.rules)} rule(s), {len(config.routes)} notifier(s) — OK")
