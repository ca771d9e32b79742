"""Experiment writes (evolution_store/experiment_writes.py) through the store, on both
backends: starting and stopping A/B and regression experiments, approving a winner in the same
transaction, regression results posted and re-posted, the markers, and what is refused."""

from __future__ import annotations

from datetime import datetime

import pytest
from pydantic import ValidationError
from scipy import stats

from evolution_store import Conflict, EvolutionStore, InvalidInput, NotFound
from evolution_store.registry_models import (
    ExperimentIn,
    ExperimentStopIn,
    PromptIn,
    ResultIn,
    ResultsIn,
)


async def new_prompt(store: EvolutionStore, content: str, agent: str = "bot", **fields) -> str:
    prompt, _ = await store.create_prompt(PromptIn(agent=agent, content=content, **fields))
    return prompt["id"]


async def two_variants(store: EvolutionStore, agent: str = "bot") -> tuple[str, str]:
    return (
        await new_prompt(store, "A {{ q }}", agent, status="candidate"),
        await new_prompt(store, "B {{ q }}", agent, status="candidate"),
    )


def ab(agent: str, a: str, b: str, weights: tuple[float, float] = (0.5, 0.5)) -> ExperimentIn:
    return ExperimentIn(
        agent=agent,
        kind="ab",
        variants=[{"prompt_id": a, "weight": weights[0]}, {"prompt_id": b, "weight": weights[1]}],
    )


async def markers(store: EvolutionStore, kind: str) -> list[dict]:
    return (await store.list_markers(kind=kind)).items


# -- A/B: start ---------------------------------------------------------------------------------


async def test_an_ab_experiment_starts_with_its_marker_and_serves_its_variants(
    store: EvolutionStore,
) -> None:
    a, b = await two_variants(store)
    experiment = await store.create_experiment(ab("bot", a, b, (0.25, 0.75)))
    assert experiment["agent"] == "bot" and experiment["kind"] == "ab"
    assert experiment["status"] == "running" and experiment["winner"] is None
    assert experiment["variants"] == [
        {"prompt_id": a, "weight": 0.25},
        {"prompt_id": b, "weight": 0.75},
    ]
    assert (experiment["metric"], experiment["baseline"]) == (None, None)
    assert (experiment["target"], experiment["control"]) == ([], [])
    assert experiment["created_at"].endswith("Z") and experiment["stopped_at"] is None
    assert [r["prompt_id"] for r in experiment["results"]] == [a, b]
    [marker] = await markers(store, "experiment.started")
    assert marker["agent"] == "bot" and marker["before"] is None
    assert marker["after"] == {
        "experiment_id": experiment["id"],
        "kind": "ab",
        "variants": experiment["variants"],
    }
    assert marker["attributes"]["evolution.experiment.id"] == experiment["id"]
    served = await store.resolve_prompt("bot", key="user-1")
    assert served["experiment_id"] == experiment["id"] and served["id"] in (a, b)


async def test_unknown_prompts_are_named_and_nothing_is_stored(store: EvolutionStore) -> None:
    a, _ = await two_variants(store)
    with pytest.raises(NotFound, match="'nope'"):
        await store.create_experiment(ab("bot", a, "nope"))
    with pytest.raises(NotFound, match="'gone'"):
        await store.create_experiment(
            ExperimentIn(agent="bot", kind="regression", baseline="gone", target=["x"])
        )
    assert (await store.list_experiments()).items == []
    assert await markers(store, "experiment.started") == []


async def test_prompts_of_another_agent_are_invalid(store: EvolutionStore) -> None:
    a, _ = await two_variants(store)
    foreign = await new_prompt(store, "not yours", agent="other")
    with pytest.raises(InvalidInput, match="belongs to agent 'other'") as raised:
        await store.create_experiment(ab("bot", a, foreign))
    assert raised.value.field == "variants"
    with pytest.raises(InvalidInput) as raised:
        await store.create_experiment(
            ExperimentIn(agent="bot", kind="regression", baseline=foreign, target=["x"])
        )
    assert raised.value.field == "baseline"
    assert (await store.list_experiments()).items == []


