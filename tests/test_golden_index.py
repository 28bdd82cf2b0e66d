"""The store-side case index and coverage (both stores), via the library and the CLI."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from goldenloop.cli import main
from goldenloop.golden.coverage import coverage_from_dir, coverage_from_index
from goldenloop.golden.index import list_indexed_cases, sync_case_dir
from goldenloop.store.base import Store
from goldenloop.store.duckdb import DuckDBStore

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "golden"


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "golden"
    shutil.copytree(EXAMPLES, target)
    return target


def test_sync_adds_updates_and_marks_removed(store: Store, tmp_path: Path) -> None:
    golden = _copy(tmp_path)
    first = sync_case_dir(store, golden)
    assert len(first.added) == 10 and not first.removed and first.set_name == "golden"
    assert sync_case_dir(store, golden).unchanged == first.added
    (golden / "US-01.yaml").unlink()
    text = (golden / "EU-12.yaml").read_text().replace("tier: pro", "tier: enterprise")
    (golden / "EU-12.yaml").write_text(text)
    (golden / "broken.yaml").write_text("id: [\n")
    third = sync_case_dir(store, golden)
    assert third.updated == ["EU-12"] and third.removed == ["US-01"] and third.problems
    assert {c.case_id for c in list_indexed_cases(store)} == set(first.added) - {"US-01"}
    removed = [c for c in list_indexed_cases(store, include_removed=True) if c.removed_at]
    assert [c.case_id for c in removed] == ["US-01"]


def test_coverage_counts_sources_tags_and_production_share(store: Store, tmp_path: Path) -> None:
    sync_case_dir(store, _copy(tmp_path))
    report = coverage_from_index(store)
    assert report.total == 10
    assert report.by_split == {"golden": 9, "holdout": 1}
    assert report.by_source == {"incident": 6, "thumbs-down": 1, "synthetic": 1, "manual": 1,
                                "safety-probe": 1}  # fmt: skip
    assert report.production_sourced == 7 and round(report.production_share, 2) == 0.7
    eu = next(t for t in report.by_tag if t.tag == "eu")
    assert (eu.cases, eu.golden, eu.holdout) == (7, 6, 1)
    assert report.weekly == [("2026-W23", 3, 3), ("2026-W27", 7, 10)]
    assert coverage_from_dir(EXAMPLES).to_dict()["by_tag"] == report.to_dict()["by_tag"]


def test_cli_sync_and_coverage_read_back_from_the_store(tmp_path: Path) -> None:
    db = str(tmp_path / "gl.duckdb")
    synced = CliRunner().invoke(main, ["golden", "sync", str(EXAMPLES), "--db", db])
    assert synced.exit_code == 0 and "10 added" in synced.output
    store = DuckDBStore(db)
    try:
        assert len(list_indexed_cases(store)) == 10
    finally:
        store.close()
    cov = CliRunner().invoke(main, ["golden", "coverage", "--db", db, "--json"])
    assert cov.exit_code == 0 and '"production_share": 0.7' in cov.output
    from_dir = CliRunner().invoke(main, ["golden", "coverage", str(EXAMPLES)])
    assert "10 case(s)" in from_dir.output and "eu" in from_dir.output


def test_index_keeps_promotion_time_across_syncs(store: Store, tmp_path: Path) -> None:
    from goldenloop.golden.casefiles import load_case_dir
    from goldenloop.golden.index import upsert_case

    golden = _copy(tmp_path)
    loaded = load_case_dir(golden).by_id()["EU-12"]
    promoted = datetime(2026, 6, 30, 12, tzinfo=UTC)
    origin = datetime(2026, 6, 29, 14, tzinfo=UTC)
    upsert_case(
        store, loaded, set_name="golden", root=golden, promoted_at=promoted, origin_at=origin
    )
    sync_case_dir(store, golden)
    row = next(c for c in list_indexed_cases(store) if c.case_id == "EU-12")
    assert row.promoted_at == promoted and row.time_to_eval_hours == 22.0
    assert coverage_from_index(store).time_to_eval_median_hours == 22.0
