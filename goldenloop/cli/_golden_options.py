"""Options shared by `promote`, `eval run` and `shadow`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml


def key_values(values: tuple[str, ...], option: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        out[key.strip()] = value
    return out


def criteria_option_values(values: tuple[str, ...]) -> list[dict[str, Any]]:
    """Each value is a YAML/JSON file or inline YAML: one criterion or a list of them."""
    criteria: list[dict[str, Any]] = []
    for value in values:
        path = Path(value)
        try:
            text = path.read_text(encoding="utf-8") if path.is_file() else value
            data = yaml.safe_load(text)
        except (OSError, yaml.YAMLError) as exc:
            raise click.BadParameter(f"{value!r}: {exc}", param_hint="--criteria") from None
        items = data if isinstance(data, list) else [data]
        for item in items:
            if not isinstance(item, dict):
                raise click.BadParameter(
                    f"{value!r}: a criterion is a mapping like '{{type: contains, value: x}}'",
                    param_hint="--criteria",
                )
            criteria.append(item)
    return criteria


def judge_config(url: str | None, model: str | None, api_key: str | None) -> Any:
    if not url:
        return None
    from goldenloop.evals.judge import JudgeConfig

    if not model:
        raise click.UsageError("--judge-url needs --judge-model (or GOLDENLOOP_JUDGE_MODEL)")
    return JudgeConfig(base_url=url, model=model, api_key=api_key)


def judge_options(fn: Any) -> Any:
    fn = click.option("--judge-api-key", envvar="GOLDENLOOP_JUDGE_API_KEY", hidden=True)(fn)
    fn = click.option(
        "--judge-model", envvar="GOLDENLOOP_JUDGE_MODEL", help="Model for llm-judge criteria."
    )(fn)
    fn = click.option(
        "--judge-url",
        envvar="GOLDENLOOP_JUDGE_URL",
        help="OpenAI-compatible base URL for llm-judge criteria (…/v1); key from "
        "GOLDENLOOP_JUDGE_API_KEY.",
    )(fn)
    return fn
