"""pytest plugin: run a golden set as part of an app's existing test suite.

::

    pytest --goldenloop golden/ --goldenloop-target myapp.llm:answer_case

collects one test item per case (``golden/::EU-12``), runs the target and grades the
answer with the case's criteria; a failing criterion fails the test with every
grader's detail. Quarantined cases (``_quarantine.yaml``) are marked ``xfail``, so they
are reported but never fail the build. ``-k EU-`` and ``-m`` work as usual; the items
carry the markers ``goldenloop`` and ``goldenloop_golden`` or ``goldenloop_holdout``.

Registered through the ``pytest11`` entry point ``goldenloop``; without installing the
package use ``-p goldenloop.evals.pytest_plugin``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_OPTIONS = "goldenloop"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("goldenloop", "goldenloop golden-set evals")
    group.addoption(
        "--goldenloop",
        metavar="DIR",
        action="append",
        default=[],
        help="Golden-set directory to collect, one test item per case (repeatable).",
    )
    group.addoption(
        "--goldenloop-target",
        metavar="MODULE:FUNCTION",
        help="Python callable that answers a case input.",
    )
    group.addoption(
        "--goldenloop-target-url",
        metavar="URL",
        help="HTTP endpoint that answers a case input (POST JSON).",
    )
    group.addoption(
        "--goldenloop-split",
        choices=("golden", "holdout"),
        help="Only cases of this split (default: all).",
    )
    group.addoption(
        "--goldenloop-repeat",
        type=int,
        default=1,
        metavar="N",
        help="Run each case N times; a case passes only if every attempt passes.",
    )
    group.addoption(
        "--goldenloop-context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Set a context value on every case, e.g. prompt_version=a1c0.",
    )
    group.addoption(
        "--goldenloop-judge-url",
        default=os.environ.get("GOLDENLOOP_JUDGE_URL"),
        help="OpenAI-compatible base URL for llm-judge criteria.",
    )
    group.addoption("--goldenloop-judge-model",
                    default=os.environ.get("GOLDENLOOP_JUDGE_MODEL"),
                    help="Model name for llm-judge criteria.")  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "goldenloop: a golden-set case collected by goldenloop")
    config.addinivalue_line("markers", "goldenloop_golden: a case of the golden split")
    config.addinivalue_line("markers", "goldenloop_holdout: a case of the holdout split")


def _context(values: list[str]) -> dict[str, str]:
    context = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise pytest.UsageError(f"--goldenloop-context expects KEY=VALUE, got {item!r}")
        context[key.strip()] = value
    return context


class GoldenSet(pytest.Collector):
    """A golden-set directory: its children are the cases."""

    def __init__(self, *, set_root: Path, settings: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.set_root = set_root
        self.settings = settings

    def collect(self) -> Iterator[pytest.Item]:
        from goldenloop.evals.flaky import QUARANTINE_FILE, load_quarantine
        from goldenloop.golden.casefiles import CaseFileError, load_case_dir

        try:
            cases = load_case_dir(self.set_root)
        except CaseFileError as exc:
            raise pytest.UsageError(f"golden set {self.set_root} is invalid: {exc}") from None
        quarantine = load_quarantine(self.set_root / QUARANTINE_FILE)
        split = self.settings["split"]
        for loaded in cases.select(split):
            item = GoldenCaseItem.from_parent(self, name=loaded.case.id, loaded=loaded)
            item.add_marker(pytest.mark.goldenloop)
            item.add_marker(getattr(pytest.mark, f"goldenloop_{loaded.case.split}"))
            reason = quarantine.reason(loaded.case.id)
            if reason:
                item.add_marker(pytest.mark.xfail(reason=f"quarantined: {reason}", strict=False))
            yield item


class GoldenCaseFailure(Exception):
    pass


class GoldenCaseItem(pytest.Item):
    def __init__(self, *, loaded: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loaded = loaded
        self.user_properties.append(("tags", ",".join(loaded.case.tags)))

    def runtest(self) -> None:
        from goldenloop.evals.runner import run_attempt

        settings: dict[str, Any] = self.parent.settings  # type: ignore[union-attr]
        target = _target(self.config)
        attempts = [
            run_attempt(
                self.loaded.case, target, judge=settings["judge"], context=settings["context"]
            )  # fmt: skip
            for _ in range(settings["repeat"])
        ]
        failed = [a for a in attempts if not a.passed]
        if failed:
            attempt = failed[0]
            lines = (
                [attempt.error]
                if attempt.error
                else [f"{g.grader}: {g.detail}" for g in attempt.grades if not g.passed]
            )
            if len(attempts) > 1:
                lines.append(f"passed {len(attempts) - len(failed)} of {len(attempts)} attempts"
                             + (" (flaky)" if len(failed) < len(attempts) else ""))  # fmt: skip
            raise GoldenCaseFailure("\n".join(line for line in lines if line))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, GoldenCaseFailure):
            return f"golden case {self.name} failed:\n{excinfo.value}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.loaded.path, 0, f"golden case {self.name}"


def _target(config: pytest.Config) -> Any:
    cached = config.stash.get(_TARGET_KEY, None)
    if cached is not None:
        return cached
    from goldenloop.evals.target import TargetError, load_target

    try:
        target = load_target(
            config.getoption("--goldenloop-target"), url=config.getoption("--goldenloop-target-url")
        )
    except TargetError as exc:
        raise pytest.UsageError(f"goldenloop: {exc}") from None
    config.stash[_TARGET_KEY] = target
    return target


_TARGET_KEY = pytest.StashKey[Any]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    dirs: list[str] = config.getoption("--goldenloop")
    if not dirs:
        return
    if not (config.getoption("--goldenloop-target") or config.getoption("--goldenloop-target-url")):
        raise pytest.UsageError("--goldenloop needs --goldenloop-target or --goldenloop-target-url")
    judge = None
    if config.getoption("--goldenloop-judge-url"):
        from goldenloop.evals.judge import JudgeConfig

        judge = JudgeConfig(
            base_url=config.getoption("--goldenloop-judge-url"),
            model=config.getoption("--goldenloop-judge-model") or "gpt-4o-mini",
            api_key=os.environ.get("GOLDENLOOP_JUDGE_API_KEY"),
        )
    repeat = config.getoption("--goldenloop-repeat")
    if repeat < 1:
        raise pytest.UsageError("--goldenloop-repeat must be at least 1")
    settings = {
        "split": config.getoption("--goldenloop-split"),
        "repeat": repeat,
        "context": _context(config.getoption("--goldenloop-context")),
        "judge": judge,
    }
    for directory in dirs:
        root = Path(directory).resolve()
        if not root.is_dir():
            raise pytest.UsageError(f"--goldenloop {directory}: not a directory")
        collector = GoldenSet.from_parent(
            session, name=directory, path=root, nodeid=directory, set_root=root, settings=settings
        )
        items.extend(collector.collect())
