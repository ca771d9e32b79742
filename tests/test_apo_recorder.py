"""The APO recorder (evolution_store/learn/apo/recorder.py) on both backends, driven directly
with hand-made candidates, evaluations and verdicts, and read back through the store API."""

from __future__ import annotations

import threading
import time

import pytest

from evolution_store import EvolutionStore, Overloaded
from evolution_store.learn.apo.candidates import Candidate
from evolution_store.learn.apo.evaluation import EvalRecord, Evaluation
from evolution_store.learn.apo.gate import GateVerdict
from evolution_store.learn.apo.recorder import OPTIMIZER_AGENT, NullRecorder, StoreRecorder
from evolution_store.learn.llm import LLMCall
from evolution_store.models import TaskIn
from evolution_store.queries import RewardQuery, SpanQuery
from evolution_store.registry_models import ApproveIn, PromptIn, PromptStatusIn

SEED = "You answer questions about {{ topic }}."
RUN = "run1"


def candidate(prompt: str, *, parents: tuple[str, ...] = (), origin: str = "seed") -> Candidate:
    return Candidate(
        id="", prompt=prompt, parent_ids=list(parents), origin=origin, generation=len(parents)
    )


def measured(cand: Candidate, scores: dict[str, float]) -> Candidate:
    cand.measure(scores, {i: (100.0 + 10 * n, 20.0 + n) for n, i in enumerate(scores)})
    return cand


async def opened(store: EvolutionStore | str, agent: str = "bot") -> StoreRecorder:
    recorder = StoreRecorder(store)
    await recorder.open(agent=agent, run_id=RUN, seed_prompt=SEED, settings={"budget": 100})
    return recorder


async def add(recorder: StoreRecorder, cand: Candidate) -> Candidate:
    cand.id = await recorder.new_candidate(cand)
    return cand


def record(example_id: str, score: float, feedback: str = "", split: str = "val") -> EvalRecord:
    evaluation = Evaluation(score=score, feedback=feedback, tokens=120.0, latency_ms=35.0)
    return EvalRecord(
        example_id, {"id": example_id, "q": f"question {example_id}"}, split, evaluation
    )


async def test_null_recorder_names_candidates_in_order() -> None:
    recorder = NullRecorder()
    await recorder.open(agent="bot", run_id=RUN, seed_prompt=SEED, settings={})
    ids = [await recorder.new_candidate(candidate(SEED)) for _ in range(3)]
    assert ids == ["apo-1", "apo-2", "apo-3"]
    recorder.llm_call(_call(0))
    await recorder.flush()
    await recorder.close()


async def test_candidates_are_prompts_with_lineage_and_status_moves_with_fitness(
    store: EvolutionStore,
) -> None:
    recorder = await opened(store)
    seed = await add(recorder, measured(candidate(SEED), {"a": 1.0, "b": 0.0}))
    child = await add(
        recorder,
        candidate(SEED + "\nCite a source.", parents=(seed.id,), origin="reflection"),
    )
    row = await store.get_prompt(child.id)
    assert row["parent_ids"] == [seed.id] and row["created_by"] == "apo"
    assert row["status"] == "draft" and row["note"] == f"apo run {RUN}: reflection"
    assert await store.prompt_lineage(child.id)  # the registry sees the lineage

    # draft → candidate is walked one allowed move at a time, recording the fitness.
    measured(child, {"a": 1.0, "b": 1.0})
    await recorder.set_status(child, "candidate", note="passed the gate")
    row = await store.get_prompt(child.id)
    assert row["status"] == "candidate" and row["note"] == "passed the gate"
    assert row["fitness"] == child.fitness() and row["fitness"]["n"] == 2
    # A repeat, or a move backwards, changes nothing.
    await recorder.set_status(child, "candidate")
    await recorder.set_status(child, "experimental", note="ignored")
    assert await store.get_prompt(child.id) == row
    # The same status with a new measurement records the new fitness.
    measured(child, {"a": 1.0, "b": 1.0, "c": 0.0})
    await recorder.set_status(child, "candidate")
    assert (await store.get_prompt(child.id))["fitness"]["n"] == 3

    await recorder.set_status(seed, "experimental")
    assert (await store.get_prompt(seed.id))["fitness"]["success"] == 0.5
    await recorder.set_status(seed, "archived", note="superseded")
    assert (await store.get_prompt(seed.id))["status"] == "archived"
    with pytest.raises(ValueError, match="approve"):
        await recorder.set_status(child, "production")
    await recorder.close()
    assert (await store.list_prompts(status="production")).items == []
    assert (await store.list_markers(kind="prompt.promoted")).items == []


