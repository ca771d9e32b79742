"""The store's traced, rewarded LLM calls as the datasets fine-tuning stacks read (DESIGN §7).

`await export(store, "trl-sft", agent="support", out="sft.jsonl")` writes one file and returns
how many records it holds. The calls come from `EvolutionStore.llm_calls` (which attributes
hold the prompt and completion, and which rewards count, is said there), a page at a time.

Formats (JSON Lines unless said; messages are `{"role", "content"}` with text content):

- `trl-sft`: `{"messages": prompt + completion}` (TRL's conversational language-modelling
  shape), for every call, or with `min_reward` only the calls rewarded at or above it.
- `trl-dpo`: `{"prompt": [...], "chosen": [...], "rejected": [...]}` (TRL's conversational
  preference shape): for each prompt (the same messages), every pair of its distinct
  completions whose rewards differ by at least `margin`, the better one chosen. Identical
  completions of a prompt are one completion (their rewards averaged), so a completion is
  never paired with itself. Unrewarded calls are left out.
- `trl-kto`: `{"prompt": [...], "completion": [...], "label": bool}` (TRL's unpaired
  preference shape): `label` is reward >= `min_reward`, or reward > 0 without one.
  Unrewarded calls are left out.
- `triplets`: `{"prompt": [...], "response": "text", "reward": float | null, "metadata":
  {span_id, trace_id, task_id, execution_id, name, model, source, start_time}}` (Agent
  Lightning 0.x's Triplet); with `min_reward`, only calls rewarded at or above it.
- `verl`: Parquet (needs pyarrow, in the `[learn]` extra) with VERL's RL dataset columns:
  `data_source` ("evolution-store/<agent>"), `prompt` (the prompt messages; VERL generates
  the completions itself), `ability` (the span's operation, else "chat"), `reward_model`
  (`{"style": "rule", "ground_truth": <logged completion>}` when `min_reward` is given and
  the call reached it, a reference answer known to score; else `{"style": "model",
  "ground_truth": null}`), `extra_info` (`{index, span_id, trace_id, task_id, execution_id,
  model, reward}`). Every call is a row.

Memory stays at one page of calls for every format but `trl-dpo`, which must see all the
completions of a prompt before pairing them: it keeps, per distinct prompt, its distinct
rewarded completions (a hash-keyed map), not the calls' other fields.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from ..errors import InvalidInput

FORMATS = ("trl-sft", "trl-dpo", "trl-kto", "triplets", "verl")

Call = dict[str, Any]


async def export(
    store: Any,
    format: str,
    *,
    agent: str,
    out: str | Path,
    reward_name: str = "reward",
    min_reward: float | None = None,
    since: int | None = None,
    margin: float = 0.5,
    batch: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write `agent`'s LLM calls (started at or after `since`, ns) to `out` in `format` (see
    the module docstring for each shape) and return the number of records written. The file
    is replaced. `progress`, when given, is called after each page with the number of calls
    read so far. Raises `InvalidInput` for an unknown format or a margin not above 0, and
    whatever the store raises for reading."""
    if format not in FORMATS:
        raise InvalidInput(
            f"unknown format {format!r}; one of {', '.join(FORMATS)}", field="format"
        )
    if margin <= 0:
        # With a margin of 0, two completions scored alike would be paired in either order.
        raise InvalidInput("margin must be above 0", field="margin")
    pages = _counted(
        store.llm_calls(agent=agent, since=since, reward_name=reward_name, batch=batch), progress
    )
    if format == "verl":
        return await _write_verl(pages, Path(out), agent=agent, min_reward=min_reward)
    with open(out, "wb") as file:
        if format == "trl-dpo":
            pairs = _DpoPairs()
            async for page in pages:
                pairs.add(page)
            return _write_lines(file, pairs.records(margin))
        to_record = _RECORDS[format]
        written = 0
        async for page in pages:
            written += _write_lines(
                file, (record for call in page if (record := to_record(call, min_reward)))
            )
        return written


async def _counted(
    pages: AsyncIterator[list[Call]], progress: Callable[[int], None] | None
) -> AsyncIterator[list[Call]]:
    read = 0
    async for page in pages:
        yield page
        read += len(page)
        if progress is not None:
            progress(read)


def _write_lines(file: IO[bytes], records: Iterator[dict[str, Any]]) -> int:
    written = 0
    for record in records:
        file.write(orjson.dumps(record) + b"\n")
        written += 1
    return written


def _reaches(call: Call, min_reward: float | None) -> bool:
    return min_reward is None or (call["reward"] is not None and call["reward"] >= min_reward)


