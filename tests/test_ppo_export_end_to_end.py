"""PPO and the fine-tuning exports against a server started the README's way
(`evolution-store serve`): an agent logs decisions and LLM calls through the SDK, another
client posts decisions, spans and rewards as JSON over REST, and the CLI trains and exports
from the server's database. The learned policy is checked against the known best actions, and
each export is read back as its consumer reads it."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from factories import span_id, trace_id

import instrumentation
from evolution_store.cli import cli
from instrumentation import Policy, decide, task

ACTIONS = ["search", "answer", "escalate"]
BEST = {"refund": "escalate", "order": "answer", "other": "search"}
# Uniform: the behaviour policy knows nothing, and its probability is logged with each choice.
PROB = 1 / len(ACTIONS)
QUESTIONS = {"capital of France?": ("Paris", "Lyon"), "2+2?": ("4", "5")}


@pytest.fixture
def server(live_server, tmp_path, monkeypatch):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    return live_server(f"sqlite:///{tmp_path / 'served.db'}")


def sdk_decisions(server, runs: int, rng: random.Random) -> None:
    """The agent's own runs, through the SDK: one decision and the run's reward each."""
    session = instrumentation.configure(server.url, service_name="toy", set_global=False)
    try:
        for _ in range(runs):
            intent = rng.choice(list(BEST))
            action = rng.choice(ACTIONS)
            with task("support") as run:
                decide(
                    "route", ACTIONS, action, prob=PROB, state={"intent": intent}, agent="support"
                )
                run.reward(1.0 if action == BEST[intent] else 0.0)
        assert session.force_flush()
    finally:
        session.shutdown()


def rest_decisions(client: httpx.Client, runs: int, rng: random.Random) -> None:
    """Another language's runs: decision spans and rewards as plain JSON."""
    for n in range(runs):
        intent = rng.choice(list(BEST))
        action = rng.choice(ACTIONS)
        trace, span = trace_id(), span_id()
        attributes = {
            "evolution.task.id": f"rest-task-{n}",
            "evolution.execution.id": f"rest-exec-{n}",
            "gen_ai.agent.name": "support",
            "evolution.decision.name": "route",
            "evolution.decision.action": action,
            "evolution.decision.actions": ACTIONS,
            "evolution.decision.prob": PROB,
            "evolution.decision.state.intent": intent,
        }
        body = {
            "trace_id": trace,
            "span_id": span,
            "name": "evolution.decision",
            "start_time": 1_700_000_000_000_000_000 + n,
            "attributes": attributes,
        }
        assert client.post("/api/v1/spans", json=body).status_code in (200, 201)
        reward = {
            "value": 1.0 if action == BEST[intent] else 0.0,
            "span_id": span,
            "trace_id": trace,
        }
        assert client.post("/api/v1/rewards", json=reward).status_code in (200, 201)


def test_ppo_learns_from_decisions_logged_by_sdk_and_rest(server, tmp_path):
    rng = random.Random(11)
    sdk_decisions(server, 150, rng)
    with httpx.Client(base_url=server.url) as client:
        rest_decisions(client, 150, rng)
    out = tmp_path / "ppo"
    db = f"sqlite:///{tmp_path / 'served.db'}"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "ppo",
            "--agent",
            "support",
            "--decision",
            "route",
            "--db",
            db,
            "--out",
            str(out),
            "--register",
        ],
    )
    assert result.exit_code == 0, result.output
    learned = json.loads((out / "learned_policy.json").read_text())
    assert learned["steps_used"] == 300
    policy = Policy.load(out / "policy.json")
    for intent, best in BEST.items():
        probs = policy.probabilities({"intent": intent}, ACTIONS)
        assert probs[best] >= 0.9, (intent, probs)

    # --register made a candidate; once a person approves it, agents load it by reference.
    assert "registered support.policy.route v1" in result.output
    with httpx.Client(base_url=server.url) as client:
        candidate = client.get("/api/v1/prompts", params={"agent": "support.policy.route"}).json()[
            "items"
        ][0]
        assert (candidate["status"], candidate["created_by"]) == ("candidate", "ppo")
        approved = client.post(f"/api/v1/prompts/{candidate['id']}/approve", json={})
        assert approved.status_code == 200, approved.text
    session = instrumentation.configure(server.url, service_name="toy", set_global=False)
    try:
        served = Policy.load("registry:support/route")
        assert served.weights == policy.weights
        with pytest.raises(ValueError, match="registry reference"):
            Policy.load("registry:no-decision")
    finally:
        session.shutdown()


def sdk_llm_calls(server) -> None:
    """LLM calls traced by @track_evolution (a chat client's messages in, text out), one
    right and one wrong answer to the same question, each run rewarded."""
    session = instrumentation.configure(server.url, service_name="toy", set_global=False)
    answers = iter(["Paris", "Lyon"])

    @instrumentation.track_evolution(name="chat", operation="chat")
    def chat(messages: list[dict[str, str]]) -> str:
        return next(answers)

    try:
        for value in (1.0, 0.0):
            with task("qa") as run:
                chat([{"role": "user", "content": "capital of France?"}])
                run.reward(value)
        assert session.force_flush()
    finally:
        session.shutdown()


