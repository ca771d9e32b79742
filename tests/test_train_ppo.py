"""`train_ppo` and `evolution-store train ppo` end to end, on both backends: an agent logs a
contextual bandit's decisions with `decide()` (a behaviour policy that does not favour the best
actions, its probabilities logged) into an embedded store, each run is rewarded, the CLI
trains, and `Policy.load` on the written policy.json prefers the best action in every state."""

from __future__ import annotations

import json
import random

import pytest
from click.testing import CliRunner

import instrumentation
from evolution_store import EvolutionStore
from evolution_store.cli import cli
from evolution_store.errors import InvalidInput
from evolution_store.learn.ppo import train_ppo
from instrumentation import Policy, decide, task

OTEL_ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
ACTIONS = ["search", "answer", "escalate"]
BEST = {"refund": "escalate", "order": "answer", "other": "search"}
# The behaviour policy puts the least weight on the best action of two states out of three.
BEHAVIOUR = {
    "refund": {"search": 0.5, "answer": 0.3, "escalate": 0.2},
    "order": {"search": 0.5, "answer": 0.2, "escalate": 0.3},
    "other": {"search": 0.4, "answer": 0.3, "escalate": 0.3},
}


@pytest.fixture
def session(store_url, monkeypatch):
    for name in OTEL_ENV:
        monkeypatch.delenv(name, raising=False)
    session = instrumentation.configure(store_url=store_url, service_name="toy", set_global=False)
    yield session
    session.shutdown()


def log_bandit(runs: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    for _ in range(runs):
        intent = rng.choice(list(BEST))
        probs = BEHAVIOUR[intent]
        action = rng.choices(ACTIONS, weights=[probs[a] for a in ACTIONS])[0]
        with task("support") as t:
            decide(
                "next_step",
                ACTIONS,
                action,
                prob=probs[action],
                state={"intent": intent},
                agent="support",
            )
            # the run's outcome, aimed at the execution: credited at its (only) step
            t.reward(1.0 if action == BEST[intent] else 0.0)


def test_train_ppo_cli_learns_the_best_action(session, store_url, tmp_path):
    log_bandit(240)
    with task("support"):  # a decision without prob: counted, not learned from
        decide("next_step", ACTIONS, "search", state={"intent": "order"}, agent="support")
    assert session.force_flush()
    out = tmp_path / "ppo"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "ppo",
            "--agent",
            "support",
            "--decision",
            "next_step",
            "--db",
            store_url,
            "--out",
            str(out),
            "--seed",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["round", "epochs", "loss", "kl", "clip", "entropy", "ev"]
    assert "241 steps" not in result.output  # the step without prob is left out...
    assert "1 without prob" in result.output  # ...and said so
    learned = json.loads((out / "learned_policy.json").read_text())
    assert learned["steps_without_prob"] == 1
    assert learned["steps_used"] == 240
    assert set(learned["actions"]) == set(ACTIONS)
    assert len(learned["rounds"]) >= 1
    policy = Policy.load(out / "policy.json")
    for intent, best in BEST.items():
        probs = policy.probabilities({"intent": intent}, ACTIONS)
        assert max(probs, key=probs.get) == best, (intent, probs)
        assert probs[best] >= 0.9, (intent, probs)


async def test_train_ppo_without_decisions(store_url):
    store = await EvolutionStore.open(store_url)
    try:
        with pytest.raises(InvalidInput, match="no decision"):
            await train_ppo(store, agent="support", decision="next_step")
        with pytest.raises(InvalidInput, match="clip"):
            await train_ppo(store, agent="support", decision="next_step", clip=2.0)
    finally:
        await store.close()


def test_train_ppo_cli_without_decisions(store_url, tmp_path):
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "ppo",
            "--agent",
            "a",
            "--decision",
            "d",
            "--db",
            store_url,
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code != 0
    assert "no decision named 'd'" in result.output
    assert not (tmp_path / "policy.json").exists()
