"""A simulated agent for the prompt-optimisation bench: tasks whose success depends on what
the prompt asks for, and a fake reflection LM that turns failure feedback into instructions,
with mistakes.

The agent serves a small company. Each example belongs to one of nine task families and needs
one to three of twenty *behaviours* (check calendars for conflicts, convert units to metric,
cite the source, answer extraction requests in JSON...), some only when its input calls for
them (two time zones, imperial units, a USD amount...). A behaviour happens when a sentence of the
prompt asks for it, recognised by keywords so that any wording works (several paraphrases, as
an LLM or a person would write them). What makes it more than a checklist:

- **Instructions that hurt.** JSON, step-by-step working, clarifying questions, brevity and
  examples help one family; asked for everywhere (no scope words: "when extracting fields...")
  they hurt others: raw JSON sent to a customer, scratch notes in a summary, needless
  questions, code cut short.
- **Cost.** Tokens = prompt + input + output tokens; instructions that fire add output tokens
  (step-by-step working, unit tests, examples), brevity halves them; latency grows with both,
  output tokens weighing most. Past sixteen sentences every instruction is followed a little
  less often, so piling everything in is not free either.
- **Noise, deterministically.** Whether an instruction is followed on an example is a draw
  seeded by (instruction wording, example), not all-or-nothing: followed 95% of the time
  (98% when emphasised), 50% when the prompt merely names the symptom, 10% unasked. 7% of
  examples fail whatever the prompt, and 3% of (prompt, example) pairs fail at random.
- **Feedback names the symptom, never the fix** ("the proposed 10:00 slot overlaps
  'Standup'", not "check for conflicts"), in two phrasings per behaviour.

Splits: train / val / test, examples stratified over families; the optimisers see train and
val; the bench judges on test. `FakeReflectionLM` is the reflection model both the optimiser
under test and GEPA talk to (served by `FakeChatServer`); see its docstring.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# -- the behaviours and what hurts --------------------------------------------------------------


@dataclass(frozen=True)
class Behaviour:
    """Something an example may need the agent to do. `fix` recognises a sentence asking for it;
    `hint` one that only names its symptom (followed half the time); `scope` the words that
    narrow a broad ask (JSON, step-by-step...) to the families it is for: without them it fires
    everywhere. `symptoms` are the feedback when it was missing, `lm_symptom` how the fake LM
    recognises them, `fixes` what the LM writes and `broad` its over-broad version of a fix."""

    name: str
    home: frozenset[str]
    fix: re.Pattern[str]
    hint: re.Pattern[str] | None
    symptoms: tuple[str, ...]
    lm_symptom: re.Pattern[str]
    fixes: tuple[str, ...]
    output_tokens: int
    scope: re.Pattern[str] | None = None
    broad: tuple[str, ...] = ()


def _re(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


BEHAVIOURS: dict[str, Behaviour] = {
    b.name: b
    for b in (
        Behaviour(
            "collisions",
            frozenset({"schedule"}),
            _re(r"conflict|collision|clash|double[- ]?book|availab|free slot|busy"),
            _re(r"overlap"),
            (
                "The proposed {time} slot overlaps '{meeting}' on {a}'s calendar.",
                "The new meeting overlaps '{meeting}', which {a} already had at {time}.",
            ),
            _re(r"overlap"),
            (
                "Before proposing a meeting time, check every attendee's calendar for conflicts.",
                "Never double-book: only suggest slots that are free for all attendees.",
                "Check availability and avoid clashes with existing meetings.",
            ),
            10,
        ),
        Behaviour(
            "timezone",
            frozenset({"schedule"}),
            _re(r"time ?zones?|\butc\b|\bgmt\b|local time"),
            _re(r"wrong hour"),
            (
                "{b} in {city} showed up at the wrong hour.",
                "{b}, who works from {city}, joined an hour late: the wrong hour for them.",
            ),
            _re(r"wrong hour"),
            (
                "State every meeting time with its time zone, for example 15:00 UTC.",
                "When attendees are in different cities, give the time in each one's local time.",
            ),
            10,
        ),
        Behaviour(
            "metric",
            frozenset({"recipe"}),
            _re(r"metric|\bsi units?\b|grams|kilogram|celsius|millilit|convert .*(units|measure)"),
            _re(r"no way to measure|could measure"),
            (
                "The cook in {city} had no way to measure out the {unit} given.",
                "Nobody in the {city} kitchen could measure {unit}.",
            ),
            _re(r"no way to measure|could measure"),
            (
                "Convert all measurements to metric units (grams, millilitres, degrees Celsius).",
                "Always give quantities and temperatures in metric units.",
            ),
            15,
        ),
        Behaviour(
            "cite",
            frozenset({"research"}),
            _re(r"\bcit(e|es|ing|ation)|sources?\b|referenc|attribut"),
            _re(r"came from|traced"),
            (
                "A reviewer could not tell where the claim about {topic} came from.",
                "The statement about {topic} could not be traced to any document.",
            ),
            _re(r"where the claim|could not be traced"),
            (
                "Cite the source document for every factual claim.",
                "Attribute each fact to the document it comes from, like [doc 2].",
            ),
            20,
        ),
        Behaviour(
            "json",
            frozenset({"extract"}),
            _re(r"\bjson\b|machine[- ]readable|structured (output|format|object)"),
            _re(r"parser|read the fields"),
            (
                "The downstream parser rejected the reply.",
                "The import job could not read the fields out of the answer.",
            ),
            _re(r"parser|could not read the fields"),
            (
                "When extracting fields from a document, reply with valid JSON only.",
                "For data-extraction requests, output a JSON object with one key per field.",
            ),
            5,
            scope=_re(r"extract|\bfields?\b|invoice|\bforms?\b|records?\b|pars"),
            broad=("Always answer in valid JSON.", "Format every reply as a JSON object."),
        ),
        Behaviour(
            "steps",
            frozenset({"budget"}),
            _re(
                r"step[- ]by[- ]step|show (your|the|all)( of your)? (work|calculation)|"
                r"one (item|line|line item) at a time|line by line|reason through|work through|"
                r"double[- ]check (the |your )?(arithmetic|math|sums)"
            ),
            _re(r"line item|total is off|does not match the items"),
            (
                "The total is off: the {item} line item was left out.",
                "The final figure does not match the items: {item} is missing from it.",
            ),
            _re(r"line item|does not match the items"),
            (
                "For any calculation, work through the line items one at a time.",
                "When asked for totals or costs, reason step by step before giving the number.",
            ),
            110,
            scope=_re(r"calculat|arithmetic|\bmath|totals?\b|\bsums?\b|costs?\b|prices?|numbers?"),
            broad=(
                "Think step by step and show all of your working.",
                "Always reason step by step before answering.",
            ),
        ),
        Behaviour(
            "pii",
            frozenset({"support"}),
            _re(r"personal (data|information|details)|\bpii\b|privacy|private|redact|confidential"),
            _re(r"exposed|leaked"),
            (
                "The reply exposed the customer's phone number to a third party.",
                "A customer's email address leaked into the shared support channel.",
            ),
            _re(r"exposed|leaked"),
            (
                "Never repeat personal data such as phone numbers or email addresses; redact it.",
                "Protect customer privacy: redact any personal information in replies.",
            ),
            5,
        ),
        Behaviour(
            "clarify",
            frozenset({"support"}),
            _re(r"clarif|follow[- ]up question|ask (the user |them |the customer )?(a )?question"),
            _re(r"guess"),
            (
                "The reply guessed which order the customer meant, and guessed wrong.",
                "The answer guessed at what '{thing}' meant and got it wrong.",
            ),
            _re(r"guessed"),
            (
                "If a request is ambiguous, ask one clarifying question instead of acting.",
                "When key details are unclear, ask the customer a clarifying question first.",
            ),
            25,
            scope=_re(r"ambiguous|unclear|vague|missing|underspecified|not sure|more than one"),
            broad=("Always ask a clarifying question before answering.",),
        ),
        Behaviour(
            "example",
            frozenset({"explain"}),
            _re(
                r"(give|include|add|use|provide|with|show) (a |an |one )?"
                r"(short |brief |concrete |worked |real[- ]world |simple )*(example|analogy)|"
                r"for instance|illustrat"
            ),
            _re(r"could not apply|abstract"),
            (
                "The student could not apply the explanation of {topic} to a real case.",
                "The explanation of {topic} stayed abstract; the student was lost.",
            ),
            _re(r"could not apply|stayed abstract"),
            (
                "When explaining a concept, include one short concrete example.",
                "Illustrate every explanation of a concept with a worked example.",
            ),
            70,
            scope=_re(r"explain|explanation|concept|teach|student|learner"),
            broad=("Add a concrete example to every answer.",),
        ),
        Behaviour(
            "tests",
            frozenset({"codegen"}),
            _re(r"unit tests?|test cases?|\btests?\b|\bassert"),
            _re(r"nothing exercised|could not confirm"),
            (
                "Reviewers could not confirm the function works; nothing exercised it.",
                "Nothing exercised the new code, so review could not confirm it works.",
            ),
            _re(r"nothing exercised|could not confirm"),
            (
                "When writing code, include unit tests for it.",
                "Every function you write should come with a few test cases.",
            ),
            120,
        ),
        Behaviour(
            "edge_cases",
            frozenset({"codegen"}),
            _re(r"edge[- ]cases?|corner cases?|empty (lists?|inputs?|strings?)|\bnull|boundar"),
            _re(r"crash|raised an error"),
            (
                "The function crashed on an orders file with no rows.",
                "It raised an error when the input had zero items.",
            ),
            _re(r"crashed|raised an error"),
            (
                "Handle edge cases such as empty lists and missing values.",
                "Guard against empty and null inputs in any code you write.",
            ),
            30,
        ),
        Behaviour(
            "length",
            frozenset({"summary"}),
            _re(
                r"as short as possible|extremely brief|one sentence|\bterse|be brief|"
                r"(under|at most|no more than|fewer than|within) \d+ words|word limit|"
                r"keep (it|them|answers|replies|responses|summaries|every answer) (short|brief)"
            ),
            _re(r"page limit|too long for"),
            (
                "The summary ran past the one-page limit.",
                "The digest was too long for the newsletter slot.",
            ),
            _re(r"page limit|too long for"),
            (
                "Keep summaries under 120 words.",
                "When summarising, stay within 100 words.",
            ),
            0,
            scope=_re(r"summar|digest"),
            broad=("Keep every answer as short as possible.", "Be extremely brief."),
        ),
        # Rarer needs: a condition of the input that only some examples of a family meet.
        Behaviour(
            "allergens",
            frozenset({"recipe"}),
            _re(r"allerg"),
            _re(r"not warned"),
            (
                "A guest with a nut intolerance was not warned.",
                "The walnuts came as a surprise: the guests were not warned.",
            ),
            _re(r"not warned"),
            (
                "Warn about common allergens such as nuts, gluten or dairy in any recipe.",
                "Point out ingredients that people are often allergic to.",
            ),
            15,
        ),
        Behaviour(
            "disagree",
            frozenset({"research"}),
            _re(r"disagree|contradict|inconsisten"),
            _re(r"hid that|papered over"),
            (
                "The documents give different dates for {topic}, and the answer hid that.",
                "Two documents tell different stories about {topic}; the answer papered over it.",
            ),
            _re(r"hid that|papered over"),
            (
                "When the documents disagree, say so and give both versions.",
                "Point out any contradiction between the documents instead of picking one.",
            ),
            20,
        ),
        Behaviour(
            "iso_dates",
            frozenset({"extract"}),
            _re(r"iso[- ]?8601|yyyy-mm-dd|date format"),
            _re(r"wrong day"),
            (
                "The date {date} was stored as the wrong day.",
                "The import read {date} as the wrong day of the year.",
            ),
            _re(r"wrong day"),
            (
                "Write every date in ISO 8601 form (YYYY-MM-DD).",
                "Normalise dates to the YYYY-MM-DD format.",
            ),
            0,
        ),
        Behaviour(
            "currency",
            frozenset({"budget"}),
            _re(r"currenc|exchange rate"),
            _re(r"same money"),
            (
                "Dollar and euro amounts were added together as if they were the same money.",
                "Amounts in USD and EUR were summed as if they were the same money.",
            ),
            _re(r"same money"),
            (
                "Convert all amounts to one currency before adding them.",
                "When amounts are in different currencies, convert them at the given rate first.",
            ),
            20,
        ),
        Behaviour(
            "empathy",
            frozenset({"support"}),
            _re(r"apolog|empath|acknowledge"),
            _re(r"brushed off"),
            (
                "The customer felt brushed off.",
                "The customer wrote back that they felt brushed off.",
            ),
            _re(r"brushed off"),
            (
                "When something went wrong for a customer, acknowledge it and apologise first.",
                "Show empathy: acknowledge the customer's problem before solving it.",
            ),
            15,
        ),
        Behaviour(
            "jargon",
            frozenset({"explain"}),
            _re(r"jargon|define (any|every|each|all)( technical)? terms?|plain (language|words)"),
            _re(r"unexplained term"),
            (
                "The colleague got stuck on '{term}', an unexplained term.",
                "'{term}' was used as an unexplained term.",
            ),
            _re(r"unexplained term"),
            (
                "Define any technical term the first time you use it.",
                "Avoid jargon, or explain it in plain words.",
            ),
            25,
        ),
        Behaviour(
            "types",
            frozenset({"codegen"}),
            _re(r"type hints?|type annotations?|annotate"),
            _re(r"what the function accepts"),
            (
                "The reviewer could not tell what the function accepts.",
                "Callers had to read the body to learn what the function accepts.",
            ),
            _re(r"what the function accepts"),
            (
                "Add type hints to every function signature.",
                "Annotate parameters and return values with types.",
            ),
            10,
        ),
        Behaviour(
            "actions",
            frozenset({"summary"}),
            _re(r"action items?|next steps|owners?\b"),
            _re(r"act on"),
            (
                "The team missed the decisions they had to act on.",
                "Readers could not find what they had to act on.",
            ),
            _re(r"act on"),
            (
                "End every summary with the action items and their owners.",
                "When summarising, list decisions and next steps with their owners.",
            ),
            25,
        ),
    )
}


@dataclass(frozen=True)
class Hurt:
    """What a broad ask (no scope words) of `behaviour` does to the families it is not for."""

    behaviour: str
    families: frozenset[str]
    rate: float
    symptoms: tuple[str, ...]
    lm_symptom: re.Pattern[str]


FAMILY_NAMES = (
    "schedule",
    "recipe",
    "research",
    "extract",
    "budget",
    "support",
    "explain",
    "codegen",
    "summary",
)

HURTS: tuple[Hurt, ...] = (
    Hurt(
        "json",
        frozenset({"support", "explain", "summary", "research", "recipe"}),
        0.8,
        (
            "The customer received a data blob instead of a reply.",
            "The reader got curly braces instead of prose.",
        ),
        _re(r"data blob|curly braces"),
    ),
    Hurt(
        "steps",
        frozenset({"summary", "support"}),
        0.6,
        (
            "The summary included scratch notes nobody asked for.",
            "The reply was buried under scratch notes.",
        ),
        _re(r"scratch notes"),
    ),
    Hurt(
        "clarify",
        frozenset(FAMILY_NAMES),  # every example that is not ambiguous
        0.5,
        ("The user had to answer a needless question before getting any help.",),
        _re(r"needless question"),
    ),
    Hurt(
        "length",
        frozenset({"explain", "codegen", "budget"}),
        0.75,
        (
            "The answer was too thin to follow.",
            "The answer was cut off before it was complete.",
        ),
        _re(r"too thin to follow|cut off before"),
    ),
)

#: The starting prompt: one good instruction, one that hurts three families.
SEED_PROMPT = """You are the assistant of a small company. Help the user with their request.
Keep every answer as short as possible.
Cite the source document for each fact you state."""

#: A hand-written prompt asking for every behaviour with its scope: the ceiling to compare with.
REFERENCE_PROMPT = """You are the assistant of a small company. Help the user with their request.
Before proposing a meeting time, check every attendee's calendar for conflicts.
State every meeting time with its time zone.
Convert all measurements to metric units and warn about allergens.
Cite the source document for each fact you state, and say when documents disagree.
When extracting fields from a document, reply with valid JSON only.
Write dates as YYYY-MM-DD.
For any calculation, work through the line items one at a time.
Convert amounts to one currency before adding them.
Acknowledge a customer's problem, and never repeat personal data such as phone numbers.
If a request is ambiguous, ask one clarifying question instead of acting.
When explaining a concept, include one short concrete example and define any technical term.
When writing code, include unit tests, type hints, and handle edge cases such as empty lists.
Keep summaries under 120 words and end them with the action items."""

COMPLIANCE = 0.95  # a sentence that asks for the behaviour
EMPHASIS_BONUS = 0.03  # "IMPORTANT:", "must", "always", "never"...
HINT_COMPLIANCE = 0.5  # a sentence that only names the symptom
SPONTANEOUS = 0.10  # not asked for at all
DILUTION = 0.004  # compliance lost per sentence past DILUTION_FREE
DILUTION_FREE = 16
HARD_EXAMPLES = 0.07  # fail whatever the prompt
SLIP_RATE = 0.03  # a (prompt, example) pair that fails at random

_EMPHASIS = _re(r"^\W*(important|note|remember|critical)\b|\b(must|always|never|make sure)\b|!")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_PREFIX = _re(r"^\W*(important|note|remember|critical)\s*[:!-]\s*")


def _unit(*parts: object) -> float:
    """A uniform draw in [0, 1) fixed by `parts`: the env's only source of chance."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def sentences(prompt: str) -> list[str]:
    """A prompt's sentences: lines, split again at sentence ends; bullets kept as they are."""
    out: list[str] = []
    for line in prompt.splitlines():
        out.extend(part.strip() for part in _SENTENCE.split(line.strip()) if part.strip())
    return out