async def test_the_shape_of_an_experiment_is_checked_before_the_store(
    store: EvolutionStore,
) -> None:
    a, b = await two_variants(store)
    with pytest.raises(ValidationError, match="sum to 1"):
        ab("bot", a, b, (0.5, 0.6))
    with pytest.raises(ValidationError, match="at least two variants"):
        ExperimentIn(agent="bot", variants=[{"prompt_id": a, "weight": 1.0}])
    with pytest.raises(ValidationError, match="needs a baseline"):
        ExperimentIn(agent="bot", kind="regression", target=["x"])
    with pytest.raises(ValidationError, match="approve needs a winner"):
        ExperimentStopIn(approve=True)


async def test_one_running_ab_per_agent(store: EvolutionStore) -> None:
    a, b = await two_variants(store)
    first = await store.create_experiment(ab("bot", a, b))
    with pytest.raises(Conflict, match=f"already runs A/B experiment '{first['id']}'"):
        await store.create_experiment(ab("bot", b, a))
    # Another agent, or a regression experiment of the same agent, may run beside it.
    c, d = await two_variants(store, agent="other")
    await store.create_experiment(ab("other", c, d))
    await store.create_experiment(
        ExperimentIn(agent="bot", kind="regression", baseline=a, target=["x"])
    )
    # Once it is stopped, the agent may start another.
    await store.stop_experiment(first["id"], ExperimentStopIn(), approved_by="local")
    second = await store.create_experiment(ab("bot", b, a))
    assert second["status"] == "running"
    running = await store.list_experiments(agent="bot", status="running")
    assert [e["id"] for e in running.items if e["kind"] == "ab"] == [second["id"]]


# -- stop -----------------------------------------------------------------------------------------


async def test_stop_without_a_winner_then_again(store: EvolutionStore) -> None:
    a, b = await two_variants(store)
    experiment = await store.create_experiment(ab("bot", a, b))
    stopped = await store.stop_experiment(experiment["id"], ExperimentStopIn(), approved_by="x")
    assert (stopped["status"], stopped["winner"]) == ("stopped", None)
    assert datetime.fromisoformat(stopped["stopped_at"]) >= datetime.fromisoformat(
        stopped["created_at"]
    )
    with pytest.raises(Conflict, match="is stopped, not running"):
        await store.stop_experiment(experiment["id"], ExperimentStopIn(), approved_by="x")
    [marker] = await markers(store, "experiment.stopped")
    assert marker["before"] == {"status": "running"}
    assert marker["after"] == {"status": "stopped", "winner": None}
    assert marker["attributes"]["evolution.experiment.id"] == experiment["id"]
    # A stopped experiment no longer steers what the agent is served.
    assert (await store.resolve_prompt("bot", label="latest"))["experiment_id"] is None
    with pytest.raises(NotFound):
        await store.resolve_prompt("bot", key="k")  # no production prompt, no experiment


async def test_stop_an_unknown_experiment(store: EvolutionStore) -> None:
    with pytest.raises(NotFound, match="'missing'"):
        await store.stop_experiment("missing", ExperimentStopIn(), approved_by="x")


async def test_the_winner_must_be_a_variant(store: EvolutionStore) -> None:
    a, b = await two_variants(store)
    outsider = await new_prompt(store, "C", status="candidate")
    experiment = await store.create_experiment(ab("bot", a, b))
    with pytest.raises(InvalidInput, match="one of the experiment's variants") as raised:
        await store.stop_experiment(
            experiment["id"], ExperimentStopIn(winner=outsider), approved_by="x"
        )
    assert raised.value.field == "winner"
    assert (await store.get_experiment(experiment["id"]))["status"] == "running"


async def test_a_winner_without_approval_completes_the_experiment(store: EvolutionStore) -> None:
    a, b = await two_variants(store)
    experiment = await store.create_experiment(ab("bot", a, b))
    done = await store.stop_experiment(
        experiment["id"], ExperimentStopIn(winner=b), approved_by="x"
    )
    assert (done["status"], done["winner"]) == ("completed", b)
    assert (await store.get_prompt(b))["status"] == "candidate"  # not approved
    assert await markers(store, "prompt.promoted") == []
    [marker] = await markers(store, "experiment.stopped")
    assert marker["after"] == {"status": "completed", "winner": b}


