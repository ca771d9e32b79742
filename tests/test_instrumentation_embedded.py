"""Embedded mode end to end: a toy agent (sync, async, streaming) traced into a SQLite store in
this process, rewards aimed every way (one before its span exists), read back by tag and
summarised."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading

import pytest
from opentelemetry import trace

import instrumentation
from instrumentation import emit_reward, task, track_evolution

pytest.importorskip("evolution_store")
from evolution_store.queries import RewardQuery, SpanQuery  # noqa: E402


@pytest.fixture
def session(store_url, monkeypatch):
    """Embedded mode on a fresh SQLite or Postgres database (conftest's `store_url`)."""
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    session = instrumentation.configure(store_url=store_url, service_name="toy", set_global=False)
    yield session
    session.shutdown()


@track_evolution(tags=["tool"])
def lookup(q: int) -> int:
    return q * 2


@track_evolution(tags=["toy"])
def sync_agent(q: int) -> str:
    trace.get_current_span().set_attribute("gen_ai.response.id", f"resp-{q}")
    answer = f"answer {lookup(q)}"
    # Emitted while its span is still open, so before the span can have been exported.
    emit_reward(1.0, name="early", tags=["judge"])
    return answer


@track_evolution(tags=["toy"])
async def async_agent(q: int) -> int:
    await asyncio.sleep(0)
    return lookup(q)


@track_evolution(tags=["toy", "stream"])
def streaming_agent(n: int):
    for i in range(n):
        yield f"tok{i} "


def _rewards(session, **filters):
    return session.call_store(lambda store: store.list_rewards(RewardQuery(**filters))).items


def _spans(session, **filters):
    return session.call_store(lambda store: store.list_spans(SpanQuery(**filters))).items


def test_toy_agent_end_to_end(session):
    assert session.mode == "embedded"
    # A link-selector reward sent before any span with that attribute exists.
    pending = emit_reward(0.3, name="late-link", links={"gen_ai.response.id": "resp-7"})
    assert pending["resolved"] is False

    with task("sync", input={"q": 7}, tags=["suite"], config={"prompt": "v1"}) as t_sync:
        assert sync_agent(7) == "answer 14"

    async def run_async():
        async with task("async", config={"prompt": "v2"}) as handle:
            assert await async_agent(2) == 4
            handle.reward({"accuracy": 0.5, "speed": 1.0}, tags=["judge"])
        return handle

    t_async = asyncio.run(run_async())

    with task("stream") as t_stream:
        assert "".join(streaming_agent(3)) == "tok0 tok1 tok2 "

    error = RuntimeError("agent crashed")
    with pytest.raises(RuntimeError) as caught, task("sync", task_id=t_sync.task_id) as retry:
        raise error
    assert caught.value is error

    assert session.force_flush()

    stream_span = _spans(session, execution_id=t_stream.execution_id)[0]
    stream_trace = stream_span["trace_id"]
    by_trace = emit_reward(0.9, trace_id=stream_trace, name="trace-level")
    by_task = emit_reward(0.2, task_id=t_sync.task_id, name="task-level", tags=["manual"])
    sync_span = next(
        s for s in _spans(session, execution_id=t_sync.execution_id) if s["name"] == "sync_agent"
    )
    by_span = emit_reward(
        0.7, span_id=sync_span["span_id"], trace_id=sync_span["trace_id"], name="by-span"
    )
    by_link = emit_reward(0.6, links={"gen_ai.response.id": "resp-7"}, name="by-link")

    # Spans: stamped, tagged, attributed, parented.
    spans = _spans(session, task_id=t_sync.task_id)
    assert {s["name"] for s in spans} == {"sync_agent", "lookup"}
    assert all(s["execution_id"] == t_sync.execution_id for s in spans)
    assert sync_span["agent"] == "sync_agent" and sync_span["operation"] == "invoke_agent"
    assert "toy" in sync_span["tags"]
    assert sync_span["resource"]["service.name"] == "toy"
    tool_span = next(s for s in spans if s["name"] == "lookup")
    assert tool_span["parent_span_id"] == sync_span["span_id"]
    assert {s["name"] for s in _spans(session, tag="stream")} == {"streaming_agent"}

    # Rewards: every target kind resolved, including the two sent early.
    early = _rewards(session, name="early")[0]
    assert early["resolved"] and early["span_ids"] == [sync_span["span_id"]]
    late_link = _rewards(session, name="late-link")[0]
    assert late_link["resolved"] and late_link["span_ids"] == [sync_span["span_id"]]
    assert by_link["span_ids"] == [sync_span["span_id"]]
    assert by_span["resolved"] and by_span["span_ids"] == [sync_span["span_id"]]
    assert by_trace["resolved"] and stream_span["span_id"] in by_trace["span_ids"]
    assert by_task["resolved"] and sync_span["span_id"] in by_task["span_ids"]
    execution_reward = _rewards(session, execution_id=t_async.execution_id)[0]
    assert execution_reward["dimensions"] == {"accuracy": 0.5, "speed": 1.0}
    assert execution_reward["value"] == 0.5

    # By tag: the reward's own tags, and (scope any) tags of the spans it judges.
    judged = {r["name"] for r in _rewards(session, tag="judge", tag_scope="reward")}
    assert judged == {"early", "reward"}
    toy = {r["name"] for r in _rewards(session, tag="toy", tag_scope="span")}
    assert {"early", "late-link", "by-span", "by-link", "trace-level"} <= toy

    summary = session.call_store(
        lambda store: store.rewards_summary("name", RewardQuery(tag="judge"))
    )
    groups = {g["key"]: g for g in summary}
    assert groups["early"]["count"] == 1 and groups["early"]["mean"] == 1.0

    # Tasks and executions: statuses and the retry.
    def executions(store):
        return store.list_executions(t_sync.task_id)

    attempts = session.call_store(executions)
    assert [(e["attempt"], e["status"]) for e in attempts] == [(1, "succeeded"), (2, "failed")]
    assert attempts[1]["id"] == retry.execution_id
    sync_task = session.call_store(lambda store: store.get_task(t_sync.task_id))
    assert sync_task["name"] == "sync" and sync_task["input"] == {"q": 7}
    assert sync_task["tags"] == ["suite"] and sync_task["status"] == "failed"
    assert attempts[0]["config"] == {"prompt": "v1"}


def test_rewards_carried_in_spans_are_stored(session):
    """The three carriers the OTLP receiver reads (Agent Lightning annotation span, OpenInference
    evaluator span, `gen_ai.evaluation.result` event) become rewards in embedded mode too."""
    tracer = session.tracer_provider.get_tracer("carriers")
    with tracer.start_as_current_span("llm") as llm:
        llm.add_event(
            "gen_ai.evaluation.result",
            {"gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.8},
        )
        annotation = tracer.start_span(
            "agentlightning.annotation",
            attributes={"agentlightning.reward.0.name": "task", "agentlightning.reward.0.value": 1},
        )
        annotation.end()
    judged = llm.get_span_context()
    evaluator = tracer.start_span(
        "judge",
        attributes={
            "openinference.span.kind": "EVALUATOR",
            "evaluations.0.evaluation.name": "correctness",
            "evaluations.0.evaluation.score": 0.5,
        },
        links=[trace.Link(judged)],
    )
    evaluator.end()
    assert session.force_flush()

    rewards = {r["name"]: r for r in _rewards(session)}  # a fresh store: only these three
    assert {name: r["value"] for name, r in rewards.items()} == {
        "relevance": 0.8,
        "task": 1.0,
        "correctness": 0.5,
    }
    span_id = format(judged.span_id, "016x")
    assert all(r["resolved"] and r["span_ids"] == [span_id] for r in rewards.values())


def test_spans_from_many_threads_all_land(session):
    @track_evolution
    def work(i):
        return i

    def worker(base):
        for i in range(50):
            work(base + i)

    threads = [threading.Thread(target=worker, args=(n * 100,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert session.force_flush()
    page = session.call_store(lambda store: store.list_spans(SpanQuery(name="work", limit=1000)))
    assert len(page.items) == 200


def test_call_store_needs_embedded_mode():
    session = instrumentation.TracingSession.__new__(instrumentation.TracingSession)
    session.sink = None
    with pytest.raises(RuntimeError):
        session.call_store(lambda store: store.version())


def test_shutdown_at_exit_and_after_fork(tmp_path):
    """A process that exits without shutdown() still commits; a forked child can write too."""
    db = tmp_path / "fork.db"
    code = f"""
import os, instrumentation
s = instrumentation.configure(store_url="sqlite:///{db}", set_global=False)

@instrumentation.track_evolution
def parent_work():
    return 1

parent_work()
pid = os.fork()
if pid == 0:
    with instrumentation.task("child-task") as t:
        parent_work()
    instrumentation.emit_reward(1.0, execution_id=t.execution_id)
    s.shutdown()
    os._exit(0)
os.waitpid(pid, 0)
with instrumentation.task("parent-task"):
    parent_work()
print("done")  # no shutdown(): atexit must flush the spans and close the store
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done"

    async def read():
        from evolution_store import EvolutionStore

        store = await EvolutionStore.open(f"sqlite:///{db}")
        try:
            spans = (await store.list_spans(SpanQuery(name="parent_work"))).items
            tasks = (await store.list_tasks()).items
            rewards = (await store.list_rewards(RewardQuery())).items
        finally:
            await store.close()
        return spans, tasks, rewards

    spans, tasks, rewards = asyncio.run(read())
    assert len(spans) == 3
    assert {"child-task", "parent-task"} <= {t["name"] for t in tasks}
    assert len(rewards) == 1