def _key(sentence: str) -> str:
    """The sentence's words without an emphasis prefix: emphasis changes how often an
    instruction is followed, not which examples it is followed on."""
    return " ".join(re.findall(r"[a-z0-9]+", _PREFIX.sub("", sentence).lower()))


def asks(sentence: str, behaviour: Behaviour) -> str | None:
    """How `sentence` asks for `behaviour`: "fix", "hint" or None."""
    if behaviour.fix.search(sentence):
        return "fix"
    if behaviour.hint is not None and behaviour.hint.search(sentence):
        return "hint"
    return None


def is_broad(sentence: str, behaviour: Behaviour) -> bool:
    """A fix that can be scoped but is not: it fires on every example."""
    return (
        behaviour.scope is not None
        and behaviour.fix.search(sentence) is not None
        and behaviour.scope.search(sentence) is None
    )


@dataclass(frozen=True)
class _Reading:
    """What the simulated model takes from a prompt."""

    compliance: dict[str, tuple[float, str]]  # behaviour -> (chance it is followed, draw key)
    broad: frozenset[str]  # behaviours asked for everywhere
    prompt_tokens: int


def read_prompt(prompt: str) -> _Reading:
    parts = sentences(prompt)
    dilution = DILUTION * max(0, len(parts) - DILUTION_FREE)
    compliance: dict[str, tuple[float, str]] = {}
    broad: set[str] = set()
    for sentence in parts:
        for behaviour in BEHAVIOURS.values():
            how = asks(sentence, behaviour)
            if how is None:
                continue
            if how == "fix":
                chance = COMPLIANCE + (EMPHASIS_BONUS if _EMPHASIS.search(sentence) else 0.0)
                if is_broad(sentence, behaviour):
                    broad.add(behaviour.name)
            else:
                chance = HINT_COMPLIANCE
            chance = min(0.99, chance) - dilution
            if chance > compliance.get(behaviour.name, (0.0, ""))[0]:
                compliance[behaviour.name] = (chance, _key(sentence))
    return _Reading(compliance, frozenset(broad), math.ceil(len(prompt) / 4))


