"""Reflective mutation: the meta-prompt that shows an LLM the current prompt and what went
wrong, and the parsing of whatever it replies."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .mutations import different

__all__ = ["Failure", "meta_prompt", "parse_reply"]

_SYSTEM = (
    "You improve the instructions (the prompt) an AI agent follows. You are shown the current "
    "prompt and tasks it failed, each with the feedback a judge gave. Feedback often names only "
    "a symptom: work out the cause and turn it into a clear, general instruction."
)

_TASK = """Write an improved prompt that fixes these failures without breaking what already works:
- add a short, general instruction for each distinct problem (not one per example);
- keep the instructions that are still needed; remove or reword any that cause failures;
- keep it concise; keep every {{{{ template variable }}}} exactly as it is.
Reply with the complete improved prompt inside a ``` block and nothing else."""


@dataclass(frozen=True)
class Failure:
    """A failing example shown to the LLM: its input and the judge's feedback."""

    example: Mapping[str, Any]
    feedback: str
    score: float


def _shown_input(example: Mapping[str, Any]) -> str:
    shown = {k: v for k, v in example.items() if k != "id"}
    return orjson.dumps(shown, default=str).decode()[:1500]


def meta_prompt(prompt: str, failures: Sequence[Failure], passed: int = 0) -> list[dict]:
    """The chat messages asking for an improved prompt (the WP1 meta-prompt)."""
    lines = [
        "<current_prompt>",
        prompt,
        "</current_prompt>",
        "",
        f"Recent failures of this prompt ({len(failures)}):",
    ]
    for number, failure in enumerate(failures, 1):
        feedback = failure.feedback.strip() or "(no feedback; the answer was judged wrong)"
        lines += [
            "",
            f"Failure {number} (score {failure.score:.2f})",
            f"Input: {_shown_input(failure.example)}",
            f"Feedback: {feedback}",
        ]
    if passed:
        lines += ["", f"The same prompt succeeded on {passed} other recent examples."]
    lines += ["", _TASK.format()]
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n(.*?)(?:\n[ \t]*```|\Z)", re.DOTALL)
_TAGGED = re.compile(
    r"<(improved_prompt|new_prompt|prompt|current_prompt|instructions)>\s*(.*?)\s*</\1>",
    re.DOTALL | re.IGNORECASE,
)
_PREAMBLE = re.compile(
    r"^\s*(?:sure|certainly|okay|ok|here(?:'s| is)|below is|the improved prompt)[^\n]*:\s*\n",
    re.IGNORECASE,
)
_LANGUAGES = {"", "text", "txt", "markdown", "md", "prompt", "jinja", "jinja2", "plaintext"}


def parse_reply(reply: str | None, current: str) -> str | None:
    """The improved prompt in an LLM reply, or None when there is none or it is the current
    prompt again. Reads a fenced block (the longest, if several; a prose or template one before
    any other), else a tagged one, else a JSON object's prompt field, else the plain text
    without a chatty first line: real models stray from the format asked for."""
    if not reply or not reply.strip():
        return None
    fenced = _FENCE.findall(reply)
    blocks = [body for lang, body in fenced if lang.lower() in _LANGUAGES] or [
        body for _lang, body in fenced
    ]
    tagged = [body for _tag, body in _TAGGED.findall(reply)]
    if blocks:
        text = max(blocks, key=len)
    elif tagged:
        text = max(tagged, key=len)
    else:
        text = _json_prompt(reply) or _PREAMBLE.sub("", reply, count=1)
    text = text.strip().strip("`").strip()
    if not text or not different(text, current):
        return None
    return text


def _json_prompt(reply: str) -> str | None:
    """`{"prompt": "..."}` and the like, which models tuned for JSON output send."""
    try:
        value = orjson.loads(reply.strip())
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict):
        return None
    for key in ("prompt", "improved_prompt", "new_prompt", "instructions", "instruction"):
        if isinstance(value.get(key), str):
            return value[key]
    return None
