"""The pattern learner as a team would use it: executions posted over REST to a server started
the README's way, `evolution-store learn patterns` run as a command, patterns read back over
REST, and the evidence checked against scipy's own computation."""

from __future__ import annotations

import random
import subprocess
import sys

import httpx
from scipy import stats


def post_runs(client: httpx.Client, n: int, seed: int = 7) -> None:
    """`n` executions of one agent: hot ones (temperature 0.9) succeed 30 % of the time, cool
    ones 80 %; `region` is noise."""
    rng = random.Random(seed)
    for i in range(n):
        hot = i % 2 == 0
        task = client.post("/tasks", json={"id": f"run-{i}", "name": "answer", "input": {"q": i}})
        assert task.status_code in (200, 201), task.text
        config = {"temperature": 0.9 if hot else 0.2, "region": rng.choice(["eu", "us"])}
        execution = client.post(f"/tasks/run-{i}/executions", json={"config": config}).json()
        span = {
            "trace_id": f"{i + 1:032x}",
            "span_id": f"{i + 1:016x}",
            "name": "agent",
            "start_time": 1_700_000_000_000_000_000 + i,
            "end_time": 1_700_000_000_500_000_000 + i,
            "attributes": {
                "gen_ai.agent.name": "helper",
                "evolution.task.id": f"run-{i}",
                "evolution.execution.id": execution["id"],
            },
        }
        assert client.post("/spans", json=span).status_code in (200, 201)
        success = rng.random() < (0.3 if hot else 0.8)
        reward = {"execution_id": execution["id"], "value": 1.0 if success else 0.0}
        assert client.post("/rewards", json=reward).status_code in (200, 201)


def test_posted_runs_mined_by_the_cli_are_served_with_checkable_evidence(
    live_server, store_url, tmp_path
):
    server = live_server(store_url)
    with httpx.Client(base_url=server.url + "/api/v1", timeout=30) as client:
        post_runs(client, 160)
        mined = subprocess.run(
            [sys.executable, "-m", "evolution_store", "learn", "patterns", "--db", store_url],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        assert mined.returncode == 0, mined.stdout + mined.stderr
        patterns = client.get("/patterns", params={"limit": 1000}).json()["items"]

        # Two values, so one condition and its complement: either side may be the one named.
        expected = {
            ("config.temperature = 0.2", "success"),
            ("config.temperature = 0.9", "failure"),
        }
        temperature = [p for p in patterns if (p["condition"], p["kind"]) in expected]
        assert temperature, [(p["condition"], p["kind"]) for p in patterns]
        assert not [p for p in patterns if "region" in p["condition"]]
        found = client.get(f"/patterns/{temperature[0]['id']}").json()
        evidence = found["evidence"]
        assert evidence["test"] == "fisher_exact" and evidence["q_value"] <= 0.05
        # The same 2x2 table through scipy gives the same p-value.
        runs = client.get("/rewards", params={"limit": 1000}).json()["items"]
        assert len(runs) == 160
        with_n, without_n = evidence["n_with"], evidence["n_without"]
        with_rate, without_rate = found["effect"]["with"], found["effect"]["without"]
        table = [
            [round(with_rate * with_n), with_n - round(with_rate * with_n)],
            [round(without_rate * without_n), without_n - round(without_rate * without_n)],
        ]
        assert evidence["p_value"] == stats.fisher_exact(table).pvalue
        assert "%" in found["explanation"] and "Fisher" in found["explanation"]