# -- the task families and their examples -------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """The hidden truth about one example (the optimisers see only its id and input)."""

    family: str
    needs: tuple[str, ...]
    ambiguous: bool
    input_tokens: int
    details: dict[str, str] = field(hash=False)


@dataclass(frozen=True)
class Family:
    name: str
    output_tokens: int  # a plain answer's length
    context_tokens: int  # documents, calendars... sent along with the request


FAMILIES = {
    f.name: f
    for f in (
        Family("schedule", 90, 120),
        Family("recipe", 160, 60),
        Family("research", 140, 450),
        Family("extract", 60, 180),
        Family("budget", 80, 60),
        Family("support", 150, 140),
        Family("explain", 220, 20),
        Family("codegen", 260, 40),
        Family("summary", 180, 600),
    )
}
assert tuple(FAMILIES) == FAMILY_NAMES

_PEOPLE = ("Dana", "Sam", "Priya", "Jonas", "Mei", "Luca", "Amara", "Tomas")
_CITIES = ("Berlin", "New York", "Tokyo", "Lagos", "Lyon", "Austin", "Sydney", "Pune")
_MEETINGS = ("Standup", "Design review", "1:1", "Hiring panel", "Quarterly planning")
_TIMES = ("09:00", "10:30", "13:00", "14:30", "16:00")
_DISHES = ("banana bread", "lentil soup", "pancakes", "apple pie", "chili")
_UNITS = ("cups", "pounds", "ounces", "degrees Fahrenheit")
_TOPICS = ("the 2019 price change", "the warehouse move", "the supplier audit", "the new logo")
_ITEMS = ("shipping", "licence", "catering", "travel", "hosting")
_CONCEPTS = {  # a concept and a term its explanation tends to use
    "compound interest": "amortisation",
    "recursion": "stack frame",
    "photosynthesis": "chlorophyll",
    "supply and demand": "price elasticity",
    "entropy": "heat death",
}
_CODE = (
    "returns the three most frequent customer names in a list of orders",
    "merges two lists of invoices by invoice id",
    "groups support tickets by week",
    "computes the median delivery time of a list of shipments",
)
_DOCS = ("board memo", "quarterly report", "customer interview", "incident review")
_DATES = ("03/04/25", "04/03/25", "11/12/24", "05/06/25")