async def test_the_seed_reuses_the_agents_prompt_and_production_is_never_touched(
    store: EvolutionStore,
) -> None:
    live, _ = await store.create_prompt(PromptIn(agent="bot", content=SEED, status="candidate"))
    live = await store.approve_prompt(live["id"], ApproveIn(), approved_by="alice")
    recorder = await opened(store)
    seed = await add(recorder, measured(candidate(SEED), {"a": 1.0}))
    assert seed.id == live["id"]
    await recorder.set_status(seed, "experimental", note="scored")
    await recorder.set_status(seed, "archived")
    assert await store.get_prompt(seed.id) == live

    child = await add(recorder, candidate(SEED + " Be brief.", parents=(seed.id,), origin="x"))
    await recorder.set_status(measured(child, {"a": 1.0}), "candidate")
    await recorder.close()
    production = (await store.list_prompts(agent="bot", status="production")).items
    assert [p["id"] for p in production] == [live["id"]]
    assert (await store.get_prompt(child.id))["status"] == "candidate"


async def test_a_prompt_already_moved_by_a_person_is_left_where_it_is(
    store: EvolutionStore,
) -> None:
    recorder = await opened(store)
    seed = await add(recorder, candidate(SEED))
    await store.set_prompt_status(seed.id, PromptStatusIn(status="archived"))
    await recorder.set_status(measured(seed, {"a": 1.0}), "experimental")
    assert (await store.get_prompt(seed.id))["status"] == "archived"
    await recorder.close()


async def test_evaluations_become_tasks_executions_and_rewards(store: EvolutionStore) -> None:
    recorder = await opened(store)
    seed = await add(recorder, candidate(SEED))
    child = await add(recorder, candidate(SEED + " Cite.", parents=(seed.id,), origin="x"))
    examples = [f"e{n}" for n in range(6)]
    await recorder.evaluations(
        seed,
        [record(e, 0.0 if n % 2 else 1.0, feedback=f"missed {e}") for n, e in enumerate(examples)],
    )
    await recorder.evaluations(child, [record(e, 1.0) for e in examples[:4]])
    await recorder.evaluations(child, [record("t0", 0.25, "too long", split="train")])

    task = await store.get_task(f"apo:{RUN}:e1")
    assert task["name"] == "apo.evaluate" and task["input"] == {"id": "e1", "q": "question e1"}
    assert task["tags"] == ["apo", f"apo-run:{RUN}", "val"]
    executions = await store.list_executions(f"apo:{RUN}:e1")
    assert [e["id"] for e in executions] == [f"apo:{RUN}:e1:{seed.id}", f"apo:{RUN}:e1:{child.id}"]
    first, second = executions
    assert first["status"] == "failed" and second["status"] == "succeeded"
    assert first["config"] == {
        "prompt_id": seed.id,
        "prompt_version": 1,
        "run_id": RUN,
        "example_id": "e1",
        "split": "val",
    }
    (reward,) = (await store.list_rewards(RewardQuery(execution_id=first["id"]))).items
    assert reward["id"] == f"{first['id']}:score" and reward["name"] == "score"
    assert reward["value"] == 0.0 and reward["feedback"] == "missed e1"
    assert reward["dimensions"] == {"score": 0.0, "tokens": 120.0, "latency_ms": 35.0}
    assert reward["source"] == "code" and reward["tags"] == ["apo"]
    assert (await store.get_task(f"apo:{RUN}:t0"))["tags"][-1] == "train"

    summary = await store.rewards_summary("config:prompt_id", RewardQuery(tag="apo"))
    by_prompt = {row["key"]: row for row in summary}
    assert by_prompt[seed.id]["count"] == 6 and by_prompt[seed.id]["mean"] == 0.5
    assert by_prompt[child.id]["count"] == 5
    assert by_prompt[child.id]["mean"] == pytest.approx((4 + 0.25) / 5)

    # Recording the same metric calls again is harmless (every id is idempotent).
    await recorder.evaluations(child, [record(e, 1.0) for e in examples[:4]])
    assert len(await store.list_executions(f"apo:{RUN}:e1")) == 2
    await recorder.close()


async def test_a_long_example_id_still_fits_the_stores_ids(store: EvolutionStore) -> None:
    recorder = await opened(store)
    seed = await add(recorder, candidate(SEED))
    long_id = "x" * 300
    await recorder.evaluations(seed, [record(long_id, 1.0), record(long_id + "y", 0.0)])
    tasks = (await store.list_tasks(tag=f"apo-run:{RUN}")).items
    assert len(tasks) == 2 and all(len(t["id"]) <= 200 for t in tasks)
    await recorder.close()


def _verdict(parent: Candidate, child_scores: dict[str, float], passed: bool) -> GateVerdict:
    target = [i for i, s in parent.scores.items() if s < 1.0]
    control = [i for i, s in parent.scores.items() if s >= 1.0]
    return GateVerdict(
        passed=passed,
        reason="fixed 2 of 2 target examples" if passed else "regressed control",
        target_ids=target,
        control_ids=control,
        parent_scores=dict(parent.scores),
        child_scores=child_scores,
        regressions=[] if passed else ["c1"],
        improvements=["t1", "t2"] if passed else [],
        p_value=1.0 if passed else 0.0,
        test="exact binomial",
    )


