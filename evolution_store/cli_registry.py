"""`evolution-store prompts …` and `evolution-store experiments …`: the prompt registry from a
terminal (DESIGN §7). `cli.py` adds the two groups to the `evolution-store` command.

Each command parses its flags, makes one call and prints. The call goes to the store
in-process (`--db URL`, default $EVOLUTION_STORE_URL, else ./evolution.db; opened and closed
around the call, as `db upgrade` does), or to a running server (`--url URL`, with `--api-key`
or $EVOLUTION_API_KEY) through `EvolutionClient`. Both answer the same dicts: `--json` prints
what the REST API returns, a terminal gets a table. A refused call is one line on stderr and
exit code 1 (404, 409 and 422 say what was missing, in conflict or invalid).

    evolution-store prompts create --agent support --file prompt.j2 --status candidate
    evolution-store prompts approve 3f2a9c0d1e4b5a67 --url http://127.0.0.1:8000
    evolution-store experiments start --agent support --variant 3f2a9c0d1e4b5a67:0.5 \\
        --variant 9b1c2d3e4f5a6b7c:0.5
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import click

#: who approves when the CLI opens the store itself (the server records a key's fingerprint)
LOCAL_APPROVER = "local"
STATUSES = ("draft", "experimental", "candidate", "production", "archived")
CREATORS = ("human", "apo", "pattern", "coach", "lab", "ppo")


# -- where the call goes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a command's one call goes (the store at `db` in-process, or the server at `url`)
    and how its answer is printed."""

    db: str | None
    url: str | None
    api_key: str | None
    as_json: bool = False

    def call(
        self,
        local: Callable[[Any], Awaitable[Any]],
        remote: Callable[[Any], Any],
    ) -> Any:
        """`await local(store)` on the opened store, or `remote(client)` on an
        `EvolutionClient`; a refusal becomes a one-line `ClickException`."""
        if self.url is not None:
            return _call_server(self.url, self.api_key, remote)
        return _call_store(self.db, local)

    def show(self, value: Any, render: Callable[[Any], None]) -> None:
        """The API's JSON with `--json`, else `render(value)` for a person."""
        if self.as_json:
            click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))
        else:
            render(value)


def _store_url(db: str | None) -> str:
    from pydantic import ValidationError

    from .config import Settings

    try:
        return (Settings(store_url=db) if db is not None else Settings()).store_url
    except ValidationError as exc:
        raise click.ClickException(f"invalid setting store_url: {exc.errors()[0]['msg']}") from exc


