"""The pattern learner (evolution_store/learn/patterns.py) on seeded synthetic executions with
planted effects of stated sizes among many null features: the planted ones are found in the
right context and direction, null discoveries stay within the FDR over many seeds, a feature
confounded with agent is reported in the agent's context only, support below the minimum is
never reported, and every evidence number is what scipy gives on the same executions. One
run goes through a real store (both backends)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from factories import span_id, trace_id
from scipy import stats

from evolution_store import EvolutionStore, InvalidInput
from evolution_store.learn.pattern_records import holds_within_agents
from evolution_store.learn.patterns import (
    MinerSettings,
    conditions,
    contexts,
    find_patterns,
    mine_patterns,
    outcome_values,
)
from evolution_store.models import ExecutionIn, RewardIn, SpanRecord, TaskIn
from evolution_store.pattern_facts import ExecutionFacts
from evolution_store.pattern_writes import pattern_id

METRICS = ("tokens", "latency_ms", "cost")


def fact(**fields: Any) -> ExecutionFacts:
    """One execution's facts, empty unless told."""
    row = {
        "execution_id": "e",
        "task_id": "t",
        "task_name": "solve",
        "agent": None,
        "status": "succeeded",
        "config": {},
        "tags": (),
        "models": (),
        "tools": (),
        "span_names": (),
        "error_types": (),
        "prompt_id": None,
        "tokens": None,
        "latency_ms": None,
        "cost": None,
        "reward": None,
        "started_at": 0,
        "sample_span_ids": (),
    }
    row.update(fields)
    return ExecutionFacts(**row)


def synthetic_facts(seed: int, n: int = 2000, *, reward: str = "binary") -> list[ExecutionFacts]:
    """Executions of two agents, alternating (alpha: success chance 0.35, beta: 0.55), two
    task names each, with these planted effects:

    - `config.temperature` (0.0 to 1.0 in steps of 0.1) at most 0.3: chance +0.25;
    - tool `search` before `answer` (both in every run, in random order): +0.2;
    - error `TimeoutError` (15 % of runs): -0.35;
    - model `m-big`: +0.2 in beta only; beta uses it in 70 % of runs, alpha in 20 %;
    - `config.cache = true` (40 %): 40 % fewer tokens and lower cost, outcome untouched;
    - `config.region = eu`: 80 % of beta's runs, 20 % of alpha's, no effect at all;

    and null features: 12 categorical and 4 numeric config keys, 8 tags, 4 tools used after
    the others. `reward` "binary" draws 0/1 at the chance; "continuous" is chance + N(0, 0.3).
    """
    rng = np.random.default_rng(seed)
    facts = []
    for i in range(n):
        agent = "alpha" if i % 2 == 0 else "beta"
        temperature = round(float(rng.integers(0, 11)) / 10, 1)
        order = ["search", "answer"] if rng.random() < 0.5 else ["answer", "search"]
        big = rng.random() < (0.7 if agent == "beta" else 0.2)
        timeout = rng.random() < 0.15
        cache = bool(rng.random() < 0.4)
        config: dict[str, Any] = {
            "temperature": temperature,
            "cache": cache,
            "region": "eu" if rng.random() < (0.8 if agent == "beta" else 0.2) else "us",
        }
        for k in range(12):
            config[f"null_c{k}"] = ["a", "b", "c"][rng.integers(3)]
        for k in range(4):
            config[f"null_n{k}"] = float(np.round(rng.normal(), 2))
        chance = 0.35 if agent == "alpha" else 0.55
        chance += 0.25 * (temperature <= 0.3) + 0.2 * (order[0] == "search") - 0.35 * timeout
        chance += 0.2 * (big and agent == "beta")
        chance = min(max(chance, 0.02), 0.98)
        value = float(rng.random() < chance) if reward == "binary" else chance + rng.normal(0, 0.3)
        tokens = float(rng.gamma(4, 250) * (0.6 if cache else 1.0))
        facts.append(
            fact(
                execution_id=f"e{i}",
                task_id=f"t{i}",
                task_name=f"{agent}-task-{rng.integers(2)}",
                agent=agent,
                status="succeeded" if value >= 0.5 else "failed",
                config=config,
                tags=tuple(f"null-tag{k}" for k in range(8) if rng.random() < 0.3),
                models=("m-big",) if big else ("m-small",),
                tools=(*order, *(f"noise{k}" for k in range(4) if rng.random() < 0.3)),
                error_types=("TimeoutError",) if timeout else (),
                tokens=tokens,
                latency_ms=float(rng.gamma(3, 100)),
                cost=tokens * 1e-5,
                reward=float(value),
                started_at=i,
                sample_span_ids=(f"s{i}a", f"s{i}b"),
            )
        )
    return facts


