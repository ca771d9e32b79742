"""`get_prompt()` and `PromptHandle`: rendering, the 60 s stale-while-revalidate cache and its
fallbacks against a real server on loopback (stopped halfway), embedded mode, and the prompt
attributes on spans and in the execution's config."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import httpx
import jinja2
import pytest
from jinja2.exceptions import SecurityError
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import instrumentation
import instrumentation._prompts as prompts_module
from instrumentation import (
    EvolutionClient,
    EvolutionClientError,
    PromptHandle,
    get_prompt,
    task,
    track_evolution,
)
from instrumentation._state import STATE

OTEL_ENV = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
)
PROMPT_ATTRS = (
    "evolution.prompt.id",
    "evolution.prompt.version",
    "evolution.experiment.id",
    "evolution.experiment.variant",
)


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    for name in OTEL_ENV:
        monkeypatch.delenv(name, raising=False)
    prompts_module.CACHE.clear()
    yield
    prompts_module.CACHE.clear()


def _prompt_attrs(span) -> dict:
    return {key: span.attributes[key] for key in PROMPT_ATTRS if key in span.attributes}


def _expire_cache() -> None:
    """As if the TTL had passed for every cached prompt."""
    for entry in prompts_module.CACHE._entries.values():
        entry.expires = 0.0


def _wait_for(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# --- the handle --------------------------------------------------------------------------------


def test_render_fills_the_template_and_undefined_variables_raise():
    handle = PromptHandle(id="p1", version=3, content="Hi {{ name }}, {{ n * 2 }} items\n")
    assert handle.render(name="Ada", n=2) == "Hi Ada, 4 items\n"
    assert handle.render(name="Bo", n=1) == "Hi Bo, 2 items\n"  # compiled once, reused
    with pytest.raises(jinja2.UndefinedError, match="name"):
        handle.render(n=1)
    with pytest.raises(jinja2.UndefinedError):
        PromptHandle(id=None, version=None, content="{{ user.name }}").render(user={})


def test_render_is_sandboxed():
    evil = PromptHandle(id=None, version=None, content="{{ ''.__class__.__mro__ }}")
    with pytest.raises(SecurityError):
        evil.render()


def test_handle_fields_and_execution_config():
    handle = PromptHandle(
        id="p1",
        version=2,
        content="x",
        experiment_id="x1",
        variant=1,
        agent="a",
        label="production",
    )
    assert handle.execution_config() == {
        "prompt_id": "p1",
        "prompt_version": 2,
        "experiment_id": "x1",
        "variant": 1,
    }
    assert handle.span_attributes == {
        "evolution.prompt.id": "p1",
        "evolution.prompt.version": 2,
        "evolution.experiment.id": "x1",
        "evolution.experiment.variant": 1,
    }
    fallback = PromptHandle(id=None, version=None, content="x")
    assert fallback.execution_config() == {} and fallback.span_attributes == {}
    assert handle == PromptHandle(
        id="p1",
        version=2,
        content="x",
        experiment_id="x1",
        variant=1,
        agent="a",
        label="production",
    )
    assert "content='x'" in repr(handle) and "span_attributes" not in repr(handle)


# --- spans and executions under a handle (local mode) ------------------------------------------


@pytest.fixture
def local():
    exporter = InMemorySpanExporter()
    session = instrumentation.configure(
        span_exporter=exporter, tracer_provider=TracerProvider(), set_global=False
    )

    def spans(all_spans=False):
        assert session.force_flush()
        finished = list(exporter.get_finished_spans())
        return finished if all_spans else {span.name: span for span in finished}

    yield spans
    session.shutdown()


V1 = PromptHandle(id="p1", version=1, content="one")
V2 = PromptHandle(id="p2", version=2, content="two", experiment_id="x9", variant=0)


@track_evolution
def tool() -> str:
    return "ok"


@track_evolution
def agent() -> str:
    return tool()


@track_evolution
def stream(n: int):
    for i in range(n):
        yield tool() + str(i)


def test_spans_inside_with_handle_carry_the_prompt(local):
    @track_evolution
    def before():
        return 0

    @track_evolution
    def after():
        return 0

    before()
    with V2 as entered:
        assert entered is V2
        agent()
    after()
    spans = local()
    expected = {
        "evolution.prompt.id": "p2",
        "evolution.prompt.version": 2,
        "evolution.experiment.id": "x9",
        "evolution.experiment.variant": 0,
    }
    assert _prompt_attrs(spans["agent"]) == expected
    assert _prompt_attrs(spans["tool"]) == expected
    assert _prompt_attrs(spans["before"]) == {} and _prompt_attrs(spans["after"]) == {}


def test_the_innermost_handle_wins_and_the_outer_one_comes_back(local):
    @track_evolution
    def outer_after():
        return 0

    with V1:
        with V2:
            agent()
        outer_after()
    spans = local()
    assert spans["agent"].attributes["evolution.prompt.id"] == "p2"
    assert _prompt_attrs(spans["outer_after"]) == {
        "evolution.prompt.id": "p1",
        "evolution.prompt.version": 1,
    }


def test_one_cached_handle_entered_by_many_threads_at_once(local):
    """The same handle objects are entered concurrently: each thread keeps its own stack."""
    barrier = threading.Barrier(4)

    @track_evolution
    def probe(i):
        return i

    def worker(i):
        with V1 if i % 2 else V2:
            barrier.wait(5)  # all four inside their blocks together
            probe(i)
            barrier.wait(5)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    by_input = {
        span.attributes["input.value"]: span.attributes["evolution.prompt.id"]
        for span in local(all_spans=True)
    }
    assert by_input == {f'{{"i":{i}}}': "p1" if i % 2 else "p2" for i in range(4)}
    assert prompts_module.CURRENT_PROMPTS.get() == ()


async def test_async_with_handle_and_concurrent_coroutines(local):
    @track_evolution
    async def answer(i):
        await asyncio.sleep(0)
        return i

    async def run(i, handle):
        async with handle:
            await asyncio.sleep(0)
            return await answer(i)

    await asyncio.gather(*(run(i, V1 if i % 2 else V2) for i in range(6)))
    by_input = {
        span.attributes["input.value"]: span.attributes["evolution.prompt.id"]
        for span in local(all_spans=True)
    }
    assert by_input == {f'{{"i":{i}}}': "p1" if i % 2 else "p2" for i in range(6)}


def test_generators_keep_the_prompt_they_were_created_under(local):
    with V1:
        gen = stream(2)
    assert list(gen) == ["ok0", "ok1"]  # consumed outside the block
    spans = local()
    assert spans["stream"].attributes["evolution.prompt.id"] == "p1"
    assert spans["tool"].attributes["evolution.prompt.id"] == "p1"


def test_task_with_prompt_stamps_its_spans_and_config(local):
    with task("answer", prompt=V2, config={"model": "m1"}) as t:
        agent()
    assert t.prompt is V2
    assert t.config == {
        "prompt_id": "p2",
        "prompt_version": 2,
        "experiment_id": "x9",
        "variant": 0,
        "model": "m1",
    }
    span = local()["agent"]
    assert span.attributes["evolution.task.id"] == t.task_id
    assert span.attributes["evolution.prompt.id"] == "p2"


def test_task_inside_with_handle_takes_the_handle(local):
    with V1, task("answer") as t:
        agent()
    assert t.config == {"prompt_id": "p1", "prompt_version": 1}
    with V1, task("answer", prompt=V2, config={"prompt_id": "mine"}) as explicit:
        tool()
    assert explicit.config["prompt_id"] == "mine"  # an explicit config key wins
    assert explicit.config["prompt_version"] == 2
    assert local()["tool"].attributes["evolution.prompt.id"] == "p1"  # `with` is innermost


def test_without_configure_a_fallback_is_served_else_a_clear_error(caplog):
    assert STATE.sink is None, "a previous test left a configuration behind"
    with caplog.at_level(logging.WARNING, logger="instrumentation"):
        handles = [get_prompt("loner", fallback="Hi {{ name }}") for _ in range(3)]
    assert handles[0].id is None and handles[0].render(name="A") == "Hi A"
    assert handles[0].agent == "loner" and handles[0].label == "production"
    assert handles[1] is handles[0]
    (warning,) = _warnings(caplog)
    assert "not configured" in warning and "fallback" in warning
    given = PromptHandle(id=None, version=None, content="mine")
    assert get_prompt("loner", fallback=given) is given
    with pytest.raises(EvolutionClientError, match="configure"):
        get_prompt("loner")


# --- remote mode against a real server ---------------------------------------------------------


class CountingTransport(httpx.HTTPTransport):
    """A real HTTP transport that counts the resolve requests it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.resolves = 0
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/prompt"):
            with self._lock:
                self.resolves += 1
        return super().handle_request(request)


