"""Checks a child passes before any metric call is spent on it."""

from __future__ import annotations

import re

from jinja2 import ChainableUndefined, Environment, TemplateError, meta

__all__ = ["OVERRIDE_PATTERNS", "refusal", "template_variables"]

#: Instruction-override text: a prompt carrying it would turn the agent against its own
#: system prompt, so no child containing it is ever evaluated, whatever it scores.
OVERRIDE_PATTERNS = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        r"\b(ignore|disregard|forget|override|bypass)\b[^.\n]{0,40}\b(previous|prior|above|"
        r"earlier|preceding|system|all)\b[^.\n]{0,20}\b(instructions?|prompts?|rules?|"
        r"directions?|guidelines?)",
        r"\byou are now (?:dan|in developer mode|jailbroken|unrestricted)",
        r"\b(developer|god|jailbreak) mode\b",
        r"\bpretend (?:there are|you have) no (?:rules|restrictions|guidelines)",
        r"\breveal (?:your|the) (?:system )?prompt\b",
    )
)

_ENV = Environment(undefined=ChainableUndefined, autoescape=False)


def template_variables(prompt: str) -> set[str]:
    """The variables a Jinja2 template reads (empty for plain text or a broken template)."""
    try:
        return set(meta.find_undeclared_variables(_ENV.parse(prompt)))
    except TemplateError:
        return set()


def refusal(prompt: str, *, required_variables: set[str], max_chars: int) -> str | None:
    """Why `prompt` may not be evaluated, or None. It must render with dummy variables, keep
    the seed's variables (the agent's inputs), carry no override text and stay under the
    length cap."""
    if len(prompt) > max_chars:
        return f"longer than the cap ({len(prompt)} > {max_chars} characters)"
    for pattern in OVERRIDE_PATTERNS:
        found = pattern.search(prompt)
        if found:
            return f"contains instruction-override text: {found.group(0)!r}"
    try:
        template = _ENV.from_string(prompt)
        template.render({name: "x" for name in template_variables(prompt)})
    except TemplateError as exc:
        return f"does not render as a template: {exc}"
    except Exception as exc:  # noqa: BLE001 - a filter or test can raise anything on dummy input
        return f"does not render with dummy variables: {type(exc).__name__}: {exc}"
    missing = required_variables - template_variables(prompt)
    if missing:
        return f"drops the template variables {sorted(missing)}"
    return None
