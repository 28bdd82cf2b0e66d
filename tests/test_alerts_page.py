"""The alerts pages in a real browser: a firing page with its exemplar and trace link,
silencing it from the page, and a rule's backtest."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from alerts_helpers import incident_config, load_sim
from live import LiveServer, chromium_page

from goldenloop.alerts import backtest, parse_rule, save_config
from goldenloop.alerts.scheduler import AlertEngine
from goldenloop.config import Settings
from goldenloop.store.duckdb import DuckDBStore
from goldenloop.web.app import create_app

pytestmark = pytest.mark.browser

CONFIG = """
rules:
  - name: answers-burn
    type: slo_burn
    slo: {name: turns-ok, objective: 99%, sli: {kind: turn, checks: [no_error]}}
    min_events: 20
  - {name: spend, type: spend_velocity, usd_per_hour: 1000}
notifiers:
  - {name: oncall, type: pagerduty, routing_key: R0UT1NGKEY0123, url: "http://127.0.0.1:9/v2/enqueue",
     match: {severity: page}}
"""


def test_alerts_page_shows_the_page_and_silences_it(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "ui.duckdb")
    store.migrate()
    manifest = load_sim(store, incident_config())
    outage = manifest.scenarios["provider-outage"]
    save_config(store, CONFIG, source="alerts.yaml")
    rule = parse_rule({"name": "answers-burn", "type": "slo_burn", "min_events": 20,
                       "slo": {"name": "turns-ok", "objective": "99%", "sli": {"kind": "turn", "checks": ["no_error"]}}})  # fmt: skip
    start = datetime.fromisoformat(outage.start)
    fired = backtest(store, rule, start, start + timedelta(hours=1)).pages[0].fired_at
    assert fired is not None
    engine = AlertEngine(store, base_url="http://gl.test", source="test")
    engine.tick(fired, dry_run=False)
    engine.deliveries.close()  # nothing listens on the PagerDuty URL: give up at once
    engine.release()
    try:
        with LiveServer(create_app(Settings(), store)) as server, chromium_page() as page:
            page.goto(server.url + "/alerts")
            row = page.locator("#firing tbody tr.alert-firing").first
            text = row.inner_text()
            assert "answers-burn" in text and "page" in text and "burn_rate_1h" in text
            session = row.locator("a.session").inner_text()
            assert session in outage.sessions
            assert row.locator("a.trace").get_attribute("href", timeout=5000).startswith("/traces/")
            assert "answers-burn" in page.locator("#rules").inner_text()
            notifiers = page.locator("#notifiers").inner_text()
            assert "oncall" in notifiers and "R0UT1NGKEY0123" not in notifiers
            # Silence it from the page.
            page.fill("#silence-form input[name=matchers]", "alertname=answers-burn")
            page.fill("#silence-form input[name=comment]", "provider incident, on it")
            page.click("#silence-form button")
            page.wait_for_url("**/alerts#silences")
            assert "active" in page.locator("#silences tbody tr").first.inner_text()
            assert page.locator("#firing .silenced").count() >= 1
            page.click("#silences button:has-text('Expire')")
            page.wait_for_url("**/alerts#silences")
            assert "expired" in page.locator("#silences tbody tr").first.inner_text()
            # The rule page replays history.
            since, until = quote(start.isoformat()), quote((start + timedelta(hours=2)).isoformat())
            page.goto(f"{server.url}/alerts/rules/answers-burn?backtest={since}&until={until}")
            assert "page" in page.locator("#backtest tbody").inner_text()
            assert "pages/week" in page.locator("#backtest-summary").inner_text()
            assert "inactive → pending" in page.locator("#history").inner_text()
            bad = page.goto(server.url + "/alerts?state=burning")
            assert bad is not None and bad.status == 400
    finally:
        store.close()
