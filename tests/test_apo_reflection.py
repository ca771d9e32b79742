"""The meta-prompt and the parsing of what an LLM replies."""

from __future__ import annotations

import pytest

from evolution_store.learn.apo.reflection import Failure, meta_prompt, parse_reply

CURRENT = "Be helpful.\nQ: {{ q }}"


def test_the_meta_prompt_shows_the_prompt_then_each_failure_with_input_and_feedback():
    messages = meta_prompt(CURRENT, [Failure({"id": 7, "city": "Oslo"}, "wrong currency", 0.0)], 3)
    text = messages[-1]["content"]
    assert text.startswith("<current_prompt>\nBe helpful.\nQ: {{ q }}\n</current_prompt>")
    assert 'Input: {"city":"Oslo"}' in text and "Feedback: wrong currency" in text
    assert "succeeded on 3 other" in text and "``` block" in text
    assert messages[0]["role"] == "system"


@pytest.mark.parametrize(
    "reply",
    [
        "```\nBe helpful.\nUse euros.\nQ: {{ q }}\n```",
        "Sure! Here is the improved prompt:\n```text\nBe helpful.\nUse euros.\nQ: {{ q }}\n```\n"
        "I added a currency rule.",
        "<improved_prompt>\nBe helpful.\nUse euros.\nQ: {{ q }}\n</improved_prompt>",
        "Here is the improved prompt:\nBe helpful.\nUse euros.\nQ: {{ q }}",
        "```\nBe helpful.\nUse euros.\nQ: {{ q }}",  # an unclosed fence
        '{"prompt": "Be helpful.\\nUse euros.\\nQ: {{ q }}"}',
        "```python\nBe helpful.\nUse euros.\nQ: {{ q }}\n```",
    ],
)
def test_replies_are_parsed_whatever_their_shape(reply):
    assert parse_reply(reply, CURRENT) == "Be helpful.\nUse euros.\nQ: {{ q }}"


def test_the_longest_of_several_fences_is_the_prompt():
    reply = "```\nshort\n```\nand the full one:\n```\nBe helpful.\nUse euros.\nQ: {{ q }}\n```"
    assert parse_reply(reply, CURRENT).startswith("Be helpful.\nUse euros.")


@pytest.mark.parametrize("reply", [None, "", "   ", "```\n```", "```\nbe helpful. q: {{ q }}\n```"])
def test_empty_or_unchanged_replies_are_rejected(reply):
    assert parse_reply(reply, CURRENT) is None
