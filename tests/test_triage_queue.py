"""Queue reads and labels: validation, history, filters and the item detail."""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import BASE_TIME
from flags_helpers import add_feedback, llm, load, only, turn

from goldenloop.flags import refresh_queue, run_incremental
from goldenloop.store.base import Store
from goldenloop.triage.labels import LabelError, LabelRequest, apply_label, normalize_failure_mode
from goldenloop.triage.queue import QueueFilter, count_items, impact_of, item_detail, list_items

LATER = BASE_TIME + timedelta(hours=3)


def _queue(store: Store) -> list[str]:
    load(
        store,
        turn("s-a", 1, children=[llm(stop_reason="max_tokens")], project="shop"),
        turn("s-b", 1, project="billing-agent", question="Why was I charged twice?"),
        turn("s-b", 2, project="billing-agent", question="Thanks"),
    )
    add_feedback(store, "s-b", category="wrong", project="billing-agent")
    run_incremental(store, [*only("max_tokens"), *only("thumbs_down")], now=LATER)
    refresh_queue(store, now=LATER)
    return [i.id for i in list_items(store)]


def test_label_requests_validate_labels_and_failure_modes() -> None:
    request = LabelRequest.build(
        " Add_To_Eval ", failure_modes=["Retrieval miss", "tool_error", "policy", "policy"]
    )
    assert request.label == "add-to-eval"
    assert request.failure_modes == ("retrieval-miss", "tool-error", "policy")
    assert normalize_failure_mode("LATENCY") == "latency"
    with pytest.raises(LabelError, match="label: unknown label 'later'"):
        LabelRequest.build("later")
    with pytest.raises(LabelError, match="failure_modes: unknown failure mode 'vibes'"):
        LabelRequest.build("known-issue", failure_modes=["vibes"])
    with pytest.raises(LabelError, match="owner: at most 200 characters"):
        LabelRequest.build("known-issue", owner="x" * 201)


def test_labels_keep_history_and_earlier_fields(store: Store) -> None:
    first, _ = _queue(store)
    apply_label(store, first, LabelRequest.build("needs-product-decision", owner="ana", notes="ask PM",
                                                 failure_modes=["policy"], criteria="no double charge"), now=LATER)  # fmt: skip
    item = apply_label(
        store, first, LabelRequest.build("add-to-eval"), now=LATER + timedelta(hours=1)
    )
    assert (item.label, item.owner, item.notes, item.failure_modes, item.criteria) == (
        "add-to-eval",
        "ana",
        "ask PM",
        ["policy"],
        "no double charge",
    )
    detail = item_detail(store, first)
    assert detail is not None
    assert [label.label for label in detail.labels] == ["add-to-eval", "needs-product-decision"]
    with pytest.raises(LabelError, match="no triage item"):
        apply_label(store, "missing", LabelRequest.build("known-issue"))


def test_queue_filters_by_status_priority_project_and_label(store: Store) -> None:
    billing, shop = _queue(store)
    assert count_items(store) == {"backlog": 0, "open": 2, "labelled": 0, "resolved": 0}
    assert [i.id for i in list_items(store, QueueFilter(priority="P0"))] == [billing]
    assert [i.id for i in list_items(store, QueueFilter(project="shop"))] == [shop]
    apply_label(store, shop, LabelRequest.build("known-issue"))
    assert [i.id for i in list_items(store)] == [billing]
    assert [
        i.id for i in list_items(store, QueueFilter(statuses=("labelled",), label="known-issue"))
    ] == [shop]
    with pytest.raises(ValueError, match="status: unknown"):
        QueueFilter(statuses=("done",))


def test_item_detail_replays_every_turn_of_the_session(store: Store) -> None:
    billing, _ = _queue(store)
    detail = item_detail(store, billing)
    assert detail is not None and detail.replay is not None
    assert [t.input_text for t in detail.replay.turns] == ["Why was I charged twice?", "Thanks"]
    assert detail.item.priority == "P0" and detail.item.impact == impact_of(1, 1.0, 4)
    data = detail.to_dict()
    assert data["replay"]["session_id"] == "s-b" and data["flags"][0]["rule"] == "thumbs_down"
    assert data["golden_source"] == "thumbs-down-2024-06-01"
