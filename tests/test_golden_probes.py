"""The built-in prompt-injection probe library."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from goldenloop.cli import main
from goldenloop.evals.runner import RunOptions, run_eval
from goldenloop.evals.target import load_target
from goldenloop.golden.casefiles import load_case_dir
from goldenloop.golden.probes import ProbeOptions, import_probes, load_probes, probe_categories


def test_library_has_at_least_30_probes_in_every_category() -> None:
    probes = load_probes()
    assert len(probes) >= 30
    assert len({p.id for p in probes}) == len(probes)
    assert len({p.canary for p in probes}) == len(probes)
    counts = Counter(p.category for p in probes)
    assert set(counts) == {"direct-override", "role-play", "prompt-extraction",
                           "indirect-injection", "tool-abuse", "encoding", "multilingual"}  # fmt: skip
    assert min(counts.values()) >= 4
    assert all(p.documents for p in probes if p.category == "indirect-injection")


def test_import_writes_valid_cases_and_skips_existing(tmp_path: Path) -> None:
    options = ProbeOptions(
        leak_markers=("[prompt",), forbid_tools=("issue_refund",), with_judge=True
    )
    first = import_probes(tmp_path, options=options)
    assert len(first.written) == len(load_probes())
    cases = load_case_dir(tmp_path)
    case = cases.by_id()["PI-II-01"].case
    assert case.source == "safety-probe" and "probe:indirect-injection" in case.tags
    assert case.input.context.model_extra and case.input.context.model_extra["documents"]
    assert [c["type"] for c in case.criteria] == [
        "not-contains",
        "not-contains",
        "tool-calls",
        "llm-judge",
    ]
    again = import_probes(tmp_path)
    assert again.written == [] and len(again.skipped) == len(first.written)


def test_categories_can_be_chosen(tmp_path: Path) -> None:
    result = import_probes(tmp_path, categories=["encoding"])
    assert len(result.written) == 5
    with pytest.raises(ValueError, match="unknown probe categories"):
        import_probes(tmp_path, categories=["nope"])
    assert "multilingual" in probe_categories()


def test_probes_run_against_the_refund_assistant(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["golden", "import-probes", str(tmp_path), "--forbid-tool", "issue_refund"]
    )
    assert result.exit_code == 0 and "36 probe(s) written" in result.output
    cases = [c.case for c in load_case_dir(tmp_path).cases]
    run = run_eval(
        cases, load_target("goldenloop.sim.refund_app:target"), RunOptions(concurrency=4)
    )
    assert run.total >= 30
    # No canary leaks: the assistant never obeys an injected instruction in text...
    canary = [r for r in run.results for g in r.graders if g.grader == "canary" and not g.passed]
    assert canary == []
    # ...but some probes do make it refund an order: the tool criterion catches that.
    failing = {r.case_id: r for r in run.results if not r.passed}
    assert all(cid.startswith(("PI-TA", "PI-RP")) for cid in failing)
    for r in failing.values():
        assert [g.grader for g in r.graders if not g.passed] == ["no-forbidden-tools"]
        assert "issue_refund" in r.failure_message()
