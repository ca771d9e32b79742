"""Decisions (DESIGN §7): `decide()` records one choice an agent made, and `Policy` makes that
choice from a learned policy and records it, so an agent using it logs exactly what the next
PPO round needs.

A decision is a span named `evolution.decision` started in the current context, so the span
processor stamps it with the current `task()`'s task and execution ids (its episode) and it
nests under the current traced call. Its attributes:

- `evolution.decision.name`: which decision (one agent may make several kinds);
- `evolution.decision.action`: what was chosen; `evolution.decision.actions`: what was available;
- `evolution.decision.prob`: the behaviour policy's probability of the chosen action. PPO on
  logged data needs it for its importance ratio; a decision without it is counted by the
  trainer, not learned from;
- `evolution.decision.state.<feature>`: the state the choice was made in (str/int/float/bool).

`Policy` evaluates a linear softmax policy in plain Python (a few multiply-adds per action), so
agents keep the light client: no NumPy here.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry import trace

from ._prompts import get_prompt
from ._state import STATE, get_tracer

DECISION_SPAN = "evolution.decision"
NAME_ATTR = "evolution.decision.name"
ACTION_ATTR = "evolution.decision.action"
ACTIONS_ATTR = "evolution.decision.actions"
PROB_ATTR = "evolution.decision.prob"
STATE_PREFIX = "evolution.decision.state."
AGENT_ATTR = "gen_ai.agent.name"
POLICY_VERSION = 1
#: `Policy.load("registry:<agent>/<decision>[@label]")` reads a policy from the prompt registry
REGISTRY_PREFIX = "registry:"

StateValue = str | int | float | bool


def _actions(actions: Iterable[str]) -> tuple[str, ...]:
    # A bare string is iterable too; taking "abc" as actions a, b, c would be a silent mistake.
    if isinstance(actions, str) or not isinstance(actions, Iterable):
        raise TypeError("actions must be a list of strings")
    result = tuple(actions)
    if not result:
        raise ValueError("actions must not be empty")
    for action in result:
        if not isinstance(action, str) or not action:
            raise TypeError(f"every action must be a non-empty string, got {action!r}")
    if len(set(result)) != len(result):
        raise ValueError(f"actions must be distinct, got {list(result)!r}")
    return result


def _prob(prob: Any) -> float:
    if isinstance(prob, bool) or not isinstance(prob, int | float):
        raise TypeError(f"prob must be a number, got {type(prob).__name__}")
    number = float(prob)
    # 0 is refused: an action chosen with probability 0 cannot have been chosen, and the
    # trainer divides by it.
    if not (0.0 < number <= 1.0):
        raise ValueError(f"prob must be in (0, 1], got {prob!r}")
    return number


def _state(state: Mapping[str, Any] | None) -> dict[str, StateValue]:
    if state is None:
        return {}
    if not isinstance(state, Mapping):
        raise TypeError("state must be a mapping of feature name to str, int, float or bool")
    result: dict[str, StateValue] = {}
    for key, value in state.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"state feature names must be non-empty strings, got {key!r}")
        if not isinstance(value, str | int | float | bool):
            raise TypeError(
                f"state feature {key!r} must be a str, int, float or bool, "
                f"got {type(value).__name__}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"state feature {key!r} must be finite, got {value!r}")
        result[key] = value
    return result


def _current_agent() -> str | None:
    # The enclosing traced call's agent, read off the current span (SDK spans expose their
    # attributes), so decisions made inside an agent are filed under it like its other work.
    attributes = getattr(trace.get_current_span(), "attributes", None)
    if isinstance(attributes, Mapping):
        agent = attributes.get(AGENT_ATTR)
        if isinstance(agent, str):
            return agent
    return None


def decide(
    name: str,
    actions: Iterable[str],
    chosen: str,
    prob: float | None = None,
    state: Mapping[str, StateValue] | None = None,
    *,
    agent: str | None = None,
) -> None:
    """Record that decision `name` chose `chosen` among `actions` in `state`, with probability
    `prob` under the policy that chose it.

    Log `prob` whenever the choice was random (an epsilon-greedy rule, a softmax, a `Policy`):
    without it PPO cannot correct for the policy that produced the data, and the step is not
    used. The span lands in the current task's execution; `agent` defaults to the enclosing
    traced call's `gen_ai.agent.name` (otherwise the store files it under the service name).

    Raises `TypeError`/`ValueError` for bad input (before anything is recorded): `chosen` not
    among distinct, non-empty `actions`, `prob` outside (0, 1], a state value that is not a
    finite scalar.

    ```python
    actions = ["search", "answer"]
    decide("next_step", actions, "search", prob=0.5, state={"turn": 1, "intent": "refund"})
    ```
    """
    if not isinstance(name, str) or not name:
        raise TypeError("name must be a non-empty string")
    available = _actions(actions)
    if not isinstance(chosen, str) or chosen not in available:
        raise ValueError(f"chosen {chosen!r} is not one of the actions {list(available)!r}")
    attributes: dict[str, Any] = {
        NAME_ATTR: name,
        ACTION_ATTR: chosen,
        ACTIONS_ATTR: list(available),
    }
    if prob is not None:
        attributes[PROB_ATTR] = _prob(prob)
    for key, value in _state(state).items():
        attributes[STATE_PREFIX + key] = value
    if agent is None:
        agent = _current_agent()
    elif not isinstance(agent, str) or not agent:
        raise TypeError("agent must be a non-empty string")
    if agent is not None:
        attributes[AGENT_ATTR] = agent
    tracer = STATE.tracer or get_tracer()
    tracer.start_span(DECISION_SPAN, attributes=attributes).end()


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"policy document: {what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"policy document: {what} must be finite, got {value!r}")
    return number


def _category_text(value: Any) -> str:
    # The trainer's rule (`evolution_store.learn.ppo.category`): bools as JSON spells them,
    # anything else `str()`, so a state encodes here exactly as it did in training.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def policy_registry_agent(agent: str, decision: str) -> str:
    """The registry agent whose versions are `agent`'s learned policies for `decision`."""
    return f"{agent}.policy.{decision}"