def _make_spec(family: str, rng: random.Random) -> tuple[_Spec, str]:
    """One example of `family`: its hidden spec and the request text the agent gets."""
    a, b = rng.sample(_PEOPLE, 2)
    city, other = rng.sample(_CITIES, 2)
    details = {
        "a": a,
        "b": b,
        "city": city,
        "time": rng.choice(_TIMES),
        "meeting": rng.choice(_MEETINGS),
        "unit": rng.choice(_UNITS),
        "topic": rng.choice(_TOPICS),
        "item": rng.choice(_ITEMS),
        "thing": rng.choice(("the usual", "the thing from before", "the other one")),
        "date": rng.choice(_DATES),
    }
    needs: list[str] = []
    ambiguous = False
    if family == "schedule":
        needs.append("collisions")
        busy = f"{details['meeting']} at {details['time']}"
        text = f"Find 30 minutes this week for {a} and {b} to talk about {details['topic']}. "
        text += f"{a}'s calendar: {busy}; {b}'s calendar: lunch at 12:00."
        if rng.random() < 0.5:
            needs.append("timezone")
            text += f" {a} is in {other}, {b} is in {city}."
        else:
            text += f" Both work from {city}."
    elif family == "recipe":
        people = rng.randint(3, 12)
        dish = rng.choice(_DISHES)
        if rng.random() < 0.7:
            needs.append("metric")
            text = f"Scale my {dish} recipe for {people} people: 2 cups flour, 1 pound butter, "
            text += "4 ounces sugar, bake at 350 degrees Fahrenheit."
        else:
            text = f"Scale my {dish} recipe for {people} people: 250 g flour, 100 g butter, "
            text += "2 eggs, bake at 180 C."
        if rng.random() < 0.3:
            needs.append("allergens")
            text += " Topped with walnuts."
    elif family == "research":
        needs.append("cite")
        text = f"From the attached documents, what happened with {details['topic']}? "
        text += "[doc 1] board minutes, [doc 2] email thread, [doc 3] press note."
        if rng.random() < 0.35:
            needs.append("disagree")
            text += " [doc 1] and [doc 3] were written a year apart."
    elif family == "extract":
        needs.append("json")
        number = rng.randint(1000, 9999)
        if rng.random() < 0.5:
            needs.append("iso_dates")
            dated = details["date"]
        else:
            dated = "3 March 2025"
        text = "Pull the invoice number, date and amount due out of this email: 'Hi, "
        text += f"attached is invoice {number} dated {dated}, amount due {number % 900} EUR.'"
    elif family == "budget":
        needs.append("steps")
        items = rng.sample(_ITEMS, 3)
        details["item"] = items[rng.randrange(3)]
        currencies = ["EUR", "EUR", "EUR"]
        if rng.random() < 0.35:
            needs.append("currency")
            currencies[rng.randrange(3)] = "USD"
        listed = ", ".join(
            f"{item} {rng.randint(40, 900)} {cur}"
            for item, cur in zip(items, currencies, strict=True)
        )
        text = f"How much do we spend on {listed}, with {rng.choice((7, 19, 20))}% VAT?"
        if "currency" in needs:
            text += " (1 USD = 0.92 EUR)"
    elif family == "support":
        text = "Reply to this customer ticket: '"
        if rng.random() < 0.3:
            ambiguous = True
            needs.append("clarify")
            text += f"Hi, {details['thing']} I ordered does not work again, please sort it."
        else:
            text += f"Hi, my order of {rng.randint(2, 9)} mugs arrived with one broken."
            if rng.random() < 0.6:
                needs.append("empathy")
                text += " Second time this month!"
        if rng.random() < 0.6:
            needs.append("pii")
            text += f" Call me at 555-01{rng.randint(10, 99)} or write to {a.lower()}@example.org."
        text += "'"
    elif family == "explain":
        needs.append("example")
        details["topic"] = rng.choice(sorted(_CONCEPTS))
        details["term"] = _CONCEPTS[details["topic"]]
        text = f"Explain {details['topic']} to a new colleague."
        if rng.random() < 0.4:
            needs.append("jargon")
            text += " They are new to the field."
    elif family == "codegen":
        needs.append("tests")
        text = f"Write a Python function that {rng.choice(_CODE)}."
        if rng.random() < 0.5:
            needs.append("edge_cases")
            text += " It runs on every nightly export."
        if rng.random() < 0.35:
            needs.append("types")
            text += " It goes into our shared library."
    else:  # summary
        needs.append("length")
        text = f"Summarise this {rng.choice(_DOCS)} for the team newsletter: [4 pages attached]."
        if rng.random() < 0.4:
            needs.append("actions")
            text += " Several decisions were taken."
    tokens = FAMILIES[family].context_tokens + math.ceil(len(text) / 4)
    return _Spec(family, tuple(needs), ambiguous, tokens, details), text


