"""Decorate an agent, emit delayed rewards, query them by tag.

    evolution-store serve &                                     # in another terminal
    python examples/track_agent.py                              # or: ... http://host:port
    python examples/track_agent.py --store sqlite:///agent.db   # embedded: no server at all

A toy weather agent: an async entry point, a sync tool and a streaming (generator) reply, all
traced by `@track_evolution`. Its first attempt fails and is retried as a second execution of
the same task. Rewards arrive by every route — the current span, the task, a link selector, a
trace, a span — some before the spans they judge have even been exported: the store keeps
those pending and links them when the spans arrive.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from opentelemetry import trace

from instrumentation import EvolutionClient, configure, emit_reward, task, track_evolution

TAG = "weather-v1"  # on every span the agent makes, so rewards linked to them share it


@dataclass
class Reply:
    text: str
    trace_id: str  # kept next to the answer, as an app would, to reward it later
    span_id: str


@track_evolution(tags=[TAG])
def lookup(city: str, attempt: int) -> str:
    """A tool (sync). It judges itself at once, before its span has even ended."""
    if attempt == 1:
        raise ConnectionError("weather service unavailable")
    forecast = {"paris": "sunny, 24°C", "oslo": "rain, 11°C"}.get(city.lower(), "unknown")
    emit_reward(float(forecast != "unknown"), name="tool_hit")  # target: the current span
    return forecast


@track_evolution(tags=[TAG])
def stream_reply(city: str, forecast: str) -> Iterator[str]:
    """A streaming reply (generator): one span covering the whole stream."""
    for word in f"The weather in {city} is {forecast}.".split():
        yield word + " "


@track_evolution(name="weather-agent", tags=[TAG])
async def agent(question: str, conversation_id: str, attempt: int) -> Reply:
    span = trace.get_current_span()
    span.set_attribute("gen_ai.conversation.id", conversation_id)  # what link selectors match
    await asyncio.sleep(0.01)  # "thinking"
    city = question.rstrip("?").split()[-1]
    text = "".join(stream_reply(city, lookup(city, attempt)))
    ids = span.get_span_context()
    return Reply(
        text.strip(), trace.format_trace_id(ids.trace_id), trace.format_span_id(ids.span_id)
    )


async def run_agent(question: str, conversation_id: str) -> Reply:
    """Two attempts of one task: the retry is a new execution of the same task id."""
    task_id = None
    for attempt in (1, 2):
        try:
            async with task("weather", input={"q": question}, task_id=task_id, tags=[TAG]) as run:
                task_id = run.task_id
                reply = await agent(question, conversation_id, attempt)
                run.reward(1.0, name="task_success")  # via the task handle: its execution
                return reply
        except ConnectionError as exc:
            print(f"attempt {attempt} failed ({exc}); retrying task {task_id}")
    raise RuntimeError("both attempts failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="http://127.0.0.1:8000", help="server URL")
    parser.add_argument("--store", help="embedded mode: a database URL, e.g. sqlite:///agent.db")
    args = parser.parse_args()

    if args.store:
        session = configure(store_url=args.store, service_name="weather-bot")
    else:
        session = configure(endpoint=args.url, service_name="weather-bot")

    conversation_id = "conv-" + uuid.uuid4().hex[:8]
    reply = asyncio.run(run_agent("What is the weather in Paris?", conversation_id))
    print("agent:", reply.text)

    # The user's thumbs-up, aimed at every span of the conversation. The spans are still in
    # the exporter's queue, so this reward is stored pending and linked when they arrive.
    thumbs = emit_reward(
        1.0, name="thumbs_up", source="human", links={"gen_ai.conversation.id": conversation_id}
    )
    print("thumbs_up stored, resolved:", thumbs["resolved"])
    session.force_flush()  # export the spans now (a short script would otherwise exit first)

    # Later, graders score the answer: its whole trace (the root span), and one span by id.
    emit_reward(0.8, name="judge", source="llm", trace_id=reply.trace_id, feedback="concise")
    emit_reward({"accuracy": 0.9, "style": 0.6}, name="review", span_id=reply.span_id,
                trace_id=reply.trace_id, tags=["reviewed"])  # fmt: skip

    if args.store:  # embedded: read through the session's own store
        from evolution_store import RewardQuery

        query = RewardQuery(tag=TAG)
        rewards = session.call_store(lambda store: store.list_rewards(query)).items
        groups = session.call_store(lambda store: store.rewards_summary("name", query))
    else:
        with EvolutionClient(args.url) as client:
            rewards = client.list_rewards(tag=TAG)["items"]
            groups = client.rewards_summary(group_by="name", tag=TAG)["groups"]

    print(f"rewards tagged {TAG!r} (on the reward or on the spans it judges):")
    for reward in rewards:
        print(f"  {reward['name']:>12} {reward['value']:.2f} resolved={reward['resolved']} "
              f"spans={len(reward['span_ids'])}")  # fmt: skip
    for group in groups:
        print(f"  summary {group['key']:>12}: n={group['count']} mean={group['mean']:.2f}")
    session.shutdown()


if __name__ == "__main__":
    main()
