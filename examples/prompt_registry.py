"""The prompt registry end to end: register two versions of an agent's prompt, approve one,
A/B test them on simulated traffic, read the results, promote the winner, roll back.

    python examples/prompt_registry.py                         # embedded: a temp SQLite store
    python examples/prompt_registry.py http://127.0.0.1:8000   # a running evolution-store serve
    python examples/prompt_registry.py --store sqlite:///registry.db

Two sides, as in a real deployment. The person (or learner) managing prompts uses the
registry's calls: `EvolutionClient` against a server, or the same calls on the store itself
when there is none (`LocalRegistry` below). The agent only asks `get_prompt(agent, key=user)`
which version to use — during the A/B, each user sticks to one variant — and runs under
`task(..., prompt=handle)`, so its rewards are counted for that version.

Seeded: how each simulated user rates each version is fixed; which variant a user gets
depends on the experiment's id (a hash of it and the user), so counts vary a little per run.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
from pathlib import Path
from typing import Any

from instrumentation import EvolutionClient, configure, get_prompt, task

AGENT = "support-bot"
USERS = 400
SEED = 18
Q = "Where is my order?"
V1 = "You are a support agent. Answer {{ customer }}'s question: {{ question }}"
V2 = (
    "You are a support agent. Greet {{ customer }} by name, answer in two sentences, "
    "and end with the next step.\nQuestion: {{ question }}"
)
#: how often a simulated user is satisfied with each version (v2 is better)
SATISFACTION = {1: 0.55, 2: 0.80}


class LocalRegistry:
    """`EvolutionClient`'s registry calls (same names and arguments) on the store itself, for
    a run without a server. The approver is recorded as "example"."""

    def __init__(self, url: str) -> None:
        from evolution_store import EvolutionStore

        self._loop = asyncio.new_event_loop()
        self._store = self._run(EvolutionStore.open(url))

    def _run(self, call: Any) -> Any:
        return self._loop.run_until_complete(call)

    def create_prompt(self, agent: str, content: str, **fields: Any) -> dict[str, Any]:
        from evolution_store.registry_models import PromptIn

        prompt, _created = self._run(
            self._store.create_prompt(PromptIn(agent=agent, content=content, **fields))
        )
        return prompt

    def approve_prompt(self, prompt_id: str, *, note: str | None = None) -> dict[str, Any]:
        from evolution_store.registry_models import ApproveIn

        approval = ApproveIn(note=note)
        return self._run(self._store.approve_prompt(prompt_id, approval, approved_by="example"))

    def prompt_diff(self, prompt_id: str, against: str) -> dict[str, Any]:
        return self._run(self._store.prompt_diff(prompt_id, against))

    def resolve_prompt(self, agent: str, *, key: str | None = None) -> dict[str, Any]:
        return self._run(self._store.resolve_prompt(agent, key=key))

    def create_experiment(self, agent: str, **fields: Any) -> dict[str, Any]:
        from evolution_store.registry_models import ExperimentIn

        return self._run(self._store.create_experiment(ExperimentIn(agent=agent, **fields)))

    def get_experiment(self, experiment_id: str) -> dict[str, Any]:
        return self._run(self._store.get_experiment(experiment_id))

    def stop_experiment(self, experiment_id: str, **fields: Any) -> dict[str, Any]:
        from evolution_store.registry_models import ExperimentStopIn

        stop = ExperimentStopIn(**fields)
        return self._run(self._store.stop_experiment(experiment_id, stop, approved_by="example"))

    def list_markers(self, *, agent: str | None = None) -> dict[str, Any]:
        page = self._run(self._store.list_markers(agent=agent))
        return {"items": page.items, "next_cursor": page.next_cursor}

    def close(self) -> None:
        self._run(self._store.close())
        self._loop.close()


def serve_users(rng: random.Random) -> dict[int, int]:
    """The agent side: each user gets a version from the registry and rates the answer."""
    served = {1: 0, 2: 0}
    for number in range(USERS):
        user = f"user-{number:03d}"
        prompt = get_prompt(AGENT, key=user, fallback=V1)  # cached; sticky during the A/B
        with task("answer", input={"user": user}, prompt=prompt) as run:
            messages = [{"role": "system", "content": prompt.render(customer=user, question=Q)}]
            assert messages  # ... a real agent sends these to its LLM here ...
            satisfied = rng.random() < SATISFACTION[prompt.version]
            run.reward(1.0 if satisfied else 0.0, name="satisfied")
        served[prompt.version] += 1
    again = get_prompt(AGENT, key="user-007")
    assert again.variant == get_prompt(AGENT, key="user-007").variant  # the same user, again
    return served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", nargs="?", help="a running server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--store", metavar="URL", help="embedded store [default: a temp dir]")
    args = parser.parse_args()
    rng = random.Random(SEED)

    if args.url:
        registry: Any = EvolutionClient(args.url)
        session = configure(endpoint=args.url, service_name=AGENT)
        print(f"server: {args.url}")
    else:
        store = args.store or f"sqlite:///{Path(tempfile.mkdtemp()) / 'registry.db'}"
        registry = LocalRegistry(store)
        session = configure(store_url=store, service_name=AGENT)
        print(f"embedded store: {store}")

    # 1. Register v1 and approve it: it becomes production.
    v1 = registry.create_prompt(AGENT, V1, status="candidate", note="the first version")
    v1 = registry.approve_prompt(v1["id"], note="reviewed")
    print(f"1. registered v{v1['version']} ({v1['id']}): {v1['status']}, labels {v1['labels']}")

    # 2. Register v2, derived from v1, as a candidate.
    v2 = registry.create_prompt(AGENT, V2, parent_ids=[v1["id"]], status="candidate")
    print(f"2. registered v{v2['version']} ({v2['id']}): {v2['status']}; the diff from v1:")
    for line in registry.prompt_diff(v2["id"], v1["id"])["diff"].splitlines():
        print(f"     {line}")

    # 3. A/B: half of the users get each version, each user always the same one.
    variants = [{"prompt_id": v1["id"], "weight": 0.5}, {"prompt_id": v2["id"], "weight": 0.5}]
    experiment = registry.create_experiment(AGENT, variants=variants, metric="satisfied")
    print(f"3. started A/B experiment {experiment['id']} between v1 and v2 (50/50)")

    # 4. Traffic: the agent asks which prompt to use, runs, and is rated.
    served = serve_users(rng)
    print(f"4. served {USERS} users: v1 to {served[1]}, v2 to {served[2]}")

    # 5. Results, computed from the rewards of the executions each version ran.
    results = registry.get_experiment(experiment["id"])["results"]
    for version, result in enumerate(results, start=1):
        low, high = result["ci95"]
        p_value = "" if result["p_value"] is None else f", p = {result['p_value']:.2g} vs v1"
        print(
            f"5. v{version}: n = {result['n']}, satisfied {result['mean']:.2f} "
            f"(95% CI {low:.2f}–{high:.2f}){p_value}"
        )

    # 6. v2 won: stop the experiment and approve v2 in the same call.
    stopped = registry.stop_experiment(experiment["id"], winner=v2["id"], approve=True)
    now = registry.resolve_prompt(AGENT)
    print(f"6. experiment {stopped['status']}, winner v2; production is now v{now['version']}")

    # 7. Something went wrong in production? Roll back: approve the archived v1 again.
    registry.approve_prompt(v1["id"], note="rollback")
    now = registry.resolve_prompt(AGENT)
    print(f"7. rolled back: production is v{now['version']} again")

    kinds = [marker["kind"] for marker in registry.list_markers(agent=AGENT)["items"]]
    print(f"markers on {AGENT}'s timeline (newest first): {', '.join(kinds)}")
    session.force_flush()
    session.shutdown()
    registry.close()
    if not args.url:
        print(f"look around: evolution-store prompts list --db {store}")


if __name__ == "__main__":
    main()
