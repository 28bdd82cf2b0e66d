"""Case files on disk: load, validate and write a golden-set directory.

A golden set is a directory in the team's own repository (git is the history) with one
YAML file per case (``*.yaml`` or ``*.yml``, sub-directories allowed). Files whose name
starts with ``_`` are set-level configuration, not cases: ``_quarantine.yaml`` (see
``goldenloop.evals.flaky``) and ``_anonymize.yaml`` (see ``goldenloop.golden.anonymize``).

``validate_case_dir`` names every bad file and field; loading refuses a set with
problems so a runner never grades half a set silently.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from goldenloop.golden.schema import Case


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file: ``field`` is a dotted path (``input.messages.0.role``)."""

    path: str
    field: str
    message: str

    def __str__(self) -> str:
        return (
            f"{self.path}: {self.field}: {self.message}"
            if self.field
            else (f"{self.path}: {self.message}")
        )

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "field": self.field, "message": self.message}


class CaseFileError(ValueError):
    """A case file or a set has problems; ``problems`` names each file and field."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = [str(p) for p in problems[:50]]
        more = f"\n… and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{len(problems)} problem(s):\n" + "\n".join(lines) + more)


@dataclass(frozen=True)
class LoadedCase:
    case: Case
    path: Path
    content_hash: str


@dataclass
class CaseSet:
    root: Path
    cases: list[LoadedCase] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.cases)

    def by_id(self) -> dict[str, LoadedCase]:
        return {c.case.id: c for c in self.cases}

    def select(self, split: str | None = None) -> list[LoadedCase]:
        return [c for c in self.cases if split is None or c.case.split == split]


def case_paths(root: Path) -> Iterator[Path]:
    """Case files under ``root`` in a stable order (``_*`` files and dot-dirs skipped)."""
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and path.suffix in (".yaml", ".yml") and not path.name.startswith("_"):
            yield path


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc)


def parse_case(text: str, display_path: str) -> tuple[Case | None, list[Problem]]:
    """Parse and validate one case file's text."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        return None, [Problem(display_path, where, f"not valid YAML: {exc}")]
    if not isinstance(data, dict):
        return None, [Problem(display_path, "", "a case file must be a YAML mapping")]
    try:
        case = Case.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown field"
            problems.append(Problem(display_path, _field_path(error["loc"]), message))
        return None, problems
    problems = _criteria_problems(case, display_path)
    return (case if not problems else None), problems


def _criteria_problems(case: Case, display_path: str) -> list[Problem]:
    from goldenloop.evals.graders import check_spec

    problems = []
    for i, spec in enumerate(case.criteria):
        for message in check_spec(spec):
            name, _, rest = message.partition(": ")
            field_name = f"criteria.{i}.{name}" if rest else f"criteria.{i}"
            problems.append(Problem(display_path, field_name, rest or message))
    return problems


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def load_case_file(path: Path, *, root: Path | None = None) -> LoadedCase:
    display = str(path.relative_to(root)) if root else str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CaseFileError([Problem(display, "", f"cannot read: {exc}")]) from None
    case, problems = parse_case(text, display)
    if problems or case is None:
        raise CaseFileError(problems)
    return LoadedCase(case, path, content_hash(text))


def scan_case_dir(root: Path) -> tuple[CaseSet, list[Problem]]:
    """Every valid case plus every problem (bad files, duplicate ids, bad config files)."""
    root = Path(root)
    if not root.is_dir():
        return CaseSet(root), [Problem(str(root), "", "not a directory")]
    cases = CaseSet(root)
    problems: list[Problem] = []
    first_path: dict[str, str] = {}
    for path in case_paths(root):
        try:
            loaded = load_case_file(path, root=root)
        except CaseFileError as exc:
            problems.extend(exc.problems)
            continue
        rel = str(path.relative_to(root))
        if loaded.case.id in first_path:
            problems.append(
                Problem(
                    rel,
                    "id",
                    f"duplicate id {loaded.case.id!r} (also in {first_path[loaded.case.id]})",
                )
            )
            continue
        first_path[loaded.case.id] = rel
        cases.cases.append(loaded)
    problems.extend(_config_problems(root))
    return cases, problems


def _config_problems(root: Path) -> list[Problem]:
    from goldenloop.evals.flaky import quarantine_problems
    from goldenloop.golden.anonymize import anonymize_config_problems

    return anonymize_config_problems(root) + quarantine_problems(root)


def validate_case_dir(root: Path) -> list[Problem]:
    """Every problem in a golden-set directory (empty when the set is valid)."""
    return scan_case_dir(root)[1]


def load_case_dir(root: Path) -> CaseSet:
    """All cases of a directory; raises ``CaseFileError`` naming every problem."""
    cases, problems = scan_case_dir(root)
    if problems:
        raise CaseFileError(problems)
    return cases


class _CaseDumper(yaml.SafeDumper):
    pass


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_CaseDumper.add_representer(str, _str_representer)


def dump_case(case: Case) -> str:
    """The case as YAML, keys in the documented order, multi-line text as blocks."""
    return yaml.dump(
        case.to_yaml_dict(), Dumper=_CaseDumper, sort_keys=False, allow_unicode=True, width=100
    )


def case_file_path(root: Path, case_id: str) -> Path:
    return Path(root) / f"{case_id}.yaml"


def write_case(
    case: Case,
    root: Path,
    *,
    overwrite: bool = False,
    text: str | None = None,
    check_ids: bool = True,
) -> Path:
    """Write ``case`` to ``ROOT/<id>.yaml``; refuses to replace a file unless ``overwrite``.

    An id already used by another file of the set is refused too (``check_ids=False``
    skips that scan when the caller already knows the set's ids).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = case_file_path(root, case.id)
    if not overwrite:
        if path.exists():
            raise FileExistsError(f"{path} exists; choose another id or pass overwrite")
        existing = {c.case.id: c.path for c in scan_case_dir(root)[0].cases} if check_ids else {}
        if case.id in existing:
            raise FileExistsError(f"case id {case.id!r} is already used by {existing[case.id]}")
    path.write_text(text if text is not None else dump_case(case), encoding="utf-8")
    return path


def next_case_id(root: Path, prefix: str = "case") -> str:
    """``PREFIX-N`` with N one more than the largest used for that prefix in the set."""
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)$")
    used = [0]
    if Path(root).is_dir():
        for loaded in scan_case_dir(Path(root))[0].cases:
            match = pattern.match(loaded.case.id)
            if match:
                used.append(int(match.group(1)))
    return f"{prefix}-{max(used) + 1}"


def case_from_data(data: dict[str, Any], display_path: str = "<case>") -> Case:
    """Validate case data built in code; raises ``CaseFileError`` naming each field."""
    case, problems = parse_case(yaml.safe_dump(data, allow_unicode=True), display_path)
    if problems or case is None:
        raise CaseFileError(problems)
    return case
