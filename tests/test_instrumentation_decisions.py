"""`decide()` and `Policy`: decision spans land in a real embedded store (SQLite and Postgres)
with DESIGN §7's attributes, under the current task's execution; `Policy.choose` samples from
the softmax a hand computation gives, masked to the available actions, and logs its prob."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import pytest

import instrumentation
from instrumentation import Policy, decide, task, track_evolution

pytest.importorskip("evolution_store")
from evolution_store.queries import SpanQuery  # noqa: E402

OTEL_ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

# Two categorical columns (intent=refund, intent=order), one numeric (turn, mean 2, std 2), bias.
DOCUMENT = {
    "version": 1,
    "features": {
        "categorical": {"intent": ["refund", "order"]},
        "numeric": {"turn": [2.0, 2.0]},
    },
    "actions": ["search", "answer", "escalate"],
    "weights": [
        [1.0, -1.0, 0.5, 0.1],
        [-0.5, 2.0, 0.0, 0.2],
        [0.0, 0.0, -1.0, -0.3],
    ],
}


@pytest.fixture
def session(store_url, monkeypatch):
    for name in OTEL_ENV:
        monkeypatch.delenv(name, raising=False)
    session = instrumentation.configure(store_url=store_url, service_name="toy", set_global=False)
    yield session
    session.shutdown()


def _decisions(session, **filters):
    assert session.force_flush()
    query = SpanQuery(name="evolution.decision", **filters)
    return session.call_store(lambda store: store.list_spans(query)).items


def _softmax(scores):
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    return [e / sum(exps) for e in exps]


def test_decision_span_lands_in_the_execution_with_its_attributes(session):
    with task("support") as t:
        decide(
            "next_step",
            ["search", "answer"],
            "answer",
            prob=0.25,
            state={"intent": "refund", "turn": 3, "score": 0.5, "vip": True},
        )
        decide("next_step", ("search", "answer"), "search")  # no prob: logged all the same
    spans = sorted(_decisions(session, execution_id=t.execution_id), key=lambda s: s["start_time"])
    assert len(spans) == 2
    first, second = (s["attributes"] for s in spans)
    assert all(s["task_id"] == t.task_id for s in spans)
    assert first["evolution.decision.name"] == "next_step"
    assert first["evolution.decision.action"] == "answer"
    assert first["evolution.decision.actions"] == ["search", "answer"]
    assert first["evolution.decision.prob"] == 0.25
    assert first["evolution.decision.state.intent"] == "refund"
    assert first["evolution.decision.state.turn"] == 3
    assert first["evolution.decision.state.score"] == 0.5
    assert first["evolution.decision.state.vip"] is True
    assert second["evolution.decision.action"] == "search"
    assert "evolution.decision.prob" not in second
    assert not any(key.startswith("evolution.decision.state.") for key in second)


def test_decision_inside_a_traced_agent_is_its_child_and_filed_under_it(session):
    @track_evolution
    def router(intent: str) -> str:
        decide("route", ["a", "b"], "b", prob=0.5, state={"intent": intent})
        return "b"

    with task("routing") as t:
        router("refund")
    (span,) = _decisions(session, execution_id=t.execution_id)
    assert span["agent"] == "router"
    assert session.force_flush()
    parents = session.call_store(
        lambda store: store.list_spans(SpanQuery(execution_id=t.execution_id, name="router"))
    ).items
    assert span["parent_span_id"] == parents[0]["span_id"]


def test_choose_logs_the_probability_it_returns(session):
    policy = Policy.load(DOCUMENT)
    with task("support") as t:
        action, prob = policy.choose(
            "next_step", {"intent": "order", "turn": 4}, ["search", "answer"], rng=random.Random(3)
        )
    (span,) = _decisions(session, execution_id=t.execution_id)
    attributes = span["attributes"]
    assert attributes["evolution.decision.action"] == action
    assert attributes["evolution.decision.prob"] == pytest.approx(prob)
    assert attributes["evolution.decision.actions"] == ["search", "answer"]
    assert attributes["evolution.decision.state.intent"] == "order"
    expected = policy.probabilities({"intent": "order", "turn": 4}, ["search", "answer"])
    assert prob == pytest.approx(expected[action])


def test_probabilities_match_a_hand_computation():
    policy = Policy.load(DOCUMENT)
    # intent=order -> [0, 1]; turn=5 -> (5 - 2) / 2 = 1.5; bias 1
    x = [0.0, 1.0, 1.5, 1.0]
    scores = [sum(w * v for w, v in zip(row, x, strict=True)) for row in DOCUMENT["weights"]]
    assert scores == pytest.approx([-1.0 + 0.75 + 0.1, 2.0 + 0.2, -1.5 - 0.3])
    expected = dict(zip(DOCUMENT["actions"], _softmax(scores), strict=True))
    got = policy.probabilities({"intent": "order", "turn": 5}, DOCUMENT["actions"])
    assert got == pytest.approx(expected)
    assert sum(got.values()) == pytest.approx(1.0)


def test_masking_renormalises_over_the_available_actions_only():
    policy = Policy.load(DOCUMENT)
    state = {"intent": "refund", "turn": 0}
    full = policy.probabilities(state, DOCUMENT["actions"])
    masked = policy.probabilities(state, ["escalate", "search"])
    assert list(masked) == ["escalate", "search"]
    norm = full["escalate"] + full["search"]
    assert masked == pytest.approx(
        {"escalate": full["escalate"] / norm, "search": full["search"] / norm}
    )
    rng = random.Random(0)
    drawn = {
        policy.choose("next_step", state, ["escalate", "search"], rng=rng)[0] for _ in range(50)
    }
    assert drawn == {"escalate", "search"}


def test_unseen_action_scores_the_mean_of_the_known_ones():
    policy = Policy.load(DOCUMENT)
    state = {"intent": "refund", "turn": 2}  # x = [1, 0, 0, 1]
    scores = {"search": 1.1, "answer": -0.3}
    got = policy.probabilities(state, ["search", "answer", "new-tool"])
    expected = _softmax([1.1, -0.3, sum(scores.values()) / 2])
    assert list(got.values()) == pytest.approx(expected)
    only_new = policy.probabilities(state, ["x", "y"])
    assert only_new == pytest.approx({"x": 0.5, "y": 0.5})


def test_missing_and_unknown_features_contribute_nothing():
    policy = Policy.load(DOCUMENT)
    bias_only = _softmax([row[-1] for row in DOCUMENT["weights"]])
    unknown = {"intent": "never-seen", "other": "x"}
    for state in (None, {}, unknown, {"turn": 2}, {"turn": "many"}, {"turn": True}):
        got = policy.probabilities(state, DOCUMENT["actions"])
        assert list(got.values()) == pytest.approx(bias_only)
    # Categories match as the trainer wrote them: bools as JSON spells them, the rest str().
    flags = Policy.load(
        {
            "version": 1,
            "features": {"categorical": {"vip": ["true", "false"]}},
            "actions": ["a", "b"],
            "weights": [[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        }
    )
    assert flags.probabilities({"vip": True}, ["a", "b"])["a"] == pytest.approx(
        _softmax([3.0, 0.0])[0]
    )


def test_sampling_is_seedable_and_follows_the_probabilities():
    policy = Policy.load(DOCUMENT)
    state = {"intent": "order", "turn": 5}
    first = [policy.choose("n", state, DOCUMENT["actions"], rng=random.Random(7)) for _ in range(3)]
    again = [policy.choose("n", state, DOCUMENT["actions"], rng=random.Random(7)) for _ in range(3)]
    assert first == again
    rng = random.Random(11)
    draws = [policy.choose("n", state, DOCUMENT["actions"], rng=rng)[0] for _ in range(4000)]
    expected = policy.probabilities(state, DOCUMENT["actions"])
    for action, p in expected.items():
        # 4000 draws: a binomial standard deviation is at most 0.008; allow five of them.
        assert abs(draws.count(action) / len(draws) - p) < 0.04


def test_load_reads_a_json_file(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(DOCUMENT))
    from_file = Policy.load(path)
    assert from_file.probabilities({"turn": 1}, ["search"]) == {"search": 1.0}
    assert from_file.probabilities({"turn": 1}, DOCUMENT["actions"]) == pytest.approx(
        Policy.load(DOCUMENT).probabilities({"turn": 1}, DOCUMENT["actions"])
    )
    assert Policy.load(str(path)).actions == tuple(DOCUMENT["actions"])


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        (("n", ["a", "b"], "c"), {}, ValueError),  # chosen not available
        (("n", "ab", "a"), {}, TypeError),  # a string is not a list of actions
        (("n", [], "a"), {}, ValueError),
        (("n", ["a", "a"], "a"), {}, ValueError),
        (("n", ["a", 1], "a"), {}, TypeError),
        (("", ["a"], "a"), {}, TypeError),
        (("n", ["a"], "a"), {"prob": 0.0}, ValueError),
        (("n", ["a"], "a"), {"prob": 1.5}, ValueError),
        (("n", ["a"], "a"), {"prob": -0.1}, ValueError),
        (("n", ["a"], "a"), {"prob": float("nan")}, ValueError),
        (("n", ["a"], "a"), {"prob": True}, TypeError),
        (("n", ["a"], "a"), {"prob": "0.5"}, TypeError),
        (("n", ["a"], "a"), {"state": {"x": [1, 2]}}, TypeError),
        (("n", ["a"], "a"), {"state": {"x": None}}, TypeError),
        (("n", ["a"], "a"), {"state": {"x": {"y": 1}}}, TypeError),
        (("n", ["a"], "a"), {"state": {"x": float("inf")}}, ValueError),
        (("n", ["a"], "a"), {"state": {"": 1}}, TypeError),
        (("n", ["a"], "a"), {"state": ["x"]}, TypeError),
    ],
)
def test_decide_refuses_bad_input(args, kwargs, error):
    with pytest.raises(error):
        decide(*args, **kwargs)


def test_decide_accepts_the_edges_without_a_store():
    decide("n", ["a"], "a", prob=1)  # probability 1, an int: fine
    decide("n", ["a", "b"], "b", prob=1e-9, state={"x": 0, "y": False, "z": ""})


def _bad(**changes):
    return {**DOCUMENT, **changes}


@pytest.mark.parametrize(
    "document",
    [
        _bad(version=2),
        {k: v for k, v in DOCUMENT.items() if k != "version"},
        _bad(actions=[]),
        _bad(actions=["search", "search", "x"]),
        _bad(weights=DOCUMENT["weights"][:2]),  # a row missing
        _bad(weights=[row[:-1] for row in DOCUMENT["weights"]]),  # no bias column
        _bad(weights=[[float("nan"), 0, 0, 0], *DOCUMENT["weights"][1:]]),
        _bad(weights=[["1", 0, 0, 0], *DOCUMENT["weights"][1:]]),
        _bad(features={"categorical": {"intent": "refund"}, "numeric": {"turn": [2.0, 2.0]}}),
        _bad(features={"categorical": {"intent": ["refund", "order"]}, "numeric": {"turn": [2]}}),
        _bad(
            features={"categorical": {"intent": ["refund", "order"]}, "numeric": {"turn": [2, -1]}}
        ),
    ],
)
def test_load_refuses_malformed_documents(document):
    with pytest.raises(ValueError):
        Policy.load(document)


def test_load_refuses_bad_json_and_missing_files(tmp_path):
    path = tmp_path / "policy.json"
    for text in ("{not json", "[]"):
        path.write_text(text)
        with pytest.raises(ValueError):
            Policy.load(path)
    with pytest.raises(FileNotFoundError):
        Policy.load(tmp_path / "missing.json")


def test_choose_refuses_bad_input():
    policy = Policy.load(DOCUMENT)
    with pytest.raises(ValueError):
        policy.choose("n", {}, [])
    with pytest.raises(TypeError):
        policy.choose("n", {"turn": [1]}, ["search"])


def test_policy_needs_no_numpy():
    """Agents keep the light client: choosing an action loads no NumPy."""
    code = (
        "import sys, random, instrumentation\n"
        f"p = instrumentation.Policy.load({DOCUMENT!r})\n"
        "p.choose('n', {'turn': 1}, ['search', 'answer'], rng=random.Random(0))\n"
        "print('numpy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
