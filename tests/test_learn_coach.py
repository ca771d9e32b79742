"""The async evolution coach (issue 23) against a fake OpenAI-compatible server started here:
the loop keeps its pace while the LLM thinks, recommendations land at the next `apply`,
bounds are enforced, the prompt is the trimmed state, the trail is written to the store on
both backends, and a dead LLM never reaches the loop. Nothing touches the network."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import multiprocessing
import re
import threading
import time
from dataclasses import dataclass

import pytest

from evolution_store.learn import Application, Coach, Evaluation, optimize_prompt
from evolution_store.learn.coach_prompt import parse_reply
from evolution_store.learn.fake_llm import FakeChatServer, unreachable_base_url
from evolution_store.queries import SpanQuery
from evolution_store.registry_models import PromptIn

BOUNDS = {"mutation_rate": (0.0, 1.0), "population": (4, 200)}
WAIT = 30.0  # seconds a test waits for the background thread before it fails


def answer(*recommendations: tuple[str, object], assessment: str = "stagnating") -> str:
    return json.dumps(
        {
            "assessment": assessment,
            "recommendations": [
                {"parameter": p, "value": v, "reason": f"set {p}"} for p, v in recommendations
            ],
        }
    )


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


async def await_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def generation(coach: Coach, gen: int, cfg: dict, lines: tuple[str, ...] = ()) -> dict:
    coach.observe(gen, metrics={"best": float(gen), "mean": gen / 2}, config=cfg, log_lines=lines)
    return coach.apply(cfg)


def prompt_of(request: dict) -> str:
    return request["messages"][-1]["content"]


# -- the loop never waits ---------------------------------------------------------------------


def test_generations_keep_their_pace_while_a_2s_reply_is_pending():
    reply = answer(("mutation_rate", 0.2))
    with FakeChatServer(reply, delay=2.0) as server:
        coach = Coach(server.base_url, parameters=BOUNDS, interval=5)
        cfg = {"mutation_rate": 0.01, "population": 10}
        for gen in range(5):
            cfg = generation(coach, gen, cfg)
        assert coach.stats()["in_flight"]
        during = 0
        deadline = time.monotonic() + WAIT
        while coach.stats()["analyses"] == 0 and time.monotonic() < deadline:
            time.sleep(0.005)  # the generation's own work
            cfg = generation(coach, 5 + during, cfg)
            during += 1
        stats = coach.stats()
        assert coach.apply(cfg)["mutation_rate"] == 0.2
        coach.close()
    # Blocking for the reply would allow one generation; a 2 s reply at ~5 ms each allows ~400.
    assert during >= 20
    # One in flight, none queued: a second request only if the next interval came due after
    # the reply (then in flight when the stats were read).
    assert stats["analyses"] == 1 and server.calls in {1, 1 + stats["in_flight"]}
    # every interval due meanwhile was skipped, but the last may have come just after the reply
    assert stats["skipped"] + stats["in_flight"] == during // 5


def test_applications_land_at_the_next_apply_after_the_reply():
    release = threading.Event()

    def reply(messages):
        release.wait(WAIT)
        return answer(("mutation_rate", 0.25), ("population", 40))

    with FakeChatServer(reply) as server, Coach(server.base_url, parameters=BOUNDS) as coach:
        cfg = {"mutation_rate": 0.01, "population": 10, "sigma": 0.5}
        for gen in range(12):
            cfg = generation(coach, gen, cfg)
        assert cfg == {"mutation_rate": 0.01, "population": 10, "sigma": 0.5}
        assert coach.applications == []
        release.set()
        wait_until(lambda: coach.stats()["analyses"] == 1, "the reply")
        assert coach.apply(cfg) == {"mutation_rate": 0.25, "population": 40, "sigma": 0.5}
        (application,) = coach.applications
        assert isinstance(application, Application)
        assert application.generation == 11  # the last generation observed before it
        assert application.changes == {"mutation_rate": (0.01, 0.25), "population": (10, 40)}
        assert "set mutation_rate" in application.reason and application.at.tzinfo
        same = {"mutation_rate": 0.25, "population": 40}
        assert coach.apply(same) is same  # nothing new arrived
        assert coach.stats()["applied"] == 2


def test_a_dataclass_config_comes_back_replaced():
    @dataclass(frozen=True)
    class Config:
        mutation_rate: float = 0.01
        population: int = 10

    with (
        FakeChatServer(answer(("population", 64.0))) as server,
        Coach(server.base_url, parameters=BOUNDS, interval=1) as coach,
    ):
        coach.observe(0, metrics={"best": 1.0}, config=Config())
        wait_until(lambda: coach.stats()["analyses"] == 1, "the reply")
        new = coach.apply(Config())
    assert new == Config(population=64) and isinstance(new.population, int)


# -- what is refused --------------------------------------------------------------------------


def test_out_of_bounds_and_unknown_parameters_are_refused_and_reported():
    reply = (
        "<think>population is tiny</think>Here is my advice:\n```json\n"
        + answer(
            ("population", 500),
            ("population", 50.5),
            ("crossover", 0.9),
            ("mutation_rate", "a lot"),
            ("mutation_rate", "0.3"),
        )
        + "\n```"
    )
    with FakeChatServer(reply) as server, Coach(server.base_url, parameters=BOUNDS) as coach:
        cfg = {"mutation_rate": 0.01, "population": 10}
        for gen in range(5):
            cfg = generation(coach, gen, cfg)
        wait_until(lambda: coach.stats()["analyses"] == 1, "the reply")
        cfg = coach.apply(cfg)
    assert cfg == {"mutation_rate": 0.3, "population": 10}
    why = {(r.parameter, str(r.value)): r.why for r in coach.refusals}
    assert why == {
        ("population", "500"): "outside [4, 200]",
        ("population", "50.5"): "not an integer",
        ("crossover", "0.9"): "unknown parameter",
        ("mutation_rate", "a lot"): "not a number",
    }
    stats = coach.stats()
    assert (stats["recommendations"], stats["refused"], stats["applied"]) == (5, 4, 1)
    assert coach.assessment == "stagnating"


def test_replies_are_read_robustly():
    assert parse_reply('{"recommendations": {"population": 20}}') == (
        "",
        [{"parameter": "population", "value": 20}],
    )
    assert parse_reply('noise {"a": 1} then {"assessment": "ok", "recommendations": []}') == (
        "ok",
        [],
    )
    with pytest.raises(ValueError, match="no JSON object"):
        parse_reply("I would raise the mutation rate.")


def test_bad_constructor_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="low <= high"):
        Coach(parameters={"rate": (1.0, 0.0)})
    with pytest.raises(ValueError, match="no coach prompt 'v99'"):
        Coach(parameters=BOUNDS, prompt_version="v99")
    with pytest.raises(ValueError, match="needs a store"):
        Coach(parameters=BOUNDS, prompt_version="registry:production")
    with pytest.raises(TypeError, match="llm must be"):
        Coach(42, parameters=BOUNDS)


# -- what the LLM sees ------------------------------------------------------------------------


def test_the_prompt_holds_the_last_n_generations_the_full_config_and_the_last_3_applications():
    rates = itertools.count(1)
    with (
        FakeChatServer(lambda messages: answer(("mutation_rate", next(rates) / 100))) as server,
        Coach(server.base_url, parameters=BOUNDS, interval=5, max_log_generations=7) as coach,
    ):
        cfg = {"mutation_rate": 0.5, "population": 10, "sigma": 0.3, "ops": {"cx": "blend"}}
        lines = tuple(f"line {i} " + "x" * 300 for i in range(8))
        for gen in range(25):
            cfg = generation(coach, gen, cfg, lines)
            if (gen + 1) % 5 == 0:  # let each analysis finish, so each one is applied
                wait_until(lambda: not coach.stats()["in_flight"], "an analysis")
    applied_at = [a.generation for a in coach.applications]
    assert applied_at == [5, 10, 15, 20]  # the first `apply` after each reply
    text = prompt_of(server.requests[-1])

    assert [int(g) for g in re.findall(r"^gen (\d+):", text, re.M)] == list(range(18, 25))
    assert "gen 24: best=24.0, mean=12.0" in text
    # each generation's log: its last 5 lines, each cut to 200 characters
    log = re.findall(r"^  \| (.*)$", text, re.M)
    assert len(log) == 7 * 5 and log[0].startswith("line 3 ") and len(log[0]) == 200
    config = re.search(r"## Current configuration \(complete\)\n(.*?)\n\n##", text, re.S)
    assert json.loads(config.group(1)) == cfg
    shown = [int(g) for g in re.findall(r"applied at generation (\d+):", text)]
    assert shown == [10, 15, 20]
    assert (
        "mutation_rate 0.02 → 0.03" in text
        and "best mean 8 over the 5 generations before, 13 over the 5 after" in text
    )
    assert "trimmed" in text and "asynchronously" in text
    assert "population: integer from 4 to 200 (now 10)" in text


# -- a person decides -------------------------------------------------------------------------


def test_without_auto_apply_recommendations_wait_for_a_person():
    with (
        FakeChatServer(answer(("mutation_rate", 0.2), ("population", 50))) as server,
        Coach(server.base_url, parameters=BOUNDS, interval=5, auto_apply=False) as coach,
    ):
        cfg = {"mutation_rate": 0.01, "population": 10}
        for gen in range(5):
            cfg = generation(coach, gen, cfg)
        wait_until(lambda: coach.stats()["analyses"] == 1, "the reply")
        assert coach.apply(cfg) is cfg
        assert {r.parameter: r.value for r in coach.pending} == {
            "mutation_rate": 0.2,
            "population": 50,
        }
        assert coach.stats()["pending"] == 2
        assert [r.parameter for r in coach.reject("population")] == ["population"]
        assert [r.parameter for r in coach.approve()] == ["mutation_rate"]
        assert coach.apply(cfg) == {"mutation_rate": 0.2, "population": 10}
        stats = coach.stats()
    assert (stats["pending"], stats["applied"], stats["rejected"]) == (0, 1, 1)


# -- failures stay in the background ----------------------------------------------------------


def test_a_dead_llm_never_raises_into_the_loop(caplog):
    caplog.set_level(logging.DEBUG, logger="evolution_store.learn.coach")
    coach = Coach(unreachable_base_url(), parameters=BOUNDS, interval=2, timeout=2)
    cfg = {"mutation_rate": 0.01, "population": 10}
    gen = 0
    deadline = time.monotonic() + WAIT
    while coach.stats()["failed"] < 2 and time.monotonic() < deadline:
        cfg = generation(coach, gen, cfg)
        gen += 1
        time.sleep(0.002)
    coach.close()
    coach.close()  # idempotent
    assert cfg == {"mutation_rate": 0.01, "population": 10}
    stats = coach.stats()
    assert stats["failed"] >= 2 and stats["analyses"] == 0
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "cannot reach" in warned[0].getMessage()
    with pytest.raises(RuntimeError, match="closed"):
        coach.observe(gen, metrics={"best": 0.0})


def _coach_in_a_child(coach: Coach, result) -> None:
    cfg = {"mutation_rate": 0.01, "population": 10}
    for gen in range(100, 102):
        cfg = generation(coach, gen, cfg)
    wait_until(lambda: coach.stats()["analyses"] == 2, "the child's reply")
    result.put(coach.apply(cfg))


def test_a_forked_child_gets_an_analysis_thread_of_its_own():
    with (
        FakeChatServer(answer(("population", 33))) as server,
        Coach(server.base_url, parameters=BOUNDS, interval=2) as coach,
    ):
        cfg = generation(coach, 0, {"mutation_rate": 0.01, "population": 10})
        cfg = generation(coach, 1, cfg)  # the parent's thread starts
        wait_until(lambda: coach.stats()["analyses"] == 1, "the parent's reply")
        context = multiprocessing.get_context("fork")
        result = context.Queue()
        child = context.Process(target=_coach_in_a_child, args=(coach, result))
        child.start()
        assert result.get(timeout=WAIT) == {"mutation_rate": 0.01, "population": 33}
        child.join(WAIT)
        assert child.exitcode == 0 and server.calls == 2


def test_a_reply_without_json_is_a_failed_analysis_not_an_error():
    with (
        FakeChatServer("Raise the mutation rate a little.") as server,
        Coach(server.base_url, parameters=BOUNDS, interval=1) as coach,
    ):
        coach.observe(0, metrics={"best": 1.0}, config={"population": 10})
        wait_until(lambda: coach.stats()["failed"] == 1, "the failure")
        assert coach.apply({"population": 10}) == {"population": 10}


def test_the_effect_of_an_application_is_the_metric_after_against_before():
    served = threading.Event()

    def reply(messages):
        if served.is_set():
            return answer()
        served.set()
        return answer(("population", 100))

    with (
        FakeChatServer(reply) as server,
        Coach(server.base_url, parameters=BOUNDS, interval=4, goal="min") as coach,
    ):
        cfg = {"mutation_rate": 0.1, "population": 10}
        for gen in range(4):
            coach.observe(gen, metrics={"best": 10.0}, config=cfg)
        wait_until(lambda: coach.stats()["analyses"] == 1, "the reply")
        cfg = coach.apply(cfg)
        for gen in range(4, 12):
            coach.observe(gen, metrics={"best": 6.0 if gen < 6 else 2.0}, config=cfg)
        (effect,) = coach.stats()["effects"]
    assert effect["changes"] == {"population": (10, 100)}
    assert (effect["before"], effect["n_before"]) == (10.0, 4)
    assert (effect["after"], effect["n_after"]) == (4.0, 4)  # generations 4-7 only
    assert effect["change"] == -6.0 and effect["improved"] is True


# -- the trail in the store -------------------------------------------------------------------


def traced_coach(server: FakeChatServer, store, run_id: str, *, interval: int) -> Coach:
    return Coach(
        server.base_url,
        "coach-model",
        parameters=BOUNDS,
        interval=interval,
        store=store,
        run_id=run_id,
    )


async def test_analyses_are_traced_and_applications_marked_in_the_store(store):
    reply = answer(("mutation_rate", 0.2), ("population", 30), assessment="too greedy")
    with FakeChatServer(reply) as server:
        async with traced_coach(server, store, "ga-run-1", interval=5) as coach:
            cfg = {"mutation_rate": 0.01, "population": 10}
            for gen in range(5):
                await coach.aobserve(gen, metrics={"best": float(gen)}, config=cfg)
                cfg = await coach.aapply(cfg)
            await await_until(lambda: coach.stats()["analyses"] == 1, "the reply")
            await coach.aobserve(5, metrics={"best": 5.0}, config=cfg)
            cfg = await coach.aapply(cfg)
    assert cfg == {"mutation_rate": 0.2, "population": 30}

    (marker,) = (await store.list_markers(agent="evolution.coach", kind="coach.applied")).items
    assert marker["before"] == {"mutation_rate": 0.01, "population": 10}
    assert marker["after"] == {"mutation_rate": 0.2, "population": 30}
    assert marker["attributes"]["evolution.coach.generation"] == 5
    spans = (await store.list_spans(SpanQuery(task_id="ga-run-1"))).items
    by_name = {s["name"]: s for s in spans}
    assert set(by_name) == {"evolution.marker", "chat coach-model"}
    chat = by_name["chat coach-model"]
    assert (chat["agent"], chat["model"]) == ("evolution.coach", "coach-model")
    assert chat["input_tokens"] > 100 and chat["output_tokens"] > 10
    attributes = chat["attributes"]
    sent = json.loads(attributes["gen_ai.input.messages"])[0]["parts"][0]["content"]
    assert sent == prompt_of(server.requests[0])
    assert "too greedy" in attributes["gen_ai.output.messages"]
    assert attributes["evolution.coach.generation"] == 4
    assert attributes["evolution.coach.accepted"] == 2


async def test_sync_calls_inside_the_stores_loop_are_written_by_aclose(store, caplog):
    with FakeChatServer(answer(("population", 20))) as server:
        coach = Coach(server.base_url, parameters=BOUNDS, interval=2, store=store, run_id="r2")
        cfg = {"mutation_rate": 0.01, "population": 10}
        for gen in range(2):  # plain sync calls: the store's loop gets no turn meanwhile
            cfg = generation(coach, gen, cfg)
        wait_until(lambda: coach.stats()["analyses"] == 1, "the reply")
        cfg = generation(coach, 2, cfg)
        coach.close()  # cannot wait here, and says so
        assert "aclose" in caplog.text
        await coach.aclose()
    assert cfg["population"] == 20
    (marker,) = (await store.list_markers(agent="evolution.coach")).items
    assert json.loads(marker["attributes"]["evolution.coach.changes"]) == {"population": [10, 20]}
    spans = (await store.list_spans(SpanQuery(task_id="r2"))).items
    assert len(spans) == 2


def test_a_sync_loop_with_a_database_url_writes_its_trail(store_url):
    with FakeChatServer(answer(("population", 20))) as server:
        with traced_coach(server, store_url, "sync-run", interval=3) as coach:
            cfg = {"mutation_rate": 0.01, "population": 10}
            for gen in range(3):
                cfg = generation(coach, gen, cfg)
            wait_until(lambda: coach.stats()["analyses"] == 1, "the reply")
            cfg = generation(coach, 3, cfg)
        assert cfg["population"] == 20

    async def read() -> list[dict]:
        from evolution_store import EvolutionStore

        async with await EvolutionStore.open(store_url) as store:
            return (await store.list_spans(SpanQuery(task_id="sync-run"))).items

    spans = asyncio.run(read())
    assert sorted(s["name"] for s in spans) == ["chat coach-model", "evolution.marker"]


async def test_a_registry_prompt_is_read_from_the_store_at_each_analysis(store):
    await store.create_prompt(
        PromptIn(
            agent="evolution.coach",
            content="Coach v2. Gens: {{ generations | length }}. Config: {{ config_json }}",
            created_by="human",
        )
    )
    with FakeChatServer(answer()) as server:
        async with Coach(
            server.base_url,
            parameters=BOUNDS,
            interval=2,
            store=store,
            prompt_version="registry:latest",
        ) as coach:
            for gen in range(2):
                await coach.aobserve(gen, metrics={"best": 1.0}, config={"population": 9})
            await await_until(lambda: coach.stats()["analyses"] == 1, "the reply")
    assert prompt_of(server.requests[0]).startswith(
        'Coach v2. Gens: 2. Config: {\n  "population": 9'
    )


# -- the APO engine's own knobs ---------------------------------------------------------------


class ScriptedCoachLLM:
    """The coach's LLM in process: raise the minibatch, cool the LLM, ask for a crossover
    rate out of bounds."""

    model = "scripted"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def complete(self, messages: list[dict]) -> str:
        self.prompts.append(messages[-1]["content"])
        return answer(("minibatch_size", 5), ("temperature", 0.1), ("crossover_rate", 0.9))


class ReflectingLLM:
    """The engine's own LLM: appends the word every failing family needs."""

    temperature = 0.7

    def complete(self, messages: list[dict]) -> str:
        return "```\nUse metric units and cite a source.\n{{ question }}\n```"


