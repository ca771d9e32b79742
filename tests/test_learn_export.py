"""`EvolutionStore.llm_calls` and `learn.export`: each format read back the way its consumer
reads it (JSON Lines through `json`, Parquet through `pyarrow.parquet`), on both backends."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from factories import span_id, trace_id

from evolution_store.errors import InvalidInput
from evolution_store.learn.export import export
from evolution_store.models import RewardIn, SpanRecord

AGENT = "helper"
BASE = time.time_ns()


def gen_ai_span(
    prompt: str,
    completion: str,
    *,
    at: int,
    agent: str = AGENT,
    trace: str | None = None,
    **attributes: Any,
) -> SpanRecord:
    """An LLM span in the GenAI conventions: messages as JSON text with text parts."""
    return SpanRecord(
        trace_id=trace or trace_id(),
        span_id=span_id(),
        name="chat",
        start_time=BASE + at,
        end_time=BASE + at + 1000,
        attributes={
            "gen_ai.agent.name": agent,
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "m1",
            "gen_ai.input.messages": json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": prompt}]}]
            ),
            "gen_ai.output.messages": json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": completion}]}]
            ),
            **attributes,
        },
    )


async def reward(store: Any, span: SpanRecord, value: float, name: str = "reward") -> None:
    await store.add_reward(
        RewardIn(name=name, value=value, span_id=span.span_id, trace_id=span.trace_id)
    )


async def all_calls(store: Any, **options: Any) -> list[list[dict[str, Any]]]:
    return [page async for page in store.llm_calls(agent=AGENT, **options)]


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_llm_calls_reads_each_source_and_its_rewards(store: Any) -> None:
    gen_ai = gen_ai_span(
        "hi",
        "hello",
        at=1,
        **{"gen_ai.system_instructions": json.dumps([{"type": "text", "content": "be brief"}])},
    )
    open_inference = SpanRecord(
        trace_id=trace_id(),
        span_id=span_id(),
        name="llm",
        start_time=BASE + 2,
        attributes={
            "agent.name": AGENT,
            "openinference.span.kind": "LLM",
            "llm.input_messages.0.message.role": "system",
            "llm.input_messages.0.message.content": "sys",
            "llm.input_messages.1.message.role": "user",
            "llm.input_messages.1.message.content": "q",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.contents.0.message_content.text": "a",
            "llm.output_messages.0.message.contents.1.message_content.text": "b",
        },
    )
    captured = SpanRecord(
        trace_id=trace_id(),
        span_id=span_id(),
        name="answer",
        start_time=BASE + 3,
        attributes={
            "evolution.agent": AGENT,
            "input.value": json.dumps({"question": "2+2?"}),
            "input.mime_type": "application/json",
            "output.value": "4",
            "output.mime_type": "text/plain",
        },
    )
    not_llm = SpanRecord(
        trace_id=trace_id(),
        span_id=span_id(),
        name="tool",
        start_time=BASE + 4,
        attributes={"gen_ai.agent.name": AGENT, "input.value": "x"},  # no output: not a call
    )
    other_agent = gen_ai_span("hi", "hello", at=5, agent="someone-else")
    await store.ingest([gen_ai, open_inference, captured, not_llm, other_agent])
    await reward(store, gen_ai, 1.0)
    await reward(store, gen_ai, 0.5)
    await reward(store, gen_ai, 9.0, name="other")  # another name: not counted
    stored = await store.get_span(open_inference.span_id)
    # A run-level reward counts when the span has none of its own.
    await store.add_reward(RewardIn(value=0.25, task_id=stored["task_id"]))

    pages = await all_calls(store)
    calls = [call for page in pages for call in page]
    assert [call["span_id"] for call in calls] == [
        gen_ai.span_id,
        open_inference.span_id,
        captured.span_id,
    ]
    first, second, third = calls
    assert first["source"] == "gen_ai"
    assert first["prompt"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert first["completion"] == [{"role": "assistant", "content": "hello"}]
    assert (first["reward"], first["reward_count"]) == (0.75, 2)
    assert first["trace_id"] == gen_ai.trace_id and first["model"] == "m1"
    assert second["source"] == "openinference"
    assert second["prompt"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q"},
    ]
    assert second["completion"] == [{"role": "assistant", "content": "ab"}]
    assert (second["reward"], second["reward_count"]) == (0.25, 1)
    assert third["source"] == "captured"
    assert third["prompt"] == [{"role": "user", "content": "2+2?"}]
    assert third["completion"] == [{"role": "assistant", "content": "4"}]
    assert (third["reward"], third["reward_count"]) == (None, 0)


async def test_llm_calls_pages_in_start_order_from_since(store: Any) -> None:
    spans = [gen_ai_span(f"p{i}", f"c{i}", at=10 * i) for i in range(7)]
    await store.ingest(list(reversed(spans)))

    pages = await all_calls(store, batch=3)
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [call["span_id"] for page in pages for call in page] == [s.span_id for s in spans]
    later = await all_calls(store, since=BASE + 25, batch=2)
    assert [call["prompt"][0]["content"] for page in later for call in page] == [
        "p3",
        "p4",
        "p5",
        "p6",
    ]
    with pytest.raises(InvalidInput):
        await all_calls(store, batch=0)


async def rewarded_calls(store: Any) -> list[SpanRecord]:
    """Three calls of one prompt (rewards 1.0, 0.8, 0.1, and the 1.0 answer again at 1.0),
    one of another prompt (0.3), one unrewarded."""
    spans = [
        gen_ai_span("capital of France?", "Paris", at=1),
        gen_ai_span("capital of France?", "Paris, France", at=2),
        gen_ai_span("capital of France?", "Lyon", at=3),
        gen_ai_span("capital of France?", "Paris", at=4),
        gen_ai_span("2+2?", "5", at=5),
        gen_ai_span("unrated", "?", at=6),
    ]
    await store.ingest(spans)
    for span, value in zip(spans, (1.0, 0.8, 0.1, 1.0, 0.3), strict=False):
        await reward(store, span, value)
    return spans


async def test_export_trl_sft(store: Any, tmp_path: Path) -> None:
    await rewarded_calls(store)
    everything = tmp_path / "all.jsonl"
    assert await export(store, "trl-sft", agent=AGENT, out=everything) == 6
    good = tmp_path / "good.jsonl"
    assert await export(store, "trl-sft", agent=AGENT, out=good, min_reward=0.8) == 3

    rows = read_lines(good)
    assert all(set(row) == {"messages"} for row in rows)
    assert rows[0]["messages"] == [
        {"role": "user", "content": "capital of France?"},
        {"role": "assistant", "content": "Paris"},
    ]
    assert [row["messages"][1]["content"] for row in rows] == ["Paris", "Paris, France", "Paris"]


async def test_export_trl_dpo_pairs_distinct_completions_by_margin(
    store: Any, tmp_path: Path
) -> None:
    await rewarded_calls(store)
    out = tmp_path / "dpo.jsonl"
    assert await export(store, "trl-dpo", agent=AGENT, out=out, margin=0.5) == 2

    rows = read_lines(out)
    prompt = [{"role": "user", "content": "capital of France?"}]
    assert rows == [
        {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": "Paris"}],
            "rejected": [{"role": "assistant", "content": "Lyon"}],
        },
        {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": "Paris, France"}],
            "rejected": [{"role": "assistant", "content": "Lyon"}],
        },
    ]
    # The two "Paris" calls (both 1.0) are one completion: never paired with each other even
    # with the smallest margin.
    close = tmp_path / "close.jsonl"
    assert await export(store, "trl-dpo", agent=AGENT, out=close, margin=0.1) == 3
    assert all(row["chosen"] != row["rejected"] for row in read_lines(close))
    with pytest.raises(InvalidInput):
        await export(store, "trl-dpo", agent=AGENT, out=close, margin=0)


async def test_export_trl_kto_labels(store: Any, tmp_path: Path) -> None:
    await rewarded_calls(store)
    out = tmp_path / "kto.jsonl"
    assert await export(store, "trl-kto", agent=AGENT, out=out, min_reward=0.5) == 5

    rows = read_lines(out)
    assert all(set(row) == {"prompt", "completion", "label"} for row in rows)
    assert [row["label"] for row in rows] == [True, True, False, True, False]
    assert rows[2]["completion"] == [{"role": "assistant", "content": "Lyon"}]


async def test_export_triplets(store: Any, tmp_path: Path) -> None:
    spans = await rewarded_calls(store)
    out = tmp_path / "triplets.jsonl"
    assert await export(store, "triplets", agent=AGENT, out=out) == 6

    rows = read_lines(out)
    assert set(rows[0]) == {"prompt", "response", "reward", "metadata"}
    assert rows[0]["prompt"] == [{"role": "user", "content": "capital of France?"}]
    assert rows[0]["response"] == "Paris"
    assert rows[0]["reward"] == 1.0
    assert rows[5]["reward"] is None
    metadata = rows[0]["metadata"]
    assert metadata["span_id"] == spans[0].span_id
    assert metadata["trace_id"] == spans[0].trace_id
    assert metadata["source"] == "gen_ai" and metadata["model"] == "m1"
    assert {"task_id", "execution_id", "name", "start_time"} <= set(metadata)


async def test_export_verl_parquet(store: Any, tmp_path: Path) -> None:
    spans = await rewarded_calls(store)
    out = tmp_path / "verl.parquet"
    assert await export(store, "verl", agent=AGENT, out=out, min_reward=0.9, batch=4) == 6

    table = pq.read_table(out)
    assert table.column_names == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    rows = table.to_pylist()
    assert rows[0]["data_source"] == f"evolution-store/{AGENT}"
    assert rows[0]["prompt"] == [{"role": "user", "content": "capital of France?"}]
    assert rows[0]["ability"] == "chat"
    assert rows[0]["reward_model"] == {"style": "rule", "ground_truth": "Paris"}
    assert rows[1]["reward_model"] == {"style": "model", "ground_truth": None}
    assert rows[0]["extra_info"]["span_id"] == spans[0].span_id
    assert rows[0]["extra_info"]["reward"] == 1.0
    assert rows[5]["extra_info"]["reward"] is None
    assert [row["extra_info"]["index"] for row in rows] == list(range(6))


async def test_export_empty_and_bad_format(store: Any, tmp_path: Path) -> None:
    out = tmp_path / "empty.parquet"
    assert await export(store, "verl", agent="nobody", out=out) == 0
    assert pq.read_table(out).num_rows == 0
    with pytest.raises(InvalidInput):
        await export(store, "csv", agent=AGENT, out=tmp_path / "x")


async def test_llm_calls_reads_three_statements_a_page(store_url: str) -> None:
    from evolution_store import EvolutionStore

    statements: list[str] = []
    store = await EvolutionStore.open(
        store_url, statement_hook=lambda sql, _: statements.append(sql)
    )
    try:
        spans = [gen_ai_span(f"p{i}", f"c{i}", at=i) for i in range(10)]
        await store.ingest(spans)
        for span in spans:
            await reward(store, span, 1.0)
        statements.clear()
        pages = await all_calls(store, batch=4)
        # three pages (4, 4, 2): the spans, the rewards linked to them, the run-level rewards
        assert [len(page) for page in pages] == [4, 4, 2]
        assert len(statements) == 9, statements
    finally:
        await store.close()


def test_captured_messages_and_openai_completion() -> None:
    from evolution_store.llm_call_queries import extract_messages

    chat = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    completion = {"id": "x", "choices": [{"message": {"role": "assistant", "content": "done"}}]}
    found = extract_messages(
        {"input.value": json.dumps({"messages": chat}), "output.value": json.dumps(completion)}
    )
    assert found == ("captured", chat, [{"role": "assistant", "content": "done"}])
    several = extract_messages({"input.value": json.dumps({"a": 1, "b": 2}), "output.value": "ok"})
    assert several is not None
    assert several[1] == [{"role": "user", "content": json.dumps({"a": 1, "b": 2})}]
    assert extract_messages({"gen_ai.input.messages": "[]", "output.value": "x"}) is None


async def test_llm_calls_pages_through_equal_start_times(store: Any) -> None:
    spans = [gen_ai_span(f"p{i}", f"c{i}", at=7) for i in range(5)]
    await store.ingest(spans)

    pages = await all_calls(store, batch=2)
    assert [len(page) for page in pages] == [2, 2, 1]
    found = [call["span_id"] for page in pages for call in page]
    assert sorted(found) == sorted(span.span_id for span in spans)
