"""Applying a pattern (`evolution_store.pattern_apply`): the rule each kind of condition
follows (`plan`, no store), and the write on SQLite and Postgres — the A/B experiment or the
config proposal, the `pattern.applied` marker and the pattern's `applied` record stored
together, or nothing at all when apply refuses."""

from __future__ import annotations

import pytest
from factories import pattern

from evolution_store.errors import Conflict, NotFound
from evolution_store.pattern_apply import ALL_AGENTS, MARKER_KIND, plan
from evolution_store.registry_models import ApproveIn, ExperimentIn, PromptIn, VariantIn


def prompt_pattern(prompt_id: str, kind: str = "success", **overrides):
    feature = {"type": "prompt", "key": None, "op": "=", "value": prompt_id}
    return pattern(f"prompt = {prompt_id}", kind=kind, feature=feature, **overrides)


def config_pattern(op: str, value, kind: str = "success", key: str = "temperature", **kw):
    feature = {"type": "config", "key": key, "op": op, "value": value}
    return pattern(f"config.{key} {op} {value}", kind=kind, feature=feature, **kw)


def stored(item: dict, **fields) -> dict:
    """`item` as the store answers a pattern (status and applied are the store's)."""
    return {"status": "active", "applied": None, **item, **fields}


# -- the rules, from the pattern alone ------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "kind", "change", "before"),
    [
        ("<=", 0.3, "success", "<= 0.3", "> 0.3"),
        (">", 0.7, "success", "> 0.7", "<= 0.7"),
        ("<=", 0.3, "optimization", "<= 0.3", "> 0.3"),
        ("<=", 0.3, "failure", "> 0.3", "<= 0.3"),
        (">", 0.7, "failure", "<= 0.7", "> 0.7"),
        ("=", "concise", "success", "concise", "!= concise"),
        ("=", "concise", "failure", "!= concise", "concise"),
        ("=", 3, "success", 3, "!= 3"),
    ],
)
def test_a_config_condition_becomes_a_proposal_of_the_better_side(op, value, kind, change, before):
    proposal = plan(stored(config_pattern(op, value, kind)))
    assert proposal.action == "proposal"
    assert proposal.agent == "support"
    assert proposal.change == {"config.temperature": change}
    assert proposal.before == {"config.temperature": before}


@pytest.mark.parametrize("kind", ["success", "optimization"])
def test_a_prompt_that_does_better_becomes_an_experiment_for_it(kind):
    proposal = plan(stored(prompt_pattern("p2", kind)))
    assert (proposal.action, proposal.prompt_id, proposal.prompt_wins) == ("experiment", "p2", True)
    assert plan(stored(prompt_pattern("p2", "failure"))).prompt_wins is False


@pytest.mark.parametrize(
    ("feature", "why"),
    [
        ({"type": "tool", "key": None, "op": "used", "value": "search"}, "decided while it runs"),
        (
            {"type": "tool_pair", "key": None, "op": "before", "value": ["search", "answer"]},
            "order of tool calls",
        ),
        ({"type": "error", "key": None, "op": "=", "value": "TimeoutError"}, "an outcome"),
        ({"type": "tag", "key": None, "op": "=", "value": "beta"}, "tags label runs"),
        ({"type": "model", "key": None, "op": "=", "value": "gpt-4o"}, "config.model"),
        ({"type": "agent", "key": None, "op": "=", "value": "support"}, "caller's choice"),
        ({"type": "task", "key": None, "op": "=", "value": "refund"}, "what was asked"),
    ],
)
def test_what_is_not_a_setting_is_refused_with_the_reason(feature, why):
    with pytest.raises(Conflict) as refused:
        plan(stored(pattern("some condition", feature=feature)))
    message = str(refused.value)
    assert "not a setting the store can change" in message and why in message
    assert "some condition" in message


