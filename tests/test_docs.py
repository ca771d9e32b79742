"""The README stays true: every route, CLI command and setting is in it, and its two
quick-start commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from api.app import create_app
from evolution_store.cli import cli
from evolution_store.config import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _route_paths() -> list[str]:
    return sorted(create_app().openapi()["paths"])


def _commands(group: click.Group, prefix: str = "evolution-store") -> list[str]:
    found = []
    for name, command in group.commands.items():
        found.append(f"{prefix} {name}")
        if isinstance(command, click.Group):
            found.extend(_commands(command, f"{prefix} {name}"))
    return found


@pytest.mark.parametrize("path", _route_paths())
def test_every_route_is_documented(path: str) -> None:
    assert f"`{path}`" in README or f"{path}" in README, f"README lacks route {path}"


@pytest.mark.parametrize("command", _commands(cli))
def test_every_cli_command_is_documented(command: str) -> None:
    assert command in README


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_documented(field: str) -> None:
    env = f"EVOLUTION_{field.upper()}"
    flag = "--" + field.replace("_", "-")
    assert env in README or flag in README, f"README documents neither {env} nor {flag}"


def test_ci_runs_the_readme_commands() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert 'pip install --quiet -e ".[test]"' in script
    assert re.search(r"^pytest$", script, re.MULTILINE)
    assert 'pip install -e ".[test]"' in README and ". .venv/bin/activate && pytest" in README


def test_the_store_example_runs(tmp_path, monkeypatch, capsys) -> None:
    section = README.split("### Python: the store itself", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)  # its sqlite:///evolution.db lands here
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.strip() == "1 [1.0]"
