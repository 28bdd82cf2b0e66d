"""Rule configuration from YAML: defaults, overrides, and errors that name the file,
line, rule and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from goldenloop.flags import ConfigError, load_config, parse_config, save_config, saved_config
from goldenloop.flags.rules import RULES
from goldenloop.store.base import Store


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "rules.yaml")
    return str(info.value)


def test_empty_config_runs_every_registered_rule_with_defaults() -> None:
    config = parse_config("", "rules.yaml")
    assert [r.name for r in config.rules] == list(RULES)
    streak = config.rule("tool_error_streak")
    assert streak is not None and streak.rule.min_streak == 2  # type: ignore[attr-defined]
    assert config.rule("thumbs_down").policy.daily_cap == 1000  # type: ignore[union-attr]
    assert config.queue.top_n == 25 and config.queue.p0_target_hours == 72


def test_overrides_set_parameters_policy_and_defaults() -> None:
    config = parse_config(
        """
defaults: {daily_cap: 50}
rules:
  tool_error_streak: {min_streak: 3, sample_rate: 0.5}
  cost_p95: {enabled: false, window_days: 14}
  rephrase:
    threshold: 0.75
    severity: 3
queue:
  top_n: 10
  tier_weights: {free: 1, enterprise: 20}
notify:
  - {type: webhook, url: "http://127.0.0.1:9/hook", headers: {X-Token: abc}}
""",
        "rules.yaml",
    )
    streak = config.rule("tool_error_streak")
    assert streak is not None
    assert streak.rule.min_streak == 3  # type: ignore[attr-defined]
    assert streak.policy.sample_rate == 0.5 and streak.policy.daily_cap == 50
    assert config.rule("cost_p95").policy.enabled is False  # type: ignore[union-attr]
    assert config.rule("rephrase").severity == 3  # type: ignore[union-attr]
    assert config.queue.weight_of("enterprise") == 20.0 and config.queue.weight_of(None) == 1.0
    assert config.notify[0].type == "webhook"
    assert config.to_dict()["notify"][0]["headers"] == {"X-Token": "abc"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rules:\n  tool_eror_streak: {}\n",
         "rules.yaml line 2: rules.tool_eror_streak: unknown rule (did you mean 'tool_error_streak'?)"),
        ("rules:\n  tool_error_streak:\n    min_streak: two\n",
         "rules.yaml line 3: rules.tool_error_streak.min_streak: must be an integer, got 'two'"),
        ("rules:\n  tool_error_streak:\n    min_streak: 1\n",
         "rules.yaml line 3: rules.tool_error_streak.min_streak: must be at least 2, got 1"),
        ("rules:\n  rephrase:\n    treshold: 0.5\n",
         "rules.yaml line 3: rules.rephrase.treshold: unknown key (did you mean 'threshold'?)"),
        ("rules:\n  rephrase:\n    sample_rate: 1.5\n",
         "rules.yaml line 3: rules.rephrase.sample_rate: must be in (0, 1], got 1.5"),
        ("rules:\n  abandon: {signals: [error, typo]}\n",
         "rules.abandon.signals: unknown ['typo']"),
        ("rules:\n  judge_low: {threshold: 2}\n",
         "rules.judge_low.threshold: must be between 0 and 1, got 2.0"),
        ("rules:\n  thumbs_down:\n    p0: [{project: '*billing*'}]\n",
         "rules.thumbs_down.p0: entry 1 needs 'category'"),
        ("rules:\n  tool_error_streak: {within: week}\n",
         "rules.tool_error_streak.within: must be one of turn, session, got 'week'"),
        ("defaults: {daily_cap: -1}\n", "rules.yaml line 1: defaults.daily_cap: must be 0 or more, got -1"),
        ("rulez: {}\n", "rules.yaml line 1: rulez: unknown section (did you mean 'rules'?)"),
        ("queue: {refresh_hour: 25}\n", "queue.refresh_hour: must be 0–23, got 25"),
        ("notify:\n  - {type: webhok, url: 'http://x'}\n",
         "rules.yaml line 2: notify.0.type: unknown notifier 'webhok' (did you mean 'webhook'?)"),
        ("notify:\n  - {type: webhook, url: 'ftp://x'}\n",
         "notify.0: url: a webhook needs an http(s) URL, got 'ftp://x'"),
        ("rules: [a, b]\n", "rules.yaml line 1: rules: must be a mapping, got list"),
        ("rules:\n  x: [\n", "rules.yaml line 3: not valid YAML"),
        ("plugins: [no_such_module_xyz]\n", "plugins.0: cannot import 'no_such_module_xyz'"),
    ],
)  # fmt: skip
def test_bad_config_names_file_line_rule_and_key(text: str, expected: str) -> None:
    assert expected in _error(text)


def test_load_config_reports_a_missing_file_clearly(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read rule config .*missing.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_saved_config_is_what_the_server_loop_uses(store: Store) -> None:
    assert saved_config(store).source == "defaults"
    save_config(store, "rules:\n  rephrase: {threshold: 0.8}\n", "team-rules.yaml")
    config = saved_config(store)
    assert config.rule("rephrase").rule.threshold == 0.8  # type: ignore[union-attr]
    assert "team-rules.yaml" in config.source
    with pytest.raises(ConfigError):
        save_config(store, "rules:\n  rephrase: {threshold: 3}\n", "bad.yaml")
    assert saved_config(store).rule("rephrase").rule.threshold == 0.8  # type: ignore[union-attr]
