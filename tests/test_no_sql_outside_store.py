"""SQL lives only in the store modules of `evolution_store/` (STYLE "Where SQL lives"): the
API, the instrumentation, the CLI and the learners (DESIGN §7) build no statements."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECKED = [
    *sorted((ROOT / "api").rglob("*.py")),
    *sorted((ROOT / "instrumentation").rglob("*.py")),
    *sorted((ROOT / "evolution_store").glob("cli*.py")),
    *sorted((ROOT / "evolution_store" / "learn").rglob("*.py")),
]
# A bare call or one through the SQLAlchemy module (`list.insert(...)` is not SQL).
SQL_BUILDERS = re.compile(r"(?<![\w.])(?:sa\.|sqlalchemy\.(?:\w+\.)*)?(select|insert|text)\(")
# Importing SQLAlchemy at all (its exception classes aside) is the first step towards SQL.
SQL_IMPORTS = re.compile(r"^\s*(?:from|import)\s+sqlalchemy(?!\.exc\b)")


@pytest.mark.parametrize(
    "path", [path for path in CHECKED if path.exists()], ids=lambda p: str(p.relative_to(ROOT))
)
def test_no_sql_builders(path):
    offending = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if (SQL_BUILDERS.search(line) or SQL_IMPORTS.search(line))
        and not line.lstrip().startswith("#")
    ]
    assert not offending, "SQL outside evolution_store/:\n" + "\n".join(offending)


def test_the_check_sees_the_files():
    assert any(path.name == "app.py" for path in CHECKED)
    assert any(path.name == "engine.py" for path in CHECKED)
    assert SQL_BUILDERS.search("query = sa.select(spans)")
    assert SQL_BUILDERS.search("insert(table).values()")
    assert SQL_BUILDERS.search('conn.execute(text("select 1"))')
    assert not SQL_BUILDERS.search("selector(x)")
    assert not SQL_BUILDERS.search("self.select_all()")
    assert not SQL_BUILDERS.search("parts.insert(0, part)")
    assert SQL_BUILDERS.search("sqlalchemy.sql.expression.select(x)")
    assert SQL_IMPORTS.search("from sqlalchemy import select")
    assert SQL_IMPORTS.search("    import sqlalchemy as sa")
    assert not SQL_IMPORTS.search("from sqlalchemy.exc import SQLAlchemyError")
