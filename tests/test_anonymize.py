"""Anonymization on a seeded corpus: nothing sensitive survives, ordinary text does."""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from goldenloop.golden.anonymize import (
    AnonymizeConfigError,
    AnonymizerConfig,
    CaseAnonymizer,
    CustomPattern,
    PiiEngine,
    load_anonymizer_config,
    parse_anonymizer_config,
    pii_engine,
    scan_for_leaks,
)

CORPUS_PATH = Path(__file__).parent / "data" / "pii_corpus.yaml"


@pytest.fixture(scope="module")
def corpus() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(CORPUS_PATH.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def engine(corpus: dict[str, Any]) -> PiiEngine:
    patterns = tuple(CustomPattern(**p) for p in corpus["custom_patterns"])
    return pii_engine(AnonymizerConfig(patterns=patterns))


def _recall(items: list[dict[str, Any]], key: str, engine: PiiEngine) -> dict[str, tuple[int, int]]:
    found: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for item in items:
        out = CaseAnonymizer(engine).text(item["text"])
        for kind, value in item[key]:
            total[kind] += 1
            found[kind] += value not in out
    return {kind: (found[kind], total[kind]) for kind in total}


def test_every_pii_entity_in_the_corpus_is_removed(
    corpus: dict[str, Any], engine: PiiEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    recall = _recall(corpus["pii"], "entities", engine)
    with capsys.disabled():
        print("\nPII recall by entity type:", {k: f"{f}/{t}" for k, (f, t) in recall.items()})
    assert {"EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "SSN", "CUSTOMER_ID"} <= set(
        recall
    )
    assert all(found == total for found, total in recall.values()), recall


def test_every_secret_in_the_corpus_is_removed(
    corpus: dict[str, Any], engine: PiiEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    recall = _recall(corpus["secrets"], "secrets", engine)
    with capsys.disabled():
        print("\nsecret recall by type:", {k: f"{f}/{t}" for k, (f, t) in recall.items()})
    assert len(recall) >= 14
    assert all(found == total for found, total in recall.values()), recall


def test_ordinary_words_ids_and_hashes_are_not_mangled(
    corpus: dict[str, Any], engine: PiiEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = [CaseAnonymizer(engine).text(text) for text in corpus["benign"]]
    changed = [t for t, o in zip(corpus["benign"], outputs, strict=True) if t != o]
    lost = [k for k in corpus["keep_tokens"] if not any(k in o for o in outputs)]
    text_fp = len(changed) / len(corpus["benign"])
    token_fp = len(lost) / len(corpus["keep_tokens"])
    with capsys.disabled():
        print(f"\nfalse positives: {text_fp:.1%} of benign texts changed, {token_fp:.1%} of "
              f"protected tokens lost")  # fmt: skip
    assert token_fp <= 0.02, lost
    assert text_fp <= 0.05, changed


def test_no_sensitive_value_survives_into_a_rescanned_case(
    corpus: dict[str, Any], engine: PiiEngine
) -> None:
    anonymizer = CaseAnonymizer(engine)
    texts = [i["text"] for i in corpus["pii"]] + [i["text"] for i in corpus["secrets"]]
    document = yaml.safe_dump({"messages": [anonymizer.text(t) for t in texts]}, allow_unicode=True)
    assert scan_for_leaks(document, engine) == []


def test_replacements_are_consistent_within_a_case(engine: PiiEngine) -> None:
    anonymizer = CaseAnonymizer(engine)
    first = anonymizer.text("write to ana@example.com or bob@example.org", "a")
    second = anonymizer.text("ANA@example.com again, and call +49 30 12345678", "b")
    assert first == "write to <EMAIL_1> or <EMAIL_2>"
    assert second == "<EMAIL_1> again, and call <PHONE_1>"
    assert anonymizer.report.pii == Counter({"EMAIL": 3, "PHONE": 1})


def test_each_case_numbers_its_own_placeholders(engine: PiiEngine) -> None:
    assert CaseAnonymizer(engine).text("x bob@example.org") == "x <EMAIL_1>"
    assert CaseAnonymizer(engine).text("y ana@example.com") == "y <EMAIL_1>"


def test_secrets_are_reported_with_fingerprint_never_value(engine: PiiEngine) -> None:
    anonymizer = CaseAnonymizer(engine)
    out = anonymizer.data(
        {"m": ["key AKIAIOSFODNN7EXAMPLE", "again AKIAIOSFODNN7EXAMPLE"]}, "input"
    )
    assert out == {"m": ["key <SECRET_AWS_ACCESS_KEY_1>", "again <SECRET_AWS_ACCESS_KEY_1>"]}
    findings = anonymizer.report.secrets
    assert [f.location for f in findings] == ["input.m.0", "input.m.1"]
    assert "AKIA" not in str(anonymizer.report.to_dict())
    assert len(findings[0].fingerprint) == 12


def test_known_production_ids_become_pseudonyms_as_whole_tokens(engine: PiiEngine) -> None:
    anonymizer = CaseAnonymizer(engine, {"sess-9001": "ses_aaaa", "42": "usr_bbbb"})
    out = anonymizer.text("session sess-9001 not sess-90012; 42 days")
    assert out == "session ses_aaaa not sess-90012; 42 days"


def test_allow_list_keeps_company_addresses() -> None:
    engine = pii_engine(AnonymizerConfig(allow=("support@shop.example",)))
    out = CaseAnonymizer(engine).text("mail support@shop.example or me@home.example")
    assert out == "mail support@shop.example or <EMAIL_1>"


def test_anonymizer_config_file_is_validated(tmp_path: Path) -> None:
    (tmp_path / "_anonymize.yaml").write_text(
        "patterns:\n  - {name: CUSTOMER_ID, regex: 'CUST-\\d{8}'}\nphone_regions: [DE, US]\n"
    )
    config = load_anonymizer_config(tmp_path)
    assert config.patterns[0].name == "CUSTOMER_ID"
    assert config.phone_regions == ("DE", "US")
    with pytest.raises(AnonymizeConfigError, match="UPPER_CASE"):
        parse_anonymizer_config({"patterns": [{"name": "cust", "regex": "x"}]})
    with pytest.raises(AnonymizeConfigError, match="invalid regex"):
        parse_anonymizer_config({"patterns": [{"name": "CUST", "regex": "("}]})
    with pytest.raises(AnonymizeConfigError, match="unknown key"):
        parse_anonymizer_config({"paterns": []})


def test_anonymization_works_without_any_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("anonymization tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    engine = PiiEngine(AnonymizerConfig(phone_regions=("US",)))  # built fresh, offline
    out = CaseAnonymizer(engine).text("mail jane@example.co.uk from 10.1.2.3")
    assert out == "mail <EMAIL_1> from <IP_ADDRESS_1>"
