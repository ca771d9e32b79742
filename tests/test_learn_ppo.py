"""PPO on logged decisions (evolution_store/learn/ppo.py), pure maths, no store: a contextual
bandit logged by a behaviour policy that disfavours the best action is solved with the
defaults; a terminal-only reward reaches the decisive first action through GAE; the clipped
surrogate gives no gradient pushing a ratio further out of 1 ± ε and its gradient is the
finite-difference one elsewhere; steps without a logged prob change nothing (or are estimated
when asked); the run is reproducible from its seed; the policy document is what its
docstring says a reader computes."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np
import pytest

from evolution_store import InvalidInput
from evolution_store.learn.ppo import (
    Episode,
    FeatureSpec,
    PPOSettings,
    Step,
    category,
    clipped_surrogate,
    fit_ppo,
    gae,
    policy_document,
    policy_probs,
)

ACTIONS = ("search", "answer", "ask")
BEST = {"easy": "answer", "hard": "search", "vague": "ask"}


def bandit(n: int, seed: int, *, with_prob: bool = True) -> list[Episode]:
    """One-step episodes: three states, three actions, reward 1 (plus noise) for the best
    action of the state, else 0. The behaviour policy gives the best action 0.2 and the two
    others 0.4 each: it favours the wrong ones."""
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(n):
        state = list(BEST)[int(rng.integers(len(BEST)))]
        probs = [0.2 if a == BEST[state] else 0.4 for a in ACTIONS]
        i = int(rng.choice(len(ACTIONS), p=probs))
        reward = float(ACTIONS[i] == BEST[state]) + float(rng.normal(0.0, 0.1))
        step = Step(
            state={"kind": state, "length": float(rng.normal(100.0, 20.0))},
            actions=ACTIONS,
            action=ACTIONS[i],
            prob=probs[i] if with_prob else None,
            reward=reward,
        )
        episodes.append(Episode((step,)))
    return episodes


def learned(result: Any, kind: str) -> dict[str, float]:
    """The learned probabilities in the state of that kind (numeric features at their mean)."""
    document = policy_document(result)
    return reference_probs(document, {"kind": kind}, list(ACTIONS))


def reference_probs(
    document: dict[str, Any], state: dict[str, Any], actions: list[str]
) -> dict[str, float]:
    """The reader `policy_document`'s docstring describes, in plain Python (as Policy.load)."""
    x: list[float] = []
    for name, categories in document["features"]["categorical"].items():
        value = state.get(name)
        x.extend(1.0 if value is not None and category(value) == c else 0.0 for c in categories)
    for name, (mean, std) in document["features"]["numeric"].items():
        value = state.get(name)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        x.append((float(value) - mean) / std if number else 0.0)
    x.append(1.0)
    scores = {}
    for action in actions:
        if action in document["actions"]:
            row = document["weights"][document["actions"].index(action)]
            scores[action] = sum(w * v for w, v in zip(row, x, strict=True))
        else:
            scores[action] = 0.0
    top = max(scores.values())
    exp = {a: math.exp(s - top) for a, s in scores.items()}
    total = sum(exp.values())
    return {a: e / total for a, e in exp.items()}


# -- the contextual bandit of the issue ----------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bandit_learns_the_best_action_in_every_state_with_the_defaults(seed: int) -> None:
    result = fit_ppo(bandit(600, seed), PPOSettings(seed=seed))
    assert len(result.rounds) <= 50
    for kind, best in BEST.items():
        assert learned(result, kind)[best] >= 0.9, (kind, learned(result, kind))
    # the per-state summaries agree: every observed state puts >= 0.9 on its best action
    for state in result.states:
        assert state.probabilities[BEST[state.state["kind"]]] >= 0.9
    assert result.steps_used == 600 and result.steps_without_prob == 0
    # the behaviour really disfavoured the best actions: they are about a fifth of the choices
    chosen_best = sum(
        ep.steps[0].action == BEST[ep.steps[0].state["kind"]] for ep in bandit(600, seed)
    )
    assert chosen_best / 600 < 0.3


