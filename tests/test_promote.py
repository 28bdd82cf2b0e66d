"""Promotion of a stored production session into an anonymized case (both stores)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from conftest import BASE_TIME, span_batch

from goldenloop.golden.casefiles import load_case_dir
from goldenloop.golden.index import list_indexed_cases
from goldenloop.golden.promote import PromotionError, PromotionRefused, promote_session
from goldenloop.golden.pseudonyms import reveal
from goldenloop.model import Feedback
from goldenloop.store.base import Store

SESSION = "sess-7f3e9c0a"
USER = "user-4711-anna"
TRACE_1 = "1" * 32
TRACE_2 = "2" * 32
SECRET = "sk-proj-" + "Xy7" * 12
CRITERIA = [{"type": "contains", "value": "14 days"}]


def _store_session(store: Store) -> None:
    common = {"session_id": SESSION, "user_id": USER, "locale": "de-DE",
              "customer_tier": "pro", "prompt_hash": "a9f2", "index_version": "2026-06-28",
              "feature_flags": {"eu_banner": "on"}}  # fmt: skip
    store.insert_spans(
        span_batch(
            {
                **common,
                "trace_id": TRACE_1,
                "span_id": "a" * 16,
                "kind": "agent",
                "message_id": "msg-0001",
                "name": "invoke_agent refund-assistant",
                "input_text": "Hallo, ich bin Anna (anna.schmidt@example.de, +49 30 12345678). "
                f"My user id is {USER}.",
                "output_text": "Could you tell me your order number?",
                "attributes": {
                    "goldenloop.attachments": json.dumps(
                        [
                            {
                                "name": "receipt-anna.schmidt@example.de.pdf",
                                "mime_type": "application/pdf",
                                "size": 48213,
                            }
                        ]
                    )
                },
            },
            {
                **common,
                "trace_id": TRACE_1,
                "span_id": "b" * 16,
                "parent_id": "a" * 16,
                "kind": "llm",
                "message_id": "msg-0001",
            },
            {
                **common,
                "trace_id": TRACE_2,
                "span_id": "c" * 16,
                "kind": "agent",
                "message_id": "msg-0002",
                "start_time": BASE_TIME + timedelta(minutes=2),
                "input_text": "Kann ich zurückgeben? Card 4111 1111 1111 1111, IBAN "
                f"DE89 3704 0044 0532 0130 00, my key is {SECRET}, "
                "write to anna.schmidt@example.de",
                "output_text": "Refunds must be requested within 7 days of purchase.",
            },
        )  # fmt: skip
    )
    store.insert_feedback([
        Feedback("fb-1", "demo", SESSION, "msg-0002", "down", "wrong", None, "a9f2", None, USER,
                 BASE_TIME + timedelta(minutes=5)),
    ])  # fmt: skip


def test_promoted_case_keeps_no_pii_secret_or_production_id(store: Store, tmp_path: Path) -> None:
    _store_session(store)
    result = promote_session(
        store, SESSION, "EU-12", CRITERIA, tmp_path, tags=["policy"], incident="INC-7",
        description=f"Anna ({USER}) was told 7 days",
    )  # fmt: skip
    text = result.path.read_text(encoding="utf-8") if result.path else ""
    for value in ("anna.schmidt@example.de", "12345678", "4111", "DE89", SECRET, SESSION, USER,
                  TRACE_1, TRACE_2, "msg-0001", "msg-0002"):  # fmt: skip
        assert value not in text, value
    case = load_case_dir(tmp_path).by_id()["EU-12"].case
    messages = case.input.messages
    assert [m.role for m in messages] == ["user", "assistant", "user"]
    assert "<EMAIL_1>" in messages[0].content and "<EMAIL_1>" in messages[2].content
    assert "<PHONE_1>" in messages[0].content
    assert "<CREDIT_CARD_1>" in messages[2].content and "<IBAN_1>" in messages[2].content
    assert "<SECRET_OPENAI_KEY_1>" in messages[2].content
    assert case.input.context.locale == "de-DE" and case.input.context.tier == "pro"
    assert case.input.context.flags == {"eu_banner": "on"}
    assert case.input.context.prompt_version == "a9f2"
    assert "anna" not in case.input.attachments[0].name  # the file name held the address
    assert case.input.attachments[0].media_type == "application/pdf"
    assert case.input.attachments[0].size_bytes == 48213
    assert case.source == "thumbs-down-2024-06-01" and case.production_sourced
    assert case.links.incident == "INC-7" and case.links.feedback == "fb-1"
    assert case.links.session and case.links.session.startswith("ses_")
    assert [s.kind for s in result.report.secrets] == ["OPENAI_KEY"]
    assert result.report.pii["EMAIL"] == 3  # two messages and the attachment name
    assert USER not in (case.description or "")


def test_pseudonyms_map_back_only_through_the_id_map(store: Store, tmp_path: Path) -> None:
    _store_session(store)
    case = promote_session(store, SESSION, "EU-12", CRITERIA, tmp_path).case
    assert case.links.session is not None and case.links.trace is not None
    session = reveal(store, case.links.session)
    trace = reveal(store, case.links.trace)
    assert session is not None and session.production_id == SESSION and session.kind == "session"
    assert trace is not None and trace.production_id == TRACE_2
    user_rows = store.fetch("SELECT pseudonym FROM id_map WHERE kind = 'user'")
    assert len(user_rows) == 1
    # The same production ids get the same pseudonyms in a second case.
    again = promote_session(store, SESSION, "EU-13", CRITERIA, tmp_path).case
    assert again.links.session == case.links.session
    assert reveal(store, "ses_nope") is None


def test_pseudonyms_never_look_like_pii(store: Store) -> None:
    import re

    from goldenloop.golden.anonymize import pii_engine, scan_for_leaks
    from goldenloop.golden.pseudonyms import PseudonymMap

    names = [PseudonymMap(store).get("message", f"m-{n}") for n in range(300)]
    assert all(re.fullmatch(r"msg_[bcdfghjkmnpqrstvwxz]{10}", n) for n in names)
    assert scan_for_leaks("\n".join(names), pii_engine()) == []


def test_promotion_indexes_the_case_with_time_to_eval(store: Store, tmp_path: Path) -> None:
    _store_session(store)
    now = BASE_TIME + timedelta(hours=30)
    promote_session(store, SESSION, "EU-12", CRITERIA, tmp_path, now=now)
    [row] = list_indexed_cases(store)
    assert row.case_id == "EU-12" and row.production and row.source_kind == "thumbs-down"
    assert row.time_to_eval_hours == pytest.approx(30 - 5 / 60)


def test_earlier_turn_and_generated_id(store: Store, tmp_path: Path) -> None:
    _store_session(store)
    result = promote_session(store, SESSION, None, CRITERIA, tmp_path, upto_turn=TRACE_1,
                             id_prefix="eu")  # fmt: skip
    assert result.case.id == "eu-1"
    assert [m.role for m in result.case.input.messages] == ["user"]
    assert (
        promote_session(store, SESSION, None, CRITERIA, tmp_path, id_prefix="eu").case.id == "eu-2"
    )


def test_promotion_that_would_leak_is_refused_and_writes_nothing(
    store: Store, tmp_path: Path
) -> None:
    _store_session(store)
    leaky = [{"type": "contains", "value": "anna.schmidt@example.de"},
             {"type": "not-contains", "value": USER}]  # fmt: skip
    with pytest.raises(PromotionRefused) as refused:
        promote_session(store, SESSION, "EU-12", leaky, tmp_path / "golden")
    message = str(refused.value)
    assert "EMAIL" in message and "PRODUCTION_ID" in message
    assert "anna.schmidt@example.de" not in message and USER not in message
    assert not (tmp_path / "golden" / "EU-12.yaml").exists()
    assert store.fetch("SELECT count(*) FROM id_map")[0][0] == 0
    assert list_indexed_cases(store) == []


def test_unknown_session_existing_id_and_missing_criteria_are_clear_errors(
    store: Store, tmp_path: Path
) -> None:
    _store_session(store)
    with pytest.raises(PromotionError, match="no session or triage item 'nope'"):
        promote_session(store, "nope", "X-1", CRITERIA, tmp_path)
    with pytest.raises(PromotionError, match="at least one criterion"):
        promote_session(store, SESSION, "X-1", [], tmp_path)
    promote_session(store, SESSION, "X-1", CRITERIA, tmp_path)
    with pytest.raises(PromotionError, match="exists"):
        promote_session(store, SESSION, "X-1", CRITERIA, tmp_path)


def test_triage_item_id_promotes_its_session_with_its_criteria(
    store: Store, tmp_path: Path
) -> None:
    _store_session(store)
    first_seen = BASE_TIME + timedelta(minutes=3)
    store.execute(
        "INSERT INTO triage_items (id, dedupe_key, project, source, primary_rule, rules, title, "
        "session_id, trace_id, frequency, tier_weight, severity, impact, priority, status, "
        "first_seen_at, last_seen_at, created_at, failure_modes, criteria, updated_at) "
        "VALUES (?, ?, 'demo', 'feedback', 'thumbs_down', '[]', 'EU policy', ?, ?, 3, 1.0, 2, "
        "6.0, 'P1', 'labelled', ?, ?, ?, ?, ?, ?)",
        ("item-1", "k1", SESSION, TRACE_2, first_seen, first_seen, first_seen,
         json.dumps(["policy"]), yaml.safe_dump(CRITERIA), first_seen),
    )  # fmt: skip
    result = promote_session(store, "item-1", "EU-14", None, tmp_path)
    assert result.triage_item == "item-1"
    assert result.case.criteria == CRITERIA
    assert "policy" in result.case.tags
    assert result.case.links.triage_item == "item-1"
    assert result.case.source == "thumbs-down-2024-06-01"
    linked = store.fetch(
        "SELECT golden_case_id, case_merged_at FROM triage_items WHERE id = 'item-1'"
    )
    assert linked[0][0] == "EU-14" and linked[0][1] is not None


def test_prose_criteria_of_a_triage_item_become_a_judge_rubric(
    store: Store, tmp_path: Path
) -> None:
    _store_session(store)
    when = BASE_TIME + timedelta(minutes=3)
    store.execute(
        "INSERT INTO triage_items (id, dedupe_key, project, source, primary_rule, rules, title, "
        "session_id, trace_id, frequency, tier_weight, severity, impact, priority, status, "
        "first_seen_at, last_seen_at, created_at, failure_modes, criteria, updated_at) "
        "VALUES ('item-2', 'k2', 'demo', 'flag', 'max_tokens', '[]', 't', ?, NULL, 1, 1.0, 1, "
        "1.0, 'P2', 'labelled', ?, ?, ?, '[]', ?, ?)",
        (SESSION, when, when, when,
         "Pass if the answer states the 14-day right of withdrawal; ask anna.schmidt@example.de",
         when),
    )  # fmt: skip
    case = promote_session(store, "item-2", "EU-15", None, tmp_path).case
    [criterion] = case.criteria
    assert criterion["type"] == "llm-judge" and "14-day right" in criterion["rubric"]
    assert "<EMAIL_1>" in criterion["rubric"] and case.source == "thumbs-down-2024-06-01"


def test_cli_promote_then_reveal_reads_back_the_store(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from goldenloop.cli import main
    from goldenloop.store.duckdb import DuckDBStore

    db = str(tmp_path / "gl.duckdb")
    store = DuckDBStore(db)
    store.migrate()
    _store_session(store)
    store.close()
    golden = tmp_path / "golden"
    result = CliRunner().invoke(main, [
        "promote", SESSION, "--id", "EU-12", "--to", str(golden), "--db", db,
        "--criteria", '{type: contains, value: "14 days"}', "--tag", "policy", "--incident", "INC-7",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "SECRET OPENAI_KEY" in result.output and "rotate it" in result.output
    assert SECRET not in result.output
    case = yaml.safe_load((golden / "EU-12.yaml").read_text())
    assert case["links"]["incident"] == "INC-7" and case["tags"] == ["policy"]
    shown = CliRunner().invoke(main, ["golden", "reveal", case["links"]["session"], "--db", db])
    assert shown.exit_code == 0 and SESSION in shown.output
    unknown = CliRunner().invoke(main, ["golden", "reveal", "ses_nope", "--db", db])
    assert unknown.exit_code == 1 and "no pseudonym" in unknown.output
    again = CliRunner().invoke(main, ["promote", SESSION, "--id", "EU-12", "--to", str(golden),
                                      "--db", db, "--criteria", "{type: exact}"])  # fmt: skip
    assert again.exit_code == 1 and "criteria.0.value" in again.output