def test_the_coach_tunes_the_apo_engines_knobs_during_a_run():
    coach_llm, engine_llm = ScriptedCoachLLM(), ReflectingLLM()
    coach = Coach(
        coach_llm,
        parameters={
            "minibatch_size": (1, 8),
            "crossover_rate": (0.0, 0.5),
            "temperature": (0, 1.5),
        },
        interval=2,
    )

    def evaluate(prompt: str, example: dict) -> Evaluation:
        # Let a pending analysis finish, so its reply is applied at the next iteration.
        wait_until(lambda: not coach.stats()["in_flight"], "an analysis")
        ok = example["word"] in prompt
        return Evaluation(score=1.0 if ok else 0.0, feedback="" if ok else f"say {example['word']}")

    data = [{"id": f"e{i}", "word": ("metric", "source")[i % 2], "question": "q"} for i in range(8)]
    with coach:
        optimize_prompt(
            "Answer.\n{{ question }}",
            data,
            data,
            evaluate,
            llm=engine_llm,
            seed=1,
            max_metric_calls=120,
            coach=coach,
            minibatch_size=2,
        )
    assert coach.applications
    first = coach.applications[0]
    assert first.changes == {"minibatch_size": (2, 5), "temperature": (0.7, 0.1)}
    assert engine_llm.temperature == 0.1
    assert any(r.parameter == "crossover_rate" for r in coach.refusals)
    # the settings the engine ran with afterwards are the coach's
    later = coach_llm.prompts[-1]
    assert '"minibatch_size": 5' in later and '"temperature": 0.1' in later
    assert "front_size=" in later and "calls_used=" in later