@dataclass(frozen=True)
class Outcome:
    """One run of the simulated agent on one example, judged."""

    score: float
    feedback: str
    tokens: float
    latency_ms: float
    output: str  # a stand-in for the agent's answer (GEPA shows it to its reflection LM)


@dataclass(frozen=True)
class Judgement:
    success: float
    tokens: float
    latency_ms: float
    n: int


class ApoEnv:
    """Train / val / test examples and the simulated agent that runs a prompt on them.

        env = ApoEnv(seed=1)
        outcome = env.evaluate(SEED_PROMPT, env.val[0])   # Outcome(score, feedback, ...)
        env.judge(REFERENCE_PROMPT, env.test).success      # about 0.8

    Everything is a pure function of (seed, prompt, example): no clock, no global state.
    Examples are `{"id": ..., "input": ...}`; which behaviours they need stays hidden.
    """

    def __init__(self, seed: int = 0, *, n_train: int = 60, n_val: int = 60, n_test: int = 200):
        self.seed = seed
        self.seed_prompt = SEED_PROMPT
        rng = random.Random(f"apo-env:{seed}")
        self._specs: dict[str, _Spec] = {}
        self._readings: dict[str, _Reading] = {}
        self.train = self._split("train", n_train, rng)
        self.val = self._split("val", n_val, rng)
        self.test = self._split("test", n_test, rng)

    def _split(self, name: str, n: int, rng: random.Random) -> list[dict[str, Any]]:
        families = [FAMILY_NAMES[i % len(FAMILY_NAMES)] for i in range(n)]
        rng.shuffle(families)
        examples = []
        for index, family in enumerate(families):
            spec, text = _make_spec(family, rng)
            example_id = f"{name}-{index:03d}"
            self._specs[example_id] = spec
            examples.append({"id": example_id, "input": text})
        return examples

    def family(self, example: dict[str, Any]) -> str:
        return self._specs[example["id"]].family

    def _read(self, prompt: str) -> _Reading:
        reading = self._readings.get(prompt)
        if reading is None:
            if len(self._readings) > 50_000:
                self._readings.clear()
            reading = self._readings[prompt] = read_prompt(prompt)
        return reading

    def evaluate(self, prompt: str, example: dict[str, Any]) -> Outcome:
        spec = self._specs[example["id"]]
        reading = self._read(prompt)
        example_id = example["id"]
        causes: list[str] = []
        for name in spec.needs:
            chance, key = reading.compliance.get(name, (SPONTANEOUS, ""))
            if _unit(self.seed, "follow", name, key, example_id) >= chance:
                causes.append(self._symptom(BEHAVIOURS[name].symptoms, spec, name))
        for hurt in HURTS:
            applies = spec.family in hurt.families
            if hurt.behaviour == "clarify":
                applies = not spec.ambiguous
            if hurt.behaviour in reading.broad and applies:
                key = reading.compliance[hurt.behaviour][1]
                if _unit(self.seed, "hurt", hurt.behaviour, key, example_id) < hurt.rate:
                    causes.append(self._symptom(hurt.symptoms, spec, hurt.behaviour))
        if not causes and _unit(self.seed, "hard", example_id) < HARD_EXAMPLES:
            causes.append("The reviewer judged the answer incorrect.")
        if not causes and _unit(self.seed, "slip", prompt, example_id) < SLIP_RATE:
            causes.append("The answer contained a factual slip.")

        output = self._output_tokens(reading, spec, example_id, prompt)
        context = reading.prompt_tokens + spec.input_tokens
        jitter = 0.92 + 0.16 * _unit(self.seed, "latency", prompt, example_id)
        latency = (150 + 0.1 * context + 12 * output) * jitter
        return Outcome(
            score=0.0 if causes else 1.0,
            feedback=" ".join(causes),
            tokens=float(context + output),
            latency_ms=round(latency, 1),
            output=f"({spec.family} answer, {output} tokens)",
        )

    def _output_tokens(self, reading: _Reading, spec: _Spec, example_id: str, prompt: str) -> int:
        tokens = float(FAMILIES[spec.family].output_tokens)
        fires = set(reading.broad)
        for name in reading.compliance:
            # A scoped ask fires on its own family; a scoped clarifying question only when
            # the request is ambiguous.
            if spec.family in BEHAVIOURS[name].home and (name != "clarify" or spec.ambiguous):
                fires.add(name)
        if "length" in fires:
            tokens *= 0.5
        tokens += sum(BEHAVIOURS[name].output_tokens for name in fires)
        return round(tokens * (0.9 + 0.2 * _unit(self.seed, "output", prompt, example_id)))

    def _symptom(self, symptoms: tuple[str, ...], spec: _Spec, name: str) -> str:
        index = int(_unit(self.seed, "phrasing", name, spec.details["a"], spec.family) * 2)
        return symptoms[min(index, len(symptoms) - 1)].format(**spec.details)

    def judge(self, prompt: str, examples: list[dict[str, Any]]) -> Judgement:
        """Mean success, tokens and latency of `prompt` on `examples` (the bench's judge)."""
        outcomes = [self.evaluate(prompt, example) for example in examples]
        n = len(outcomes)
        return Judgement(
            success=sum(o.score for o in outcomes) / n,
            tokens=sum(o.tokens for o in outcomes) / n,
            latency_ms=sum(o.latency_ms for o in outcomes) / n,
            n=n,
        )