def is_null(pattern: dict[str, Any]) -> bool:
    """Whether a reported pattern is a false discovery of `synthetic_facts`: its condition has
    no effect on the pattern's outcome in the pattern's context. (`region` overall is a real
    association through agent, so not null; it should be dropped all the same.)"""
    feature, context = pattern["feature"], pattern["context"]
    metric = pattern["effect"]["outcome"] in METRICS
    kind, value = feature["type"], feature["value"]
    if kind == "config":
        if feature["key"] == "region":
            return context["agent"] is not None
        return not (feature["key"] == "temperature" and not metric) and not (
            feature["key"] == "cache" and metric
        )
    if kind == "tool_pair":
        return metric or set(value) != {"search", "answer"}
    if kind == "error":
        return metric or value != "TimeoutError"
    if kind == "model":  # m-big against m-small: real overall (via beta) and in beta
        return metric or context["agent"] == "alpha"
    if kind == "agent":
        return metric
    if kind == "task":  # tasks have no effect of their own: across agents, one stands for its agent
        return metric or context["agent"] is not None
    return True  # tags, noise tools


def found(
    patterns: list[dict[str, Any]],
    condition: str,
    agent: str | None = None,
    task: str | None = None,
) -> dict[str, Any] | None:
    context = {"agent": agent, "task_name": task}
    return next(
        (p for p in patterns if p["condition"] == condition and p["context"] == context), None
    )


# -- candidates and contexts ---------------------------------------------------------------------


def test_numeric_config_keys_are_cut_at_quartiles_of_their_distinct_values() -> None:
    # 1..10, each 10 times; the cuts are the 25th, 50th and 75th percentiles of the distinct
    # values taken as observed values: 3, 5, 7; each stated on its smaller side (5: a tie).
    facts = [fact(config={"k": v}) for v in range(1, 11) for _ in range(10)]
    texts = {c.text: c.feature for c in conditions(facts, min_support=5).conditions}
    assert set(texts) == {"config.k <= 3", "config.k <= 5", "config.k > 7"}
    assert texts["config.k <= 3"] == {"type": "config", "key": "k", "op": "<=", "value": 3}


def test_categorical_config_values_are_told_apart_by_type() -> None:
    facts = [fact(config={"flag": v, "mode": m}) for v in (True, 1, "1") for m in "ab" * 10]
    facts += [fact(config={"nested": {"a": 1}, "list": [1]}) for _ in range(30)]
    texts = [c.text for c in conditions(facts, min_support=5).conditions]
    # True and 1 are different conditions; "1" reads like 1 and is kept once
    assert texts.count("config.flag = true") == 1 and texts.count("config.flag = 1") == 1
    assert "config.mode = a" in texts and "config.mode = b" in texts
    assert not any("nested" in t or "list" in t for t in texts)


def test_tools_pairs_and_listed_features() -> None:
    facts = [
        fact(
            tools=("search", "read", "search", "answer"),
            tags=("vip",),
            models=("m1",),
            error_types=("Boom",),
            prompt_id="p-1",
            agent="a",
            config={"prompt_id": "p-1"},
        )
        for _ in range(10)
    ] + [fact(task_name="other") for _ in range(10)]
    texts = {c.text for c in conditions(facts, min_support=5).conditions}
    assert {"tool search used", "tool read used", "tool answer used"} <= texts
    # A before B when some use of A comes before a later use of B: read before search holds
    assert {"tool search before read", "tool read before search", "tool read before answer"} <= (
        texts
    )
    assert "tool answer before search" not in texts
    assert {"tag = vip", "model = m1", "error = Boom", "prompt = p-1", "agent = a"} <= texts
    assert {"task = solve", "task = other"} <= texts
    assert not any(t.startswith("config.prompt_id") for t in texts)  # that is `prompt = P`


def test_conditions_need_support_on_both_sides() -> None:
    facts = [fact(tags=("rare",) if i < 4 else ("common",)) for i in range(20)]
    texts = {c.text for c in conditions(facts, min_support=5).conditions}
    assert texts == set()  # rare: 4 with; common: 16 with, 4 without
    facts = [fact(tags=("rare",) if i < 5 else ()) for i in range(20)]
    assert [c.text for c in conditions(facts, min_support=5).conditions] == ["tag = rare"]


