"""`evolution-store learn patterns`: mining a real store (both backends) from the command line —
the table, `--json`, mining again without duplicates, `--since` — its flags' checks, and the
one-line error without the `[learn]` extra."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime

import click
import pytest
from click.testing import CliRunner, Result

from evolution_store import EvolutionStore
from evolution_store.cli import cli
from evolution_store.cli_learn import context_name, effect_text, parse_since, pattern_row
from evolution_store.models import ExecutionIn, TaskIn

NOW = 1_750_000_000 * 10**9


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["learn", "patterns", *args])


def ok(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


async def seed_runs(url: str, per_side: int = 60) -> None:
    """`per_side` executions at config.temperature 0.1–0.3 (48 in 60 succeed) and as many at
    0.7–0.9 (18 in 60): a planted effect no test can miss, and a `style` key with none."""
    store = await EvolutionStore.open(url)

    async def run(index: int) -> None:
        low = index < per_side
        task, _ = await store.create_task(TaskIn(id=f"t-{index}", name="answer"))
        temperature = (0.1, 0.2, 0.3)[index % 3] + (0 if low else 0.6)
        config = {"temperature": round(temperature, 1), "style": ("terse", "warm")[index % 2]}
        execution = await store.start_execution(task["id"], ExecutionIn(config=config))
        place = index % per_side
        succeeded = place < (48 if low else 18) * per_side // 60
        status = "succeeded" if succeeded else "failed"
        await store.set_execution_status(execution["id"], status)

    try:
        await asyncio.gather(*(run(index) for index in range(2 * per_side)))
    finally:
        await store.close()


async def stored_patterns(url: str, **filters) -> list[dict]:
    store = await EvolutionStore.open(url)
    try:
        return (await store.list_patterns(limit=1000, **filters)).items
    finally:
        await store.close()


# -- against a store, both backends ---------------------------------------------------------------


def test_mines_prints_stores_and_mines_again_without_duplicates(store_url):
    asyncio.run(seed_runs(store_url))
    flags = ["--db", store_url, "--outcome", "status", "--min-support", "10"]
    out = ok(*flags)
    header, rule, *rows = out.splitlines()
    assert header.split() == ["kind", "context", "condition", "effect", "q", "n", "id"]
    assert set(rule.replace(" ", "")) == {"-"}
    temperature = [row for row in rows if "config.temperature" in row]
    assert temperature, out
    assert "success_rate" in temperature[0]
    assert "pattern(s) at q ≤ 0.05, stored in" in out
    assert store_url.split("///")[-1] in out or "postgresql://" in out

    mined = json.loads(ok(*flags, "--json"))
    found = [p for p in mined if p["feature"]["key"] == "temperature"]
    assert found and all(p["evidence"]["q_value"] <= 0.05 for p in mined)
    assert not [p for p in mined if p["feature"]["key"] == "style"]  # no effect planted
    low = next(p for p in found if p["condition"] == "config.temperature <= 0.3")
    assert low["kind"] == "success" and low["effect"]["difference"] > 0
    assert low["feature"] == {"type": "config", "key": "temperature", "op": "<=", "value": 0.3}
    qs = [p["evidence"]["q_value"] for p in mined]
    assert qs == sorted(qs)  # strongest evidence first, as the API lists them

    # Mined twice: the same rows, none new, all active.
    stored = asyncio.run(stored_patterns(store_url))
    assert sorted(p["id"] for p in stored) == sorted(p["id"] for p in mined)
    assert {p["status"] for p in stored} == {"active"}

    # Nothing since the year 2999: no pattern holds any more, and the stored ones are stale.
    out = ok(*flags, "--since", "2999-01-01")
    assert out.startswith("no pattern at q ≤ 0.05 (min support 10 on each side)")
    stale = asyncio.run(stored_patterns(store_url, status="stale"))
    assert sorted(p["id"] for p in stale) == sorted(p["id"] for p in mined)


def test_a_store_that_cannot_be_opened_is_one_line(tmp_path):
    result = invoke("--db", f"sqlite:///{tmp_path}/missing/dir/x.db")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: cannot open") and "Traceback" not in result.output


# -- flags ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30s", NOW - 30 * 10**9),
        ("90m", NOW - 90 * 60 * 10**9),
        ("24h", NOW - 24 * 3600 * 10**9),
        ("7d", NOW - 7 * 86400 * 10**9),
        ("2W", NOW - 14 * 86400 * 10**9),
        ("1.5h", NOW - 5400 * 10**9),
        ("2025-01-31", int(datetime(2025, 1, 31, tzinfo=UTC).timestamp()) * 10**9),
        ("2025-01-31T12:00:00Z", int(datetime(2025, 1, 31, 12, tzinfo=UTC).timestamp()) * 10**9),
        (
            "2025-01-31T14:00:00+02:00",
            int(datetime(2025, 1, 31, 12, tzinfo=UTC).timestamp()) * 10**9,
        ),
    ],
)
def test_since_takes_iso_times_and_durations(value, expected):
    assert parse_since(value, now_ns=NOW) == expected


def test_since_stays_within_stored_times():
    assert parse_since("2999-01-01") == 2**63 - 1
    assert parse_since("1900-01-01") == 0
    assert parse_since("100000d", now_ns=NOW) == 0


@pytest.mark.parametrize("value", ["yesterday", "7", "7y", "-3d", "2025-13-01"])
def test_a_bad_since_is_refused_naming_both_forms(value):
    with pytest.raises(click.BadParameter, match="neither an ISO-8601 time .* nor a duration"):
        parse_since(value, now_ns=NOW)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--since", "soon"], "Invalid value for '--since'"),
        (["--outcome", "reward_sum"], "Invalid value for '--outcome'"),
        (["--min-support", "0"], "Invalid value for '--min-support'"),
        (["--fdr", "0"], "Invalid value for '--fdr'"),
        (["--fdr", "1"], "Invalid value for '--fdr'"),
    ],
)
def test_bad_flags_are_usage_errors(flags, message, tmp_path):
    result = invoke("--db", f"sqlite:///{tmp_path / 'x.db'}", *flags)
    assert result.exit_code == 2 and message in result.stderr
    assert not (tmp_path / "x.db").exists()  # refused before the store is opened


def test_a_missing_learn_extra_names_the_install(tmp_path):
    # A fresh interpreter in which DEAP cannot be imported, as on a base install.
    code = "import sys; sys.modules['deap'] = None; from evolution_store.cli import cli; cli()"
    args = ["learn", "patterns", "--db", f"sqlite:///{tmp_path / 'x.db'}"]
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == (
        "Error: learn patterns needs the learn extra (deap is not installed): "
        "pip install 'evolution-store[learn]'"
    )
    assert not (tmp_path / "x.db").exists()


# -- the table's cells ----------------------------------------------------------------------------


def test_the_table_cells_say_where_what_and_how_sure():
    assert context_name({"agent": None, "task_name": None}) == "overall"
    assert context_name({"agent": "support", "task_name": None}) == "agent:support"
    assert context_name({"agent": None, "task_name": "refund"}) == "task:refund"
    assert context_name({"agent": "a", "task_name": "t"}) == "agent:a task:t"
    rate = {"outcome": "success_rate", "with": 0.82, "without": 0.512, "difference": 0.31}
    assert effect_text(rate) == "success_rate 82% vs 51%"
    tokens = {"outcome": "tokens", "with": 812.4, "without": 1234.0}
    assert effect_text(tokens) == "tokens 812 vs 1,234"
    assert effect_text({"outcome": "mean_reward", "with": 0.4123, "without": None}) == (
        "mean_reward 0.412 vs -"
    )
    row = pattern_row(
        {
            "id": "3f2a",
            "kind": "failure",
            "context": {"agent": None, "task_name": None},
            "condition": "tool search before answer",
            "effect": rate,
            "evidence": {"q_value": 0.00123, "n_with": 140, "n_without": 300},
        }
    )
    assert row == {
        "kind": "failure",
        "context": "overall",
        "condition": "tool search before answer",
        "effect": "success_rate 82% vs 51%",
        "q": "0.0012",
        "n": "140/300",
        "id": "3f2a",
    }
