"""`evolution-store experiments start|show|stop`: A/B and regression experiments from a
terminal, in-process (`--db`, both backends) and against a running server (`--url`)."""

from __future__ import annotations

import asyncio
import json
import statistics
from typing import Any

import pytest
from click.testing import CliRunner, Result

from evolution_store import EvolutionStore, ExecutionIn, RewardIn, TaskIn
from evolution_store.cli import cli
from evolution_store.registry_models import ResultIn, ResultsIn


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def as_json(*args: str) -> Any:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def refused(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: "), result.stderr
    return result.stderr.strip()


def two_candidates(where: list[str], agent: str = "support") -> tuple[str, str]:
    ids = []
    for content in ("Answer {{ q }}.", "Answer {{ q }} briefly."):
        prompt = as_json(
            "prompts", "create", *where, "--agent", agent, "--content", content,
            "--status", "candidate",
        )  # fmt: skip
        ids.append(prompt["id"])
    return ids[0], ids[1]


async def _reward_runs(url: str, values: dict[str, list[float]]) -> None:
    """One execution per value, run with `config.prompt_id`, judged by a reward of that value."""
    async with await EvolutionStore.open(url) as store:
        for prompt_id, rewards in values.items():
            for value in rewards:
                task, _ = await store.create_task(TaskIn(name="answer"))
                run = await store.start_execution(
                    task["id"], ExecutionIn(config={"prompt_id": prompt_id})
                )
                await store.add_reward(RewardIn(value=value, execution_id=run["id"]))


async def _post_results(url: str, experiment_id: str, results: list[ResultIn]) -> None:
    async with await EvolutionStore.open(url) as store:
        await store.add_experiment_results(experiment_id, ResultsIn(results=results))


def test_ab_start_show_stop_with_approval(store_url):
    db = ["--db", store_url]
    v1, v2 = two_candidates(db)
    as_json("prompts", "approve", v1, *db)
    experiment = as_json(
        "experiments", "start", *db, "--agent", "support",
        "--variant", f"{v1}:0.5", "--variant", f"{v2}:0.5", "--metric", "reward",
    )  # fmt: skip
    assert (experiment["kind"], experiment["status"], experiment["metric"]) == (
        "ab",
        "running",
        "reward",
    )
    assert experiment["variants"] == [
        {"prompt_id": v1, "weight": 0.5},
        {"prompt_id": v2, "weight": 0.5},
    ]
    again = refused("experiments", "start", *db, "--agent", "support", "--variant", v1,
                    "--variant", v2)  # fmt: skip
    assert again.startswith("Error: conflict: ") and experiment["id"] in again

    values = {v1: [0.2, 0.4, 0.6, 0.4], v2: [0.8, 0.9, 0.7, 1.0, 0.6]}
    asyncio.run(_reward_runs(store_url, values))
    shown = as_json("experiments", "show", experiment["id"], *db)
    by_prompt = {r["prompt_id"]: r for r in shown["results"]}
    for prompt_id, rewards in values.items():
        assert by_prompt[prompt_id]["n"] == len(rewards)
        assert by_prompt[prompt_id]["mean"] == pytest.approx(statistics.fmean(rewards))
        assert by_prompt[prompt_id]["stdev"] == pytest.approx(statistics.stdev(rewards))
    assert by_prompt[v1]["p_value"] is None and 0 < by_prompt[v2]["p_value"] < 0.05

    table = invoke("experiments", "show", experiment["id"], *db).stdout
    assert "metric   reward" in table and "status   running" in table
    header = next(line for line in table.splitlines() if line.startswith("prompt "))
    assert header.split()[:4] == ["prompt", "weight", "n", "mean"]
    row = next(line for line in table.splitlines() if line.startswith(v2)).split()
    assert row[1:4] == ["0.5", "5", "0.8"]

    stopped = as_json("experiments", "stop", experiment["id"], *db, "--winner", v2, "--approve")
    assert (stopped["status"], stopped["winner"]) == ("completed", v2)
    winner = as_json("prompts", "show", v2, *db)
    assert (winner["status"], winner["approved_by"]) == ("production", "local")
    assert as_json("prompts", "show", v1, *db)["status"] == "archived"
    assert "is completed" in refused("experiments", "stop", experiment["id"], *db)


def test_stop_without_a_winner(store_url):
    db = ["--db", store_url]
    v1, v2 = two_candidates(db)
    started = as_json("experiments", "start", *db, "--agent", "support", "--variant",
                      f"{v1}:0.9", "--variant", f"{v2}:0.1")  # fmt: skip
    assert [v["weight"] for v in started["variants"]] == [0.9, 0.1]
    text = invoke("experiments", "stop", started["id"], *db).stdout
    assert "status   stopped" in text and "winner   -" in text


def test_regression_experiment(store_url):
    db = ["--db", store_url]
    v1, v2 = two_candidates(db)
    started = as_json(
        "experiments", "start", *db, "--agent", "support", "--kind", "regression",
        "--baseline", v1, "--target", "ex-1", "--target", "ex-2", "--control", "ex-3",
    )  # fmt: skip
    assert (started["kind"], started["baseline"]) == ("regression", v1)
    assert (started["target"], started["control"]) == (["ex-1", "ex-2"], ["ex-3"])
    results = [
        ResultIn(prompt_id=v1, example_id="ex-1", score=0, tokens=100, latency_ms=10),
        ResultIn(prompt_id=v1, example_id="ex-2", score=1, tokens=120, latency_ms=12),
        ResultIn(prompt_id=v1, example_id="ex-3", score=1),
        ResultIn(prompt_id=v2, example_id="ex-1", score=1, tokens=90),
        ResultIn(prompt_id=v2, example_id="ex-2", score=1, tokens=110),
        ResultIn(prompt_id=v2, example_id="ex-3", score=1),
    ]
    asyncio.run(_post_results(store_url, started["id"], results))
    shown = as_json("experiments", "show", started["id"], *db)
    by_prompt = {r["prompt_id"]: r for r in shown["results"]}
    assert (by_prompt[v1]["target"]["n"], by_prompt[v1]["target"]["success"]) == (2, 0.5)
    assert (by_prompt[v2]["target"]["n"], by_prompt[v2]["target"]["success"]) == (2, 1.0)
    assert by_prompt[v2]["tokens"] == pytest.approx(100)

    text = invoke("experiments", "show", started["id"], *db).stdout
    assert "baseline  " + v1 in text and "target    2 examples" in text
    row = next(line for line in text.splitlines() if line.startswith(v2)).split()
    assert row[1:3] == ["2", "1"]


def test_bad_input_is_one_line(store_url):
    db = ["--db", store_url]
    v1, v2 = two_candidates(db)
    other = two_candidates(db, agent="billing")[0]
    assert "not found" in refused("experiments", "show", "ghost", *db)
    weights = refused("experiments", "start", *db, "--agent", "support", "--variant",
                      f"{v1}:0.7", "--variant", f"{v2}:0.7")  # fmt: skip
    assert weights.startswith("Error: invalid input: ") and "sum to 1" in weights
    foreign = refused("experiments", "start", *db, "--agent", "support", "--variant", v1,
                      "--variant", other)  # fmt: skip
    assert "belongs to agent 'billing'" in foreign
    assert "not found" in refused("experiments", "start", *db, "--agent", "support",
                                  "--variant", v1, "--variant", "ghost")  # fmt: skip
    assert "baseline" in refused("experiments", "start", *db, "--agent", "support",
                                 "--kind", "regression", "--target", "x")  # fmt: skip
    bad_weight = invoke("experiments", "start", *db, "--agent", "support",
                        "--variant", f"{v1}:half")  # fmt: skip
    assert bad_weight.exit_code == 2 and "must be a number" in bad_weight.stderr
    started = as_json("experiments", "start", *db, "--agent", "support", "--variant", v1,
                      "--variant", v2)  # fmt: skip
    assert "approve needs a winner" in refused("experiments", "stop", started["id"], *db,
                                               "--approve")  # fmt: skip
    outsider = refused("experiments", "stop", started["id"], *db, "--winner", other)
    assert "one of the experiment's variants" in outsider
    assert as_json("experiments", "show", started["id"], *db)["status"] == "running"


def test_every_command_has_help():
    for name, command in cli.commands["experiments"].commands.items():
        assert command.help and command.get_short_help_str(), name
        assert "--url" in invoke("experiments", name, "--help").stdout


def test_start_show_stop_over_http(live_server, store_url):
    server = live_server(store_url, otlp_http=False)
    url = ["--url", server.url]
    v1, v2 = two_candidates(url)
    started = as_json("experiments", "start", *url, "--agent", "support", "--variant",
                      f"{v1}:0.5", "--variant", f"{v2}:0.5")  # fmt: skip
    assert started["status"] == "running"
    assert "conflict" in refused("experiments", "start", *url, "--agent", "support",
                                 "--variant", v1, "--variant", v2)  # fmt: skip
    shown = as_json("experiments", "show", started["id"], *url)
    assert [r["n"] for r in shown["results"]] == [0, 0]
    stopped = as_json("experiments", "stop", started["id"], *url, "--winner", v2, "--approve")
    assert stopped["status"] == "completed"
    assert as_json("prompts", "show", v2, *url)["approved_by"] == "anonymous"
    assert "not found" in refused("experiments", "show", "ghost", *url)