def test_contexts_overall_agents_and_tasks() -> None:
    facts = [
        fact(agent="a" if i < 60 else "b", task_name="x" if i < 60 else f"y{i % 2}")
        for i in range(100)
    ]
    found_ = [(c.agent, c.task_name, c.rows.size) for c in contexts(facts, min_support=10)]
    # overall; the agents; task x is agent a's runs exactly (left out); y0 and y1 are b's
    assert found_ == [
        (None, None, 100),
        ("a", None, 60),
        ("b", None, 40),
        ("b", "y0", 20),
        ("b", "y1", 20),
    ]
    only_one = contexts([fact(agent="a") for _ in range(50)], min_support=10)
    assert [(c.agent, c.task_name) for c in only_one] == [("a", None)]  # overall is a's
    # below 2 x min_support runs a context cannot have support on both sides: left out
    assert [c.agent for c in contexts(facts, min_support=30)] == [None, "a"]


def test_outcomes() -> None:
    facts = [fact(status=s, reward=r) for s, r in [("succeeded", 1.0), ("failed", 0.0)]]
    facts += [fact(status="timeout", reward=None), fact(status="running", reward=1.0)]
    values, binary = outcome_values(facts, "status")
    assert binary and np.array_equal(values, [1.0, 0.0, 0.0, np.nan], equal_nan=True)
    values, binary = outcome_values(facts, "reward")
    assert binary and np.isnan(values[2])
    assert not outcome_values([fact(reward=0.5), fact(reward=1.0)], "reward")[1]
    with pytest.raises(InvalidInput):
        MinerSettings(outcome="latency")
    with pytest.raises(InvalidInput):
        MinerSettings(fdr=0)


# -- what it finds ---------------------------------------------------------------------------------


@pytest.mark.parametrize("reward", ["binary", "continuous"])
def test_planted_effects_are_found_in_their_context_and_direction(reward: str) -> None:
    patterns = find_patterns(synthetic_facts(1, reward=reward)).patterns
    test = "fisher_exact" if reward == "binary" else "mann_whitney_u"
    for agent in (None, "alpha", "beta"):
        low = found(patterns, "config.temperature <= 0.2", agent)
        assert low is not None and low["kind"] == "success" and low["evidence"]["test"] == test
        # search before answer helps: reported as its complement, answer before search
        order = found(patterns, "tool answer before search", agent)
        assert order["kind"] == "failure"
        assert order["evidence"]["equivalent"] == ["not (tool search before answer)"]
        assert found(patterns, "error = TimeoutError", agent)["kind"] == "failure"
        cheaper = found(patterns, "config.cache = true", agent)
        assert cheaper["kind"] == "optimization"
        assert cheaper["effect"]["outcome"] == "tokens" and cheaper["effect"]["difference"] < 0
        outcome = cheaper["evidence"]["secondary"]["outcome"]
        assert outcome["p_value"] >= 0.05 or outcome["difference"] >= 0
    assert found(patterns, "model = m-big", "beta")["kind"] == "success"
    for pattern in patterns:
        assert pattern["id"] == pattern_id(pattern["context"], pattern["condition"])
        if pattern["condition"].startswith("config.temperature") and pattern["kind"] != (
            "optimization"
        ):  # low temperatures help, whichever cut shows it
            low_side = pattern["feature"]["op"] == "<="
            assert pattern["kind"] == ("success" if low_side else "failure")
        assert pattern["evidence"]["q_value"] <= 0.05


def test_status_outcome() -> None:
    patterns = find_patterns(synthetic_facts(2), MinerSettings(outcome="status")).patterns
    assert found(patterns, "config.temperature <= 0.2")["effect"]["outcome"] == "success_rate"
    assert found(patterns, "error = TimeoutError")["kind"] == "failure"


def test_a_feature_confounded_with_agent_is_reported_in_the_agents_context() -> None:
    patterns = find_patterns(synthetic_facts(3)).patterns
    # m-big is common in beta, the better agent, and helps only there
    assert found(patterns, "model = m-big", "beta")["kind"] == "success"
    assert found(patterns, "model = m-big") is None
    assert found(patterns, "model = m-big", "alpha") is None
    # region = eu is common in beta and does nothing: reported nowhere
    assert not [p for p in patterns if p["condition"].startswith("config.region")]
    # Without the agent check both would be reported overall: the check is what drops them.
    unchecked = find_patterns(synthetic_facts(3), MinerSettings(agent_check=False)).patterns
    assert found(unchecked, "model = m-big") is not None
    assert found(unchecked, "config.region = eu") or found(unchecked, "config.region = us")


