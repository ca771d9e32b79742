"""The README stays true: every route is in its route table (a whole cell, with the methods
the app serves), every CLI command and setting is in it, and its two quick-start commands are
the ones CI runs."""

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


def _served() -> dict[str, set[str]]:
    """path -> the HTTP methods the app serves on it, from its OpenAPI."""
    paths = create_app().openapi()["paths"]
    return {path: {method.upper() for method in operations} for path, operations in paths.items()}


SERVED = _served()


def _cells(line: str) -> list[str]:
    """The cells of a Markdown table row (a pipe escaped with a backslash stays in its cell)."""
    cells = re.split(r"(?<!\\)\|", line.strip())
    return [cell.strip() for cell in cells[1:-1]]


def _route_table(text: str) -> dict[str, set[str]]:
    """README's route table: each route (the whole code span of its first cell) -> the
    methods its row lists."""
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if _cells(line)[:2] == ["route", "methods"])
    table: dict[str, set[str]] = {}
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        route, methods = _cells(line)[:2]
        spans = re.findall(r"`([^`]+)`", route)
        assert spans, f"README route row without a `route`: {line}"
        for path in spans:
            assert path not in table, f"README lists {path} twice"
            table[path] = {method.strip() for method in methods.split(",") if method.strip()}
    return table


ROUTE_TABLE = _route_table(README)


def _commands(group: click.Group, prefix: str = "evolution-store") -> list[str]:
    found = []
    for name, command in group.commands.items():
        found.append(f"{prefix} {name}")
        if isinstance(command, click.Group):
            found.extend(_commands(command, f"{prefix} {name}"))
    return found


@pytest.mark.parametrize("path", sorted(SERVED))
def test_every_route_is_documented_with_its_methods(path: str) -> None:
    # A whole cell, not a substring: `/api/v1/spans` is not documented by `/api/v1/spans/batch`.
    assert path in ROUTE_TABLE, f"README's route table lacks {path}"
    listed, served = sorted(ROUTE_TABLE[path]), sorted(SERVED[path])
    assert listed == served, f"README lists {listed} for {path}; the app serves {served}"


def test_every_documented_route_is_served() -> None:
    assert sorted(set(ROUTE_TABLE) - set(SERVED)) == []


def test_the_route_table_is_read_as_whole_cells() -> None:
    table = _route_table(
        "| route | methods | what |\n|---|---|---|\n"
        "| `/api/v1/spans/batch` | POST | `{spans: […]}` |\n"
        "| `/a`, `/b` | GET, PATCH | `x\\|y` |\n\n| other | table |\n"
    )
    assert table == {
        "/api/v1/spans/batch": {"POST"},
        "/a": {"GET", "PATCH"},
        "/b": {"GET", "PATCH"},
    }
    assert "/api/v1/spans" not in table


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
    assert 'pip install --quiet -e ".[test,learn]"' in script
    assert re.search(r"^pytest$", script, re.MULTILINE)
    assert 'pip install -e ".[test,learn]"' in README and ". .venv/bin/activate && pytest" in README


def test_the_store_example_runs(tmp_path, monkeypatch, capsys) -> None:
    section = README.split("### Python: the store itself", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)  # its sqlite:///evolution.db lands here
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.strip() == "1 [1.0]"