def test_diagnostics_are_logged_per_round_and_sane() -> None:
    result = fit_ppo(bandit(300, 0))
    assert [r.round for r in result.rounds] == list(range(1, 51))
    for r in result.rounds:
        assert 1 <= r.epochs <= 4
        assert r.kl >= 0.0 and 0.0 <= r.clip_fraction <= 1.0
        assert 0.0 <= r.entropy <= math.log(3) + 1e-9
        assert 0.0 < r.mean_importance <= 5.0
    assert result.rounds[0].mean_importance == pytest.approx(1.0)  # π_prox = β in round 1
    assert result.rounds[-1].entropy < result.rounds[0].entropy
    assert sum(s.count for s in result.actions.values()) == 300
    assert sum(s.frequency for s in result.actions.values()) == pytest.approx(1.0)
    json.dumps(result.to_dict(), allow_nan=False)  # JSON-able as it is


def test_kl_early_stop_cuts_a_round_short() -> None:
    result = fit_ppo(bandit(300, 0), PPOSettings(target_kl=1e-6, rounds=3))
    assert all(r.epochs == 1 for r in result.rounds)
    unlimited = fit_ppo(bandit(300, 0), PPOSettings(target_kl=None, rounds=3))
    assert all(r.epochs == 4 for r in unlimited.rounds)


# -- credit through GAE ----------------------------------------------------------------------------


def test_gae_matches_a_hand_computation() -> None:
    rewards = np.array([0.0, 0.0, 1.0, 2.0])
    values = np.array([0.5, 0.2, 0.1, 0.3])
    last = np.array([False, False, True, True])  # episodes [0, 1, 2] and [3]
    gamma, lam = 0.9, 0.8
    d2 = 1.0 - 0.1
    d1 = 0.0 + gamma * 0.1 - 0.2
    d0 = 0.0 + gamma * 0.2 - 0.5
    a2 = d2
    a1 = d1 + gamma * lam * a2
    a0 = d0 + gamma * lam * a1
    a3 = 2.0 - 0.3  # its own episode: nothing flows in from the other
    advantages, returns = gae(rewards, values, last, gamma, lam)
    np.testing.assert_allclose(advantages, [a0, a1, a2, a3])
    np.testing.assert_allclose(returns, advantages + values)


def test_terminal_reward_credits_the_decisive_first_action() -> None:
    """Three decisions per episode; only the last step carries a reward, and it is 1 exactly
    when the first decision was "plan" (the behaviour chose it with 0.3). The later decisions
    are noise in states that do not reveal the first choice (a fixed batch's chance correlations
    with them can still be learned, so only the first decision is checked)."""
    rng = np.random.default_rng(7)
    episodes = []
    for _ in range(400):
        first = "plan" if rng.random() < 0.3 else "rush"
        steps = [
            Step({"phase": "start"}, ("plan", "rush"), first, 0.3 if first == "plan" else 0.7, 0.0)
        ]
        for phase in ("middle", "end"):
            filler = "a" if rng.random() < 0.5 else "b"
            steps.append(Step({"phase": phase}, ("a", "b"), filler, 0.5, 0.0))
        reward = 1.0 if first == "plan" else 0.0
        steps[-1] = dataclasses.replace(steps[-1], reward=reward)
        episodes.append(Episode(tuple(steps)))
    result = fit_ppo(episodes)
    document = policy_document(result)
    assert reference_probs(document, {"phase": "start"}, ["plan", "rush"])["plan"] >= 0.9
    assert result.actions["plan"].mean_advantage > result.actions["rush"].mean_advantage


# -- the clip --------------------------------------------------------------------------------------


