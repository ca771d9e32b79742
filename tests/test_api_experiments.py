"""`/api/v1/experiments` through the real app, on SQLite and Postgres: A/B experiments (one
running per agent, live results that match a hand computation from their rewards, stop with
a winner approved in the same call), regression records and their posted results, markers,
bad input and API keys."""

from __future__ import annotations

import hashlib
import math
import statistics
import time

import pytest
from factories import span_dict
from scipy import stats

API = "/api/v1"
KEYS = "writer-key,reader-key:ro"
WRITE = {"Authorization": "Bearer writer-key"}
READ = {"Authorization": "Bearer reader-key"}
ONE_RESULT = {"prompt_id": "p", "example_id": "e", "score": 1}


async def register(client, agent="planner", content="v", *, status="candidate", headers=None):
    response = await client.post(
        f"{API}/prompts",
        json={"agent": agent, "content": content, "status": status},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def start_ab(client, agent="planner", weights=(0.5, 0.5), headers=None, name="variant"):
    ids = [
        await register(client, agent, f"{name} {i}", headers=headers) for i in range(len(weights))
    ]
    variants = [{"prompt_id": p, "weight": w} for p, w in zip(ids, weights, strict=True)]
    response = await client.post(
        f"{API}/experiments",
        json={"agent": agent, "kind": "ab", "variants": variants},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return response.json(), ids


async def test_start_read_list_and_one_running_ab_per_agent(api_client):
    experiment, ids = await start_ab(api_client, weights=(0.6, 0.4))
    assert experiment["status"] == "running"
    assert experiment["kind"] == "ab" and experiment["agent"] == "planner"
    assert experiment["variants"] == [
        {"prompt_id": ids[0], "weight": 0.6},
        {"prompt_id": ids[1], "weight": 0.4},
    ]
    assert experiment["winner"] is None and experiment["stopped_at"] is None
    assert [r["n"] for r in experiment["results"]] == [0, 0]

    fetched = await api_client.get(f"{API}/experiments/{experiment['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == experiment

    third = await register(api_client, content="third")
    clash = await api_client.post(
        f"{API}/experiments",
        json={
            "agent": "planner",
            "variants": [{"prompt_id": ids[0], "weight": 0.5}, {"prompt_id": third, "weight": 0.5}],
        },
    )
    assert clash.status_code == 409
    assert experiment["id"] in clash.json()["detail"]

    other, _ = await start_ab(api_client, agent="critic")  # another agent may run its own

    async def ids_of(**params):
        response = await api_client.get(f"{API}/experiments", params=params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert await ids_of() == [other["id"], experiment["id"]]
    assert await ids_of(agent="planner") == [experiment["id"]]
    assert await ids_of(status="running", agent="critic") == [other["id"]]
    assert await ids_of(status="stopped") == []
    page = (await api_client.get(f"{API}/experiments", params={"limit": 1})).json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    rest = await api_client.get(
        f"{API}/experiments", params={"limit": 1, "cursor": page["next_cursor"]}
    )
    assert [item["id"] for item in rest.json()["items"]] == [experiment["id"]]
    bad = await api_client.get(f"{API}/experiments", params={"status": "paused"})
    assert bad.status_code == 422 and bad.json()["field"] == "status"


async def _execution(client, prompt_id, reward_values, *, tokens=(10, 5), duration_ms=2):
    """A task and one execution run with `prompt_id`, a finished LLM root span, and a reward
    per value on the execution."""
    task = (await client.post(f"{API}/tasks", json={"name": "solve"})).json()
    execution = (
        await client.post(
            f"{API}/tasks/{task['id']}/executions", json={"config": {"prompt_id": prompt_id}}
        )
    ).json()
    start = time.time_ns()
    span = span_dict(
        start_time=start,
        end_time=start + duration_ms * 1_000_000,
        name="chat",
        attributes={
            "evolution.task.id": task["id"],
            "evolution.execution.id": execution["id"],
            "gen_ai.operation.name": "chat",
            "gen_ai.usage.input_tokens": tokens[0],
            "gen_ai.usage.output_tokens": tokens[1],
        },
    )
    assert (await client.post(f"{API}/spans", json=span)).status_code == 200
    for value in reward_values:
        reward = {"value": value, "execution_id": execution["id"]}
        assert (await client.post(f"{API}/rewards", json=reward)).status_code == 201


async def test_ab_results_match_a_hand_computation_from_the_rewards(api_client):
    experiment, (first, second) = await start_ab(api_client)
    a_values = [1.0, 0.0, 1.0, 1.0, 0.5]
    b_values = [0.0, 0.25, 1.0, 0.0]
    for value in a_values:
        await _execution(api_client, first, [value], tokens=(10, 5), duration_ms=2)
    await _execution(api_client, second, b_values[:2], tokens=(20, 10), duration_ms=4)
    await _execution(api_client, second, b_values[2:], tokens=(40, 10), duration_ms=6)
    # An execution of neither variant does not count.
    await _execution(api_client, await register(api_client, content="other"), [1.0])

    results = (await api_client.get(f"{API}/experiments/{experiment['id']}")).json()["results"]
    assert [r["prompt_id"] for r in results] == [first, second]
    for result, values in zip(results, (a_values, b_values), strict=True):
        n, mean, stdev = len(values), statistics.fmean(values), statistics.stdev(values)
        half = stats.t.ppf(0.975, n - 1) * stdev / math.sqrt(n)
        assert result["n"] == n
        assert result["mean"] == pytest.approx(mean)
        assert result["stdev"] == pytest.approx(stdev)
        assert result["ci95"] == pytest.approx([mean - half, mean + half])
    assert results[0]["p_value"] is None
    welch = stats.ttest_ind(b_values, a_values, equal_var=False).pvalue
    assert results[1]["p_value"] == pytest.approx(welch)
    assert results[0]["tokens"] == pytest.approx(15.0)
    assert results[0]["latency_ms"] == pytest.approx(2.0)
    assert results[1]["tokens"] == pytest.approx((30 + 50) / 2)
    assert results[1]["latency_ms"] == pytest.approx(5.0)


async def test_stop_with_a_winner_approved_in_the_same_call(api_client):
    experiment, (first, second) = await start_ab(api_client)
    url = f"{API}/experiments/{experiment['id']}/stop"

    outsider = await register(api_client, content="outsider")
    wrong = await api_client.post(url, json={"winner": outsider})
    assert wrong.status_code == 422 and wrong.json()["field"] == "winner"
    no_winner = await api_client.post(url, json={"approve": True})
    assert no_winner.status_code == 422

    stopped = await api_client.post(url, json={"winner": second, "approve": True, "note": "won"})
    assert stopped.status_code == 200, stopped.text
    body = stopped.json()
    assert body["status"] == "completed" and body["winner"] == second
    assert body["stopped_at"]
    winner = (await api_client.get(f"{API}/prompts/{second}")).json()
    assert winner["status"] == "production" and winner["approved_by"] == "anonymous"
    assert (await api_client.get(f"{API}/agents/planner/prompt")).json()["id"] == second

    again = await api_client.post(url, json={})
    assert again.status_code == 409
    assert again.json()["type"] == "conflict"
    completed = await api_client.get(f"{API}/experiments", params={"status": "completed"})
    assert [item["id"] for item in completed.json()["items"]] == [experiment["id"]]

    # The agent may start another A/B now.
    await start_ab(api_client, name="next round")


async def test_stop_without_a_body_and_a_winner_that_cannot_be_approved(api_client):
    experiment, _ = await start_ab(api_client)
    stopped = await api_client.post(f"{API}/experiments/{experiment['id']}/stop")
    assert stopped.status_code == 200
    assert stopped.json()["status"] == "stopped" and stopped.json()["winner"] is None

    drafts = [await register(api_client, content=f"d{i}", status="draft") for i in range(2)]
    variants = [{"prompt_id": p, "weight": 0.5} for p in drafts]
    second = (
        await api_client.post(f"{API}/experiments", json={"agent": "planner", "variants": variants})
    ).json()
    refused = await api_client.post(
        f"{API}/experiments/{second['id']}/stop", json={"winner": drafts[0], "approve": True}
    )
    assert refused.status_code == 409
    # Nothing half-written: still running, nothing approved.
    assert (await api_client.get(f"{API}/experiments/{second['id']}")).json()["status"] == "running"
    assert (await api_client.get(f"{API}/prompts/{drafts[0]}")).json()["status"] == "draft"


async def test_regression_records_and_results(api_client):
    baseline = await register(api_client, content="baseline")
    challenger = await register(api_client, content="challenger")
    created = await api_client.post(
        f"{API}/experiments",
        json={
            "agent": "planner",
            "kind": "regression",
            "baseline": baseline,
            "target": ["t1", "t2", "t3"],
            "control": ["c1", "c2"],
        },
    )
    assert created.status_code == 201, created.text
    experiment = created.json()
    assert experiment["kind"] == "regression"
    assert experiment["baseline"] == baseline
    assert [v["prompt_id"] for v in experiment["variants"]] == [baseline]
    # A regression record does not stop an A/B from starting for the same agent.
    await start_ab(api_client)

    url = f"{API}/experiments/{experiment['id']}/results"
    scores = {
        baseline: {"t1": 0, "t2": 0, "t3": 1, "c1": 1, "c2": 1},
        challenger: {"t1": 1, "t2": 1, "t3": 1, "c1": 1, "c2": 0},
    }
    rows = [
        {"prompt_id": p, "example_id": e, "score": s, "tokens": 100, "latency_ms": 50.0}
        for p, by_example in scores.items()
        for e, s in by_example.items()
    ]
    posted = await api_client.post(url, json={"results": rows})
    assert posted.status_code == 200, posted.text
    results = posted.json()["results"]
    assert [r["prompt_id"] for r in results] == [baseline, challenger]
    for result, prompt_id in zip(results, (baseline, challenger), strict=True):
        for part, examples in (("target", ("t1", "t2", "t3")), ("control", ("c1", "c2"))):
            k = sum(scores[prompt_id][e] for e in examples)
            wilson = stats.binomtest(k, len(examples)).proportion_ci(0.95, method="wilson")
            assert result[part]["n"] == len(examples)
            assert result[part]["success"] == pytest.approx(k / len(examples))
            assert result[part]["ci95"] == pytest.approx([wilson.low, wilson.high])
        assert result["tokens"] == pytest.approx(100.0)
        assert result["latency_ms"] == pytest.approx(50.0)

    # A retry replaces a result instead of adding one.
    retry = {"prompt_id": baseline, "example_id": "t1", "score": 1}
    again = (await api_client.post(url, json={"results": [retry]})).json()["results"]
    assert again[0]["target"] == {**again[0]["target"], "n": 3, "success": pytest.approx(2 / 3)}

    stopped = await api_client.post(f"{API}/experiments/{experiment['id']}/stop")
    assert stopped.json()["status"] == "stopped"
    late = await api_client.post(url, json={"results": [retry]})
    assert late.status_code == 409


async def test_results_of_an_ab_experiment_are_409(api_client):
    experiment, (first, _) = await start_ab(api_client)
    response = await api_client.post(
        f"{API}/experiments/{experiment['id']}/results",
        json={"results": [{"prompt_id": first, "example_id": "e", "score": 1}]},
    )
    assert response.status_code == 409


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", "/experiments/nope", None),
        ("POST", "/experiments/nope/stop", {}),
        ("POST", "/experiments/nope/results", {"results": [ONE_RESULT]}),
    ],
)
async def test_unknown_experiment_is_404(api_client, method, path, body):
    response = await api_client.request(method, API + path, json=body)
    assert response.status_code == 404
    assert response.json()["type"] == "not_found"


async def test_bad_experiments_are_refused_and_store_nothing(api_client):
    mine = [await register(api_client, content=f"m{i}") for i in range(2)]
    theirs = await register(api_client, agent="critic", content="theirs")

    def ab(*pairs):
        return {"agent": "planner", "variants": [{"prompt_id": p, "weight": w} for p, w in pairs]}

    cases = [
        (ab((mine[0], 0.5), ("nope", 0.5)), 404, None),
        (ab((mine[0], 0.5), (theirs, 0.5)), 422, "variants"),
        (ab((mine[0], 0.6), (mine[1], 0.6)), 422, None),
        (ab((mine[0], 1.0)), 422, None),
        (ab((mine[0], 0.5), (mine[0], 0.5)), 422, None),
        ({"agent": "planner", "kind": "regression", "target": ["t"]}, 422, None),
        ({"agent": "planner", "kind": "regression", "baseline": mine[0]}, 422, None),
        ({**ab((mine[0], 0.5), (mine[1], 0.5)), "kind": "bandit"}, 422, "kind"),
    ]
    for body, status, field in cases:
        response = await api_client.post(f"{API}/experiments", json=body)
        assert response.status_code == status, (body, response.text)
        if field is not None:
            assert response.json()["field"] == field
    assert (await api_client.get(f"{API}/experiments")).json()["items"] == []
    assert (await api_client.get(f"{API}/markers")).json()["items"] == []


async def test_keys_a_read_only_key_cannot_write_and_the_approver_is_a_fingerprint(make_client):
    async with make_client(api_keys=KEYS) as client:
        experiment, (first, _) = await start_ab(client, headers=WRITE)
        writes = [
            ("POST", "/experiments", {"agent": "planner", "kind": "regression", "baseline": first,
                                      "target": ["t"]}),
            ("POST", f"/experiments/{experiment['id']}/stop", {}),
            ("POST", f"/experiments/{experiment['id']}/stop", None),
            ("POST", f"/experiments/{experiment['id']}/results",
             {"results": [{"prompt_id": first, "example_id": "e", "score": 1}]}),
        ]  # fmt: skip
        for method, path, body in writes:
            response = await client.request(method, API + path, json=body, headers=READ)
            assert response.status_code == 403, path
            assert response.json()["type"] == "forbidden"
        assert len((await client.get(f"{API}/experiments", headers=READ)).json()["items"]) == 1
        read = await client.get(f"{API}/experiments/{experiment['id']}", headers=READ)
        assert read.json()["status"] == "running"

        stopped = await client.post(
            f"{API}/experiments/{experiment['id']}/stop",
            json={"winner": first, "approve": True},
            headers=WRITE,
        )
        assert stopped.status_code == 200
        prompt = (await client.get(f"{API}/prompts/{first}", headers=READ)).json()
        assert prompt["approved_by"] == hashlib.sha256(b"writer-key").hexdigest()[:16]