def test_null_discoveries_stay_within_the_fdr_over_seeds() -> None:
    """Benjamini–Hochberg at 0.05 over every test of a run: over 20 seeds the mean share of
    reported patterns that are null stays within 0.05 (+ 0.03 for chance and dependence)."""
    shares = []
    for seed in range(20):
        reward = "binary" if seed % 2 else "continuous"
        patterns = find_patterns(synthetic_facts(100 + seed, n=1600, reward=reward)).patterns
        assert patterns
        shares.append(sum(map(is_null, patterns)) / len(patterns))
    assert float(np.mean(shares)) <= 0.05 + 0.03


def test_support_below_the_minimum_is_never_reported() -> None:
    facts = synthetic_facts(4, n=1200)
    alphas = [i for i, f in enumerate(facts) if f.agent == "alpha"]
    # 19 alpha runs that all fail with tag `rare`, 20 that all succeed with tag `edge`
    for i in alphas[:19]:
        facts[i] = dataclasses.replace(facts[i], tags=("rare",), reward=0.0)
    for i in alphas[19:39]:
        facts[i] = dataclasses.replace(facts[i], tags=("edge",), reward=1.0)
    patterns = find_patterns(facts, MinerSettings(min_support=20)).patterns
    assert not [p for p in patterns if p["condition"] == "tag = rare"]
    edge = found(patterns, "tag = edge", "alpha")
    assert edge is not None and edge["evidence"]["n_with"] == 20
    # overall it has no support inside a second agent: the agent check cannot be passed
    assert found(patterns, "tag = edge") is None
    for pattern in patterns:
        assert pattern["evidence"]["n_with"] >= 20 and pattern["evidence"]["n_without"] >= 20
    stricter = find_patterns(facts, MinerSettings(min_support=21)).patterns
    assert not [p for p in stricter if p["condition"] == "tag = edge"]


def test_the_same_facts_give_the_same_patterns() -> None:
    facts = synthetic_facts(5, n=800)
    first, second = find_patterns(facts), find_patterns(list(facts))
    assert first.patterns == second.patterns
    assert find_patterns([]).patterns == []


# -- evidence a person can check ------------------------------------------------------------------


def meets(facts: ExecutionFacts, feature: dict[str, Any]) -> bool:
    """Whether an execution meets a pattern's condition, read from its machine form."""
    kind, key, op, value = feature["type"], feature["key"], feature["op"], feature["value"]
    if kind == "config":
        have = facts.config.get(key)
        if have is None or isinstance(have, bool) != isinstance(value, bool):
            return False
        return {"=": have == value, "<=": have <= value, ">": have > value}[op]
    if kind == "tool_pair":
        before, after = value
        tools = facts.tools
        return any(t == before and after in tools[i + 1 :] for i, t in enumerate(tools))
    listed = {"model": facts.models, "tag": facts.tags, "error": facts.error_types}
    listed["tool"] = facts.tools
    if kind in listed:
        return value in listed[kind]
    return {"agent": facts.agent, "task": facts.task_name, "prompt": facts.prompt_id}[kind] == value


def sides(
    facts: Sequence[ExecutionFacts], pattern: dict[str, Any], variable: str
) -> tuple[np.ndarray, np.ndarray, list[ExecutionFacts], list[ExecutionFacts]]:
    """The values of `variable` with and without the condition in the pattern's context."""
    context = pattern["context"]
    inside = [
        f
        for f in facts
        if (context["agent"] is None or f.agent == context["agent"])
        and (context["task_name"] is None or f.task_name == context["task_name"])
        and getattr(f, variable) is not None
    ]
    with_ = [f for f in inside if meets(f, pattern["feature"])]
    without = [f for f in inside if not meets(f, pattern["feature"])]
    return (
        np.array([getattr(f, variable) for f in with_]),
        np.array([getattr(f, variable) for f in without]),
        with_,
        without,
    )


