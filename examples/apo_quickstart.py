"""Prompt optimisation end to end: evolve a support agent's prompt with `optimize_prompt`,
record the run in a store, and read back what a person would review before approving.

    python examples/apo_quickstart.py                                  # stand-in LLM, temp store
    python examples/apo_quickstart.py --llm-base-url http://127.0.0.1:1234/v1   # LM Studio
    python examples/apo_quickstart.py --store sqlite:///apo.db --budget 300

The "agent" is simulated so the example runs anywhere: a request succeeds when the prompt
asks for the behaviour its kind of request needs, and the judge's feedback names only the
symptom. Without `--llm-base-url` a stand-in LLM (a loopback OpenAI-compatible server) turns
symptoms into instructions, as a real model would; `--no-llm` uses heuristic mutations only.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
from pathlib import Path

from evolution_store import EvolutionStore
from evolution_store.learn import Evaluation, optimize_prompt
from evolution_store.learn.fake_llm import FakeChatServer
from evolution_store.queries import RewardQuery

AGENT = "support-bot"
SEED_PROMPT = "You are a support agent.\nCustomer message: {{ message }}"

#: kind of request -> (what the prompt must mention, the judge's symptom, the fix an LLM writes)
NEEDS = {
    "refund": ("order number", "the reply never asked which order", "Ask for the order number."),
    "outage": (
        "status page",
        "the customer was not told where to follow the outage",
        "Link the status page during outages.",
    ),
    "angry": ("apolog", "the customer felt ignored", "Apologise before anything else."),
    "billing": (
        "currency",
        "the amount was shown without a currency",
        "State amounts with their currency.",
    ),
}


def examples(prefix: str, n: int) -> list[dict]:
    kinds = sorted(NEEDS)
    return [
        {"id": f"{prefix}{i}", "kind": kinds[i % len(kinds)], "message": f"message {i}"}
        for i in range(n)
    ]


def evaluate(prompt: str, example: dict) -> Evaluation:
    """Run the (simulated) agent with `prompt` on `example` and judge its reply."""
    word, symptom, _fix = NEEDS[example["kind"]]
    ok = word in prompt.lower()
    return Evaluation(
        score=1.0 if ok else 0.0,
        feedback="" if ok else symptom,
        tokens=len(prompt) / 4 + 60,  # prompt plus a reply
        latency_ms=200 + len(prompt) / 2,
    )


def stand_in_llm(messages: list[dict]) -> str:
    """What a reflection model does here: keep the prompt, add a fix per symptom seen."""
    text = messages[-1]["content"]
    current = re.search(r"<current_prompt>\n(.*?)\n</current_prompt>", text, re.DOTALL)[1]
    failures = text.split("</current_prompt>", 1)[1]
    fixes = [fix for _w, symptom, fix in NEEDS.values() if symptom in failures]
    lines = current.splitlines()
    return "```\n" + "\n".join(lines[:-1] + fixes + lines[-1:]) + "\n```"


async def review(store_url: str, best_id: str, baseline_id: str) -> None:
    """What a person checks before approving: the lineage, the gates, the evaluations."""
    async with await EvolutionStore.open(store_url) as store:
        lineage = await store.prompt_lineage(best_id)
        print("lineage (nearest first):", [a["id"][:8] for a in lineage["ancestors"]])
        runs = (await store.list_experiments(agent=AGENT, limit=100)).items
        print("regression experiments:", len(runs))
        groups = await store.rewards_summary("config:prompt_id", RewardQuery(tag="apo"))
        for group in groups:
            if group["key"] in (best_id, baseline_id):
                name = "best" if group["key"] == best_id else "seed"
                print(f"  {name} {group['key'][:8]}: n={group['count']} mean={group['mean']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="database URL (default: a temp SQLite file)")
    parser.add_argument("--llm-base-url", help="an OpenAI-compatible server (default: stand-in)")
    parser.add_argument("--no-llm", action="store_true", help="heuristic mutations only")
    parser.add_argument("--budget", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeChatServer(stand_in_llm) as stand_in:
        store_url = args.store or f"sqlite:///{Path(tmp) / 'apo.db'}"
        llm = None if args.no_llm else (args.llm_base_url or stand_in.base_url)
        result = optimize_prompt(
            SEED_PROMPT,
            examples("train-", 24),
            examples("val-", 24),
            evaluate,
            llm=llm,
            max_metric_calls=args.budget,
            seed=0,
            store=store_url,
            agent=AGENT,
        )
        print(f"baseline success {result.baseline.success:.2f} -> best {result.best.success:.2f}")
        print(f"metric calls {result.metric_calls} of {args.budget}; spend {result.spend}")
        print(f"best prompt ({result.best.status}, id {result.best.id}):")
        print(result.best.prompt)
        asyncio.run(review(store_url, result.best.id, result.baseline.id))
        if args.store:
            print(f"approve it: evolution-store prompts approve {result.best.id} --db {args.store}")


if __name__ == "__main__":
    main()