def _sft(call: Call, min_reward: float | None) -> dict[str, Any] | None:
    if not _reaches(call, min_reward):
        return None
    return {"messages": call["prompt"] + call["completion"]}


def _kto(call: Call, min_reward: float | None) -> dict[str, Any] | None:
    reward = call["reward"]
    if reward is None:
        return None
    label = reward > 0 if min_reward is None else reward >= min_reward
    return {"prompt": call["prompt"], "completion": call["completion"], "label": label}


def _triplet(call: Call, min_reward: float | None) -> dict[str, Any] | None:
    if not _reaches(call, min_reward):
        return None
    return {
        "prompt": call["prompt"],
        "response": _completion_text(call),
        "reward": call["reward"],
        "metadata": {
            key: call[key]
            for key in (
                "span_id",
                "trace_id",
                "task_id",
                "execution_id",
                "name",
                "model",
                "source",
                "start_time",
            )
        },
    }


_RECORDS: dict[str, Callable[[Call, float | None], dict[str, Any] | None]] = {
    "trl-sft": _sft,
    "trl-kto": _kto,
    "triplets": _triplet,
}


def _completion_text(call: Call) -> str:
    return "\n".join(message["content"] for message in call["completion"])


class _DpoPairs:
    """Rewarded completions grouped by prompt, in first-seen order, then paired. Prompts and
    completions are kept as their JSON text (the grouping keys themselves), parsed only when a
    pair is written: a few hundred bytes each rather than a tree of Python objects."""

    def __init__(self) -> None:
        # prompt JSON -> {completion JSON: [reward sum, count]}
        self.prompts: dict[str, dict[str, list[float]]] = {}

    def add(self, page: list[Call]) -> None:
        for call in page:
            if call["reward"] is None:
                continue
            completions = self.prompts.setdefault(_key(call["prompt"]), {})
            seen = completions.setdefault(_key(call["completion"]), [0.0, 0])
            seen[0] += call["reward"]
            seen[1] += 1

    def records(self, margin: float) -> Iterator[dict[str, Any]]:
        for prompt, completions in self.prompts.items():
            # Best first; ties keep first-seen order (sorted is stable).
            scored = sorted(
                ((total / count, completion) for completion, (total, count) in completions.items()),
                key=lambda item: -item[0],
            )
            for (better, chosen), (worse, rejected) in itertools.combinations(scored, 2):
                if better - worse >= margin:
                    yield {
                        "prompt": orjson.loads(prompt),
                        "chosen": orjson.loads(chosen),
                        "rejected": orjson.loads(rejected),
                    }


def _key(messages: list[dict[str, Any]]) -> str:
    # Decoded to str: orjson's bytes keep its whole output buffer (4 KiB), a str is exact.
    return orjson.dumps(messages, option=orjson.OPT_SORT_KEYS).decode()


async def _write_verl(pages: Any, out: Path, *, agent: str, min_reward: float | None) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extras
        raise ModuleNotFoundError(
            "the verl export needs pyarrow: pip install 'evolution-store[learn]'", name=exc.name
        ) from exc
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    schema = pa.schema(
        [
            ("data_source", pa.string()),
            ("prompt", pa.list_(message)),
            ("ability", pa.string()),
            ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
            (
                "extra_info",
                pa.struct(
                    [
                        ("index", pa.int64()),
                        ("span_id", pa.string()),
                        ("trace_id", pa.string()),
                        ("task_id", pa.string()),
                        ("execution_id", pa.string()),
                        ("model", pa.string()),
                        ("reward", pa.float64()),
                    ]
                ),
            ),
        ]
    )
    written = 0
    # One row group per page: the writer holds a page's rows, never the whole dataset.
    with pq.ParquetWriter(str(out), schema) as writer:
        async for page in pages:
            rows = []
            for call in page:
                known = min_reward is not None and _reaches(call, min_reward)
                rows.append(
                    {
                        "data_source": f"evolution-store/{agent}",
                        "prompt": call["prompt"],
                        "ability": call["operation"] or "chat",
                        "reward_model": {
                            "style": "rule" if known else "model",
                            "ground_truth": _completion_text(call) if known else None,
                        },
                        "extra_info": {
                            "index": written,
                            "span_id": call["span_id"],
                            "trace_id": call["trace_id"],
                            "task_id": call["task_id"],
                            "execution_id": call["execution_id"],
                            "model": call["model"],
                            "reward": call["reward"],
                        },
                    }
                )
                written += 1
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
        if written == 0:
            writer.write_table(schema.empty_table())
    return written
