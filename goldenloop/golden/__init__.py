"""The golden set: case files, anonymized promotion, the store-side index, coverage and
the built-in injection probes (see docs/golden-set.md)."""

from __future__ import annotations

from goldenloop.golden.casefiles import (
    CaseFileError,
    CaseSet,
    LoadedCase,
    Problem,
    load_case_dir,
    validate_case_dir,
    write_case,
)
from goldenloop.golden.schema import Case

__all__ = [
    "Case",
    "CaseFileError",
    "CaseSet",
    "LoadedCase",
    "Problem",
    "load_case_dir",
    "validate_case_dir",
    "write_case",
]