def test_an_applied_or_stale_pattern_is_refused():
    applied = {"applied_by": "3f2a", "applied_at": 5, "experiment_id": "x1"}
    with pytest.raises(Conflict, match=r"already applied by 3f2a .*experiment 'x1'"):
        plan(stored(prompt_pattern("p2"), status="applied", applied=applied))
    with pytest.raises(Conflict, match="is stale: .*mine again"):
        plan(stored(config_pattern("<=", 0.3), status="stale"))


def test_an_unknown_op_is_refused_not_guessed():
    with pytest.raises(Conflict, match="no rule turns a 'config' condition with op 'used'"):
        plan(stored(config_pattern("used", 1)))
    with pytest.raises(Conflict, match="'prompt' condition with op '<='"):
        plan(stored(pattern("prompt <= p", feature={"type": "prompt", "op": "<=", "value": 1})))


# -- the write, both backends ----------------------------------------------------------------------


async def make_prompt(store, content: str, agent: str = "support", approve: bool = False):
    prompt, _ = await store.create_prompt(
        PromptIn(agent=agent, content=content, status="candidate")
    )
    if approve:
        prompt = await store.approve_prompt(prompt["id"], ApproveIn(), approved_by="tester")
    return prompt


async def markers(store, agent: str = "support", kind: str = MARKER_KIND) -> list[dict]:
    return (await store.list_markers(agent=agent, kind=kind)).items


async def refused_unchanged(store, item: dict, match: str) -> None:
    """Apply must refuse `item` with `match`, leaving it active with no marker written."""
    with pytest.raises(Conflict, match=match):
        await store.apply_pattern(item["id"], applied_by="tester")
    again = await store.get_pattern(item["id"])
    assert (again["status"], again["applied"]) == ("active", None)
    assert await markers(store, agent=item["context"]["agent"] or ALL_AGENTS) == []


async def test_a_better_prompt_starts_an_ab_against_production(store):
    v1 = await make_prompt(store, "v1", approve=True)
    v2 = await make_prompt(store, "v2")
    item = prompt_pattern(v2["id"])
    await store.save_patterns([item], scope={"agent": "support"})

    applied = await store.apply_pattern(item["id"], applied_by="3f2a9c")
    assert applied["status"] == "applied"
    record = applied["applied"]
    assert record["action"] == "experiment" and record["applied_by"] == "3f2a9c"
    assert record["variants"] == [v1["id"], v2["id"]] and record["applied_at"] > 0
    experiment = await store.get_experiment(record["experiment_id"])
    assert (experiment["agent"], experiment["kind"], experiment["status"]) == (
        "support",
        "ab",
        "running",
    )
    assert [(v["prompt_id"], v["weight"]) for v in experiment["variants"]] == [
        (v1["id"], 0.5),
        (v2["id"], 0.5),
    ]
    # The experiment's own marker and the pattern's, written with it.
    (marker,) = await markers(store)
    assert marker["id"] == record["marker_span_id"]
    assert marker["before"] == {"prompt_id": v1["id"]}
    assert marker["after"]["experiment_id"] == experiment["id"]
    assert marker["after"]["pattern_id"] == item["id"]
    assert marker["attributes"]["evolution.pattern.id"] == item["id"]
    assert len(await markers(store, kind="experiment.started")) == 1

    with pytest.raises(Conflict, match="already applied by 3f2a9c"):
        await store.apply_pattern(item["id"], applied_by="someone-else")
    assert len(await markers(store)) == 1