def check_test(evidence: dict[str, Any], with_: np.ndarray, without: np.ndarray) -> None:
    """p, statistic and the intervals of one side each are scipy's on these samples."""
    if evidence["test"] == "fisher_exact":
        k1, k2 = int(with_.sum()), int(without.sum())
        table = [[k1, with_.size - k1], [k2, without.size - k2]]
        expected = stats.fisher_exact(table)
        for side, k, n in (("with_ci95", k1, with_.size), ("without_ci95", k2, without.size)):
            interval = stats.binomtest(k, n).proportion_ci(method="wilson")
            assert evidence[side] == pytest.approx([interval.low, interval.high], rel=1e-9)
    else:
        assert evidence["test"] == "mann_whitney_u"
        expected = stats.mannwhitneyu(with_, without)
        for side, sample in (("with_ci95", with_), ("without_ci95", without)):
            interval = stats.t.interval(
                0.95, sample.size - 1, loc=sample.mean(), scale=stats.sem(sample)
            )
            assert evidence[side] == pytest.approx(list(interval), rel=1e-9)
        welch = stats.ttest_ind(with_, without, equal_var=False)
        assert evidence["secondary"]["welch_t"]["p_value"] == pytest.approx(welch.pvalue, rel=1e-9)
    assert evidence["p_value"] == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
    assert evidence["statistic"] == pytest.approx(expected.statistic, rel=1e-9)


@pytest.mark.parametrize("reward", ["binary", "continuous"])
def test_evidence_numbers_are_scipys_own(reward: str) -> None:
    facts = synthetic_facts(6, n=1200, reward=reward)
    patterns = find_patterns(facts).patterns
    assert {p["kind"] for p in patterns} == {"success", "failure", "optimization"}
    json.dumps(patterns, allow_nan=False)  # plain JSON: no NaN, no infinity, no numpy ints
    for pattern in patterns:
        effect, evidence = pattern["effect"], pattern["evidence"]
        variable = effect["outcome"] if effect["outcome"] in METRICS else "reward"
        with_, without, with_facts, without_facts = sides(facts, pattern, variable)
        assert (evidence["n_with"], evidence["n_without"]) == (with_.size, without.size)
        assert effect["with"] == pytest.approx(with_.mean(), rel=1e-12)
        assert effect["without"] == pytest.approx(without.mean(), rel=1e-12)
        assert effect["difference"] == pytest.approx(with_.mean() - without.mean(), abs=1e-12)
        low, high = effect["ci95"]
        assert low <= effect["difference"] <= high
        if evidence["test"] == "mann_whitney_u":
            welch = stats.ttest_ind(with_, without, equal_var=False).confidence_interval()
            assert [low, high] == pytest.approx([welch.low, welch.high], rel=1e-9)
        check_test(evidence, with_, without)
        assert evidence["p_value"] <= evidence["q_value"] <= 0.05
        spans = evidence["sample_span_ids"]
        assert 0 < len(spans["with"]) <= 5 and 0 < len(spans["without"]) <= 5
        assert set(spans["with"]) <= {s for f in with_facts for s in f.sample_span_ids}
        assert set(spans["without"]) <= {s for f in without_facts for s in f.sample_span_ids}
        # the runs shown first are those furthest in the pattern's direction
        shown = {s: getattr(f, variable) for f in with_facts for s in f.sample_span_ids}
        extreme = with_.max() if pattern["kind"] == "success" else with_.min()
        assert shown[spans["with"][0]] == extreme
        if pattern["kind"] == "optimization":
            outcome = evidence["secondary"]["outcome"]
            reward_with, reward_without, _, _ = sides(facts, pattern, "reward")
            assert (outcome["n_with"], outcome["n_without"]) == (
                reward_with.size,
                reward_without.size,
            )
            test = stats.fisher_exact if reward == "binary" else None
            if test is not None:
                k1, k2 = int(reward_with.sum()), int(reward_without.sum())
                table = [[k1, reward_with.size - k1], [k2, reward_without.size - k2]]
                expected = test(table).pvalue
            else:
                expected = stats.mannwhitneyu(reward_with, reward_without).pvalue
            assert outcome["p_value"] == pytest.approx(expected, rel=1e-9)


def test_the_agent_check_combines_like_scipy() -> None:
    """Stouffer's weighted z over every leave-one-out set, as `combine_pvalues` gives it."""
    rng = np.random.default_rng(9)
    for _ in range(200):
        k = int(rng.integers(2, 6))
        p, w = rng.uniform(0, 0.2, k) ** rng.uniform(1, 4), rng.uniform(1, 30, k)
        expected = all(
            stats.combine_pvalues(
                np.delete(p, i), method="stouffer", weights=np.delete(w, i)
            ).pvalue
            < 0.05
            for i in range(k)
        )
        assert holds_within_agents(list(zip(p, w, strict=True)), 0.05) is expected
    assert not holds_within_agents([(1e-9, 10.0)], 0.05)  # one agent cannot pass


