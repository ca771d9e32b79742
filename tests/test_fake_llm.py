"""The fake OpenAI-compatible server: a real loopback HTTP server the tests drive with httpx."""

from __future__ import annotations

import threading

import httpx
import pytest

from evolution_store.learn.fake_llm import FakeChatServer, unreachable_base_url

MESSAGES = [
    {"role": "system", "content": "You improve prompts."},
    {"role": "user", "content": "Make it better."},
]


def chat(server: FakeChatServer, body: dict | None = None, **kwargs) -> httpx.Response:
    body = body if body is not None else {"model": "m", "messages": MESSAGES}
    return httpx.post(server.base_url + "/chat/completions", json=body, **kwargs)


def test_answers_an_openai_shaped_completion_with_usage():
    with FakeChatServer("Be brief.") as server:
        response = chat(server)
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "chat.completion"
    assert data["model"] == "m"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "Be brief."}
    assert data["choices"][0]["finish_reason"] == "stop"
    usage = data["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_a_reply_function_sees_the_messages_and_requests_are_recorded():
    seen = []

    def reply(messages):
        seen.append(messages)
        return f"{len(messages)} messages"

    with FakeChatServer(reply) as server:
        first = chat(server, headers={"Authorization": "Bearer k"})
        chat(server, {"model": "m", "messages": MESSAGES[:1]})
    assert first.json()["choices"][0]["message"]["content"] == "2 messages"
    assert seen == [MESSAGES, MESSAGES[:1]]
    assert server.calls == 2
    assert server.requests == [
        {"model": "m", "messages": MESSAGES},
        {"model": "m", "messages": MESSAGES[:1]},
    ]
    assert server.headers[0]["authorization"] == "Bearer k"


def test_a_reply_that_raises_is_a_500_naming_the_error():
    def reply(messages):
        raise RuntimeError("model crashed")

    with FakeChatServer(reply) as server:
        response = chat(server)
    assert response.status_code == 500
    assert "RuntimeError: model crashed" in response.json()["error"]["message"]
    assert server.calls == 1


def test_dict_and_bytes_replies_are_sent_as_the_whole_body():
    replies = iter([{"choices": []}, b"not json"])
    with FakeChatServer(lambda messages: next(replies)) as server:
        assert chat(server).json() == {"choices": []}
        assert chat(server).content == b"not json"


def test_a_configured_status_answers_every_chat_request_and_can_change():
    with FakeChatServer("ok", status=401) as server:
        refused = chat(server)
        server.status = 200
        accepted = chat(server)
    assert refused.status_code == 401
    assert "error" in refused.json()
    assert accepted.status_code == 200
    assert server.calls == 2


def test_fail_first_fails_the_first_requests_with_retry_after():
    with FakeChatServer("ok", fail_first=2, fail_status=429, retry_after=0.5) as server:
        responses = [chat(server) for _ in range(3)]
    assert [r.status_code for r in responses] == [429, 429, 200]
    assert responses[0].headers["retry-after"] == "0.5"
    assert "retry-after" not in responses[2].headers
    assert server.calls == 3


def test_models_route_and_unknown_routes():
    with FakeChatServer("ok", model="tiny") as server:
        models = httpx.get(server.base_url + "/models")
        missing_get = httpx.get(server.base_url + "/nothing")
        missing_post = httpx.post(server.base_url + "/completions", json={})
    assert models.json()["data"][0]["id"] == "tiny"
    assert missing_get.status_code == 404
    assert missing_post.status_code == 404
    assert server.calls == 0


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]"])
def test_a_body_that_is_not_a_json_object_is_a_400(content):
    with FakeChatServer("ok") as server:
        response = httpx.post(server.base_url + "/chat/completions", content=content)
    assert response.status_code == 400
    assert server.calls == 0


def test_delay_holds_the_answer_back_past_a_client_timeout():
    with FakeChatServer("slow", delay=0.5) as server, pytest.raises(httpx.ReadTimeout):
        chat(server, timeout=0.05)


def test_concurrent_requests_are_all_counted():
    with FakeChatServer("ok") as server:
        threads = [threading.Thread(target=chat, args=(server,)) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert server.calls == 20
    assert len(server.requests) == len(server.headers) == 20


def test_after_close_the_port_refuses_and_close_is_idempotent():
    server = FakeChatServer("ok").start()
    assert chat(server).status_code == 200
    server.close()
    server.close()
    with pytest.raises(httpx.ConnectError):
        chat(server)


def test_unreachable_base_url_refuses_connections():
    with pytest.raises(httpx.ConnectError):
        httpx.post(unreachable_base_url() + "/chat/completions", json={})