def _one_row(
    advantage: float, prox: float, weights: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    x = np.array([[1.0, 0.5]])
    mask = np.ones((1, 2), dtype=bool)
    return clipped_surrogate(
        weights,
        x,
        mask,
        np.array([0]),
        np.array([advantage]),
        np.array([prox]),
        np.array([1.0]),
        0.2,
    )


def _ratio_after_step(
    advantage: float, prox: float, weights: np.ndarray, lr: float = 1e-3
) -> tuple[float, float]:
    _, grad, ratio = _one_row(advantage, prox, weights)
    _, _, moved = _one_row(advantage, prox, weights - lr * grad)  # a gradient-descent step
    return float(ratio[0]), float(moved[0])


def test_a_ratio_above_1_plus_eps_gets_no_push_further_up() -> None:
    weights = np.array([[1.0, 0.0], [0.0, 0.0]])  # π(a=0) ≈ 0.73 against π_prox = 0.5: r ≈ 1.46
    loss, grad, ratio = _one_row(+1.0, 0.5, weights)
    assert ratio[0] > 1.2
    assert np.all(grad == 0.0)  # A > 0 would push it up: clipped, no gradient
    before, after = _ratio_after_step(-1.0, 0.5, weights)
    assert after < before  # A < 0: the gradient pulls it back towards 1


def test_a_ratio_below_1_minus_eps_gets_no_push_further_down() -> None:
    weights = np.array([[-1.0, 0.0], [0.0, 0.0]])  # π(a=0) ≈ 0.27 against 0.5: r ≈ 0.54
    _, grad, ratio = _one_row(-1.0, 0.5, weights)
    assert ratio[0] < 0.8
    assert np.all(grad == 0.0)
    before, after = _ratio_after_step(+1.0, 0.5, weights)
    assert after > before


def test_the_surrogate_gradient_is_the_finite_difference_one_inside_the_clip() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 3))
    mask = np.array([[True, True, True]] * 3 + [[True, False, True]] * 3)
    chosen = np.array([0, 1, 2, 0, 2, 2])
    weights = rng.normal(scale=0.1, size=(3, 3))
    prox = policy_probs(weights, x, mask)[np.arange(6), chosen] * 1.05  # ratios ≈ 0.95: inside
    advantages = rng.normal(size=6)
    importance = rng.uniform(0.5, 2.0, size=6)
    _, grad, _ = clipped_surrogate(weights, x, mask, chosen, advantages, prox, importance, 0.2)
    numeric = np.zeros_like(weights)
    for idx in np.ndindex(weights.shape):
        delta = np.zeros_like(weights)
        delta[idx] = 1e-6
        up, _, _ = clipped_surrogate(
            weights + delta, x, mask, chosen, advantages, prox, importance, 0.2
        )
        down, _, _ = clipped_surrogate(
            weights - delta, x, mask, chosen, advantages, prox, importance, 0.2
        )
        numeric[idx] = (up - down) / 2e-6
    np.testing.assert_allclose(grad, numeric, atol=1e-7)


def test_masked_actions_get_zero_probability() -> None:
    weights = np.array([[5.0], [0.0], [1.0]])
    probs = policy_probs(weights, np.ones((1, 1)), np.array([[False, True, True]]))
    assert probs[0, 0] == 0.0
    assert probs[0, 1:].sum() == pytest.approx(1.0)


# -- steps without a logged prob -------------------------------------------------------------------


def categorical_bandit(n: int, seed: int, *, with_prob: bool = True) -> list[Episode]:
    """The bandit with its numeric feature dropped, so extra steps cannot shift a mean."""
    return [
        Episode((dataclasses.replace(e.steps[0], state={"kind": e.steps[0].state["kind"]}),))
        for e in bandit(n, seed, with_prob=with_prob)
    ]


def test_steps_without_prob_never_enter_the_ratio() -> None:
    logged = categorical_bandit(200, 0)
    # misleading extra steps: the worst action with a huge reward, without a prob
    extra = [
        Episode(
            (Step({"kind": kind}, ACTIONS, next(a for a in ACTIONS if a != best), None, 100.0),)
        )
        for kind, best in BEST.items()
        for _ in range(30)
    ]
    settings = PPOSettings(rounds=5)
    alone = fit_ppo(logged, settings)
    mixed = fit_ppo(logged + extra, settings)
    assert mixed.steps_used == 200 and mixed.steps_without_prob == 90 and mixed.steps_estimated == 0
    assert mixed.parameters["weights"] == alone.parameters["weights"]
    assert [dataclasses.astuple(r) for r in mixed.rounds] == [
        dataclasses.astuple(r) for r in alone.rounds
    ]


def test_no_logged_prob_at_all_is_an_error_unless_estimation_is_asked() -> None:
    episodes = categorical_bandit(300, 0, with_prob=False)
    with pytest.raises(InvalidInput, match="estimate"):
        fit_ppo(episodes)
    result = fit_ppo(episodes, PPOSettings(behaviour="estimate"))
    assert result.behaviour == "estimate"
    assert (
        result.steps_estimated == 300
        and result.steps_without_prob == 300
        and result.steps_used == 300
    )
    # β from frequencies is close to the true one, so the bandit is still solved
    for kind, best in BEST.items():
        assert learned(result, kind)[best] >= 0.9