def test_explanations_carry_the_numbers() -> None:
    patterns = find_patterns(synthetic_facts(7)).patterns
    low = found(patterns, "config.temperature <= 0.2", "alpha")
    e, v = low["effect"], low["evidence"]
    lo, hi = v["with_ci95"]
    assert low["explanation"] == (
        f"alpha runs with config.temperature ≤ 0.2 succeed {100 * e['with']:.0f} % "
        f"(n={v['n_with']}, 95 % CI {100 * lo:.0f}–{100 * hi:.0f} %) against "
        f"{100 * e['without']:.0f} % otherwise (n={v['n_without']}); "
        f"q={v['q_value']:.2g}, Fisher, BH"
    )
    cheaper = found(patterns, "config.cache = true", "beta", "beta-task-0")
    assert cheaper["explanation"].startswith("beta runs of task beta-task-0 with config.cache")
    assert "tokens on average" in cheaper["explanation"]
    assert "with no significant drop in success" in cheaper["explanation"]
    assert cheaper["explanation"].endswith("Mann–Whitney, BH")


def test_mining_stays_vectorised() -> None:
    """Not a timing test (bench/patterns_bench.py is): a guard that the per-condition work
    stays vectorised, on 20,000 executions."""
    facts = synthetic_facts(8, n=20_000)
    started = time.perf_counter()
    result = find_patterns(facts)
    assert time.perf_counter() - started < 30
    assert result.diagnostics["scipy_tests"] < result.diagnostics["tests"] / 5


# -- through a store -------------------------------------------------------------------------------


async def add_runs(store: EvolutionStore, temperatures: list[float], rewards: list[float]) -> None:
    spans, given = [], []
    for temperature, reward in zip(temperatures, rewards, strict=True):
        task, _ = await store.create_task(TaskIn(name="solve"))
        execution = await store.start_execution(
            task["id"], ExecutionIn(config={"temperature": temperature})
        )
        start = time.time_ns()
        spans.append(
            SpanRecord(
                trace_id=trace_id(),
                span_id=span_id(),
                name="agent",
                start_time=start,
                end_time=start + 1_000_000,
                task_id=task["id"],
                execution_id=execution["id"],
                attributes={"gen_ai.agent.name": "support"},
            )
        )
        given.append(RewardIn(value=reward, execution_id=execution["id"]))
    await store.ingest(spans, given)


async def test_mining_through_a_store(store: EvolutionStore) -> None:
    temperatures = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9] * 14  # 42 at or below 0.3, 42 above
    rewards = [1.0 if t <= 0.3 else 0.0 for t in temperatures]
    rewards[:6] = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]  # not quite deterministic
    await add_runs(store, temperatures, rewards)

    patterns = await mine_patterns(store, agent="support", min_support=20)
    low = next(p for p in patterns if p["condition"] == "config.temperature <= 0.3")
    assert low["kind"] == "success" and low["context"] == {"agent": "support", "task_name": None}
    assert (low["evidence"]["n_with"], low["evidence"]["n_without"]) == (42, 42)
    expected = stats.fisher_exact([[39, 3], [3, 39]]).pvalue
    assert low["evidence"]["p_value"] == pytest.approx(expected, rel=1e-9)
    stored = await store.get_pattern(low["id"])
    assert (
        stored["status"] == "active" and stored["evidence"]["q_value"] == low["evidence"]["q_value"]
    )

    again = await mine_patterns(store, agent="support", min_support=20)
    assert sorted(p["id"] for p in again) == sorted(p["id"] for p in patterns)
    listed = (await store.list_patterns(agent="support", limit=100)).items
    assert sorted(p["id"] for p in listed) == sorted(p["id"] for p in patterns)  # no duplicates

    # Nothing to find by status (every execution is still running): the rows go stale.
    assert await mine_patterns(store, agent="support", outcome="status", min_support=20) == []
    assert (await store.get_pattern(low["id"]))["status"] == "stale"
    assert await mine_patterns(store, agent="support", min_support=20, save=False)
    assert (await store.get_pattern(low["id"]))["status"] == "stale"  # save=False wrote nothing
