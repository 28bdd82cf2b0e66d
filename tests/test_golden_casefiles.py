"""The case schema and case files: validation names every bad file and field."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from goldenloop.cli import main
from goldenloop.golden.casefiles import (
    CaseFileError,
    dump_case,
    load_case_dir,
    next_case_id,
    scan_case_dir,
    validate_case_dir,
    write_case,
)
from goldenloop.golden.schema import Case, source_kind

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "golden"
GOOD = """id: T-1
input:
  messages:
    - {role: user, content: "What is the refund policy?"}
  context: {locale: de-DE, flags: {eu_banner: on}}
criteria:
  - {type: contains, value: "14 days"}
tags: [policy]
source: thumbs-down-2026-06-29
split: holdout
created: 2026-06-30
"""


def test_the_example_set_is_valid() -> None:
    cases = load_case_dir(EXAMPLES)
    assert len(cases) >= 10
    assert {"EU-12", "EU-18", "SAFE-01"} <= set(cases.by_id())
    assert [c.case.id for c in cases.select("holdout")] == ["EU-18"]


def test_a_valid_case_round_trips(tmp_path: Path) -> None:
    (tmp_path / "T-1.yaml").write_text(GOOD)
    loaded = load_case_dir(tmp_path).by_id()["T-1"]
    case = loaded.case
    assert case.input.context.flags == {"eu_banner": "on"}  # unquoted YAML `on`
    assert case.source_kind == "thumbs-down" and case.production_sourced
    assert case.split == "holdout" and case.created == date(2026, 6, 30)
    again = tmp_path / "again"
    path = write_case(case, again)
    assert path.name == "T-1.yaml"
    assert load_case_dir(again).by_id()["T-1"].case == case
    assert dump_case(case).splitlines()[0] == "id: T-1"
    assert case.target_input()["case_id"] == "T-1"


def test_validation_names_every_bad_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text(GOOD)
    (tmp_path / "dup.yaml").write_text(GOOD)
    (tmp_path / "broken.yaml").write_text("id: [unclosed\n")
    (tmp_path / "list.yaml").write_text("- 1\n")
    sub = tmp_path / "eu"
    sub.mkdir()
    (sub / "bad.yml").write_text(
        GOOD.replace("role: user", "role: customer")
        .replace("source: thumbs-down-2026-06-29", "source: twitter")
        .replace("tags: [policy]", "tags: [policy]\nowner: ana")
        .replace('{type: contains, value: "14 days"}', "{type: contians, value: x}")
        .replace("id: T-1", "id: T-2")
    )
    (tmp_path / "_quarantine.yaml").write_text("- {id: T-1}\n")
    problems = {(p.path, p.field) for p in validate_case_dir(tmp_path)}
    assert ("dup.yaml", "id") in problems or ("ok.yaml", "id") in problems
    assert ("broken.yaml", "line 1") in problems or any(p[0] == "broken.yaml" for p in problems)
    assert ("list.yaml", "") in problems
    assert ("eu/bad.yml", "input.messages.0.role") in problems
    assert ("eu/bad.yml", "source") in problems
    assert ("eu/bad.yml", "owner") in problems
    assert ("_quarantine.yaml", "") in problems
    with pytest.raises(CaseFileError) as error:
        load_case_dir(tmp_path)
    assert "eu/bad.yml: input.messages.0.role" in str(error.value)


def test_grader_parameters_are_validated(tmp_path: Path) -> None:
    (tmp_path / "g.yaml").write_text(
        GOOD.replace(
            '{type: contains, value: "14 days"}',
            "{type: contians, value: x}\n  - {type: regex, pattern: '('}\n  - {type: exact}",
        )  # fmt: skip
    )
    problems = {(p.field, p.message.split(";")[0]) for p in scan_case_dir(tmp_path)[1]}
    fields = {f for f, _ in problems}
    assert {"criteria.0.type", "criteria.1.pattern", "criteria.2.value"} <= fields


def test_write_refuses_to_replace_or_reuse_an_id(tmp_path: Path) -> None:
    (tmp_path / "other-name.yaml").write_text(GOOD)
    case = Case.model_validate({**_data(), "id": "T-1"})
    with pytest.raises(FileExistsError, match="already used by"):
        write_case(case, tmp_path)
    write_case(case, tmp_path / "x")
    with pytest.raises(FileExistsError):
        write_case(case, tmp_path / "x")
    assert write_case(case, tmp_path / "x", overwrite=True).exists()


def test_generated_ids_count_up(tmp_path: Path) -> None:
    assert next_case_id(tmp_path, "case") == "case-1"
    write_case(Case.model_validate({**_data(), "id": "case-7"}), tmp_path)
    assert next_case_id(tmp_path, "case") == "case-8"


def test_source_kinds() -> None:
    assert source_kind("incident-INC-7") == "incident"
    assert source_kind("drift-2026-W31") == "drift"
    assert source_kind("safety-probe") == "safety-probe"


def test_cli_validate_exit_codes(tmp_path: Path) -> None:
    ok = CliRunner().invoke(main, ["golden", "validate", str(EXAMPLES)])
    assert ok.exit_code == 0 and "0 problem(s)" in ok.output
    (tmp_path / "bad.yaml").write_text(GOOD.replace("split: holdout", "split: training"))
    bad = CliRunner().invoke(main, ["golden", "validate", str(tmp_path), "--json"])
    assert bad.exit_code == 1
    assert '"field": "split"' in bad.output


def _data() -> dict[str, object]:
    return {"input": {"messages": [{"role": "user", "content": "hi"}]},
            "criteria": [{"type": "contains", "value": "x"}], "source": "manual",
            "created": "2026-07-01"}  # fmt: skip