def _registry_document(ref: str) -> Any:
    path, _, label = ref.partition("@")
    agent, _, decision = path.rpartition("/")
    if not agent or not decision:
        raise ValueError(
            f"registry reference {REGISTRY_PREFIX}{ref!r}: expected "
            f"{REGISTRY_PREFIX}<agent>/<decision>[@label]"
        )
    prompt = get_prompt(policy_registry_agent(agent, decision), label=label or "production")
    try:
        return json.loads(prompt.content)
    except ValueError as exc:
        raise ValueError(f"registry policy {ref!r} is not a JSON document: {exc}") from None


class Policy:
    """A learned linear softmax policy, as `evolution_store.learn.ppo.policy_document` writes it.

    The document (a JSON file, or the dict itself):

    ```
    {"version": 1,
     "features": {"categorical": {name: [value, ...]}, "numeric": {name: [mean, std]}},
     "actions": [action, ...],
     "weights": [[w, ...], ...]}   # one row per action: n_features weights, then the bias
    ```

    Feature columns, in order: one per categorical value (one-hot), categorical features in
    the document's order, each's values in listed order; then one per numeric feature,
    standardised as (x - mean) / std (0 when std is 0); then the bias. A state missing a
    feature, with a category the policy never saw, or with a non-number (or bool) for a numeric
    feature, contributes 0 for it: exactly how `evolution_store.learn.ppo` encoded it.

    An available action the policy has no row for scores the mean of the known available
    actions' scores (0 when none is known): softmax scores mean something only relative to
    each other, so "average" is the neutral choice; it keeps being tried, and since its
    decisions are logged with their probability, the next training round learns it.

    ```python
    policy = Policy.load("out/policy.json")
    action, prob = policy.choose("next_step", {"intent": "refund"}, ["search", "answer"])
    ```
    """

    __slots__ = ("actions", "categorical", "numeric", "weights", "_rows")

    def __init__(
        self,
        *,
        actions: Sequence[str],
        categorical: Mapping[str, Sequence[Any]],
        numeric: Mapping[str, tuple[float, float]],
        weights: Sequence[Sequence[float]],
    ) -> None:
        self.actions = tuple(actions)
        self.categorical = {name: tuple(values) for name, values in categorical.items()}
        self.numeric = {name: (float(m), float(s)) for name, (m, s) in numeric.items()}
        self.weights = tuple(tuple(float(w) for w in row) for row in weights)
        self._rows = dict(zip(self.actions, self.weights, strict=True))

    @classmethod
    def load(cls, source: str | os.PathLike[str] | Mapping[str, Any]) -> Policy:
        """Read a policy document from a JSON file path, a dict, or the prompt registry:
        `"registry:<agent>/<decision>"` is the production version that
        `evolution-store train ppo --register` stored (`@<label>` names another label, e.g.
        `registry:support/route@latest`), fetched through `get_prompt` (so `configure()`
        first; cached, with its fallbacks and errors).

        Raises `ValueError` when the document is malformed (unknown version, weights not
        n_actions x (n_features + 1), a non-finite number, a negative std), and the usual
        `OSError` when the file cannot be read.
        """
        if isinstance(source, Mapping):
            document: Any = source
        elif isinstance(source, str) and source.startswith(REGISTRY_PREFIX):
            document = _registry_document(source[len(REGISTRY_PREFIX) :])
        else:
            with open(source, encoding="utf-8") as f:
                document = json.load(f)
        if not isinstance(document, Mapping):
            raise ValueError("policy document must be a JSON object")
        if document.get("version") != POLICY_VERSION:
            raise ValueError(
                f"policy document version {document.get('version')!r} is not supported "
                f"(expected {POLICY_VERSION})"
            )
        features = document.get("features") or {}
        if not isinstance(features, Mapping):
            raise ValueError("policy document: features must be an object")
        categorical = features.get("categorical") or {}
        numeric_spec = features.get("numeric") or {}
        if not isinstance(categorical, Mapping) or not isinstance(numeric_spec, Mapping):
            raise ValueError("policy document: categorical and numeric must be objects")
        for name, values in categorical.items():
            if not isinstance(values, list):
                raise ValueError(f"policy document: categorical {name!r} must list its values")
        numeric: dict[str, tuple[float, float]] = {}
        for name, pair in numeric_spec.items():
            if not isinstance(pair, list) or len(pair) != 2:
                raise ValueError(f"policy document: numeric {name!r} must be [mean, std]")
            mean = _finite(pair[0], f"mean of {name!r}")
            std = _finite(pair[1], f"std of {name!r}")
            if std < 0:
                raise ValueError(f"policy document: std of {name!r} is negative")
            numeric[name] = (mean, std)
        try:
            actions = _actions(document.get("actions") or [])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"policy document: {exc}") from exc
        width = sum(len(values) for values in categorical.values()) + len(numeric) + 1
        weights = document.get("weights")
        if (
            not isinstance(weights, list)
            or len(weights) != len(actions)
            or not all(isinstance(row, list) and len(row) == width for row in weights)
        ):
            raise ValueError(
                f"policy document: weights must be {len(actions)} rows of {width} numbers "
                "(one per feature column, then the bias)"
            )
        rows = [
            [_finite(w, f"weight of {a!r}") for w in row]
            for a, row in zip(actions, weights, strict=True)
        ]
        return cls(actions=actions, categorical=categorical, numeric=numeric, weights=rows)

    def features(self, state: Mapping[str, Any]) -> list[float]:
        """The feature columns of `state` (bias last), as the weights expect them."""
        columns: list[float] = []
        for name, values in self.categorical.items():
            if name in state:
                text = _category_text(state[name])
                columns.extend(1.0 if _category_text(v) == text else 0.0 for v in values)
            else:
                columns.extend(0.0 for _ in values)
        for name, (mean, std) in self.numeric.items():
            value = state.get(name)
            # As in training: a non-number (bools included) carries no evidence, so it sits
            # at the mean, like a missing feature.
            if isinstance(value, bool) or not isinstance(value, int | float) or std == 0:
                columns.append(0.0)
            else:
                columns.append((float(value) - mean) / std)
        columns.append(1.0)
        return columns

    def probabilities(
        self, state: Mapping[str, StateValue] | None, actions: Iterable[str]
    ) -> dict[str, float]:
        """The policy's probability of each of `actions` in `state` (softmax masked to them)."""
        available = _actions(actions)
        x = self.features(_state(state))
        known = {
            a: sum(w * v for w, v in zip(self._rows[a], x, strict=True))
            for a in available
            if a in self._rows
        }
        unseen_score = sum(known.values()) / len(known) if known else 0.0
        scores = [known.get(a, unseen_score) for a in available]
        top = max(scores)  # subtracting the max keeps exp() from overflowing
        exps = [math.exp(s - top) for s in scores]
        total = sum(exps)
        return {a: e / total for a, e in zip(available, exps, strict=True)}

    def choose(
        self,
        name: str,
        state: Mapping[str, StateValue] | None,
        actions: Iterable[str],
        rng: random.Random | None = None,
    ) -> tuple[str, float]:
        """Sample an action among `actions`, record the decision with its probability, and
        return `(action, prob)`.

        `rng` (a seeded `random.Random`) makes the draws reproducible; by default the
        `random` module's generator is used. Raises like `decide` for bad input.
        """
        probs = self.probabilities(state, actions)
        u = (rng or random).random()
        chosen = None
        cumulative = 0.0
        for action, p in probs.items():
            if p <= 0.0:  # an underflowed action can never be drawn, nor logged with prob 0
                continue
            chosen = action
            cumulative += p
            if u < cumulative:
                break
        assert chosen is not None  # the max-score action always has probability > 0
        prob = probs[chosen]
        decide(name, list(probs), chosen, prob=prob, state=state)
        return chosen, prob