# -- the fake reflection LM ---------------------------------------------------------------------

_CURRENT = re.compile(r"<current_prompt>\s*(.*?)\s*</current_prompt>", re.DOTALL)
_FENCED = re.compile(r"```[^\n]*\n(.*?)\n?```", re.DOTALL)
MISTAKES = ("hurting", "drop", "wrong_fix", "too_broad", "format")
_GENERIC = (
    "Read the request carefully before answering.",
    "Be accurate and helpful.",
    "Answer in a friendly, professional tone.",
)


class FakeReflectionLM:
    """A reflection model for the bench: `messages -> reply`, deterministic from (seed, the
    request's text).

    It reads GEPA's default reflection prompt (the current instruction in the first ``` block,
    the examples with their feedback after it) and ours (the prompt between `<current_prompt>`
    and `</current_prompt>`, then failures with `Input:` and `Feedback:`). It recognises each
    symptom it knows in the feedback and answers with the current prompt's sentences (one a
    line) plus a fix for each: a paraphrase from a short list, or emphasis on the instruction
    already there; a symptom of an instruction that hurts removes that instruction and adds its
    scoped version. With probability `error_rate` a reply makes one mistake, drawn evenly from
    `MISTAKES`: adds an instruction that hurts, drops an existing sentence, fixes the wrong
    thing, writes a fix too broadly (no scope), or strays from the format (no fence and a
    chatty line that becomes part of the prompt, or chatter around the fence). `mistakes`
    counts them.
    """

    def __init__(self, seed: int = 0, *, error_rate: float = 0.3) -> None:
        self.seed = seed
        self.error_rate = error_rate
        self.mistakes: Counter[str] = Counter()
        self.replies = 0

    def __call__(self, messages: list[dict[str, Any]]) -> str:
        text = "\n".join(_content(m) for m in messages)
        rng = random.Random(hashlib.sha256(f"{self.seed}\0{text}".encode()).digest())
        self.replies += 1
        found = _CURRENT.search(text) or _FENCED.search(text)
        if found is None:
            return "I could not find the prompt you want me to improve."
        current = sentences(found.group(1))
        evidence = text[found.end() :]
        lines, added = self._revise(current, evidence, rng)
        mistake = rng.choice(MISTAKES) if rng.random() < self.error_rate else None
        if mistake is not None:
            self.mistakes[mistake] += 1
            lines = self._mistake(mistake, current, lines, added, rng)
        body = "\n".join(lines)
        if mistake == "format":
            if rng.random() < 0.5:
                return f"Here is the improved prompt:\n\n{body}\n\nLet me know if it helps."
            return f"Sure! I revised the prompt.\n```text\n{body}\n```\nThis should fix them."
        return f"```\n{body}\n```"

    def _revise(
        self, current: list[str], evidence: str, rng: random.Random
    ) -> tuple[list[str], list[str]]:
        """The corrected sentences and the fixes added."""
        lines = list(current)
        added: list[str] = []
        for hurt in HURTS:
            if not hurt.lm_symptom.search(evidence):
                continue
            behaviour = BEHAVIOURS[hurt.behaviour]
            lines = [s for s in lines if not is_broad(s, behaviour)]
            if not any(asks(s, behaviour) == "fix" for s in lines):
                added.append(rng.choice(behaviour.fixes))
        for behaviour in BEHAVIOURS.values():
            if not behaviour.lm_symptom.search(evidence):
                continue
            asked = [i for i, s in enumerate(lines) if asks(s, behaviour) == "fix"]
            if asked and not _EMPHASIS.search(lines[asked[0]]):
                lines[asked[0]] = "IMPORTANT: " + lines[asked[0]]
            elif not asked:
                added.append(rng.choice(behaviour.fixes))
        if not added and lines == current:
            plain = [i for i, s in enumerate(lines) if not _EMPHASIS.search(s)]
            if plain and rng.random() < 0.5:
                index = rng.choice(plain)
                lines[index] = "IMPORTANT: " + lines[index]
            else:
                added.append(rng.choice(_GENERIC))
        return lines + [a for a in added if a not in lines], added

    def _mistake(
        self,
        kind: str,
        current: list[str],
        lines: list[str],
        added: list[str],
        rng: random.Random,
    ) -> list[str]:
        scoped = [b for b in BEHAVIOURS.values() if b.broad]
        if kind == "hurting":
            return lines + [rng.choice(rng.choice(scoped).broad)]
        if kind == "drop":
            kept = [s for s in lines if s in current]
            if len(kept) > 1:
                victim = rng.choice(kept)
                return [s for s in lines if s != victim]
            return lines
        if kind == "wrong_fix":
            if added:
                wrong = rng.choice([b for b in BEHAVIOURS.values() if added[-1] not in b.fixes])
                return [s for s in lines if s != added[-1]] + [rng.choice(wrong.fixes)]
            return lines + [rng.choice(rng.choice(list(BEHAVIOURS.values())).fixes)]
        if kind == "too_broad":
            for fix in added:
                owner = next((b for b in scoped if fix in b.fixes), None)
                if owner is not None:
                    return [rng.choice(owner.broad) if s == fix else s for s in lines]
            return lines + [rng.choice(rng.choice(scoped).broad)]
        return lines  # "format": the text is right, the reply around it is not


def _content(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # OpenAI content parts
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return str(content)