def _publish(client: EvolutionClient, agent: str, content: str) -> dict:
    prompt = client.create_prompt(agent, content, status="candidate")
    return client.approve_prompt(prompt["id"])


def test_remote_cache_refresh_outage_and_fallback(live_server, store_url, caplog):
    server = live_server(store_url)
    admin = EvolutionClient(server.url)
    v1 = _publish(admin, "bot", "v1: {{ q }}")
    counter = CountingTransport()
    session = instrumentation.configure(
        server.url,
        span_exporter=InMemorySpanExporter(),
        tracer_provider=TracerProvider(),
        set_global=False,
        transport=counter,
    )
    try:
        # The first call blocks on one fetch, even when many threads ask at once.
        results = []
        threads = [
            threading.Thread(target=lambda: results.append(get_prompt("bot"))) for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        first = results[0]
        assert (first.id, first.version, first.render(q="hi")) == (v1["id"], 1, "v1: hi")
        assert (first.agent, first.label, first.experiment_id, first.variant) == (
            "bot",
            "production",
            None,
            None,
        )
        assert all(handle is first for handle in results)
        assert counter.resolves == 1

        # Within the TTL: served from the cache, even after the server's answer changed.
        v2 = _publish(admin, "bot", "v2: {{ q }}")
        for _ in range(20):
            assert get_prompt("bot") is first
        assert counter.resolves == 1

        # Expired: the stale value is served at once and one refresh runs in the background.
        _expire_cache()
        assert get_prompt("bot") is first
        _wait_for(lambda: get_prompt("bot").id == v2["id"])
        assert counter.resolves == 2
        assert get_prompt("bot").version == 2

        # Other labels and keys are cached apart.
        assert get_prompt("bot", label="latest").id == v2["id"]
        assert counter.resolves == 3

        # The server goes away: the cached value is served, with one warning.
        assert server.stop() == 0
        _expire_cache()
        with caplog.at_level(logging.WARNING, logger="instrumentation"):
            assert get_prompt("bot").id == v2["id"]  # starts a refresh that will fail
            entry = prompts_module.CACHE._entries[("bot", "production", None)]
            _wait_for(lambda: entry.error is not None and not entry.refreshing)
            for _ in range(5):
                assert get_prompt("bot").id == v2["id"]
        (warning,) = _warnings(caplog)
        assert "serving cached version 2" in warning
        caplog.clear()

        # A prompt never fetched: the fallback, one warning however often it is asked for.
        with caplog.at_level(logging.WARNING, logger="instrumentation"):
            started = time.monotonic()
            fallback = get_prompt("newbot", fallback="Answer {{ q }}")
            for _ in range(10):
                assert get_prompt("newbot", fallback="Answer {{ q }}") is fallback
            assert time.monotonic() - started < 10
        assert (fallback.id, fallback.version, fallback.render(q="x")) == (None, None, "Answer x")
        (warning,) = _warnings(caplog)
        assert "'newbot'" in warning and "fallback" in warning

        # Neither cache nor fallback: a clear error.
        with pytest.raises(EvolutionClientError, match="no prompt for agent 'ghost'") as caught:
            get_prompt("ghost")
        assert caught.value.status is None  # no answer at all
    finally:
        session.shutdown()
        admin.close()


def test_remote_missing_label_fallback_and_prompt_in_execution_config(live_server, store_url):
    server = live_server(store_url)
    admin = EvolutionClient(server.url)
    v1 = _publish(admin, "bot", "v1")
    session = instrumentation.configure(
        server.url,
        service_name="prompted",
        tracer_provider=TracerProvider(),
        set_global=False,
    )
    try:
        with pytest.raises(EvolutionClientError) as caught:
            get_prompt("bot", label="staging")
        assert caught.value.status == 404
        assert get_prompt("bot", label="staging", fallback="fb").content == "fb"

        handle = get_prompt("bot")
        with task("answer", prompt=handle) as t:
            agent()
            t.reward(0.75)
        with handle, task("answer") as inherited:
            inherited.reward(0.25)
        assert session.force_flush()
    finally:
        session.shutdown()

    config = {"prompt_id": v1["id"], "prompt_version": 1}
    assert admin.get_execution(t.execution_id)["config"] == config
    assert admin.get_execution(inherited.execution_id)["config"] == config
    spans = admin.list_spans(task_id=t.task_id)["items"]
    assert {s["name"] for s in spans} == {"agent", "tool"}
    for span in spans:
        assert span["attributes"]["evolution.prompt.id"] == v1["id"]
        assert span["attributes"]["evolution.prompt.version"] == 1
    (group,) = admin.rewards_summary(group_by="config:prompt_id")["groups"]
    assert (group["key"], group["count"], group["mean"]) == (v1["id"], 2, 0.5)
    admin.close()


def test_cache_ttl_argument_and_module_default(live_server, monkeypatch):
    server = live_server()
    admin = EvolutionClient(server.url)
    _publish(admin, "bot", "v1")
    counter = CountingTransport()
    monkeypatch.setattr(prompts_module, "CACHE_TTL", 0.05)
    session = instrumentation.configure(
        server.url, tracer_provider=TracerProvider(), set_global=False, transport=counter
    )
    try:
        get_prompt("bot")
        time.sleep(0.1)
        get_prompt("bot")  # stale: a background refresh
        _wait_for(lambda: counter.resolves == 2)
        get_prompt("bot", label="latest", cache_ttl=3600)
        time.sleep(0.1)
        get_prompt("bot", label="latest")
        time.sleep(0.2)
        assert counter.resolves == 3  # the hour-long entry was not refreshed
    finally:
        session.shutdown()
        admin.close()


# --- embedded mode -----------------------------------------------------------------------------


def test_embedded_mode_resolves_assigns_variants_and_feeds_experiment_results(store_url, caplog):
    from evolution_store.queries import SpanQuery
    from evolution_store.registry_models import ApproveIn, ExperimentIn, PromptIn

    exporter = InMemorySpanExporter()
    session = instrumentation.configure(
        store_url=store_url,
        span_exporter=exporter,
        tracer_provider=TracerProvider(),
        set_global=False,
    )

    async def setup(store):
        one, _ = await store.create_prompt(
            PromptIn(agent="emb", content="one {{ q }}", status="candidate")
        )
        await store.approve_prompt(one["id"], ApproveIn(), approved_by="local")
        two, _ = await store.create_prompt(PromptIn(agent="emb", content="two {{ q }}"))
        experiment = await store.create_experiment(
            ExperimentIn(
                agent="emb",
                variants=[
                    {"prompt_id": one["id"], "weight": 0.5},
                    {"prompt_id": two["id"], "weight": 0.5},
                ],
            )
        )
        return one, two, experiment

    try:
        one, two, experiment = session.call_store(setup)
        served = {}
        for user in range(24):
            handle = get_prompt("emb", key=f"user-{user}")
            assert get_prompt("emb", key=f"user-{user}") is handle  # cached per key
            assert handle.experiment_id == experiment["id"]
            assert handle.id == [one["id"], two["id"]][handle.variant]
            served[user] = handle
            with task("answer", prompt=handle) as t:
                agent()
                t.reward(1.0 if handle.id == two["id"] else 0.0)
        assert len({h.id for h in served.values()}) == 2, "24 keys all got one variant"
        assert get_prompt("emb", label="latest").id == two["id"]
        with caplog.at_level(logging.WARNING, logger="instrumentation"):
            assert get_prompt("emb", label="nope", fallback="fb").id is None
            assert get_prompt("emb", label="nope", fallback="fb").id is None
        assert len(_warnings(caplog)) == 1
        with pytest.raises(EvolutionClientError) as caught:
            get_prompt("emb", label="other")
        assert caught.value.status == 404

        results = session.call_store(lambda store: store.get_experiment(experiment["id"]))
        counts = {h: sum(1 for x in served.values() if x.id == h) for h in (one["id"], two["id"])}
        by_prompt = {r["prompt_id"]: r for r in results["results"]}
        assert by_prompt[one["id"]]["n"] == counts[one["id"]]
        assert by_prompt[two["id"]]["n"] == counts[two["id"]]
        assert by_prompt[two["id"]]["mean"] == 1.0 and by_prompt[one["id"]]["mean"] == 0.0

        assert session.force_flush()
        stored = session.call_store(lambda store: store.list_spans(SpanQuery(name="agent")))
        assert len(stored.items) == 24
        for span in stored.items:
            assert span["attributes"]["evolution.experiment.id"] == experiment["id"]
            assert span["attributes"]["evolution.prompt.id"] in (one["id"], two["id"])
    finally:
        session.shutdown()


def test_a_new_configuration_starts_a_new_cache(store_url, tmp_path):
    from evolution_store.registry_models import ApproveIn, PromptIn

    async def publish(store, content):
        prompt, _ = await store.create_prompt(
            PromptIn(agent="swap", content=content, status="candidate")
        )
        return await store.approve_prompt(prompt["id"], ApproveIn(), approved_by="local")

    first = instrumentation.configure(store_url=store_url, set_global=False)
    try:
        first.call_store(lambda store: publish(store, "first"))
        assert get_prompt("swap").content == "first"
    finally:
        first.shutdown()
    second = instrumentation.configure(
        store_url=f"sqlite:///{tmp_path / 'other.db'}", set_global=False
    )
    try:
        second.call_store(lambda store: publish(store, "second"))
        assert get_prompt("swap").content == "second"
    finally:
        second.shutdown()
