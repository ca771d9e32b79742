"""A prompt as a list of instructions: what mutations move, drop and cross over.

An instruction is a line, or a sentence of a line holding several. A Jinja2 block
(`{% ... %}` through its end) stays one unit so no operator can break the template."""

from __future__ import annotations

import re
from difflib import SequenceMatcher

__all__ = ["join_instructions", "normalize", "same_instruction", "split_instructions"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(\[])")
_EMPHASIS = re.compile(r"^(important|note|remember|critical)\s*[:!-]\s*", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")


def _blocks(prompt: str) -> list[str]:
    """Lines, with a multi-line Jinja2 statement block kept together."""
    units: list[str] = []
    depth = 0
    for line in prompt.splitlines():
        opens = len(re.findall(r"{%-?\s*(?:for|if|macro|block|with|call|filter|raw)\b", line))
        closes = len(re.findall(r"{%-?\s*end\w+", line))
        if depth > 0:
            units[-1] += "\n" + line
        elif line.strip():
            units.append(line)
        depth = max(0, depth + opens - closes)
    return units


def split_instructions(prompt: str) -> list[str]:
    """The prompt's instructions in order (blank lines dropped)."""
    instructions: list[str] = []
    for unit in _blocks(prompt):
        if "{%" in unit or "\n" in unit or _BULLET.match(unit):
            instructions.append(unit.rstrip())
            continue
        instructions.extend(part.strip() for part in _SENTENCE_END.split(unit) if part.strip())
    return instructions


def join_instructions(instructions: list[str]) -> str:
    return "\n".join(instructions)


def normalize(instruction: str) -> str:
    """Lower-case words only, without emphasis prefixes or bullets: what `same_instruction`
    compares."""
    text = _EMPHASIS.sub("", _BULLET.sub("", instruction.strip()))
    return " ".join(re.findall(r"[a-z0-9{}_]+", text.lower()))


def same_instruction(a: str, b: str, threshold: float = 0.85) -> bool:
    """Whether two instructions say the same thing (near-identical wording)."""
    na, nb = normalize(a), normalize(b)
    if na == nb:
        return True
    return SequenceMatcher(None, na, nb).ratio() >= threshold
