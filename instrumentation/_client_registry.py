"""The prompt registry's calls (DESIGN §7: prompts, labels, experiments, markers) and the
pattern learner's results (patterns) on both REST clients, kept apart from `_client.py` so
neither file outgrows its job.

`RegistryMethods` is a base of `EvolutionClient`, `AsyncRegistryMethods` of
`AsyncEvolutionClient`: the same names and signatures, the second awaited. Requests are built
by `BaseClient` (`_client_base.py`) and sent by each client's own `_send`; the sync half never
touches an event loop.

Retries follow the clients' rule: reads, `create_prompt` (the server answers the stored row
for the same agent, content and parents) and `set_label` (a PUT) are retried; lifecycle moves,
approvals, experiment writes and applying a pattern are not, since a repeat would answer 409
and hide the success.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._client_base import BaseClient, Call, Variants, segment


class RegistryMethods(BaseClient):
    """Prompts, labels, experiments and markers, sent synchronously (see `EvolutionClient`).

    ```python
    with EvolutionClient("http://127.0.0.1:8000", api_key=key) as client:
        v2 = client.create_prompt("triage", "You triage {{ ticket }}.", status="candidate")
        client.approve_prompt(v2["id"], note="better on the eval set")
        print(client.resolve_prompt("triage")["version"])
    ```
    """

    def _send(self, call: Call) -> Any:  # pragma: no cover - the client defines it
        raise NotImplementedError

    # prompts
    def create_prompt(
        self,
        agent: str,
        content: str,
        *,
        parent_ids: Iterable[str] | None = None,
        status: str = "draft",
        labels: Iterable[str] | None = None,
        fitness: Mapping[str, Any] | None = None,
        created_by: str = "human",
        note: str | None = None,
    ) -> dict[str, Any]:
        """A new version of `agent`'s prompt (a Jinja2 template), or the stored one when the
        same content and parents were posted before."""
        return self._send(
            self._create_prompt(
                agent,
                content,
                parent_ids=parent_ids,
                status=status,
                labels=labels,
                fitness=fitness,
                created_by=created_by,
                note=note,
            )
        )

    def get_prompt(self, prompt_id: str) -> dict[str, Any]:
        return self._send(Call("GET", f"/prompts/{segment(prompt_id)}"))

    def list_prompts(
        self,
        *,
        agent: str | None = None,
        status: str | None = None,
        label: str | None = None,
        created_by: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        """One page `{items, next_cursor}`, newest version first."""
        return self._send(
            self._list_prompts(
                agent=agent,
                status=status,
                label=label,
                created_by=created_by,
                cursor=cursor,
                limit=limit,
            )
        )

    def prompt_lineage(self, prompt_id: str) -> dict[str, Any]:
        """`{prompt, ancestors, descendants}`, each with its status and fitness."""
        return self._send(Call("GET", f"/prompts/{segment(prompt_id)}/lineage"))

    def prompt_diff(self, prompt_id: str, against: str) -> dict[str, Any]:
        """`{from, to, diff}`: the unified diff from `against` to `prompt_id`."""
        return self._send(self._prompt_diff(prompt_id, against))

    def set_prompt_status(
        self,
        prompt_id: str,
        status: str,
        *,
        note: str | None = None,
        fitness: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """draft → experimental → candidate, or any → archived (409 names the allowed moves);
        `fitness` records the measurement that earned the move."""
        return self._send(self._set_prompt_status(prompt_id, status, note, fitness))

    def approve_prompt(self, prompt_id: str, *, note: str | None = None) -> dict[str, Any]:
        """Make a candidate (or an archived version: a rollback) the agent's production prompt."""
        return self._send(self._approve_prompt(prompt_id, note))

    # labels
    def set_label(self, agent: str, label: str, prompt_id: str) -> dict[str, Any]:
        """Point `label` at `prompt_id` (`production` moves only by approval)."""
        return self._send(self._set_label(agent, label, prompt_id))

    def list_labels(self, agent: str) -> dict[str, Any]:
        """`{items: [{agent, label, prompt_id, version, updated_at}], next_cursor: null}`."""
        return self._send(Call("GET", f"/agents/{segment(agent)}/labels"))

    def resolve_prompt(
        self, agent: str, *, label: str = "production", key: str | None = None
    ) -> dict[str, Any]:
        """The prompt `agent` should use now; during an A/B the variant `key` sticks to, with
        `experiment_id` and `variant` set. `instrumentation.get_prompt` caches this."""
        return self._send(self._resolve_prompt(agent, label, key))

    # experiments
    def create_experiment(
        self,
        agent: str,
        *,
        variants: Variants | None = None,
        kind: str = "ab",
        metric: str | None = None,
        baseline: str | None = None,
        target: Iterable[str] | None = None,
        control: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """Start an A/B (`variants` weighted to sum 1: `[{prompt_id, weight}]`,
        `[(prompt_id, weight)]` or `{prompt_id: weight}`) or a regression experiment
        (`baseline`, `target` and `control` example ids)."""
        return self._send(
            self._create_experiment(
                agent,
                variants=variants,
                kind=kind,
                metric=metric,
                baseline=baseline,
                target=target,
                control=control,
            )
        )

    def get_experiment(self, experiment_id: str) -> dict[str, Any]:
        """The experiment with its live per-variant results."""
        return self._send(Call("GET", f"/experiments/{segment(experiment_id)}"))

    def list_experiments(
        self,
        *,
        agent: str | None = None,
        status: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        return self._send(
            self._list_experiments(agent=agent, status=status, cursor=cursor, limit=limit)
        )

    def stop_experiment(
        self,
        experiment_id: str,
        *,
        winner: str | None = None,
        approve: bool = False,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Stop it; `approve=True` also approves `winner` (a candidate) in the same call."""
        return self._send(self._stop_experiment(experiment_id, winner, approve, note))

    def add_experiment_results(
        self, experiment_id: str, results: Iterable[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """Regression results: `[{prompt_id, example_id, score, tokens?, latency_ms?}]`."""
        return self._send(self._add_experiment_results(experiment_id, results))

    # markers
    def list_markers(
        self,
        *,
        agent: str | None = None,
        kind: str | None = None,
        start_after: int | None = None,
        start_before: int | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        """Change markers (promotions, rollbacks, label moves, experiments), newest first;
        `start_after` / `start_before` are unix nanoseconds."""
        return self._send(
            self._list_markers(
                agent=agent,
                kind=kind,
                start_after=start_after,
                start_before=start_before,
                cursor=cursor,
                limit=limit,
            )
        )

    # patterns
    def list_patterns(
        self,
        *,
        agent: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        context: str | None = None,
        max_q: float | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        """One page of mined patterns, lowest q-value first (then the largest effect);
        `context` is `overall`, `agent:<name>` or `task:<name>`."""
        return self._send(
            self._list_patterns(
                agent=agent,
                kind=kind,
                status=status,
                context=context,
                max_q=max_q,
                cursor=cursor,
                limit=limit,
            )
        )

    def get_pattern(self, pattern_id: str) -> dict[str, Any]:
        """One pattern with its effect, evidence and explanation."""
        return self._send(Call("GET", f"/patterns/{segment(pattern_id)}"))

    def apply_pattern(self, pattern_id: str) -> dict[str, Any]:
        """Turn the pattern into an A/B experiment or a config proposal (409 says why not)."""
        return self._send(self._apply_pattern(pattern_id))


class AsyncRegistryMethods(BaseClient):
    """The twin of `RegistryMethods` for `AsyncEvolutionClient`: same methods, awaited."""

    async def _send(self, call: Call) -> Any:  # pragma: no cover - the client defines it
        raise NotImplementedError

    # prompts
    async def create_prompt(
        self,
        agent: str,
        content: str,
        *,
        parent_ids: Iterable[str] | None = None,
        status: str = "draft",
        labels: Iterable[str] | None = None,
        fitness: Mapping[str, Any] | None = None,
        created_by: str = "human",
        note: str | None = None,
    ) -> dict[str, Any]:
        """A new version of `agent`'s prompt (a Jinja2 template), or the stored one when the
        same content and parents were posted before."""
        return await self._send(
            self._create_prompt(
                agent,
                content,
                parent_ids=parent_ids,
                status=status,
                labels=labels,
                fitness=fitness,
                created_by=created_by,
                note=note,
            )
        )

    async def get_prompt(self, prompt_id: str) -> dict[str, Any]:
        return await self._send(Call("GET", f"/prompts/{segment(prompt_id)}"))

    async def list_prompts(
        self,
        *,
        agent: str | None = None,
        status: str | None = None,
        label: str | None = None,
        created_by: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        """One page `{items, next_cursor}`, newest version first."""
        return await self._send(
            self._list_prompts(
                agent=agent,
                status=status,
                label=label,
                created_by=created_by,
                cursor=cursor,
                limit=limit,
            )
        )

    async def prompt_lineage(self, prompt_id: str) -> dict[str, Any]:
        """`{prompt, ancestors, descendants}`, each with its status and fitness."""
        return await self._send(Call("GET", f"/prompts/{segment(prompt_id)}/lineage"))

    async def prompt_diff(self, prompt_id: str, against: str) -> dict[str, Any]:
        """`{from, to, diff}`: the unified diff from `against` to `prompt_id`."""
        return await self._send(self._prompt_diff(prompt_id, against))

    async def set_prompt_status(
        self,
        prompt_id: str,
        status: str,
        *,
        note: str | None = None,
        fitness: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """draft → experimental → candidate, or any → archived (409 names the allowed moves);
        `fitness` records the measurement that earned the move."""
        return await self._send(self._set_prompt_status(prompt_id, status, note, fitness))

    async def approve_prompt(self, prompt_id: str, *, note: str | None = None) -> dict[str, Any]:
        """Make a candidate (or an archived version: a rollback) the agent's production prompt."""
        return await self._send(self._approve_prompt(prompt_id, note))

    # labels
    async def set_label(self, agent: str, label: str, prompt_id: str) -> dict[str, Any]:
        """Point `label` at `prompt_id` (`production` moves only by approval)."""
        return await self._send(self._set_label(agent, label, prompt_id))

    async def list_labels(self, agent: str) -> dict[str, Any]:
        """`{items: [{agent, label, prompt_id, version, updated_at}], next_cursor: null}`."""
        return await self._send(Call("GET", f"/agents/{segment(agent)}/labels"))

    async def resolve_prompt(
        self, agent: str, *, label: str = "production", key: str | None = None
    ) -> dict[str, Any]:
        """The prompt `agent` should use now; during an A/B the variant `key` sticks to, with
        `experiment_id` and `variant` set. `instrumentation.get_prompt` caches this."""
        return await self._send(self._resolve_prompt(agent, label, key))

    # experiments
    async def create_experiment(
        self,
        agent: str,
        *,
        variants: Variants | None = None,
        kind: str = "ab",
        metric: str | None = None,
        baseline: str | None = None,
        target: Iterable[str] | None = None,
        control: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """Start an A/B (`variants` weighted to sum 1: `[{prompt_id, weight}]`,
        `[(prompt_id, weight)]` or `{prompt_id: weight}`) or a regression experiment
        (`baseline`, `target` and `control` example ids)."""
        return await self._send(
            self._create_experiment(
                agent,
                variants=variants,
                kind=kind,
                metric=metric,
                baseline=baseline,
                target=target,
                control=control,
            )
        )

    async def get_experiment(self, experiment_id: str) -> dict[str, Any]:
        """The experiment with its live per-variant results."""
        return await self._send(Call("GET", f"/experiments/{segment(experiment_id)}"))

    async def list_experiments(
        self,
        *,
        agent: str | None = None,
        status: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        return await self._send(
            self._list_experiments(agent=agent, status=status, cursor=cursor, limit=limit)
        )

    async def stop_experiment(
        self,
        experiment_id: str,
        *,
        winner: str | None = None,
        approve: bool = False,
        note: str | None = None,
    ) -> dict[str, Any]:
        """Stop it; `approve=True` also approves `winner` (a candidate) in the same call."""
        return await self._send(self._stop_experiment(experiment_id, winner, approve, note))

    async def add_experiment_results(
        self, experiment_id: str, results: Iterable[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """Regression results: `[{prompt_id, example_id, score, tokens?, latency_ms?}]`."""
        return await self._send(self._add_experiment_results(experiment_id, results))

    # markers
    async def list_markers(
        self,
        *,
        agent: str | None = None,
        kind: str | None = None,
        start_after: int | None = None,
        start_before: int | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        """Change markers (promotions, rollbacks, label moves, experiments), newest first;
        `start_after` / `start_before` are unix nanoseconds."""
        return await self._send(
            self._list_markers(
                agent=agent,
                kind=kind,
                start_after=start_after,
                start_before=start_before,
                cursor=cursor,
                limit=limit,
            )
        )

    # patterns
    async def list_patterns(
        self,
        *,
        agent: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        context: str | None = None,
        max_q: float | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        """One page of mined patterns, lowest q-value first (then the largest effect);
        `context` is `overall`, `agent:<name>` or `task:<name>`."""
        return await self._send(
            self._list_patterns(
                agent=agent,
                kind=kind,
                status=status,
                context=context,
                max_q=max_q,
                cursor=cursor,
                limit=limit,
            )
        )

    async def get_pattern(self, pattern_id: str) -> dict[str, Any]:
        """One pattern with its effect, evidence and explanation."""
        return await self._send(Call("GET", f"/patterns/{segment(pattern_id)}"))

    async def apply_pattern(self, pattern_id: str) -> dict[str, Any]:
        """Turn the pattern into an A/B experiment or a config proposal (409 says why not)."""
        return await self._send(self._apply_pattern(pattern_id))