def _call_store(db: str | None, local: Callable[[Any], Awaitable[Any]]) -> Any:
    from pydantic import ValidationError

    from .backends import redact_url
    from .db_errors import first_line
    from .errors import Conflict, EvolutionStoreError, InvalidInput, NotFound
    from .store import EvolutionStore

    url = _store_url(db)

    async def run() -> Any:
        try:
            store = await EvolutionStore.open(url)
        except (EvolutionStoreError, OSError) as exc:
            _fail(f"cannot open {redact_url(url)}: {first_line(exc)}", exc)
        try:
            return await local(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except ValidationError as exc:
        _fail(_message(422, _validation_detail(exc)), exc)
    except EvolutionStoreError as exc:
        codes = ((NotFound, 404), (Conflict, 409), (InvalidInput, 422))
        status = next((code for cls, code in codes if isinstance(exc, cls)), 503)
        _fail(_message(status, str(exc)), exc)


def _call_server(url: str, api_key: str | None, remote: Callable[[Any], Any]) -> Any:
    from instrumentation import EvolutionClient, EvolutionClientError

    try:
        with EvolutionClient(url, api_key=api_key) as client:
            return remote(client)
    except EvolutionClientError as exc:
        if exc.status is None:
            _fail(f"cannot reach {url}: {exc}", exc)
        _fail(_message(exc.status, str(exc.detail)), exc)


def _validation_detail(exc: Any) -> str:
    """The first error of a pydantic `ValidationError`, shaped as the API's 422 detail."""
    first = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"])
    return f"{field}: {first['msg']}" if field else str(first["msg"])


def _message(status: int, detail: str) -> str:
    """One line for a refused call, the same whether the store or the server refused it."""
    if status == 404:
        return detail if "not found" in detail.lower() else f"not found: {detail}"
    if status == 401:
        return f"{detail} (pass --api-key or set EVOLUTION_API_KEY)"
    prefix = {409: "conflict", 422: "invalid input", 403: "refused", 503: "unavailable"}
    return f"{prefix.get(status, f'error {status}')}: {detail}"


def _fail(message: str, cause: BaseException) -> NoReturn:
    raise click.ClickException(message) from cause


_TARGET_OPTIONS = (
    click.option(
        "--json", "as_json", is_flag=True, help="Print the JSON the REST API answers, not a table."
    ),
    click.option(
        "--api-key",
        metavar="KEY",
        envvar="EVOLUTION_API_KEY",
        help="API key for --url. [default: $EVOLUTION_API_KEY]",
    ),
    click.option(
        "--url",
        metavar="URL",
        help="Call a running server (e.g. http://127.0.0.1:8000) instead of opening the database.",
    ),
    click.option(
        "--db",
        metavar="URL",
        help="Database URL, opened in-process. "
        "[default: $EVOLUTION_STORE_URL, else sqlite:///./evolution.db]",
    ),
)


def _command(group: click.Group, name: str) -> Callable[[Callable[..., None]], click.Command]:
    """`group.command(name)` that also takes `--db`, `--url`, `--api-key` and `--json`, and
    hands the command a `Target` made of them as its first argument, `where`."""

    def decorate(fn: Callable[..., None]) -> click.Command:
        @functools.wraps(fn)  # keeps the docstring (the help) and the command's own options
        def run(
            *, db: str | None, url: str | None, api_key: str | None, as_json: bool, **kwargs: Any
        ) -> None:
            if db is not None and url is not None:
                raise click.UsageError(
                    "give --db (open the database) or --url (a server), not both"
                )
            fn(Target(db=db, url=url, api_key=api_key, as_json=as_json), **kwargs)

        # Click lists options in reverse order of this list: the command's own come first.
        own = getattr(fn, "__click_params__", [])
        run.__click_params__ = []  # type: ignore[attr-defined]
        for option in _TARGET_OPTIONS:
            run = option(run)
        run.__click_params__.extend(own)  # type: ignore[attr-defined]
        return group.command(name)(run)

    return decorate


# -- printing -----------------------------------------------------------------------------------


def _table(columns: Sequence[tuple[str, str]], items: Sequence[dict[str, Any]]) -> None:
    """`items` as a table: `columns` are (header, dotted key) pairs."""
    cells = [[_cell(_get(item, key)) for _, key in columns] for item in items]
    headers = [header for header, _ in columns]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    for row in [headers, ["-" * w for w in widths], *cells]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _fields(pairs: Sequence[tuple[str, Any]]) -> None:
    width = max(len(name) for name, _ in pairs)
    for name, value in pairs:
        click.echo(f"{name.ljust(width)}  {_cell(value)}")


def _get(item: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        item = (item or {}).get(part)
    return item


def _cell(value: Any) -> str:
    if value is None or value == []:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value):
        return f"[{value[0]:.4g}, {value[1]:.4g}]"  # an interval
    if isinstance(value, list):
        return ", ".join(_cell(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _when(iso: str | None) -> str | None:
    """An API time (ISO 8601) to the second, for a person."""
    return None if iso is None else iso[:19].replace("T", " ")


def _name(prompt: dict[str, Any]) -> str:
    return f"{prompt['agent']} v{prompt['version']} ({prompt['id']})"


def _by(when: str | None, who: str | None) -> str | None:
    return None if who is None else f"{_when(when)} by {who}"


def _prompt_card(prompt: dict[str, Any]) -> None:
    keys = ("id", "agent", "version", "status", "labels", "parent_ids", "fitness")
    _fields(
        [
            *((key.replace("parent_ids", "parents"), prompt[key]) for key in keys),
            ("created", _by(prompt["created_at"], prompt["created_by"])),
            ("approved", _by(prompt["approved_at"], prompt["approved_by"])),
            ("note", prompt["note"]),
        ]
    )
    click.echo()
    click.echo(prompt["content"])


PROMPT_COLUMNS = tuple(
    (key, key) for key in ("id", "agent", "version", "status", "labels", "created_by", "created")
)
LINEAGE_COLUMNS = tuple(
    (key.replace("parent_ids", "parents"), key)
    for key in ("relation", "id", "version", "status", "labels", "parent_ids", "fitness")
)
AB_COLUMNS = tuple(
    (name, name)
    for name in ("weight", "n", "mean", "stdev", "ci95", "tokens", "latency_ms", "p_value")
)
REGRESSION_COLUMNS = tuple(
    (f"{side} {name}", f"{side}.{name}")
    for side in ("target", "control")
    for name in ("n", "success", "ci95")
) + (("tokens", "tokens"), ("latency_ms", "latency_ms"))


def _experiment_card(experiment: dict[str, Any]) -> None:
    pairs: list[tuple[str, Any]] = [
        (key, experiment[key]) for key in ("id", "agent", "kind", "status")
    ]
    if experiment["kind"] == "ab":
        pairs.append(("metric", experiment.get("metric") or "all rewards"))
    else:
        pairs.append(("baseline", experiment.get("baseline")))
        pairs += [(side, f"{len(experiment.get(side) or [])} examples") for side in
                  ("target", "control")]  # fmt: skip
    pairs += [
        ("winner", experiment.get("winner")),
        ("started", _when(experiment.get("created_at"))),
        ("stopped", _when(experiment.get("stopped_at"))),
    ]
    _fields(pairs)
    click.echo()
    results = experiment.get("results") or []
    columns = AB_COLUMNS if experiment["kind"] == "ab" else REGRESSION_COLUMNS
    if results:
        _table((("prompt", "prompt_id"), *columns), results)
    else:
        click.echo("no results yet")


# -- prompts ------------------------------------------------------------------------------------


@click.group()
def prompts() -> None:
    """The prompt registry: immutable versions, lifecycle, approval and rollback.

    Every command takes --db URL (open the database in-process; the default) or --url URL (a
    running server, with --api-key or $EVOLUTION_API_KEY), and --json for scripts.
    """


def _show_page(page: dict[str, Any]) -> None:
    if not page["items"]:
        click.echo("no prompts")
        return
    _table(PROMPT_COLUMNS, [{**p, "created": _when(p["created_at"])} for p in page["items"]])
    if page.get("next_cursor"):
        click.echo(f"more: --cursor {page['next_cursor']}")


@_command(prompts, "list")
@click.option("--agent", metavar="AGENT", help="Only this agent's prompts.")
@click.option("--status", type=click.Choice(STATUSES), help="Only prompts with this status.")
@click.option("--label", metavar="LABEL", help="Only the prompts this label names.")
@click.option("--created-by", type=click.Choice(CREATORS), help="Only prompts made by these.")
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="Page size."
)
@click.option("--cursor", metavar="CURSOR", help="Next page: the cursor the last page printed.")
def list_prompts(where: Target, **filters: Any) -> None:
    """List prompts, newest first.

    Ordered by agent, then version (highest first); filters combine."""
    page = where.call(
        lambda store: store.list_prompts(**filters),
        lambda client: client.list_prompts(**filters),
    )
    if not isinstance(page, dict):  # the store's `Page`
        page = {"items": page.items, "next_cursor": page.next_cursor}
    where.show(page, _show_page)


@_command(prompts, "show")
@click.argument("prompt_id", metavar="ID")
def show_prompt(where: Target, prompt_id: str) -> None:
    """Show one prompt and its content.

    With its status, labels, parents, fitness, approval and note."""
    prompt = where.call(
        lambda store: store.get_prompt(prompt_id),
        lambda client: client.get_prompt(prompt_id),
    )
    where.show(prompt, _prompt_card)


@_command(prompts, "create")
@click.option("--agent", required=True, metavar="AGENT", help="The agent the prompt is for.")
@click.option("--content", metavar="TEXT", help="The prompt: a Jinja2 template.")
@click.option(
    "--file",
    "content_file",
    type=click.File("r", encoding="utf-8"),
    metavar="PATH",
    help="Read the prompt from a file ('-' for stdin) instead of --content.",
)
@click.option(
    "--parent", "parent_ids", multiple=True, metavar="ID", help="A prompt it derives from (repeat)."
)
@click.option(
    "--status",
    type=click.Choice(("draft", "experimental", "candidate")),
    default="draft",
    show_default=True,
    help="Where the new version starts in the lifecycle.",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="LABEL",
    help="A label to point at the new version (repeat; not production or latest).",
)
@click.option(
    "--created-by",
    type=click.Choice(CREATORS),
    default="human",
    show_default=True,
    help="Who made it: a person, or a learner.",
)
@click.option("--note", metavar="TEXT", help="Why this version exists.")
def create_prompt(
    where: Target, agent: str, content: str | None, content_file: Any, **fields: Any
) -> None:
    """Register a new version of a prompt.

    The new version of AGENT's prompt gets the next version number and the label `latest`.
    Posting the same agent, content and parents again returns the stored version.
    """
    if (content is None) == (content_file is None):
        raise click.UsageError("give the prompt with --content TEXT or --file PATH (one of them)")
    text = content if content is not None else content_file.read()
    fields.update(parent_ids=list(fields["parent_ids"]), labels=list(fields["labels"]))

    async def local(store: Any) -> tuple[dict[str, Any], bool | None]:
        from .registry_models import PromptIn

        return await store.create_prompt(PromptIn(agent=agent, content=text, **fields))

    prompt, created = where.call(
        local, lambda client: (client.create_prompt(agent, text, **fields), None)
    )
    said = {True: "created", False: "already stored:", None: "stored"}[created]
    where.show(
        prompt,
        lambda p: click.echo(f"{said} {_name(p)} [{p['status']}]; labels: {_cell(p['labels'])}"),
    )


@_command(prompts, "status")
@click.argument("prompt_id", metavar="ID")
@click.argument("status", metavar="STATUS", type=click.Choice(STATUSES))
@click.option("--note", metavar="TEXT", help="Why (stored on the prompt).")
def set_status(where: Target, prompt_id: str, status: str, note: str | None) -> None:
    """Move a prompt along its lifecycle.

    Prompt ID moves to STATUS: draft → experimental → candidate, or any → archived.
    Production is reached only through `prompts approve`; other moves are refused with the
    allowed ones named.
    """

    async def local(store: Any) -> dict[str, Any]:
        from .registry_models import PromptStatusIn

        return await store.set_prompt_status(prompt_id, PromptStatusIn(status=status, note=note))

    prompt = where.call(
        local, lambda client: client.set_prompt_status(prompt_id, status, note=note)
    )
    where.show(prompt, lambda p: click.echo(f"{_name(p)} is {p['status']}"))


@_command(prompts, "approve")
@click.argument("prompt_id", metavar="ID")
@click.option("--note", metavar="TEXT", help="Why it was approved (stored on the prompt).")
def approve(where: Target, prompt_id: str, note: str | None) -> None:
    """Make ID production: approve a candidate, or roll back.

    ID must be a candidate, or an archived version (a rollback). The previous production
    prompt is archived and the `production` label moves. The approver is recorded: "local"
    with --db, the API key's fingerprint with --url (a read-only key is refused).
    """

    async def local(store: Any) -> dict[str, Any]:
        from .registry_models import ApproveIn

        return await store.approve_prompt(
            prompt_id, ApproveIn(note=note), approved_by=LOCAL_APPROVER
        )

    prompt = where.call(local, lambda client: client.approve_prompt(prompt_id, note=note))
    where.show(
        prompt,
        lambda p: click.echo(
            f"{_name(p)} is {p['status']}, approved by {p['approved_by']} "
            f"at {_when(p['approved_at'])}"
        ),
    )


def _show_diff(result: dict[str, Any]) -> None:
    same = f"{result['from']} and {result['to']} have the same content"
    click.echo(result["diff"].rstrip("\n") or same)


@_command(prompts, "diff")
@click.argument("prompt_id", metavar="ID")
@click.option("--against", required=True, metavar="OTHER", help="The prompt to compare ID with.")
def diff(where: Target, prompt_id: str, against: str) -> None:
    """Unified diff of two prompts, from OTHER to ID."""
    result = where.call(
        lambda store: store.prompt_diff(prompt_id, against),
        lambda client: client.prompt_diff(prompt_id, against),
    )
    where.show(result, _show_diff)


def _show_lineage(result: dict[str, Any]) -> None:
    rows = [
        *({**p, "relation": "ancestor"} for p in result["ancestors"]),
        {**result["prompt"], "relation": "this"},
        *({**p, "relation": "descendant"} for p in result["descendants"]),
    ]
    _table(LINEAGE_COLUMNS, rows)


@_command(prompts, "lineage")
@click.argument("prompt_id", metavar="ID")
def lineage(where: Target, prompt_id: str) -> None:
    """Ancestors and descendants of a prompt.

    Each with its status, labels and fitness."""
    result = where.call(
        lambda store: store.prompt_lineage(prompt_id),
        lambda client: client.prompt_lineage(prompt_id),
    )
    where.show(result, _show_lineage)


# -- experiments --------------------------------------------------------------------------------


@click.group()
def experiments() -> None:
    """A/B and regression experiments between prompt versions.

    Every command takes --db URL (open the database in-process; the default) or --url URL (a
    running server, with --api-key or $EVOLUTION_API_KEY), and --json for scripts.
    """


def _variants(values: Sequence[str]) -> list[dict[str, Any]]:
    """`ID:WEIGHT` pairs; variants given without weights share the rest equally."""
    parsed: list[tuple[str, float | None]] = []
    for value in values:
        prompt_id, sep, weight = value.rpartition(":")
        if not sep:
            parsed.append((value, None))
            continue
        try:
            parsed.append((prompt_id, float(weight)))
        except ValueError:
            raise click.BadParameter(
                f"{value!r}: the weight after ':' must be a number", param_hint="--variant"
            ) from None
    given = sum(weight for _, weight in parsed if weight is not None)
    unweighted = sum(weight is None for _, weight in parsed)
    share = max(0.0, 1.0 - given) / unweighted if unweighted else 0.0
    return [
        {"prompt_id": prompt_id, "weight": share if weight is None else weight}
        for prompt_id, weight in parsed
    ]


@_command(experiments, "start")
@click.option("--agent", required=True, metavar="AGENT", help="The agent whose prompts compete.")
@click.option(
    "--kind",
    type=click.Choice(("ab", "regression")),
    default="ab",
    show_default=True,
    help="ab: split live traffic; regression: a record the optimiser fills with results.",
)
@click.option(
    "--variant",
    "variants",
    multiple=True,
    metavar="ID:WEIGHT",
    help="A prompt and its share of traffic (repeat; weights sum to 1; without weights the "
    "variants share equally). The first variant is the one the others are tested against.",
)
@click.option("--metric", metavar="NAME", help="Compare rewards of this name only (ab).")
@click.option("--baseline", metavar="ID", help="The prompt a regression run starts from.")
@click.option("--target", multiple=True, metavar="EX", help="A target example id (regression).")
@click.option("--control", multiple=True, metavar="EX", help="A control example id (regression).")
def start_experiment(where: Target, agent: str, **fields: Any) -> None:
    """Start an A/B or regression experiment.

    While an A/B experiment runs, `GET /agents/{agent}/prompt` (and `get_prompt` in the
    agent) hands each key a variant by weight, the same one every time; results come from the
    rewards of executions whose config.prompt_id is a variant. One A/B per agent at a time.
    """
    fields["variants"] = _variants(fields["variants"])
    fields.update(target=list(fields["target"]), control=list(fields["control"]))

    async def local(store: Any) -> dict[str, Any]:
        from .registry_models import ExperimentIn

        return await store.create_experiment(ExperimentIn(agent=agent, **fields))

    experiment = where.call(local, lambda client: client.create_experiment(agent, **fields))
    where.show(experiment, _experiment_card)


@_command(experiments, "show")
@click.argument("experiment_id", metavar="ID")
def show_experiment(where: Target, experiment_id: str) -> None:
    """Show an experiment and its live results.

    Per variant: n, mean, stdev, ci95, tokens, latency and the p-value against the first
    variant (A/B), or target and control success with intervals (regression)."""
    experiment = where.call(
        lambda store: store.get_experiment(experiment_id),
        lambda client: client.get_experiment(experiment_id),
    )
    where.show(experiment, _experiment_card)


@_command(experiments, "stop")
@click.argument("experiment_id", metavar="ID")
@click.option("--winner", metavar="ID", help="The variant that won.")
@click.option(
    "--approve",
    is_flag=True,
    help="Also approve the winner (a candidate) as the agent's production prompt.",
)
@click.option("--note", metavar="TEXT", help="Why it was stopped.")
def stop_experiment(where: Target, experiment_id: str, **stop: Any) -> None:
    """Stop an experiment, optionally naming a winner.

    With --approve, the winner (a candidate) becomes production in the same call."""

    async def local(store: Any) -> dict[str, Any]:
        from .registry_models import ExperimentStopIn

        change = ExperimentStopIn(**stop)
        return await store.stop_experiment(experiment_id, change, approved_by=LOCAL_APPROVER)

    experiment = where.call(local, lambda client: client.stop_experiment(experiment_id, **stop))
    where.show(experiment, _experiment_card)