async def test_stop_and_approve_the_winner_in_one_call(store: EvolutionStore) -> None:
    a, b = await two_variants(store)
    experiment = await store.create_experiment(ab("bot", a, b))
    done = await store.stop_experiment(
        experiment["id"],
        ExperimentStopIn(winner=b, approve=True, note="B wins"),
        approved_by="fingerprint1",
    )
    assert (done["status"], done["winner"]) == ("completed", b)
    winner = await store.get_prompt(b)
    assert winner["status"] == "production" and "production" in winner["labels"]
    assert (winner["approved_by"], winner["note"]) == ("fingerprint1", "B wins")
    assert (await store.resolve_prompt("bot", key="anyone"))["id"] == b
    assert len(await markers(store, "prompt.promoted")) == 1
    assert len(await markers(store, "experiment.stopped")) == 1


async def test_approving_a_winner_that_is_not_a_candidate_changes_nothing(
    store: EvolutionStore,
) -> None:
    a = await new_prompt(store, "A", status="candidate")
    draft = await new_prompt(store, "B")  # a draft cannot be approved
    experiment = await store.create_experiment(ab("bot", a, draft))
    with pytest.raises(Conflict, match="only a candidate"):
        await store.stop_experiment(
            experiment["id"], ExperimentStopIn(winner=draft, approve=True), approved_by="x"
        )
    still = await store.get_experiment(experiment["id"])
    assert (still["status"], still["winner"], still["stopped_at"]) == ("running", None, None)
    assert (await store.get_prompt(draft))["status"] == "draft"
    assert await markers(store, "experiment.stopped") == []
    assert await markers(store, "prompt.promoted") == []
    # It can still be stopped properly afterwards.
    done = await store.stop_experiment(experiment["id"], ExperimentStopIn(), approved_by="x")
    assert done["status"] == "stopped"


# -- regression -----------------------------------------------------------------------------------


async def regression(store: EvolutionStore, **fields) -> tuple[dict, str]:
    baseline = await new_prompt(store, "base {{ q }}", status="candidate")
    body = {"target": ["t1", "t2", "t3"], "control": ["c1", "c2"], **fields}
    experiment = await store.create_experiment(
        ExperimentIn(agent="bot", kind="regression", baseline=baseline, **body)
    )
    return experiment, baseline


def result(prompt_id: str, example_id: str, score: float, **fields) -> ResultIn:
    return ResultIn(prompt_id=prompt_id, example_id=example_id, score=score, **fields)


async def test_a_regression_experiment_starts_with_its_baseline(store: EvolutionStore) -> None:
    experiment, baseline = await regression(store, metric="accuracy")
    assert experiment["kind"] == "regression" and experiment["baseline"] == baseline
    assert experiment["variants"] == [{"prompt_id": baseline, "weight": 1.0}]
    assert (experiment["target"], experiment["control"]) == (["t1", "t2", "t3"], ["c1", "c2"])
    assert experiment["metric"] == "accuracy"
    [empty] = experiment["results"]
    assert empty == {
        "prompt_id": baseline,
        "target": {"n": 0, "success": None, "ci95": None},
        "control": {"n": 0, "success": None, "ci95": None},
        "tokens": None,
        "latency_ms": None,
    }
    # A regression experiment never changes what the agent is served.
    with pytest.raises(NotFound):
        await store.resolve_prompt("bot", key="k")
    [marker] = await markers(store, "experiment.started")
    assert marker["after"]["kind"] == "regression"


