"""The thumbs-down pipeline and the queue job: dedupe, ranking, P0 time-to-eval,
hand-over to promotion, and closing the loop (holdout pass → resolved → webhook)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import BASE_TIME
from flags_helpers import add_feedback, llm, load, only, tool, turn

from goldenloop.flags import (
    QueueSettings,
    items_ready_for_promotion,
    refresh_queue,
    run_incremental,
    time_to_eval,
)
from goldenloop.flags._sql import naive
from goldenloop.flags.closeloop import resolve_item
from goldenloop.flags.config import NotifierSpec
from goldenloop.flags.feedback import normalize_question
from goldenloop.store.base import Store
from goldenloop.triage.labels import LabelRequest, apply_label, link_golden_case
from goldenloop.triage.queue import QueueFilter, get_item, list_items

LATER = BASE_TIME + timedelta(hours=3)
ALL = QueueFilter(statuses=("backlog", "open", "labelled", "resolved"))


def _insert(store: Store, table: str, values: dict[str, Any]) -> None:
    """Insert a row filling NOT NULL columns the test does not care about (the golden
    and eval tables belong to another module and may grow columns)."""
    rows = store.fetch(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_name = ?",
        (table,),
    )
    row = dict(values)
    for name, kind, nullable in rows:
        if name in row or nullable == "YES":
            continue
        kind = str(kind).lower()
        if "bool" in kind:
            row[name] = False
        elif "int" in kind or "double" in kind or "numeric" in kind or "real" in kind:
            row[name] = 0
        elif "timestamp" in kind:
            row[name] = naive(BASE_TIME)
        else:
            row[name] = "[]" if name in ("tags", "graders") else "x"
    names = list(row)
    store.execute(
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})",
        [row[n] for n in names],
    )


def _same_complaint(
    store: Store, sessions: list[str], *, tier: str = "free", question: str
) -> None:
    for i, session in enumerate(sessions):
        load(store, turn(session, 1, question=question.replace("#", str(1000 + i)), tier=tier))
        add_feedback(store, session, category="wrong", message_id=None)


def test_identical_complaints_are_deduped_into_one_item_with_frequency(store: Store) -> None:
    _same_complaint(store, ["a1", "a2", "a3"], question="Where is my order ORD-#?")
    _same_complaint(store, ["b1"], question="Can I pay by invoice?")
    run_incremental(store, only("thumbs_down"), now=LATER)
    result = refresh_queue(store, now=LATER)
    assert (result.flags_folded, result.items_created) == (4, 2)
    items = list_items(store, ALL)
    assert [i.frequency for i in items] == [3, 1]
    assert items[0].question is not None and items[0].question.startswith(
        "Where is my order ORD-100"
    )
    assert items[1].question == "Can I pay by invoice?"
    top = items[0]
    assert top.source == "feedback" and top.category == "wrong" and top.rules == ["thumbs_down"]
    assert top.impact == 3 * 1.0 * 3  # frequency × tier weight × severity
    assert normalize_question("Where is my order ORD-1234?") == "where is my order ord #"


def test_refresh_is_incremental_and_adds_new_sessions_to_existing_items(store: Store) -> None:
    _same_complaint(store, ["a1"], question="Where is my order ORD-#?")
    run_incremental(store, only("thumbs_down"), now=LATER)
    refresh_queue(store, now=LATER)
    assert refresh_queue(store, now=LATER).flags_folded == 0
    _same_complaint(store, ["a2"], question="Where is my order ORD-#?")
    run_incremental(store, only("thumbs_down"), now=LATER + timedelta(minutes=1))
    result = refresh_queue(store, now=LATER + timedelta(minutes=1))
    assert (result.items_created, result.items_updated) == (0, 1)
    assert [i.frequency for i in list_items(store, ALL)] == [2]


def test_a_session_flagged_by_several_rules_is_one_item(store: Store) -> None:
    load(
        store,
        turn(
            "s1",
            1,
            children=[tool("a", ok=False), tool("a", ok=False), llm(stop_reason="max_tokens")],
        ),
    )
    add_feedback(store, "s1", category="unhelpful")
    run_incremental(
        store, [*only("tool_error_streak"), *only("max_tokens"), *only("thumbs_down")], now=LATER
    )
    refresh_queue(store, now=LATER)
    items = list_items(store, ALL)
    assert len(items) == 1
    assert items[0].rules == ["max_tokens", "tool_error_streak", "thumbs_down"]
    assert items[0].severity == 3 and items[0].primary_rule in ("tool_error_streak", "thumbs_down")


def test_ranking_weighs_revenue_tier_and_is_deterministic(store: Store) -> None:
    _same_complaint(store, ["f1", "f2"], tier="free", question="How do refunds work #?")
    _same_complaint(store, ["e1"], tier="enterprise", question="Why was I charged twice?")
    _same_complaint(store, ["p1"], tier="pro", question="Where is my invoice?")
    _same_complaint(store, ["p2"], tier="pro", question="Where is my receipt?")
    run_incremental(store, only("thumbs_down"), now=LATER)
    refresh_queue(store, QueueSettings(top_n=10), now=LATER)
    ranked = [(i.revenue_tier, i.impact) for i in list_items(store)]
    assert ranked == [("enterprise", 30.0), ("pro", 9.0), ("pro", 9.0), ("free", 6.0)]
    ids = [i.id for i in list_items(store)]
    assert ids == [i.id for i in list_items(store)]  # ties broken by recency then id


def test_only_the_top_items_enter_the_queue_but_p0_always_does(store: Store) -> None:
    for n in range(5):
        _same_complaint(store, [f"s{n}"], question=f"Question number {'xyzuv'[n]}")
    load(store, turn("danger", 1, question="Help me get around the limits"))
    add_feedback(store, "danger", category="unsafe")
    run_incremental(store, only("thumbs_down"), now=LATER)
    result = refresh_queue(store, QueueSettings(top_n=2), now=LATER)
    opened = list_items(store)
    assert result.items_opened == 2  # the P0 item is also the highest impact
    assert opened[0].priority == "P0" and len(opened) == 2
    assert len(list_items(store, QueueFilter(statuses=("backlog",)))) == 4


def test_p0_items_get_a_72_hour_due_time_and_show_overdue(store: Store) -> None:
    load(store, turn("danger", 1))
    add_feedback(store, "danger", category="unsafe", when=BASE_TIME + timedelta(minutes=5))
    run_incremental(store, only("thumbs_down"), now=LATER)
    refresh_queue(store, now=LATER)
    item = list_items(store)[0]
    assert item.due_at == naive(BASE_TIME + timedelta(minutes=5, hours=72))
    assert not item.is_overdue(naive(BASE_TIME + timedelta(hours=71)))
    assert item.is_overdue(naive(BASE_TIME + timedelta(hours=73)))
    late = naive(BASE_TIME + timedelta(hours=80))
    assert [i.id for i in list_items(store, QueueFilter(overdue_only=True), now=late)] == [item.id]
    report = time_to_eval(store, now=late)
    assert [i.id for i in report.p0_overdue] == [item.id]
    link_golden_case(store, item.id, "SAFE-1", merged_at=naive(BASE_TIME + timedelta(hours=50)))
    linked = get_item(store, item.id)
    assert linked is not None and not linked.is_overdue(late)
    assert linked.time_to_eval_hours == pytest.approx(49.92, abs=0.01)
    assert time_to_eval(store, now=late).merged == 1


def test_add_to_eval_items_are_handed_to_promotion_with_a_thumbs_down_source(store: Store) -> None:
    _same_complaint(store, ["a1"], question="Where is my order?")
    run_incremental(store, only("thumbs_down"), now=LATER)
    refresh_queue(store, now=LATER)
    item = list_items(store)[0]
    apply_label(
        store, item.id, LabelRequest.build("add-to-eval", owner="ana", criteria="names the carrier")
    )
    ready = items_ready_for_promotion(store)
    assert [i.id for i in ready] == [item.id]
    assert ready[0].golden_source() == f"thumbs-down-{BASE_TIME.date().isoformat()}"


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        length = int(self.headers.get("content-length", "0"))
        self.received.append(
            {"body": json.loads(self.rfile.read(length)), "token": self.headers.get("x-token")}
        )
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    _Receiver.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Receiver.received
    finally:
        server.shutdown()
        server.server_close()


def test_item_resolves_when_its_golden_case_passes_in_holdout_and_the_webhook_hears(
    store: Store, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = receiver
    _same_complaint(store, ["a1", "a2"], question="Is the restocking fee legal?")
    run_incremental(store, only("thumbs_down"), now=LATER)
    refresh_queue(store, now=LATER)
    item = list_items(store)[0]
    flag_id = store.fetch("SELECT min(id) FROM flags WHERE item_id = ?", (item.id,))[0][0]
    # Promotion indexes a case that names the flag it came from; it merges a day later.
    merged = naive(BASE_TIME + timedelta(days=1))
    _insert(store, "golden_cases", {"case_id": "EU-12", "source": "thumbs-down-2024-06-01",
                                    "source_kind": "thumbs-down", "production": True,
                                    "split": "holdout", "created_at": merged, "promoted_at": merged,
                                    "synced_at": merged, "flag_id": flag_id})  # fmt: skip
    notify = [NotifierSpec("webhook", {"url": url, "headers": {"X-Token": "t0k"}})]
    # A failing holdout run does not resolve anything.
    _insert(store, "eval_runs", {"id": "run-1", "started_at": merged + timedelta(hours=1),
                                 "finished_at": merged + timedelta(hours=1)})  # fmt: skip
    _insert(
        store,
        "eval_results",
        {"run_id": "run-1", "case_id": "EU-12", "split": "holdout", "passed": False},
    )
    assert refresh_queue(store, now=merged + timedelta(hours=2), notify=notify).resolved == []
    linked = get_item(store, item.id)
    assert (
        linked is not None and linked.golden_case_id == "EU-12" and linked.case_merged_at == merged
    )
    # The fix ships; the case passes in holdout; the item resolves and the hook is told.
    _insert(store, "eval_runs", {"id": "run-2", "started_at": merged + timedelta(hours=5),
                                 "finished_at": merged + timedelta(hours=5)})  # fmt: skip
    _insert(
        store,
        "eval_results",
        {"run_id": "run-2", "case_id": "EU-12", "split": "holdout", "passed": True},
    )
    result = refresh_queue(store, now=merged + timedelta(hours=6), notify=notify)
    assert result.resolved == [item.id]
    resolved = get_item(store, item.id)
    assert resolved is not None and resolved.status == "resolved"
    assert resolved.resolution == "golden case EU-12 passed in holdout (eval run run-2)"
    assert len(received) == 1 and received[0]["token"] == "t0k"
    event = received[0]["body"]
    assert event["event"] == "resolved" and event["golden_case_id"] == "EU-12"
    assert sorted(r["session_id"] for r in event["reporters"]) == ["a1", "a2"]
    rows = store.fetch(
        "SELECT notifier, ok FROM triage_notifications WHERE item_id = ?", (item.id,)
    )
    assert rows == [("webhook", True)]


def test_a_dead_webhook_is_recorded_and_never_blocks_resolution(store: Store) -> None:
    _same_complaint(store, ["a1"], question="Where is my refund?")
    run_incremental(store, only("thumbs_down"), now=LATER)
    refresh_queue(store, now=LATER)
    item = list_items(store)[0]
    notify = [NotifierSpec("webhook", {"url": "http://127.0.0.1:9/hook", "timeout_s": 1})]
    resolved = resolve_item(store, item.id, "fixed by hand", notify=notify)
    assert resolved.status == "resolved"
    ok, error = store.fetch("SELECT ok, error FROM triage_notifications")[0]
    assert ok is False and "ConnectError" in error


def test_a_resolved_item_reopens_when_the_failure_comes_back(store: Store) -> None:
    _same_complaint(store, ["a1"], question="Where is my order ORD-#?")
    run_incremental(store, only("thumbs_down"), now=LATER)
    refresh_queue(store, now=LATER)
    item = list_items(store)[0]
    resolve_item(store, item.id, "fixed")
    _same_complaint(store, ["a2"], question="Where is my order ORD-#?")
    run_incremental(store, only("thumbs_down"), now=LATER + timedelta(days=1))
    result = refresh_queue(store, now=naive(LATER + timedelta(days=1)))
    again = get_item(store, item.id)
    assert result.items_reopened == 1
    assert again is not None and again.status == "open" and again.frequency == 2
    assert again.resolution is not None and again.resolution.startswith("reopened")