def rest_llm_calls(client: httpx.Client) -> None:
    """LLM spans in the GenAI conventions posted as JSON, each rewarded by span id."""
    for n, (answer, value) in enumerate((("4", 1.0), ("5", 0.0))):
        trace, span = trace_id(), span_id()
        messages = [{"role": "user", "content": "2+2?"}]
        body = {
            "trace_id": trace,
            "span_id": span,
            "name": "chat",
            "start_time": 1_700_000_000_000_000_000 + n,
            "end_time": 1_700_000_000_000_000_100 + n,
            "attributes": {
                "gen_ai.agent.name": "chat",
                "gen_ai.operation.name": "chat",
                "gen_ai.input.messages": json.dumps(messages),
                "gen_ai.output.messages": json.dumps([{"role": "assistant", "content": answer}]),
            },
        }
        assert client.post("/api/v1/spans", json=body).status_code in (200, 201)
        reward = {"value": value, "span_id": span, "trace_id": trace}
        assert client.post("/api/v1/rewards", json=reward).status_code in (200, 201)


def run_export(db: str, fmt: str, out: Path, *options: str, agent: str = "chat") -> Any:
    return CliRunner().invoke(
        cli, ["export", "--format", fmt, "--agent", agent, "--db", db, "--out", str(out), *options]
    )


def export(db: str, fmt: str, out: Path, *options: str) -> None:
    result = run_export(db, fmt, out, *options)
    assert result.exit_code == 0, result.output
    assert f"{fmt} records to {out}" in result.output


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_exports_from_traced_and_rewarded_llm_spans(server, tmp_path):
    sdk_llm_calls(server)
    with httpx.Client(base_url=server.url) as client:
        rest_llm_calls(client)
    db = f"sqlite:///{tmp_path / 'served.db'}"
    france = [{"role": "user", "content": "capital of France?"}]
    sum_ = [{"role": "user", "content": "2+2?"}]

    export(db, "trl-sft", tmp_path / "sft.jsonl", "--min-reward", "1")
    assert sorted(row["messages"][-1]["content"] for row in lines(tmp_path / "sft.jsonl")) == [
        "4",
        "Paris",
    ]

    export(db, "trl-dpo", tmp_path / "dpo.jsonl")
    pairs = {row["prompt"][0]["content"]: row for row in lines(tmp_path / "dpo.jsonl")}
    assert pairs["capital of France?"]["prompt"] == france
    assert pairs["capital of France?"]["chosen"][0]["content"] == "Paris"
    assert pairs["capital of France?"]["rejected"][0]["content"] == "Lyon"
    assert pairs["2+2?"]["prompt"] == sum_
    assert (pairs["2+2?"]["chosen"][0]["content"], pairs["2+2?"]["rejected"][0]["content"]) == (
        "4",
        "5",
    )

    export(db, "trl-kto", tmp_path / "kto.jsonl", "--min-reward", "0.5")
    labels = {
        row["completion"][0]["content"]: row["label"] for row in lines(tmp_path / "kto.jsonl")
    }
    assert labels == {"Paris": True, "Lyon": False, "4": True, "5": False}

    export(db, "triplets", tmp_path / "triplets.jsonl")
    triplets = lines(tmp_path / "triplets.jsonl")
    assert {(row["response"], row["reward"]) for row in triplets} == {
        ("Paris", 1.0),
        ("Lyon", 0.0),
        ("4", 1.0),
        ("5", 0.0),
    }
    assert all(row["metadata"]["span_id"] and row["metadata"]["task_id"] for row in triplets)

    export(db, "verl", tmp_path / "verl.parquet", "--min-reward", "1")
    table = pq.read_table(tmp_path / "verl.parquet").to_pylist()
    assert len(table) == 4
    truths = {row["reward_model"]["ground_truth"] for row in table}
    assert truths == {"Paris", "4", None}
    assert {row["data_source"] for row in table} == {"evolution-store/chat"}


def test_export_cli_errors(tmp_path):
    db = f"sqlite:///{tmp_path / 'empty.db'}"
    empty = run_export(db, "triplets", tmp_path / "t.jsonl", agent="none")
    assert empty.exit_code == 0 and "wrote 0 triplets records" in empty.output
    since = run_export(db, "trl-sft", tmp_path / "x", "--since", "soon")
    assert since.exit_code == 2 and "neither an ISO-8601 time" in since.output
    unwritable = run_export(db, "trl-sft", tmp_path / "missing" / "x.jsonl")
    assert unwritable.exit_code == 1 and "cannot write" in unwritable.output