async def test_regression_results_are_upserted_per_example(store: EvolutionStore) -> None:
    experiment, baseline = await regression(store)
    child = await new_prompt(store, "child {{ q }}", parent_ids=[baseline])
    first = ResultsIn(
        results=[
            result(baseline, "t1", 1, tokens=100, latency_ms=10),
            result(baseline, "t2", 0, tokens=120, latency_ms=30),
            result(child, "t1", 0, tokens=80),
            result(child, "c1", 1, tokens=90, latency_ms=5),
        ]
    )
    await store.add_experiment_results(experiment["id"], first)
    # A learner's retry: t2 scored again replaces its row; within one post the last one wins.
    again = ResultsIn(
        results=[
            result(baseline, "t2", 0.5, tokens=50, latency_ms=20),
            result(child, "t1", 0.25),
            result(child, "t1", 1, tokens=70),
        ]
    )
    updated = await store.add_experiment_results(experiment["id"], again)
    assert [v["prompt_id"] for v in updated["variants"]] == [baseline, child]
    base, kid = updated["results"]
    assert base["prompt_id"] == baseline and kid["prompt_id"] == child
    # baseline: t1 = 1, t2 = 0.5 (not pass/fail: a t interval); tokens 100, 50; latency 10, 20
    assert base["target"]["n"] == 2 and base["target"]["success"] == pytest.approx(0.75)
    half = stats.t.ppf(0.975, 1) * stats.tstd([1, 0.5]) / 2**0.5
    assert base["target"]["ci95"] == [pytest.approx(0.75 - half), pytest.approx(0.75 + half)]
    assert base["control"] == {"n": 0, "success": None, "ci95": None}
    assert (base["tokens"], base["latency_ms"]) == (pytest.approx(75), pytest.approx(15))
    # child: t1 = 1 (pass/fail: Wilson), c1 = 1; tokens 70, 90; latency only c1's
    wilson = stats.binomtest(1, 1).proportion_ci(0.95, method="wilson")
    assert kid["target"] == {
        "n": 1,
        "success": 1.0,
        "ci95": [pytest.approx(wilson.low), pytest.approx(wilson.high)],
    }
    assert kid["control"]["n"] == 1 and kid["control"]["success"] == 1.0
    assert (kid["tokens"], kid["latency_ms"]) == (pytest.approx(80), pytest.approx(5))


async def test_a_prompt_with_results_can_win_a_regression(store: EvolutionStore) -> None:
    experiment, baseline = await regression(store)
    child = await new_prompt(store, "child", parent_ids=[baseline], status="candidate")
    await store.add_experiment_results(
        experiment["id"], ResultsIn(results=[result(child, "t1", 1)])
    )
    done = await store.stop_experiment(
        experiment["id"], ExperimentStopIn(winner=child, approve=True), approved_by="local"
    )
    assert (done["status"], done["winner"]) == ("completed", child)
    assert (await store.get_prompt(child))["status"] == "production"


async def test_results_are_refused_where_they_do_not_belong(store: EvolutionStore) -> None:
    experiment, baseline = await regression(store)
    foreign = await new_prompt(store, "elsewhere", agent="other")
    one = ResultsIn(results=[result(baseline, "t1", 1)])
    with pytest.raises(NotFound, match="experiment 'missing'"):
        await store.add_experiment_results("missing", one)
    with pytest.raises(NotFound, match="'nope'"):
        await store.add_experiment_results(
            experiment["id"],
            ResultsIn(results=[result(baseline, "t1", 1), result("nope", "t1", 1)]),
        )
    with pytest.raises(InvalidInput, match="belongs to agent 'other'") as raised:
        await store.add_experiment_results(
            experiment["id"], ResultsIn(results=[result(foreign, "t1", 1)])
        )
    assert raised.value.field == "results"
    # Nothing of the refused posts was stored.
    current = await store.get_experiment(experiment["id"])
    assert [v["prompt_id"] for v in current["variants"]] == [baseline]
    assert current["results"][0]["target"]["n"] == 0
    # A/B results come from rewards, not posts.
    a, b = await two_variants(store, agent="ab-bot")
    split = await store.create_experiment(ab("ab-bot", a, b))
    with pytest.raises(Conflict, match="A/B"):
        await store.add_experiment_results(split["id"], ResultsIn(results=[result(a, "t1", 1)]))
    # A stopped regression takes no more results.
    await store.stop_experiment(experiment["id"], ExperimentStopIn(), approved_by="x")
    with pytest.raises(Conflict, match="not running"):
        await store.add_experiment_results(experiment["id"], one)
