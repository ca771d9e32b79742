"""The learners' chat client against real loopback servers (`FakeChatServer`); an unreachable
LLM is a closed port. Retry waits go through a recording `sleep`, so no test waits on them."""

from __future__ import annotations

import threading

import pytest

from evolution_store.errors import EvolutionStoreError
from evolution_store.learn.fake_llm import FakeChatServer, unreachable_base_url
from evolution_store.learn.llm import (
    DEFAULT_BASE_URL,
    ChatLLM,
    LLMBudgetExhausted,
    LLMCall,
    LLMError,
    LLMUnavailable,
    default_base_url,
    default_model,
    resolve_llm,
)

MESSAGES = [{"role": "user", "content": "Improve: be nice"}]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in (
        "EVOLUTION_LLM_BASE_URL",
        "OPENAI_BASE_URL",
        "EVOLUTION_LLM_MODEL",
        "OPENAI_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)


class Sleeps(list):
    """A `sleep` that records the waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_llm(server_or_url, **options) -> ChatLLM:
    url = server_or_url if isinstance(server_or_url, str) else server_or_url.base_url
    options.setdefault("sleep", Sleeps())
    return ChatLLM(url, "test-model", **options)


def test_complete_posts_an_openai_chat_request_and_returns_the_content():
    with FakeChatServer("Be kind.") as server, make_llm(server, temperature=0.2) as llm:
        assert llm.complete(MESSAGES) == "Be kind."
    [body] = server.requests
    assert body == {
        "model": "test-model",
        "messages": MESSAGES,
        "temperature": 0.2,
        "max_tokens": 4096,
    }
    assert "authorization" not in server.headers[0]
    assert llm.calls == 1


def test_the_api_key_comes_from_openai_api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeChatServer("ok") as server, make_llm(server) as llm:
        llm.complete(MESSAGES)
    assert server.headers[0]["authorization"] == "Bearer sk-test"


def test_usage_is_read_from_the_reply_else_estimated():
    calls: list[LLMCall] = []
    replies = iter(
        [
            {
                "choices": [{"message": {"content": "abc"}}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7},
            },
            {"choices": [{"message": {"content": "x" * 40}}]},
        ]
    )
    with (
        FakeChatServer(lambda messages: next(replies)) as server,
        make_llm(server, on_call=calls.append) as llm,
    ):
        llm.complete(MESSAGES)
        llm.complete(MESSAGES)
    assert (calls[0].input_tokens, calls[0].output_tokens) == (11, 7)
    assert (calls[1].input_tokens, calls[1].output_tokens) == (4, 10)  # ~4 characters a token
    assert llm.tokens_used == 11 + 7 + 4 + 10


def test_null_content_is_an_empty_reply():
    reply = {"choices": [{"message": {"role": "assistant", "content": None}}]}
    with FakeChatServer(lambda messages: reply) as server, make_llm(server) as llm:
        assert llm.complete(MESSAGES) == ""


@pytest.mark.parametrize("status", [429, 500, 503])
def test_429_and_5xx_are_retried_with_exponential_backoff(status):
    sleeps = Sleeps()
    with (
        FakeChatServer("finally", fail_first=2, fail_status=status) as server,
        make_llm(server, retries=2, backoff=0.25, sleep=sleeps) as llm,
    ):
        assert llm.complete(MESSAGES) == "finally"
    assert server.calls == 3
    assert sleeps == [0.25, 0.5]
    assert llm.calls == 1  # one call to the budget, however many attempts


def test_retry_after_is_honoured_up_to_a_cap():
    sleeps = Sleeps()
    with (
        FakeChatServer("ok", fail_first=2, fail_status=429, retry_after=90) as server,
        make_llm(server, retries=2, max_retry_after=5, sleep=sleeps) as llm,
    ):
        assert llm.complete(MESSAGES) == "ok"
    assert sleeps == [5, 5]

    sleeps = Sleeps()
    with (
        FakeChatServer("ok", fail_first=1, fail_status=503, retry_after=1.5) as server,
        make_llm(server, sleep=sleeps) as llm,
    ):
        llm.complete(MESSAGES)
    assert sleeps == [1.5]


def test_giving_up_after_retries_says_what_the_server_answered():
    calls: list[LLMCall] = []
    with (
        FakeChatServer("never", fail_first=10, fail_status=503) as server,
        make_llm(server, retries=2, on_call=calls.append) as llm,
        pytest.raises(LLMUnavailable, match=r"answered 503 .*gave up after 3 attempts") as info,
    ):
        llm.complete(MESSAGES)
    assert server.calls == 3
    assert server.base_url in str(info.value)
    [call] = calls
    assert call.reply is None and call.error == str(info.value)
    assert (call.input_tokens, call.output_tokens) == (0, 0)


@pytest.mark.parametrize("status", [400, 401, 404])
def test_other_non_2xx_answers_fail_at_once(status):
    sleeps = Sleeps()
    with (
        FakeChatServer("ok", status=status) as server,
        make_llm(server, sleep=sleeps) as llm,
        pytest.raises(LLMUnavailable, match=f"answered {status}"),
    ):
        llm.complete(MESSAGES)
    assert server.calls == 1
    assert sleeps == []


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"<html>gateway</html>", "not JSON"),
        ({"choices": []}, r"without choices\[0\]\.message\.content"),
        ({"error": "busy"}, r"without choices\[0\]\.message\.content"),
        ([1, 2], r"without choices\[0\]\.message\.content"),
        ({"choices": [{"message": {"content": 42}}]}, "non-text content"),
    ],
)
def test_a_body_that_is_not_a_chat_completion_is_unavailable(body, complaint):
    with (
        FakeChatServer(lambda messages: body) as server,
        make_llm(server) as llm,
        pytest.raises(LLMUnavailable, match=complaint),
    ):
        llm.complete(MESSAGES)
    assert server.calls == 1


def test_an_unreachable_server_is_retried_then_unavailable():
    url = unreachable_base_url()
    sleeps = Sleeps()
    calls: list[LLMCall] = []
    with (
        make_llm(url, retries=2, backoff=0.1, sleep=sleeps, on_call=calls.append) as llm,
        pytest.raises(LLMUnavailable, match="cannot reach .*gave up after 3 attempts") as info,
    ):
        llm.complete(MESSAGES)
    assert url in str(info.value)
    assert sleeps == [0.1, 0.2]
    assert len(calls) == 1 and calls[0].error


def test_a_timeout_fails_without_retrying():
    sleeps = Sleeps()
    with (
        FakeChatServer("slow", delay=0.5) as server,
        make_llm(server, timeout=0.05, sleep=sleeps) as llm,
        pytest.raises(LLMUnavailable, match="did not answer within 0.05 s"),
    ):
        llm.complete(MESSAGES)
    assert sleeps == []


def test_the_call_budget_refuses_without_sending():
    calls: list[LLMCall] = []
    with FakeChatServer("ok") as server, make_llm(server, max_calls=2, on_call=calls.append) as llm:
        llm.complete(MESSAGES)
        llm.complete(MESSAGES)
        with pytest.raises(LLMBudgetExhausted, match="2 calls"):
            llm.complete(MESSAGES)
    assert server.calls == 2
    assert len(calls) == 2  # a refused call is not a call


def test_failed_calls_count_against_the_call_budget():
    with (
        FakeChatServer("ok", status=400) as server,
        make_llm(server, max_calls=1) as llm,
    ):
        with pytest.raises(LLMUnavailable):
            llm.complete(MESSAGES)
        with pytest.raises(LLMBudgetExhausted):
            llm.complete(MESSAGES)
    assert server.calls == 1


def test_the_token_budget_refuses_once_spent():
    reply = {
        "choices": [{"message": {"content": "ok"}}],
        "usage": {"prompt_tokens": 60, "completion_tokens": 40},
    }
    with FakeChatServer(lambda m: reply) as server, make_llm(server, max_tokens=150) as llm:
        llm.complete(MESSAGES)  # 100 used: under the cap, so the next call may go
        llm.complete(MESSAGES)  # 200 used: past it
        with pytest.raises(LLMBudgetExhausted, match="200 of 150 tokens"):
            llm.complete(MESSAGES)
    assert server.calls == 2


def test_the_budget_holds_under_concurrent_calls():
    outcomes: list[str] = []
    with FakeChatServer("ok") as server, make_llm(server, max_calls=5) as llm:

        def call() -> None:
            try:
                outcomes.append(llm.complete(MESSAGES))
            except LLMBudgetExhausted:
                outcomes.append("refused")

        threads = [threading.Thread(target=call) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(outcomes) == ["ok"] * 5 + ["refused"] * 7
    assert server.calls == 5


def test_on_call_reports_each_call_and_a_broken_hook_costs_nothing():
    calls: list[LLMCall] = []

    def hook(call: LLMCall) -> None:
        calls.append(call)
        raise RuntimeError("recorder bug")

    with FakeChatServer("reply") as server, make_llm(server, on_call=hook) as llm:
        assert llm.complete(MESSAGES) == "reply"
    [call] = calls
    assert call.model == "test-model"
    assert call.messages == MESSAGES
    assert (call.reply, call.error) == ("reply", None)
    assert call.input_tokens > 0 and call.output_tokens > 0
    assert 0 < call.start_ns <= call.end_ns


def test_errors_belong_to_the_package_tree():
    assert issubclass(LLMUnavailable, LLMError)
    assert issubclass(LLMBudgetExhausted, LLMError)
    assert issubclass(LLMError, EvolutionStoreError)


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError):
        ChatLLM("http://127.0.0.1:1/v1", timeout=0)
    with pytest.raises(ValueError):
        ChatLLM("http://127.0.0.1:1/v1", retries=-1)


def test_defaults_come_from_the_environment(monkeypatch):
    assert default_base_url() == DEFAULT_BASE_URL == "http://127.0.0.1:1234/v1"
    assert default_model() == "local-model"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://openai.example/v1")
    assert default_base_url() == "http://openai.example/v1"
    monkeypatch.setenv("EVOLUTION_LLM_BASE_URL", "http://evolution.example/v1/")
    monkeypatch.setenv("EVOLUTION_LLM_MODEL", "qwen")
    assert default_base_url() == "http://evolution.example/v1/"
    with ChatLLM() as llm:
        assert (llm.base_url, llm.model) == ("http://evolution.example/v1", "qwen")


class OwnLLM:
    def complete(self, messages: list[dict]) -> str:
        return "mine"


def test_resolve_llm():
    assert resolve_llm(None) is None
    own = OwnLLM()
    assert resolve_llm(own, max_calls=1) is own
    calls: list[LLMCall] = []
    with FakeChatServer("served") as server:
        llm = resolve_llm(
            server.base_url, "m", max_calls=3, max_tokens=99, timeout=5, on_call=calls.append
        )
        assert isinstance(llm, ChatLLM)
        with llm:
            assert llm.complete(MESSAGES) == "served"
    assert (llm.base_url, llm.model) == (server.base_url, "m")
    assert (llm.max_calls, llm.max_tokens, llm.timeout) == (3, 99, 5)
    assert len(calls) == 1
    with resolve_llm("http://127.0.0.1:9/v1") as default:
        assert (default.timeout, default.max_calls, default.model) == (60, None, "local-model")


@pytest.mark.parametrize("bad", [42, b"http://x", {"complete": "no"}, object()])
def test_resolve_llm_refuses_anything_else(bad):
    with pytest.raises(TypeError, match="llm must be"):
        resolve_llm(bad)