# -- reproducibility and the document --------------------------------------------------------


def test_same_seed_same_run_other_seed_other_shuffles() -> None:
    episodes = bandit(200, 4)
    one = fit_ppo(episodes, PPOSettings(seed=11, rounds=5))
    two = fit_ppo(episodes, PPOSettings(seed=11, rounds=5))
    three = fit_ppo(episodes, PPOSettings(seed=12, rounds=5))
    assert json.dumps(one.to_dict()) == json.dumps(two.to_dict())
    assert one.parameters["weights"] != three.parameters["weights"]


def test_policy_document_is_json_and_what_its_reader_computes() -> None:
    episodes = bandit(200, 5)
    episodes.append(
        Episode(
            (Step({"kind": "easy", "urgent": True}, ("answer", "escalate"), "escalate", 0.5, 0.0),)
        )
    )
    result = fit_ppo(episodes, PPOSettings(rounds=5))
    document = json.loads(json.dumps(policy_document(result)))
    assert document["version"] == 1
    assert document["actions"] == sorted({"escalate", *ACTIONS})
    assert document["features"]["categorical"] == {
        "kind": ["easy", "hard", "vague"],
        "urgent": ["true"],
    }
    assert list(document["features"]["numeric"]) == ["length"]
    assert len(document["weights"]) == 4 and all(
        len(row) == 4 + 1 + 1 for row in document["weights"]
    )
    # the reader of the docstring gives the probabilities the run reports for each state seen
    for seen in result.states:
        expected = reference_probs(document, seen.state, list(seen.probabilities))
        for action, p in seen.probabilities.items():
            assert expected[action] == pytest.approx(p, abs=1e-12)


def test_feature_encoding_rules() -> None:
    spec = FeatureSpec.from_states(
        [{"k": "a", "n": 1, "m": 2}, {"k": "b", "n": 3, "m": "x"}, {"flag": False}]
    )
    assert spec.categorical == {"flag": ["false"], "k": ["a", "b"], "m": ["2", "x"]}
    assert spec.numeric == {"n": (2.0, 1.0)}
    np.testing.assert_array_equal(
        spec.encode({"k": "b", "n": 4, "m": 2, "flag": False}), [1, 0, 1, 1, 0, 2, 1]
    )
    # unknown category, missing and non-numeric values: zeros (the mean for numbers)
    np.testing.assert_array_equal(spec.encode({"k": "zzz", "n": "many"}), [0, 0, 0, 0, 0, 0, 1])


@pytest.mark.parametrize(
    ("episodes", "field"),
    [
        ([], "episodes"),
        ([Episode((Step({}, ("a",), "b", 0.5, 0.0),))], "action"),
        ([Episode((Step({}, ("a",), "a", 0.0, 0.0),))], "prob"),
        ([Episode((Step({}, ("a",), "a", 1.5, 0.0),))], "prob"),
        ([Episode((Step({}, ("a",), "a", 1.0, float("nan")),))], "reward"),
    ],
)
def test_bad_input_is_refused(episodes: list[Episode], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        fit_ppo(episodes)
    assert info.value.field == field


@pytest.mark.parametrize(
    "bad",
    [{"clip": 0.0}, {"epochs": 0}, {"lr": -1.0}, {"max_importance": 0.5}, {"behaviour": "guess"}],
)
def test_bad_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        PPOSettings(**bad)


def test_constant_rewards_learn_nothing_and_stay_valid_json() -> None:
    episodes = [Episode((Step({"k": "a"}, ("x", "y"), "x", 0.5, 1.0),)) for _ in range(10)]
    result = fit_ppo(episodes, PPOSettings(rounds=3, entropy_coef=0.0))
    assert all(r.explained_variance is None for r in result.rounds)  # returns never vary
    assert result.states[0].probabilities == pytest.approx({"x": 0.5, "y": 0.5})
    json.dumps(result.to_dict(), allow_nan=False)
