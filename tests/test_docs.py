"""Docs cannot drift: every CLI command, setting and route must be documented."""

from __future__ import annotations

import re
from pathlib import Path

import click

from goldenloop.cli import main
from goldenloop.config import SETTINGS
from goldenloop.web.app import ROUTES

ROOT = Path(__file__).resolve().parent.parent


def _docs_text() -> str:
    parts = [(ROOT / "README.md").read_text(encoding="utf-8")]
    parts += [p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md"))]
    return "\n".join(parts)


def _command_paths(group: click.Group, prefix: str = "goldenloop") -> list[str]:
    paths = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        paths.append(path)
        if isinstance(command, click.Group):
            paths.extend(_command_paths(command, path))
    return paths


def test_every_cli_command_is_documented() -> None:
    docs = _docs_text()
    missing = [path for path in _command_paths(main) if f"`{path}" not in docs]
    assert not missing, f"undocumented CLI commands: {missing}"


def test_every_command_has_help_text() -> None:
    def walk(group: click.Group) -> list[str]:
        bad = []
        for name, command in group.commands.items():
            if not (command.help or "").strip():
                bad.append(name)
            if isinstance(command, click.Group):
                bad.extend(walk(command))
        return bad

    assert not walk(main)


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [s.env_var for s in SETTINGS if f"| `{s.env_var}` |" not in readme]
    assert not missing, f"settings missing from the README table: {missing}"


def test_every_route_is_in_the_api_docs() -> None:
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    paths = [re.sub(r":\w+}", "}", route.path) for route in ROUTES]  # drop {id:path}
    missing = [
        path
        for path in paths
        if not any(f"`{prefix}{path}" in api for prefix in ("", "GET ", "POST ", "PUT ", "DELETE "))
    ]
    assert not missing, f"routes missing from docs/api.md: {missing}"
