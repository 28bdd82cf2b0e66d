"""Model price table: cost in USD when the app did not send one.

Prices are USD per million tokens (input, output), list prices as published by the
providers. Model names match exactly or by the longest known prefix, so dated snapshots
(``gpt-4o-2024-08-06``) price like their family. Teams override or add models with a
YAML/JSON file (``GOLDENLOOP_PRICES_FILE``)::

    my-finetune: {input: 3.0, output: 12.0}
    gpt-4o: {input: 2.0, output: 8.0}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


#: Maintained list prices (USD per 1M tokens). Update when providers change prices.
DEFAULT_PRICES: dict[str, Price] = {
    # OpenAI
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4.1": Price(2.00, 8.00),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-5": Price(1.25, 10.00),
    "gpt-5-mini": Price(0.25, 2.00),
    "gpt-5-nano": Price(0.05, 0.40),
    "o3": Price(2.00, 8.00),
    "o4-mini": Price(1.10, 4.40),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "text-embedding-3-small": Price(0.02, 0.0),
    "text-embedding-3-large": Price(0.13, 0.0),
    # Anthropic
    "claude-opus-4": Price(15.00, 75.00),
    "claude-sonnet-4": Price(3.00, 15.00),
    "claude-3-7-sonnet": Price(3.00, 15.00),
    "claude-3-5-sonnet": Price(3.00, 15.00),
    "claude-3-5-haiku": Price(0.80, 4.00),
    "claude-haiku-4": Price(1.00, 5.00),
    # Google
    "gemini-2.5-pro": Price(1.25, 10.00),
    "gemini-2.5-flash": Price(0.30, 2.50),
    "gemini-2.0-flash": Price(0.10, 0.40),
    "gemini-1.5-pro": Price(1.25, 5.00),
    # Mistral / open weights on common hosts
    "mistral-large": Price(2.00, 6.00),
    "mistral-small": Price(0.20, 0.60),
    "llama-3.1-70b": Price(0.88, 0.88),
    "llama-3.1-8b": Price(0.18, 0.18),
}


class PriceTable:
    """Looks up prices by exact model name, then by the longest matching prefix."""

    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self._prices = dict(DEFAULT_PRICES if prices is None else prices)
        self._by_length = sorted(self._prices, key=len, reverse=True)
        self._cache: dict[str, Price | None] = {}

    def with_overrides(self, overrides: Mapping[str, Price]) -> PriceTable:
        return PriceTable({**self._prices, **overrides})

    def lookup(self, model: str) -> Price | None:
        try:
            return self._cache[model]
        except KeyError:
            pass
        key = model.lower()
        for prefix in ("openai/", "anthropic/", "google/", "models/"):
            key = key.removeprefix(prefix)
        price = self._prices.get(key)
        if price is None:
            price = next((self._prices[p] for p in self._by_length if key.startswith(p)), None)
        self._cache[model] = price
        return price

    def cost(
        self, model: str | None, input_tokens: int | None, output_tokens: int | None
    ) -> float | None:
        """Cost in USD, or None when the model is unknown or no tokens were reported."""
        if not model or (input_tokens is None and output_tokens is None):
            return None
        price = self.lookup(model)
        if price is None:
            return None
        return price.cost(input_tokens or 0, output_tokens or 0)

    def models(self) -> dict[str, Price]:
        return dict(self._prices)


class PriceFileError(ValueError):
    pass


def load_price_overrides(path: str | Path) -> dict[str, Price]:
    """Read ``{model: {input: X, output: Y}}`` from a YAML or JSON file."""
    import yaml  # here, not at the top: every ingest decode worker imports this module

    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PriceFileError(f"prices_file {file}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise PriceFileError(f"prices_file {file}: not UTF-8 text ({exc.reason})") from None
    try:
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise PriceFileError(f"prices_file {file}: not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PriceFileError(f"prices_file {file}: expected a mapping of model → prices")
    prices: dict[str, Price] = {}
    for model, entry in data.items():
        if not isinstance(entry, dict) or not {"input", "output"} <= set(entry):
            raise PriceFileError(
                f"prices_file {file}: model {model!r} needs 'input' and 'output' (USD per 1M tokens)"
            )
        try:
            price = Price(float(entry["input"]), float(entry["output"]))
        except (TypeError, ValueError):
            raise PriceFileError(
                f"prices_file {file}: model {model!r} prices must be numbers"
            ) from None
        values = (price.input_per_mtok, price.output_per_mtok)
        if any(isinstance(entry[k], bool) for k in ("input", "output")) or not all(
            math.isfinite(v) and v >= 0 for v in values
        ):
            raise PriceFileError(
                f"prices_file {file}: model {model!r} prices must be non-negative numbers"
            )
        prices[str(model).lower()] = price
    return prices


def price_table_for(prices_file: str) -> PriceTable:
    table = PriceTable()
    return table.with_overrides(load_price_overrides(prices_file)) if prices_file else table