async def test_a_prompt_apply_cannot_test_is_refused_and_nothing_is_stored(store):
    v1 = await make_prompt(store, "v1")
    v2 = await make_prompt(store, "v2")
    no_production = prompt_pattern(v2["id"])
    unknown = prompt_pattern("0123456789abcdef", agent=None)
    other_agent = prompt_pattern(v2["id"], agent="billing")
    await store.save_patterns([unknown], scope={"agent": None})  # first: it retires the rest
    await store.save_patterns([no_production], scope={"agent": "support"})
    await store.save_patterns([other_agent], scope={"agent": "billing"})

    await refused_unchanged(store, no_production, "has no production prompt to test")
    await refused_unchanged(store, unknown, "is not in the prompt registry")
    await refused_unchanged(store, other_agent, "belongs to agent 'support'")

    await store.approve_prompt(v1["id"], ApproveIn(), approved_by="tester")
    running = ExperimentIn(
        agent="support",
        variants=[
            VariantIn(prompt_id=v1["id"], weight=0.5),
            VariantIn(prompt_id=v2["id"], weight=0.5),
        ],
    )
    await store.create_experiment(running)
    await refused_unchanged(store, no_production, "already runs A/B experiment")
    assert len((await store.list_experiments(agent="support")).items) == 1

    production = prompt_pattern(v1["id"], agent="support", task_name="refund")
    await store.save_patterns([production], scope={"agent": "support"})
    await refused_unchanged(store, production, "is already agent 'support'")


async def test_a_failing_production_prompt_is_tested_against_the_one_before(store):
    v1 = await make_prompt(store, "v1", approve=True)
    v2 = await make_prompt(store, "v2", approve=True)  # v1 archived
    v3 = await make_prompt(store, "v3")
    worse_draft = prompt_pattern(v3["id"], "failure")
    worse_production = prompt_pattern(v2["id"], "failure")
    await store.save_patterns([worse_draft, worse_production], scope={"agent": "support"})

    await refused_unchanged(
        store, worse_draft, r"not agent 'support'.s production prompt .*archive"
    )
    applied = await store.apply_pattern(worse_production["id"], applied_by="tester")
    assert applied["applied"]["variants"] == [v2["id"], v1["id"]]


async def test_a_failing_first_production_prompt_has_nothing_to_roll_back_to(store):
    v1 = await make_prompt(store, "v1", approve=True)
    worse = prompt_pattern(v1["id"], "failure")
    await store.save_patterns([worse], scope={"agent": "support"})
    await refused_unchanged(store, worse, "no earlier version was ever production")


async def test_a_config_pattern_is_recorded_as_a_proposal_with_a_marker(store):
    agent_wide = config_pattern("<=", 0.3)
    overall = config_pattern("=", "concise", "failure", key="style", agent=None)
    await store.save_patterns([agent_wide, overall], scope={"agent": None})

    applied = await store.apply_pattern(agent_wide["id"], applied_by="tester")
    record = applied["applied"]
    assert record["action"] == "proposal" and record["agent"] == "support"
    assert record["proposal"] == {"change": {"config.temperature": "<= 0.3"}}
    (marker,) = await markers(store)
    assert marker["before"] == {"config.temperature": "> 0.3"}
    assert marker["after"]["config.temperature"] == "<= 0.3"
    assert marker["after"]["condition"] == "config.temperature <= 0.3"

    # Mined over every agent: its marker is under agent `*`.
    applied = await store.apply_pattern(overall["id"], applied_by="tester")
    assert applied["applied"]["proposal"] == {"change": {"config.style": "!= concise"}}
    (marker,) = await markers(store, agent=ALL_AGENTS)
    assert marker["before"] == {"config.style": "concise"}


async def test_unknown_not_a_setting_and_stale_patterns(store):
    with pytest.raises(NotFound):
        await store.apply_pattern("0000000000000000", applied_by="tester")
    tool = pattern(
        "tool search used", feature={"type": "tool", "key": None, "op": "used", "value": "search"}
    )
    stale = config_pattern(">", 0.9)
    await store.save_patterns([tool, stale], scope={"agent": "support"})
    await refused_unchanged(store, tool, "not a setting the store can change")
    # Mined again without it: stale, and apply asks for a fresh mining.
    await store.save_patterns([tool], scope={"agent": "support"})
    assert (await store.get_pattern(stale["id"]))["status"] == "stale"
    with pytest.raises(Conflict, match="is stale"):
        await store.apply_pattern(stale["id"], applied_by="tester")
