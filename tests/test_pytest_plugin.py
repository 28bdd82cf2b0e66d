"""The pytest plugin: one test item per case, in a nested pytest run (pytester)."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "golden"
TARGET = "goldenloop.sim.refund_app:target"


def _plugin_args() -> list[str]:
    # Once the pytest11 entry point is installed, loading it again with -p is an error.
    registered = any(ep.name == "goldenloop" for ep in entry_points(group="pytest11"))
    return [] if registered else ["-p", "goldenloop.evals.pytest_plugin"]


class _Result:
    def __init__(self, outcome: pytest.RunResult) -> None:
        self.returncode = int(outcome.ret)
        self.stdout = str(outcome.stdout)
        self.stderr = str(outcome.stderr)


def _pytest(pytester: pytest.Pytester, *args: str) -> _Result:
    return _Result(
        pytester.runpytest(
            *_plugin_args(), "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-rA", *args
        )
    )


def test_one_passing_item_per_case_with_the_good_prompt(pytester: pytest.Pytester) -> None:
    result = _pytest(pytester, "--goldenloop", str(EXAMPLES), "--goldenloop-target", TARGET,
                     "--goldenloop-context", "prompt_version=a1c0")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "10 passed" in result.stdout
    assert "golden::EU-12" in result.stdout and "golden::SAFE-01" in result.stdout


def test_bad_prompt_fails_the_eu_items_with_grader_details(pytester: pytest.Pytester) -> None:
    result = _pytest(pytester, "--goldenloop", str(EXAMPLES), "--goldenloop-target", TARGET,
                     "--goldenloop-context", "prompt_version=a9f2")  # fmt: skip
    assert result.returncode == 1
    assert "7 failed, 3 passed" in result.stdout
    assert "golden case EU-12 failed:" in result.stdout
    assert "withdrawal-period: missing ['14 days']" in result.stdout


def test_selection_split_markers_and_quarantine(pytester: pytest.Pytester) -> None:
    golden = pytester.path / "golden"
    golden.mkdir()
    for name in ("EU-12.yaml", "EU-18.yaml", "US-01.yaml"):
        (golden / name).write_text((EXAMPLES / name).read_text(encoding="utf-8"), encoding="utf-8")
    (golden / "_quarantine.yaml").write_text("- {id: EU-12, reason: known bad prompt}\n")
    common = ["--goldenloop", str(golden), "--goldenloop-target", TARGET,
              "--goldenloop-context", "prompt_version=a9f2"]  # fmt: skip
    result = _pytest(pytester, *common, "--goldenloop-split", "golden")
    assert result.returncode == 0, result.stdout
    assert (
        "1 passed, 1 xfailed" in result.stdout and "quarantined: known bad prompt" in result.stdout
    )
    selected = _pytest(
        pytester, *common, "-m", "goldenloop_holdout or goldenloop_golden", "-k", "not US"
    )
    assert "1 failed, 1 deselected, 1 xfailed" in selected.stdout, selected.stdout


def test_missing_target_and_bad_set_are_usage_errors(pytester: pytest.Pytester) -> None:
    no_target = _pytest(pytester, "--goldenloop", str(EXAMPLES))
    assert no_target.returncode == 4
    assert "--goldenloop needs --goldenloop-target" in no_target.stderr
    bad = pytester.path / "bad"
    bad.mkdir()
    (bad / "x.yaml").write_text("id: X\nsource: nowhere\n")
    invalid = _pytest(pytester, "--goldenloop", str(bad), "--goldenloop-target", TARGET)
    assert invalid.returncode == 4 and "x.yaml: source" in invalid.stderr


def test_plugin_is_inert_without_the_option(pytester: pytest.Pytester) -> None:
    (pytester.path / "test_plain.py").write_text("def test_ok():\n    assert True\n")
    result = _pytest(pytester)
    assert result.returncode == 0 and "1 passed" in result.stdout