async def test_a_gate_verdict_becomes_a_regression_experiment(store: EvolutionStore) -> None:
    recorder = await opened(store)
    parent = await add(
        recorder, measured(candidate(SEED), {"t1": 0.0, "t2": 0.0, "c1": 1.0, "c2": 1.0})
    )
    child = await add(recorder, candidate(SEED + " Cite.", parents=(parent.id,), origin="x"))
    scores = {"t1": 1.0, "t2": 1.0, "c1": 1.0, "c2": 1.0}
    measured(child, scores)
    await recorder.gate(parent, child, _verdict(parent, scores, passed=True))

    (done,) = (await store.list_experiments(agent="bot")).items
    experiment = await store.get_experiment(done["id"])
    assert experiment["kind"] == "regression" and experiment["status"] == "completed"
    assert experiment["baseline"] == parent.id and experiment["winner"] == child.id
    assert experiment["target"] == ["t1", "t2"] and experiment["control"] == ["c1", "c2"]
    base, tried = experiment["results"]
    assert base["prompt_id"] == parent.id and tried["prompt_id"] == child.id
    assert base["target"]["success"] == 0.0 and base["control"]["success"] == 1.0
    assert tried["target"]["success"] == 1.0 and tried["control"]["n"] == 2
    assert tried["tokens"] == pytest.approx(115.0) and tried["latency_ms"] == pytest.approx(21.5)

    # A refused child, scored on part of the examples: the baseline holds.
    other = await add(recorder, candidate(SEED + " Guess.", parents=(parent.id,), origin="y"))
    await recorder.gate(parent, other, _verdict(parent, {"t1": 1.0, "c1": 0.0}, passed=False))
    latest = (await store.list_experiments(agent="bot")).items[0]
    refused = await store.get_experiment(latest["id"])
    assert refused["status"] == "completed" and refused["winner"] == parent.id
    control = refused["results"][1]["control"]
    assert (control["n"], control["success"]) == (1, 0.0)
    assert refused["results"][1]["tokens"] is None
    await recorder.close()
    assert (await store.list_prompts(status="production")).items == []


def _call(n: int, *, error: str | None = None) -> LLMCall:
    start = time.time_ns()
    return LLMCall(
        model="local-model",
        messages=[{"role": "user", "content": f"improve {n}"}],
        reply=None if error else f"```better {n}```",
        error=error,
        input_tokens=200 + n,
        output_tokens=50,
        start_ns=start,
        end_ns=start + 1_000_000,
    )


async def test_llm_calls_become_spans_of_the_optimizer(store: EvolutionStore) -> None:
    recorder = await opened(store)
    # The LLM client reports from whatever thread made the call.
    threads = [threading.Thread(target=recorder.llm_call, args=(_call(n),)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recorder.llm_call(_call(9, error="LLM unavailable: connection refused"))
    await recorder.flush()
    await recorder.flush()  # nothing new: nothing written

    spans = (await store.list_spans(SpanQuery(attributes={"evolution.apo.run_id": RUN}))).items
    assert len(spans) == 5
    assert {s["agent"] for s in spans} == {OPTIMIZER_AGENT}
    assert {s["name"] for s in spans} == {"chat local-model"}
    assert {s["model"] for s in spans} == {"local-model"}
    assert sorted(s["input_tokens"] for s in spans) == [200, 201, 202, 203, 209]
    assert len({s["trace_id"] for s in spans}) == 1
    (failed,) = [s for s in spans if s["status_code"] == "error"]
    assert failed["status_message"] == "LLM unavailable: connection refused"
    assert failed["attributes"]["gen_ai.operation.name"] == "chat"

    await recorder.close()
    trace = (await store.list_spans(SpanQuery(trace_id=spans[0]["trace_id"]))).items
    (root,) = [s for s in trace if s["parent_span_id"] is None]
    assert root["name"] == "apo.optimize" and root["agent"] == OPTIMIZER_AGENT
    assert root["attributes"]["evolution.apo.settings"] == '{"budget":100}'
    assert all(s["parent_span_id"] == root["span_id"] for s in trace if s is not root)


async def test_a_url_store_is_opened_and_closed_by_the_recorder(
    store: EvolutionStore, store_url: str
) -> None:
    recorder = await opened(store_url)
    own = recorder.store
    assert own is not store
    seed = await add(recorder, candidate(SEED))
    await recorder.evaluations(seed, [record("e0", 1.0)])
    await recorder.close()
    await recorder.close()  # idempotent
    with pytest.raises(Overloaded):
        await own.create_task(TaskIn())
    # What it wrote is in the database the caller's store reads.
    assert (await store.get_prompt(seed.id))["created_by"] == "apo"
    assert (await store.get_task(f"apo:{RUN}:e0"))["status"] == "succeeded"


async def test_a_store_given_by_the_caller_stays_open(store: EvolutionStore) -> None:
    recorder = await opened(store)
    await recorder.close()
    await store.create_task(TaskIn(id="still-open"))


def test_the_store_argument_is_checked() -> None:
    with pytest.raises(TypeError, match="EvolutionStore or a database URL"):
        StoreRecorder(42)  # type: ignore[arg-type]
