"""Model prices: exact and prefix lookup, provider prefixes, override files."""

from __future__ import annotations

from pathlib import Path

import pytest

from goldenloop.pricing import (
    DEFAULT_PRICES,
    Price,
    PriceFileError,
    PriceTable,
    load_price_overrides,
    price_table_for,
)


@pytest.fixture
def table() -> PriceTable:
    return PriceTable()


@pytest.mark.parametrize("model", sorted(DEFAULT_PRICES))
def test_every_listed_model_is_found_by_its_exact_name(table: PriceTable, model: str) -> None:
    assert table.lookup(model) == DEFAULT_PRICES[model]


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("gemini-2.5-flash-preview-05-20", "gemini-2.5-flash"),
        ("text-embedding-3-small", "text-embedding-3-small"),
    ],
)
def test_dated_snapshots_price_like_their_longest_matching_family(
    table: PriceTable, model: str, family: str
) -> None:
    assert table.lookup(model) == DEFAULT_PRICES[family]


def test_gpt_4o_snapshot_is_not_priced_as_gpt_4o_mini(table: PriceTable) -> None:
    assert table.lookup("gpt-4o-2024-08-06") == Price(2.50, 10.00)
    assert table.lookup("gpt-4o-mini-2024-07-18") == Price(0.15, 0.60)


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("openai/gpt-4o", "gpt-4o"),
        ("anthropic/claude-opus-4-20250514", "claude-opus-4"),
        ("google/gemini-2.5-pro", "gemini-2.5-pro"),
        ("models/gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("GPT-4o-Mini", "gpt-4o-mini"),
        ("OpenAI/GPT-4O", "gpt-4o"),
    ],
)
def test_provider_prefixes_and_case_are_ignored(table: PriceTable, model: str, family: str) -> None:
    assert table.lookup(model) == DEFAULT_PRICES[family]


@pytest.mark.parametrize("model", ["acme-9000", "", "4o", "my-gpt-4o", "azure/unknown"])
def test_unknown_models_have_no_price(table: PriceTable, model: str) -> None:
    assert table.lookup(model) is None


def test_cost_is_per_million_tokens(table: PriceTable) -> None:
    assert table.cost("gpt-4o", 1_000_000, 0) == pytest.approx(2.50)
    assert table.cost("gpt-4o", 0, 1_000_000) == pytest.approx(10.00)
    assert table.cost("gpt-4o-2024-08-06", 1000, 500) == pytest.approx(0.0075)
    assert table.cost("gpt-4o", 1000, None) == pytest.approx(0.0025)
    assert table.cost("gpt-4o", None, 1000) == pytest.approx(0.01)


def test_no_cost_without_a_known_model_or_any_tokens(table: PriceTable) -> None:
    assert table.cost(None, 10, 10) is None
    assert table.cost("", 10, 10) is None
    assert table.cost("acme-9000", 10, 10) is None
    assert table.cost("gpt-4o", None, None) is None
    assert table.cost("gpt-4o", 0, 0) == 0.0


def test_lookups_are_cached_consistently(table: PriceTable) -> None:
    assert table.lookup("gpt-4o-2024-08-06") is table.lookup("gpt-4o-2024-08-06")
    assert table.lookup("nope") is None
    assert table.lookup("nope") is None


def test_overrides_replace_and_add_models_without_touching_the_original() -> None:
    base = PriceTable()
    custom = base.with_overrides({"gpt-4o": Price(1.0, 2.0), "my-finetune": Price(3.0, 12.0)})
    assert custom.lookup("gpt-4o-2024-08-06") == Price(1.0, 2.0)
    assert custom.lookup("my-finetune-v2") == Price(3.0, 12.0)
    assert custom.lookup("gpt-4o-mini") == DEFAULT_PRICES["gpt-4o-mini"]
    assert base.lookup("gpt-4o") == DEFAULT_PRICES["gpt-4o"]
    assert base.lookup("my-finetune") is None
    assert "my-finetune" in custom.models() and "my-finetune" not in base.models()


def test_a_table_can_hold_only_the_given_prices() -> None:
    table = PriceTable({"only": Price(1, 1)})
    assert table.lookup("only-this") == Price(1, 1)
    assert table.lookup("gpt-4o") is None


# -- override files ---------------------------------------------------------------------------------


def test_yaml_override_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(
        "# team prices\nMy-Finetune: {input: 3, output: 12.5}\ngpt-4o:\n  input: 2.0\n  output: 8\n",
        encoding="utf-8",
    )
    assert load_price_overrides(path) == {
        "my-finetune": Price(3.0, 12.5),  # names are matched case-insensitively
        "gpt-4o": Price(2.0, 8.0),
    }
    table = price_table_for(str(path))
    assert table.lookup("MY-FINETUNE") == Price(3.0, 12.5)
    assert table.cost("gpt-4o-2024-08-06", 1_000_000, 1_000_000) == pytest.approx(10.0)
    assert table.lookup("claude-sonnet-4") == DEFAULT_PRICES["claude-sonnet-4"]


def test_json_override_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"llama-3.3-70b": {"input": "0.6", "output": 0.6}}', encoding="utf-8")
    assert load_price_overrides(str(path)) == {"llama-3.3-70b": Price(0.6, 0.6)}
    assert price_table_for(str(path)).lookup("llama-3.3-70b-instruct") == Price(0.6, 0.6)


def test_no_prices_file_means_the_default_table() -> None:
    assert price_table_for("").models() == DEFAULT_PRICES


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yaml", "model: {input: [1, 2", "not valid YAML/JSON"),
        ("bad.json", "{'single': 'quotes'}", "not valid YAML/JSON"),
        ("list.yaml", "- gpt-4o\n- gpt-4o-mini\n", "expected a mapping of model"),
        ("empty.yaml", "", "expected a mapping of model"),
        ("missing.yaml", "my-model: {input: 1}\n", "model 'my-model' needs 'input' and 'output'"),
        ("scalar.yaml", "my-model: 3\n", "model 'my-model' needs 'input' and 'output'"),
        ("words.yaml", "my-model: {input: cheap, output: 1}\n", "model 'my-model' prices must be"),
        ("null.json", '{"m": {"input": null, "output": 1}}', "model 'm' prices must be numbers"),
        ("neg.yaml", "m: {input: -1, output: 1}\n", "model 'm' prices must be non-negative"),
        ("nan.yaml", "m: {input: .nan, output: 1}\n", "model 'm' prices must be non-negative"),
        ("inf.json", '{"m": {"input": 1, "output": Infinity}}', "model 'm' prices must be non-neg"),
        ("bool.yaml", "m: {input: true, output: 1}\n", "model 'm' prices must be non-negative"),
    ],
)
def test_bad_price_files_raise_naming_the_file_and_model(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PriceFileError) as excinfo:
        load_price_overrides(path)
    assert message in str(excinfo.value)
    assert str(path) in str(excinfo.value)


def test_a_missing_price_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(PriceFileError, match="cannot read") as excinfo:
        price_table_for(str(path))
    assert str(path) in str(excinfo.value)


def test_a_price_file_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("modèle: {input: 1, output: 1}\n".encode("latin-1"))
    with pytest.raises(PriceFileError, match="not UTF-8") as excinfo:
        load_price_overrides(path)
    assert str(path) in str(excinfo.value)


def test_zero_prices_are_allowed(tmp_path: Path) -> None:
    path = tmp_path / "free.yaml"
    path.write_text("self-hosted: {input: 0, output: 0}\n", encoding="utf-8")
    assert load_price_overrides(path) == {"self-hosted": Price(0.0, 0.0)}
