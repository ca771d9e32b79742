"""Heuristic mutations and instruction-level crossover: small named operators a user can add
to. Each mutation is `fn(prompt, rng, context) -> str` and may return the prompt unchanged
when it has nothing to do (the engine skips such children at no cost). With no LLM these are
the whole search; with one they add variety and can undo a reflection's mistake."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from .instructions import join_instructions, normalize, same_instruction, split_instructions

__all__ = [
    "GENERIC_CONSTRAINTS",
    "HEURISTIC_MUTATIONS",
    "MutationContext",
    "crossover",
]

#: Instructions that often help an LLM agent; `add_constraint` draws from these when the
#: failures' feedback gives it nothing better.
GENERIC_CONSTRAINTS = (
    "Think step by step before answering.",
    "Double-check the answer against every requirement before replying.",
    "Follow the requested output format exactly.",
    "Use only the information given; do not invent facts.",
    "If something is ambiguous, state the assumption you make.",
    "Keep the answer concise and to the point.",
    "Verify each constraint in the task is satisfied.",
)

_EMPHASIS_PREFIX = "IMPORTANT: "
_FILLER = re.compile(
    r"\b(please|kindly|very|really|just|basically|actually|simply|carefully)\s+", re.IGNORECASE
)
_TEMPLATE = re.compile(r"{{|{%")


@dataclass
class MutationContext:
    """What a mutation may draw on: recent failures (example, feedback) and examples the
    prompt already handles."""

    failures: list[tuple[Mapping[str, Any], str]] = field(default_factory=list)
    passes: list[Mapping[str, Any]] = field(default_factory=list)


def _append(instructions: list[str], new: list[str]) -> list[str]:
    """`new` after the instructions but before a trailing block of template lines, so the
    inputs (`Question: {{ question }}`) still come last."""
    head = list(instructions)
    tail: list[str] = []
    while head and _TEMPLATE.search(head[-1]):
        tail.insert(0, head.pop())
    return head + new + tail


def _movable(instructions: list[str]) -> list[int]:
    """Indexes of instructions an operator may edit: not template blocks or variables."""
    return [i for i, text in enumerate(instructions) if not _TEMPLATE.search(text)]


def add_emphasis(prompt: str, rng: random.Random, context: MutationContext) -> str:
    """Mark one not-yet-emphasised instruction as important."""
    instructions = split_instructions(prompt)
    choices = [i for i in _movable(instructions) if not instructions[i].startswith("IMPORTANT")]
    if not choices:
        return prompt
    i = rng.choice(choices)
    instructions[i] = _EMPHASIS_PREFIX + instructions[i].lstrip("-*• ")
    return join_instructions(instructions)


def _feedback_constraint(feedback: str) -> str | None:
    first = re.split(r"(?<=[.!?])\s", feedback.strip(), maxsplit=1)[0].strip().rstrip(".")
    if not first:
        return None
    return f"Make sure this never happens: {first[:200]}."


def add_constraint(prompt: str, rng: random.Random, context: MutationContext) -> str:
    """Append a constraint: one turned from a failure's feedback, or a generic one."""
    instructions = split_instructions(prompt)
    options = [c for c in GENERIC_CONSTRAINTS]
    for _example, feedback in context.failures:
        constraint = _feedback_constraint(feedback)
        if constraint:
            options.extend([constraint] * 2)  # the failures' own symptoms are likelier to pay
    options = [o for o in options if not any(same_instruction(o, i) for i in instructions)]
    if not options:
        return prompt
    return join_instructions(_append(instructions, [rng.choice(options)]))


def reorder_instructions(prompt: str, rng: random.Random, context: MutationContext) -> str:
    """Move one instruction to another place (models weigh position)."""
    instructions = split_instructions(prompt)
    movable = _movable(instructions)
    if len(movable) < 2:
        return prompt
    source, target = rng.sample(movable, 2)
    instructions.insert(target, instructions.pop(source))
    return join_instructions(instructions)


def add_example(prompt: str, rng: random.Random, context: MutationContext) -> str:
    """Show one example the prompt already handles, so the agent sees a worked input."""
    if not context.passes:
        return prompt
    example = rng.choice(context.passes)
    shown = {k: v for k, v in example.items() if k != "id"}
    text = orjson.dumps(shown, option=orjson.OPT_SORT_KEYS, default=str).decode()[:300]
    line = f"Example of a task handled well: {text}"
    instructions = split_instructions(prompt)
    if any(i.startswith("Example of a task handled well:") for i in instructions):
        return prompt
    # Braces would read as template syntax.
    line = line.replace("{", "(").replace("}", ")")
    return join_instructions(_append(instructions, [line]))


def simplify(prompt: str, rng: random.Random, context: MutationContext) -> str:
    """Drop filler words, emphasis and repeated instructions: fewer tokens, same asks."""
    kept: list[str] = []
    for instruction in split_instructions(prompt):
        if _TEMPLATE.search(instruction):
            kept.append(instruction)
            continue
        text = _FILLER.sub("", instruction).replace(_EMPHASIS_PREFIX, "")
        text = re.sub(r"\s{2,}", " ", text).strip()
        if text and not any(same_instruction(text, k) for k in kept if not _TEMPLATE.search(k)):
            kept.append(text[0].upper() + text[1:])
    return join_instructions(kept)


def remove_instruction(prompt: str, rng: random.Random, context: MutationContext) -> str:
    """Drop one instruction: undoes an instruction that hurts, and makes the prompt cheaper."""
    instructions = split_instructions(prompt)
    movable = _movable(instructions)
    if len(instructions) < 2 or not movable:
        return prompt
    del instructions[rng.choice(movable)]
    return join_instructions(instructions)


Mutation = Callable[[str, random.Random, MutationContext], str]

#: The operators by name. The design's five first, then remove_instruction.
HEURISTIC_MUTATIONS: dict[str, Mutation] = {
    "add_emphasis": add_emphasis,
    "add_constraint": add_constraint,
    "reorder_instructions": reorder_instructions,
    "add_example": add_example,
    "simplify": simplify,
    "remove_instruction": remove_instruction,
}


def crossover(first: str, second: str) -> str:
    """`first`'s instructions, then those of `second` it lacks, in `second`'s order."""
    own = split_instructions(first)
    extra = [
        i
        for i in split_instructions(second)
        if not _TEMPLATE.search(i) and not any(same_instruction(i, o) for o in own)
    ]
    return join_instructions(_append(own, extra)) if extra else first


def different(a: str, b: str) -> bool:
    """Whether two prompts differ in more than whitespace and case."""
    return normalize(a) != normalize(b)
