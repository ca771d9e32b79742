"""Post spans and rewards as plain JSON over HTTP — what any language can do — then query
rewards by tag. Only the standard library: no SDK, no OpenTelemetry.

    evolution-store serve &                 # in another terminal
    python examples/http_rewards.py         # or: python examples/http_rewards.py http://host:port

The reward is posted BEFORE the span it judges: the store keeps it pending and links it the
moment the span arrives.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
import urllib.request

BASE = (sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000") + "/api/v1"


def call(method: str, path: str, body: object | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        BASE + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def main() -> None:
    trace_id, root_id, llm_id = secrets.token_hex(16), secrets.token_hex(8), secrets.token_hex(8)
    conversation = "conv-" + secrets.token_hex(4)
    now = time.time_ns()

    # 1. A user's thumbs-up arrives first, aimed at every span of the conversation.
    early = call(
        "POST",
        "/rewards",
        {"name": "thumbs_up", "value": 1.0, "source": "human", "tags": ["example"],
         "links": {"gen_ai.conversation.id": conversation}},
    )  # fmt: skip
    print("reward stored, resolved:", early["resolved"])

    # 2. The agent's spans arrive later (any language can post this JSON).
    spans = [
        {"trace_id": trace_id, "span_id": root_id, "name": "support-agent",
         "start_time": now, "end_time": now + 900_000_000, "status_code": "ok",
         "attributes": {"gen_ai.agent.name": "support", "gen_ai.conversation.id": conversation},
         "tags": ["example"]},
        {"trace_id": trace_id, "span_id": llm_id, "parent_span_id": root_id, "name": "chat",
         "start_time": now + 1_000, "end_time": now + 800_000_000,
         "attributes": {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                        "gen_ai.usage.input_tokens": 420, "gen_ai.usage.output_tokens": 96,
                        "gen_ai.conversation.id": conversation}},
    ]  # fmt: skip
    print("spans:", call("POST", "/spans", {"spans": spans}))

    # 3. A grader scores the LLM call itself, by span id.
    call("POST", "/rewards", {"name": "grader", "value": 0.8, "source": "llm",
                              "span_id": llm_id, "tags": ["example"]})  # fmt: skip

    # 4. Rewards by tag, each with the spans it was linked to.
    page = call("GET", "/rewards?tag=example&limit=10")
    for reward in page["items"]:
        print(f"{reward['name']:>10} {reward['value']:.2f} resolved={reward['resolved']} "
              f"spans={reward['span_ids']}")  # fmt: skip
    print("summary:", call("GET", "/rewards/summary?group_by=name&tag=example")["groups"])


if __name__ == "__main__":
    main()
