"""The examples in `examples/` run as a newcomer would run them — a subprocess against a real
`evolution-store serve` (SQLite and Postgres) — and their data is then read back over REST:
spans stored, rewards resolved to the right span ids, tags indexed.

`track_agent.py` also runs in embedded mode (`--store sqlite:///…`); a server is started on
that file afterwards, only to read it back the same way.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run `examples/<name>` to completion; fail with its output unless it exits 0."""
    child_env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    # A long batch delay: nothing is exported before the example flushes, whatever the load.
    child_env["OTEL_BSP_SCHEDULE_DELAY"] = "60000"
    child_env.update(env or {})
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=child_env,
    )
    assert result.returncode == 0, (
        f"{name} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def api(server: Any) -> httpx.Client:
    return httpx.Client(base_url=server.url + "/api/v1", timeout=30)


def items(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get(path, params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    return response.json()["items"]


# -- track_agent.py ---------------------------------------------------------------------------


def check_track_agent(client: httpx.Client, stdout: str) -> None:
    # One task, retried once: two executions, the first failed.
    (task,) = items(client, "/tasks")
    assert (task["name"], task["status"], task["tags"]) == ("weather", "succeeded", ["weather-v1"])
    executions = items(client, f"/tasks/{task['id']}/executions")
    assert sorted((e["attempt"], e["status"]) for e in executions) == [
        (1, "failed"),
        (2, "succeeded"),
    ]
    failed, succeeded = sorted(executions, key=lambda e: e["attempt"])

    # Sync, async and generator functions each made spans, tagged and stamped with the task.
    spans = items(client, "/spans", tag="weather-v1")
    assert Counter(s["name"] for s in spans) == {"weather-agent": 2, "lookup": 2, "stream_reply": 1}
    assert {s["task_id"] for s in spans} == {task["id"]}
    by_id = {s["span_id"]: s for s in spans}
    errors = {s["name"] for s in spans if s["status_code"] == "error"}
    assert errors == {"weather-agent", "lookup"}
    assert {s["execution_id"] for s in spans if s["status_code"] == "error"} == {failed["id"]}
    agents = {s["execution_id"]: s for s in spans if s["name"] == "weather-agent"}
    root = agents[succeeded["id"]]
    assert root["parent_span_id"] is None
    assert root["attributes"]["gen_ai.operation.name"] == "invoke_agent"
    assert "Paris is sunny" in root["attributes"]["output.value"]
    stream = next(s for s in spans if s["name"] == "stream_reply")
    assert stream["parent_span_id"] == root["span_id"]

    # A reward sent before its spans were exported was stored pending, then linked.
    assert "thumbs_up stored, resolved: False" in stdout
    rewards = {r["name"]: r for r in items(client, "/rewards", tag="weather-v1")}
    assert set(rewards) == {"tool_hit", "task_success", "thumbs_up", "judge", "review"}
    for reward in rewards.values():
        assert reward["resolved"], reward
        assert reward["span_ids"] and set(reward["span_ids"]) <= set(by_id), reward
    assert set(rewards["thumbs_up"]["span_ids"]) == {s["span_id"] for s in agents.values()}
    for name in ("task_success", "judge", "review"):
        assert rewards[name]["span_ids"] == [root["span_id"]], name
    (tool,) = rewards["tool_hit"]["span_ids"]
    assert (by_id[tool]["name"], by_id[tool]["execution_id"]) == ("lookup", succeeded["id"])
    assert rewards["review"]["dimensions"] == {"accuracy": 0.9, "style": 0.6}
    assert rewards["review"]["tags"] == ["reviewed"]
    assert [r["name"] for r in items(client, "/rewards", tag="reviewed")] == ["review"]
    assert items(client, "/rewards", tag="weather-v1", tag_scope="reward") == []

    summary = client.get("/rewards/summary", params={"group_by": "name", "tag": "weather-v1"})
    groups = {g["key"]: g for g in summary.json()["groups"]}
    assert set(groups) == set(rewards)
    assert groups["judge"]["count"] == 1 and groups["judge"]["mean"] == pytest.approx(0.8)
    assert "summary        judge: n=1 mean=0.80" in stdout


def test_track_agent_against_a_server(live_server, store_url, tmp_path):
    server = live_server(store_url)
    stdout = run_example("track_agent.py", server.url, cwd=tmp_path)
    with api(server) as client:
        check_track_agent(client, stdout)


def test_track_agent_embedded(live_server, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'agent.db'}"
    stdout = run_example("track_agent.py", "--store", db_url, cwd=tmp_path)
    server = live_server(db_url)  # only to read the file back over REST
    with api(server) as client:
        check_track_agent(client, stdout)


# -- otel_app.py ------------------------------------------------------------------------------


def check_otel_trace(client: httpx.Client, trace_id: str) -> None:
    spans = {s["name"]: s for s in items(client, "/spans", trace_id=trace_id)}
    assert set(spans) == {"invoke_agent support", "chat gpt-4o-mini", "execute_tool get_order"}
    root, chat = spans["invoke_agent support"], spans["chat gpt-4o-mini"]
    assert root["parent_span_id"] is None
    assert {s["parent_span_id"] for s in spans.values() if s is not root} == {root["span_id"]}
    assert {s["resource"]["service.name"] for s in spans.values()} == {"support-bot"}
    assert (chat["kind"], chat["model"], chat["input_tokens"], chat["output_tokens"]) == (
        "client",
        "gpt-4o-mini-2024-07-18",
        412,
        37,
    )
    # No task id in the trace: it became a task of its own.
    (task_id,) = {s["task_id"] for s in spans.values()}
    assert task_id
    # The gen_ai.evaluation.result event became a reward linked to the chat span.
    (reward,) = items(client, "/rewards", trace_id=trace_id)
    assert (reward["name"], reward["value"], reward["source"]) == ("relevance", 0.85, "llm")
    assert reward["resolved"] and reward["span_ids"] == [chat["span_id"]]


def test_otel_app_over_http_and_grpc(live_server, store_url, tmp_path):
    server = live_server(store_url, grpc=True)
    endpoints = {
        "http/protobuf": server.otlp_http_url.removesuffix("/v1/traces"),
        "grpc": f"http://{server.grpc_target}",
    }
    trace_ids = []
    for protocol, endpoint in endpoints.items():
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_SERVICE_NAME": "support-bot",
        }
        stdout = run_example("otel_app.py", cwd=tmp_path, env=env)
        trace_ids.append(re.search(r"trace ([0-9a-f]{32}) ", stdout).group(1))
    assert len(set(trace_ids)) == 2
    with api(server) as client:
        for trace_id in trace_ids:
            check_otel_trace(client, trace_id)
        assert len(items(client, "/tasks")) == 2


# -- http_rewards.py --------------------------------------------------------------------------


def test_http_rewards(live_server, store_url, tmp_path):
    server = live_server(store_url)
    stdout = run_example("http_rewards.py", server.url, cwd=tmp_path)
    assert "reward stored, resolved: False" in stdout
    with api(server) as client:
        spans = {s["name"]: s for s in items(client, "/spans")}
        assert set(spans) == {"support-agent", "chat"}
        assert spans["support-agent"]["tags"] == ["example"]
        assert (spans["chat"]["model"], spans["chat"]["input_tokens"]) == ("gpt-4o-mini", 420)
        rewards = {r["name"]: r for r in items(client, "/rewards", tag="example")}
        assert set(rewards) == {"thumbs_up", "grader"}
        assert all(r["resolved"] for r in rewards.values())
        assert sorted(rewards["thumbs_up"]["span_ids"]) == sorted(
            s["span_id"] for s in spans.values()
        )
        assert rewards["grader"]["span_ids"] == [spans["chat"]["span_id"]]


# -- prompt_registry.py -----------------------------------------------------------------------


def check_prompt_registry(client: httpx.Client, stdout: str) -> None:
    # Two versions; after the winner's approval and the rollback, v1 is production again.
    prompts = {p["version"]: p for p in items(client, "/prompts", agent="support-bot")}
    assert set(prompts) == {1, 2}
    v1, v2 = prompts[1], prompts[2]
    assert (v1["status"], v2["status"], v2["parent_ids"]) == ("production", "archived", [v1["id"]])
    assert "production" in v1["labels"] and "production" not in v2["labels"]
    assert "6. experiment completed, winner v2; production is now v2" in stdout
    assert "7. rolled back: production is v1 again" in stdout

    # The A/B's results are the users' ratings, counted for the version each user was served.
    experiment_id = re.search(r"started A/B experiment ([0-9a-f]+) ", stdout).group(1)
    experiment = client.get(f"/experiments/{experiment_id}").json()
    assert (experiment["status"], experiment["winner"]) == ("completed", v2["id"])
    first, second = experiment["results"]
    served = re.search(r"served 400 users: v1 to (\d+), v2 to (\d+)", stdout)
    assert (first["n"], second["n"]) == (int(served.group(1)), int(served.group(2)))
    assert first["n"] + second["n"] == 400 and min(first["n"], second["n"]) > 140
    assert second["mean"] > first["mean"] and second["p_value"] < 0.01
    summary = client.get(
        "/rewards/summary", params={"group_by": "config:prompt_id", "name": "satisfied"}
    )
    counts = {g["key"]: g["count"] for g in summary.json()["groups"]}
    assert counts == {v1["id"]: first["n"], v2["id"]: second["n"]}

    kinds = [m["kind"] for m in items(client, "/markers", agent="support-bot")]
    assert kinds == [
        "prompt.rolled_back",
        "experiment.stopped",
        "prompt.promoted",
        "experiment.started",
        "prompt.promoted",
    ]


def test_prompt_registry_against_a_server(live_server, store_url, tmp_path):
    server = live_server(store_url)
    stdout = run_example("prompt_registry.py", server.url, cwd=tmp_path)
    with api(server) as client:
        check_prompt_registry(client, stdout)


def test_prompt_registry_embedded(live_server, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'registry.db'}"
    stdout = run_example("prompt_registry.py", "--store", db_url, cwd=tmp_path)
    assert f"look around: evolution-store prompts list --db {db_url}" in stdout
    server = live_server(db_url)  # only to read the file back over REST
    with api(server) as client:
        check_prompt_registry(client, stdout)


# -- apo_quickstart.py ------------------------------------------------------------------------


def test_apo_quickstart_records_a_run_a_person_can_review(live_server, store_url, tmp_path):
    stdout = run_example("apo_quickstart.py", "--store", store_url, cwd=tmp_path)
    assert "baseline success 0.00 -> best 1.00" in stdout
    best_id = re.search(r"best prompt \(candidate, id (\w+)\)", stdout)[1]
    server = live_server(store_url)
    with api(server) as client:
        best = client.get(f"/prompts/{best_id}").json()
        assert best["status"] == "candidate" and best["created_by"] == "apo"
        assert best["parent_ids"] and best["fitness"]["success"] == 1.0
        assert not items(client, "/prompts", status="production")
        assert items(client, "/experiments", agent="support-bot")
        assert items(client, "/tasks", tag="apo")


# -- coach_ga.py ------------------------------------------------------------------------------


def test_coach_ga_retunes_a_stalled_ga_and_marks_each_change(live_server, store_url, tmp_path):
    stdout = run_example("coach_ga.py", "--store", store_url, cwd=tmp_path)
    first, last = map(float, re.search(r"best ([\d.]+) -> ([\d.]+) over", stdout).groups())
    assert last < first
    assert re.search(r"applied at generation \d+: population 6 -> 60", stdout)
    server = live_server(store_url)
    with api(server) as client:
        (marker,) = items(client, "/markers", agent="evolution.coach")
        assert marker["kind"] == "coach.applied"
        assert marker["before"] == {"population": 6, "mutation_rate": 0.01, "sigma": 0.01}
        assert marker["after"] == {"population": 60, "mutation_rate": 0.3, "sigma": 0.4}
        spans = items(client, "/spans", task_id="coach-ga-3")
        names = {s["name"] for s in spans}
        assert "evolution.marker" in names and any(n.startswith("chat ") for n in names)
        chats = [s for s in spans if s["name"].startswith("chat ")]
        assert {s["agent"] for s in chats} == {"evolution.coach"}
