"""PPO + GAE on logged decisions, in NumPy (issue 21, DESIGN §7 "Decision").

One run, top to bottom (`fit_ppo`; pure — the store and files are the caller's business):

1. **Data**: episodes of steps (state, available actions, chosen action, the behaviour
   policy's probability `prob` of it, reward). A step without `prob` never enters the ratio:
   it is counted in `steps_without_prob` and left out of every loss, though its reward still
   flows into the returns of the steps before it. With `behaviour="estimate"` its β is instead
   the logged frequency of its action among the steps with the same state and actions, and the
   result says how many steps were estimated.
2. **Features** (`FeatureSpec`): one-hot for categorical state features, standardised numeric
   ones, a bias last. The policy is a softmax over a linear score per action, masked to the
   step's available actions; the value is linear in the same features.
3. **Rounds** (`rounds` of them), each: values from the current value weights, then GAE(γ, λ)
   advantages and returns; π_prox = the policy at the round's start (β itself in round 1); then
   `epochs` passes over shuffled minibatches of Adam on the decoupled clipped objective of
   Hilton et al. ("Batch size-invariance for policy optimization"):
       weight · min(r·A, clip(r, 1-ε, 1+ε)·A),
       r = π_θ/π_prox,  weight = min(π_prox/β, max_importance)
   plus the value loss and an entropy bonus. Clipping against π_prox, not β, is what lets the
   policy move more than 1 ± ε away from the logging policy over several rounds; the truncated
   weight corrects for the data having been drawn by β (truncation at `max_importance` bounds
   the variance, as V-trace does). A round stops early when the exact mean KL between the
   policy at its start and now exceeds `target_kl`.
4. **Diagnostics** per round, CleanRL's: surrogate loss, value loss, KL, clip fraction,
   entropy, explained variance (of the values at the round's start), plus the mean and the
   truncated share of the importance weights.

Deterministic given `seed` (it only shuffles the minibatches).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..errors import InvalidInput

DOCUMENT_VERSION = 1

logger = logging.getLogger(__name__)


# -- settings and records --------------------------------------------------------------------------


@dataclass(frozen=True)
class PPOSettings:
    """Every knob of a PPO run, with its default (`fit_ppo`)."""

    gamma: float = 0.99  # discount of later rewards
    lam: float = 0.95  # GAE λ: 0 = one-step TD advantages, 1 = Monte Carlo returns minus value
    clip: float = 0.2  # ε of the clipped ratio π_θ/π_prox
    epochs: int = 4  # passes over the data per round
    minibatches: int = 4  # minibatches per epoch (fewer when there are fewer steps)
    rounds: int = 50  # update rounds (π_prox refreshed at the start of each)
    lr: float = 0.1  # Adam step size, for the policy and the value weights
    entropy_coef: float = 0.01  # weight of the entropy bonus
    value_coef: float = 0.5  # weight of the value loss
    target_kl: float | None = (
        0.05  # stop a round's epochs once KL(start of round || now) exceeds it
    )
    max_importance: float = 5.0  # truncation of the importance weight π_prox/β
    normalize_advantages: bool = (
        True  # standardise the advantages of each round (CleanRL's default)
    )
    behaviour: Literal["logged", "estimate"] = (
        "logged"  # β for steps without prob: drop or estimate
    )
    seed: int = 0  # minibatch shuffling

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma <= 1.0:
            raise InvalidInput("gamma must be between 0 and 1", field="gamma")
        if not 0.0 <= self.lam <= 1.0:
            raise InvalidInput("lam must be between 0 and 1", field="lam")
        if not 0.0 < self.clip < 1.0:
            raise InvalidInput("clip must be between 0 and 1", field="clip")
        for name in ("epochs", "minibatches", "rounds"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"{name} must be at least 1", field=name)
        if self.lr <= 0.0:
            raise InvalidInput("lr must be positive", field="lr")
        if self.target_kl is not None and self.target_kl <= 0.0:
            raise InvalidInput("target_kl must be positive (or None)", field="target_kl")
        if self.max_importance < 1.0:
            raise InvalidInput("max_importance must be at least 1", field="max_importance")
        if self.behaviour not in ("logged", "estimate"):
            raise InvalidInput('behaviour must be "logged" or "estimate"', field="behaviour")


@dataclass(frozen=True)
class Step:
    """One logged decision: what was known, what was available, what was chosen, with what
    probability (None when not logged), and the reward credited to it."""

    state: dict[str, Any]
    actions: tuple[str, ...]
    action: str
    prob: float | None
    reward: float


@dataclass(frozen=True)
class Episode:
    """The decisions of one execution, in sequence order; terminal rewards on the last step."""

    steps: tuple[Step, ...]


@dataclass(frozen=True)
class RoundDiagnostics:
    """What tells a person round `round` was healthy (CleanRL's logged figures)."""

    round: int
    epochs: int  # epochs run (fewer than settings.epochs when the KL stop fired)
    surrogate_loss: float  # -mean(weight · min(r·A, clip(r)·A)) at the round's end
    value_loss: float  # mean 0.5 (V - return)² at the round's end
    kl: float  # mean KL(policy at round start || policy at round end)
    clip_fraction: float  # share of steps with |π_θ/π_prox - 1| > ε at the round's end
    entropy: float  # mean policy entropy over the steps, at the round's end
    explained_variance: float | None  # 1 - Var(return - V)/Var(return), V at the round's start
    mean_importance: float  # mean of the truncated weights min(π_prox/β, max_importance)
    truncated_fraction: float  # share of steps whose π_prox/β was truncated


@dataclass(frozen=True)
class ActionStats:
    """How often an action was chosen in the used steps and its mean (raw) advantage."""

    count: int
    frequency: float
    mean_advantage: float | None  # None when it was never chosen


@dataclass(frozen=True)
class StateProbabilities:
    """The learned policy in one observed (state, available actions)."""

    state: dict[str, Any]
    probabilities: dict[str, float]
    steps: int  # used steps seen in this state


@dataclass(frozen=True)
class PPOResult:
    """A PPO run: the policy document, the per-round diagnostics, and the summaries."""

    parameters: dict[str, Any]  # what `Policy.load` reads: see `policy_document`
    rounds: tuple[RoundDiagnostics, ...]
    actions: dict[str, ActionStats]
    states: tuple[StateProbabilities, ...]
    entropy: float  # mean policy entropy over the used steps, final policy
    mean_advantage: float  # mean raw advantage over the used steps, final values
    steps_used: int
    steps_without_prob: int  # steps with no logged prob (dropped, or estimated)
    behaviour: Literal["logged", "estimate"]
    steps_estimated: int  # steps whose β was estimated from frequencies (behaviour="estimate")
    settings: PPOSettings = field(default_factory=PPOSettings)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, for `learned_policy.json`."""
        return {
            "policy": self.parameters,
            "rounds": [vars(r) for r in self.rounds],
            "actions": {a: vars(s) for a, s in self.actions.items()},
            "states": [vars(s) for s in self.states],
            "entropy": self.entropy,
            "mean_advantage": self.mean_advantage,
            "steps_used": self.steps_used,
            "steps_without_prob": self.steps_without_prob,
            "behaviour": self.behaviour,
            "steps_estimated": self.steps_estimated,
            "settings": vars(self.settings),
        }


# -- features --------------------------------------------------------------------------------------


def category(value: Any) -> str:
    """The category string of a categorical state value (bools as JSON spells them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class FeatureSpec:
    """The encoding of a state: for each categorical feature (sorted by name) one column per
    value (in listed order), then each numeric feature (sorted by name) standardised, then 1."""

    categorical: dict[str, list[str]]
    numeric: dict[str, tuple[float, float]]  # name -> (mean, std)

    @classmethod
    def from_states(cls, states: Sequence[dict[str, Any]]) -> FeatureSpec:
        # A feature is numeric only when every value seen is a number; one string among them
        # makes all its values categories, so one column never mixes scales with categories.
        values: dict[str, list[Any]] = defaultdict(list)
        for state in states:
            for name, value in state.items():
                if value is not None:
                    values[name].append(value)
        categorical: dict[str, list[str]] = {}
        numeric: dict[str, tuple[float, float]] = {}
        for name in sorted(values):
            seen = values[name]
            if all(_is_number(v) for v in seen):
                column = np.asarray(seen, dtype=float)
                std = float(column.std())
                numeric[name] = (float(column.mean()), std if std > 0.0 else 1.0)
            else:
                categorical[name] = sorted({category(v) for v in seen})
        return cls(categorical, numeric)

    @property
    def size(self) -> int:
        """Columns, the bias included."""
        return sum(len(v) for v in self.categorical.values()) + len(self.numeric) + 1

    def encode(self, state: dict[str, Any]) -> np.ndarray:
        """One row. Unknown categories, missing features and non-numbers in a numeric feature
        encode as zeros (the mean of a numeric feature): they carry no evidence either way."""
        row = np.zeros(self.size)
        column = 0
        for name, categories in self.categorical.items():
            value = state.get(name)
            if value is not None and category(value) in categories:
                row[column + categories.index(category(value))] = 1.0
            column += len(categories)
        for name, (mean, std) in self.numeric.items():
            value = state.get(name)
            if _is_number(value):
                row[column] = (float(value) - mean) / std
            column += 1
        row[column] = 1.0
        return row


# -- the policy ------------------------------------------------------------------------------------


def policy_probs(weights: np.ndarray, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Softmax of the linear scores x @ weights.T over the available actions (mask), per row;
    unavailable actions get exactly 0."""
    scores = x @ weights.T
    scores = np.where(mask, scores, -np.inf)
    scores -= scores.max(axis=1, keepdims=True)
    exp = np.where(mask, np.exp(scores), 0.0)
    return exp / exp.sum(axis=1, keepdims=True)


def _entropy(probs: np.ndarray) -> np.ndarray:
    logp = np.log(np.where(probs > 0.0, probs, 1.0))
    return -(probs * logp).sum(axis=1)


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) per row; both zero on the same unavailable actions."""
    safe_p = np.where(p > 0.0, p, 1.0)
    safe_q = np.where(q > 0.0, q, 1.0)
    return (p * (np.log(safe_p) - np.log(safe_q))).sum(axis=1)


def clipped_surrogate(
    weights: np.ndarray,
    x: np.ndarray,
    mask: np.ndarray,
    chosen: np.ndarray,
    advantages: np.ndarray,
    prox: np.ndarray,
    importance: np.ndarray,
    clip: float,
) -> tuple[float, np.ndarray, np.ndarray]:
    """The decoupled clipped objective, mean over rows, as a loss to minimise:
    -mean(importance · min(r·A, clip(r, 1-ε, 1+ε)·A)), r = π_θ(a)/π_prox(a).

    Returns (loss, gradient with respect to `weights`, the ratios). Where the clipped term is
    the smaller one (A > 0 and r > 1+ε, or A < 0 and r < 1-ε) it is constant in θ: that row
    gives no gradient, so nothing pushes its ratio further out of 1 ± ε."""
    rows = np.arange(len(chosen))
    probs = policy_probs(weights, x, mask)
    ratio = probs[rows, chosen] / prox
    unclipped = ratio * advantages
    clipped = np.clip(ratio, 1.0 - clip, 1.0 + clip) * advantages
    loss = -float(np.mean(importance * np.minimum(unclipped, clipped)))
    active = unclipped <= clipped  # the unclipped term is the min: it carries the gradient
    # d(r)/d(scores_j) = r · (1[j = a] - π_j); d(scores_j)/d(W_j) = x
    coef = np.where(active, importance * advantages * ratio, 0.0)
    dscores = -(coef[:, None] * (np.eye(weights.shape[0])[chosen] - probs)) / len(chosen)
    return loss, dscores.T @ x, ratio


@dataclass
class _Adam:
    """Adam (Kingma & Ba) over one array, as CleanRL's torch.optim.Adam(eps=1e-5)."""

    lr: float
    m: np.ndarray
    v: np.ndarray
    t: int = 0

    def step(self, param: np.ndarray, grad: np.ndarray) -> np.ndarray:
        self.t += 1
        self.m = 0.9 * self.m + 0.1 * grad
        self.v = 0.999 * self.v + 0.001 * grad * grad
        m_hat = self.m / (1.0 - 0.9**self.t)
        v_hat = self.v / (1.0 - 0.999**self.t)
        return param - self.lr * m_hat / (np.sqrt(v_hat) + 1e-5)


# -- GAE -------------------------------------------------------------------------------------------


def gae(
    rewards: np.ndarray, values: np.ndarray, last: np.ndarray, gamma: float, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """GAE(γ, λ) advantages and returns over steps laid out episode after episode; `last`
    marks each episode's final step (its next value is 0: an execution ends there)."""
    advantages = np.zeros_like(rewards)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        next_value = 0.0 if last[t] else values[t + 1]
        if last[t]:
            running = 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
    return advantages, advantages + values


def _explained_variance(values: np.ndarray, returns: np.ndarray) -> float | None:
    # None, not NaN, when the returns do not vary: the result must stay valid JSON
    var = float(np.var(returns))
    return None if var == 0.0 else 1.0 - float(np.var(returns - values)) / var


# -- the run ---------------------------------------------------------------------------------------


def _state_key(step: Step) -> tuple[Any, ...]:
    return (
        tuple(sorted((k, category(v)) for k, v in step.state.items())),
        tuple(sorted(step.actions)),
    )


def _check(episodes: Sequence[Episode]) -> None:
    if not any(episode.steps for episode in episodes):
        raise InvalidInput("no steps to learn from", field="episodes")
    for episode in episodes:
        for step in episode.steps:
            if step.action not in step.actions:
                raise InvalidInput(
                    f"action {step.action!r} is not among {step.actions!r}", field="action"
                )
            if step.prob is not None and not 0.0 < step.prob <= 1.0:
                raise InvalidInput("prob must be in (0, 1]", field="prob")
            if not math.isfinite(step.reward):
                raise InvalidInput("reward must be finite", field="reward")


def fit_ppo(episodes: Sequence[Episode], settings: PPOSettings | None = None) -> PPOResult:
    """Learn a masked linear softmax policy from logged decisions (module docstring)."""
    settings = settings or PPOSettings()
    _check(episodes)
    steps = [step for episode in episodes for step in episode.steps]
    last = np.array(
        [i == len(e.steps) - 1 for e in episodes for i in range(len(e.steps))], dtype=bool
    )

    # -- data: features, masks, β ------------------------------------------------------------------
    spec = FeatureSpec.from_states([s.state for s in steps])
    action_names = sorted({a for s in steps for a in s.actions})
    index = {a: i for i, a in enumerate(action_names)}
    x = np.stack([spec.encode(s.state) for s in steps])
    mask = np.zeros((len(steps), len(action_names)), dtype=bool)
    for row, step in enumerate(steps):
        mask[row, [index[a] for a in step.actions]] = True
    chosen = np.array([index[s.action] for s in steps])
    rewards = np.array([float(s.reward) for s in steps])

    without_prob = sum(s.prob is None for s in steps)
    beta = np.array([s.prob if s.prob is not None else np.nan for s in steps])
    estimated = 0
    if settings.behaviour == "estimate" and without_prob:
        # β(a | state) = share of a among all logged choices in the same state and actions:
        # the maximum-likelihood estimate of a behaviour policy that depends on nothing else.
        counts: dict[tuple[Any, ...], Counter[str]] = defaultdict(Counter)
        for step in steps:
            counts[_state_key(step)][step.action] += 1
        for row, step in enumerate(steps):
            if step.prob is None:
                seen = counts[_state_key(step)]
                beta[row] = seen[step.action] / sum(seen.values())
                estimated += 1
    used = ~np.isnan(beta)
    if not used.any():
        raise InvalidInput(
            'no step has a logged prob (pass behaviour="estimate" to estimate it)', field="prob"
        )
    u = np.flatnonzero(used)  # only these rows enter the ratio, the losses and the statistics

    # -- parameters --------------------------------------------------------------------------------
    rng = np.random.default_rng(settings.seed)
    weights = np.zeros((len(action_names), spec.size))  # uniform policy to start
    value_w = np.zeros(spec.size)
    adam_pi = _Adam(settings.lr, np.zeros_like(weights), np.zeros_like(weights))
    adam_v = _Adam(settings.lr, np.zeros_like(value_w), np.zeros_like(value_w))
    n_batches = min(settings.minibatches, len(u))
    diagnostics: list[RoundDiagnostics] = []

    for round_no in range(1, settings.rounds + 1):
        # -- advantages and returns with the current value -----------------------------------------
        values = x @ value_w
        advantages, returns = gae(rewards, values, last, settings.gamma, settings.lam)
        adv = advantages[u]
        if settings.normalize_advantages and len(u) > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        explained = _explained_variance(values[u], returns[u])

        # -- π_prox and the importance weights ----------------------------------------------------
        start = policy_probs(weights, x[u], mask[u])
        prox = beta[u] if round_no == 1 else start[np.arange(len(u)), chosen[u]]
        raw_importance = prox / beta[u]
        importance = np.minimum(raw_importance, settings.max_importance)

        # -- epochs of minibatch updates -----------------------------------------------------------
        epochs_run = 0
        for _ in range(settings.epochs):
            epochs_run += 1
            for batch in np.array_split(rng.permutation(len(u)), n_batches):
                rows = u[batch]
                xb, mb, ab = x[rows], mask[rows], chosen[rows]
                _, grad_pi, _ = clipped_surrogate(
                    weights, xb, mb, ab, adv[batch], prox[batch], importance[batch], settings.clip
                )
                # entropy bonus: dH/dscore_j = -π_j (log π_j + H)
                probs = policy_probs(weights, xb, mb)
                logp = np.log(np.where(probs > 0.0, probs, 1.0))
                dh = -probs * (logp + _entropy(probs)[:, None])
                grad_pi -= settings.entropy_coef * (dh.T @ xb) / len(rows)
                # value loss 0.5 (V - R)², weighted by value_coef
                error = xb @ value_w - returns[rows]
                grad_v = settings.value_coef * (xb.T @ error) / len(rows)
                weights = adam_pi.step(weights, grad_pi)
                value_w = adam_v.step(value_w, grad_v)
            now = policy_probs(weights, x[u], mask[u])
            if (
                settings.target_kl is not None
                and float(_kl(start, now).mean()) > settings.target_kl
            ):
                break  # the policy moved far enough from where this round started

        # -- diagnostics ---------------------------------------------------------------------------
        loss, _, ratio = clipped_surrogate(
            weights, x[u], mask[u], chosen[u], adv, prox, importance, settings.clip
        )
        now = policy_probs(weights, x[u], mask[u])
        diagnostics.append(
            RoundDiagnostics(
                round=round_no,
                epochs=epochs_run,
                surrogate_loss=loss,
                value_loss=float(np.mean(0.5 * (x[u] @ value_w - returns[u]) ** 2)),
                kl=float(_kl(start, now).mean()),
                clip_fraction=float(np.mean(np.abs(ratio - 1.0) > settings.clip)),
                entropy=float(_entropy(now).mean()),
                explained_variance=explained,
                mean_importance=float(importance.mean()),
                truncated_fraction=float(np.mean(raw_importance > settings.max_importance)),
            )
        )
        done = diagnostics[-1]
        logger.info(
            "ppo round %d: epochs=%d loss=%.4f kl=%.5f clip_fraction=%.3f entropy=%.4f "
            "explained_variance=%s",
            done.round,
            done.epochs,
            done.surrogate_loss,
            done.kl,
            done.clip_fraction,
            done.entropy,
            done.explained_variance,
        )

    # -- summaries with the final parameters -------------------------------------------------------
    advantages, _ = gae(rewards, x @ value_w, last, settings.gamma, settings.lam)
    final = policy_probs(weights, x, mask)
    action_stats: dict[str, ActionStats] = {}
    for name, i in index.items():
        picked = u[chosen[u] == i]
        action_stats[name] = ActionStats(
            count=len(picked),
            frequency=len(picked) / len(u),
            mean_advantage=float(advantages[picked].mean()) if len(picked) else None,
        )
    by_state: dict[tuple[Any, ...], list[int]] = defaultdict(list)
    for row in u:
        by_state[_state_key(steps[row])].append(int(row))
    states = tuple(
        StateProbabilities(
            state=dict(steps[rows[0]].state),
            probabilities={
                a: float(final[rows[0], index[a]]) for a in sorted(steps[rows[0]].actions)
            },
            steps=len(rows),
        )
        for _, rows in sorted(by_state.items(), key=lambda item: repr(item[0]))
    )
    parameters = {
        "version": DOCUMENT_VERSION,
        "features": {
            "categorical": {name: list(values) for name, values in spec.categorical.items()},
            "numeric": {name: [mean, std] for name, (mean, std) in spec.numeric.items()},
        },
        "actions": action_names,
        "weights": weights.tolist(),
        "value_weights": value_w.tolist(),
    }
    return PPOResult(
        parameters=parameters,
        rounds=tuple(diagnostics),
        actions=action_stats,
        states=states,
        entropy=float(_entropy(final[u]).mean()),
        mean_advantage=float(advantages[u].mean()),
        steps_used=len(u),
        steps_without_prob=without_prob,
        behaviour=settings.behaviour,
        steps_estimated=estimated,
        settings=settings,
    )


def policy_document(result: PPOResult) -> dict[str, Any]:
    """The document `instrumentation.Policy.load` reads (a copy, JSON-able). Schema, version 1:

        {"version": 1,
         "features": {"categorical": {name: [category, ...]},   # names in this (sorted) order
                      "numeric": {name: [mean, std]}},          # names in this (sorted) order
         "actions": [action, ...],
         "weights": [[w, ...], ...],        # len(actions) rows x (n_features + 1), bias last
         "value_weights": [w, ...]}         # the value's weights, same columns (for reference)

    Feature row x of a state: for each categorical name in order, one column per listed
    category, 1.0 where `category(state[name])` equals it (bools as "true"/"false", anything
    else `str()`); then for each numeric name, (state[name] - mean) / std; then 1.0. A missing
    feature, an unlisted category, or a non-number (or bool) for a numeric feature gives 0.0 in
    its columns. Score of action i = weights[i] · x; probability = softmax of the scores over the
    available actions only. An available action not in "actions" (never seen in training) scores
    the mean of the known available actions' scores (0.0 when none is known): a neutral guess,
    so it keeps being tried and logged, and the next round learns it.
    """
    document = result.parameters
    return {
        "version": document["version"],
        "features": {
            "categorical": {k: list(v) for k, v in document["features"]["categorical"].items()},
            "numeric": {k: list(v) for k, v in document["features"]["numeric"].items()},
        },
        "actions": list(document["actions"]),
        "weights": [list(row) for row in document["weights"]],
        "value_weights": list(document["value_weights"]),
    }


# -- from the store ----------------------------------------------------------------------------


def episodes_from_steps(found: Sequence[dict[str, Any]]) -> list[Episode]:
    """`Episode`s from what `EvolutionStore.decision_steps` returns (rewards already credited)."""
    return [
        Episode(
            steps=tuple(
                Step(
                    state=dict(step["state"]),
                    actions=tuple(step["actions"]),
                    action=step["action"],
                    prob=step["prob"],
                    reward=float(step["reward"]),
                )
                for step in episode["steps"]
            )
        )
        for episode in found
        if episode["steps"]
    ]


async def train_ppo(
    store: Any,
    *,
    agent: str,
    decision: str,
    since: int | None = None,
    gamma: float = 0.99,
    lam: float = 0.95,
    clip: float = 0.2,
    epochs: int = 4,
    lr: float | None = None,
    entropy_coef: float = 0.01,
    seed: int = 0,
    behaviour: Literal["logged", "estimate"] = "logged",
) -> PPOResult:
    """PPO on `agent`'s logged decisions named `decision` (since `since`, ns) in `store` (an
    `EvolutionStore`): one episode per execution, `fit_ppo` with these settings (`lr=None`:
    `PPOSettings`' default). `InvalidInput` when there is no decision to learn from."""
    # Settings first: a bad value must not cost a read of every decision.
    tuning: dict[str, Any] = {} if lr is None else {"lr": lr}
    settings = PPOSettings(
        gamma=gamma,
        lam=lam,
        clip=clip,
        epochs=epochs,
        entropy_coef=entropy_coef,
        seed=seed,
        behaviour=behaviour,
        **tuning,
    )
    found = await store.decision_steps(agent=agent, decision=decision, since=since)
    episodes = episodes_from_steps(found)
    if not episodes:
        raise InvalidInput(
            f"no decision named {decision!r} logged by agent {agent!r}", field="decision"
        )
    # The fit is seconds of NumPy: in a worker thread, the caller's event loop (a server's,
    # a progress display's) keeps running meanwhile.
    return await asyncio.to_thread(fit_ppo, episodes, settings)
