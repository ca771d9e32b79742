"""Heuristic mutations, crossover and the instruction splitting they work on."""

from __future__ import annotations

import random

import pytest

from evolution_store.learn.apo.instructions import same_instruction, split_instructions
from evolution_store.learn.apo.mutations import HEURISTIC_MUTATIONS, MutationContext, crossover

PROMPT = (
    "You are a travel assistant. Please answer very briefly.\n"
    "Always check collisions.\n"
    "{% for rule in rules %}\n- {{ rule }}\n{% endfor %}\n"
    "Question: {{ question }}"
)
CONTEXT = MutationContext(
    failures=[({"q": "a"}, "The trip overlaps a booked flight. Bad.")],
    passes=[{"id": 1, "q": "Paris in May"}],
)


def test_instructions_are_sentences_and_template_blocks_stay_whole():
    assert split_instructions(PROMPT) == [
        "You are a travel assistant.",
        "Please answer very briefly.",
        "Always check collisions.",
        "{% for rule in rules %}\n- {{ rule }}\n{% endfor %}",
        "Question: {{ question }}",
    ]
    assert same_instruction("IMPORTANT: Always check collisions!", "always check collisions.")


def test_the_design_five_and_remove_instruction_are_registered():
    assert set(HEURISTIC_MUTATIONS) == {
        "add_emphasis",
        "add_constraint",
        "reorder_instructions",
        "add_example",
        "simplify",
        "remove_instruction",
    }


@pytest.mark.parametrize("name", sorted(HEURISTIC_MUTATIONS))
def test_every_mutation_changes_the_prompt_and_keeps_the_template_intact(name):
    child = HEURISTIC_MUTATIONS[name](PROMPT, random.Random(1), CONTEXT)
    assert child != PROMPT
    assert "{% for rule in rules %}\n- {{ rule }}\n{% endfor %}" in child
    assert "{{ question }}" in child


def test_each_mutation_does_what_its_name_says():
    rng = random.Random(0)
    assert "IMPORTANT: " in HEURISTIC_MUTATIONS["add_emphasis"](PROMPT, rng, CONTEXT)
    simpler = HEURISTIC_MUTATIONS["simplify"](PROMPT, rng, CONTEXT)
    assert "Please" not in simpler and "very" not in simpler and len(simpler) < len(PROMPT)
    shorter = HEURISTIC_MUTATIONS["remove_instruction"](PROMPT, rng, CONTEXT)
    assert len(split_instructions(shorter)) == len(split_instructions(PROMPT)) - 1
    example = HEURISTIC_MUTATIONS["add_example"](PROMPT, rng, CONTEXT)
    assert "Paris in May" in example and example.endswith("Question: {{ question }}")
    constrained = {
        HEURISTIC_MUTATIONS["add_constraint"](PROMPT, random.Random(s), CONTEXT) for s in range(20)
    }
    assert any("overlaps a booked flight" in c for c in constrained)


def test_a_mutation_with_nothing_to_do_returns_the_prompt():
    assert HEURISTIC_MUTATIONS["add_example"](PROMPT, random.Random(0), MutationContext()) == PROMPT
    one = "Answer."
    assert HEURISTIC_MUTATIONS["remove_instruction"](one, random.Random(0), CONTEXT) == one


def test_crossover_unites_instructions_without_repeating_them():
    a = "Always check collisions.\nQuestion: {{ question }}"
    b = "Think step-by-step about cost.\nalways check collisions\nQuestion: {{ question }}"
    assert crossover(a, b) == (
        "Always check collisions.\nThink step-by-step about cost.\nQuestion: {{ question }}"
    )
    assert crossover(a, a) == a
