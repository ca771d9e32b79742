"""`evolution-store train …`: learners run from a terminal, outside the server process, so long
CPU- or LLM-bound work never stalls ingest (DESIGN §7). `cli.py` adds the group.

`train apo` evolves an agent's prompt with `evolution_store.learn.optimize_prompt`: it reads
the seed prompt (a file, or the agent's production prompt from the registry) and the examples
(JSON Lines files, or the inputs of the agent's recent tasks in the store), runs the optimiser
with a progress bar on stderr, writes three files to `--out`, and records every candidate,
evaluation and gate in the store (`--db`, as the other commands), where a person approves one.

    evolution-store train apo --agent support --seed-prompt prompt.j2 \\
        --dataset examples.jsonl --evaluate my_eval:evaluate --budget 500 --out apo-run
    evolution-store train apo --agent support --from-registry \\
        --dataset store:agent=support,limit=200 --evaluate my_eval:evaluate --out apo-run

`train ppo` learns one decision's policy from the decisions an agent logged
(`evolution_store.learn.ppo.train_ppo`) and writes it where `instrumentation.Policy.load`
reads it:

    evolution-store train ppo --agent support --decision next_step --out ppo-run
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import random
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from .cli_registry import _call_store, _name, _store_url

if TYPE_CHECKING:
    from .learn.apo.candidates import OptimizeResult, Progress

#: `--dataset store:agent=NAME` without `limit=`: enough examples to tell prompts apart, few
#: enough that a budget of a few thousand calls covers several generations.
STORE_LIMIT = 200
OUTPUT_FILES = ("best_prompt.txt", "all_variants.json", "optimization_summary.json")
LEARN_EXTRA_HINT = "pip install 'evolution-store[learn]'"


@click.group()
def train() -> None:
    """Learners that improve an agent from its evaluations (they run here, never in the server)."""


# -- inputs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreSource:
    """`store:agent=NAME[,limit=N]`: the inputs of NAME's recent tasks, failed ones first."""

    agent: str
    limit: int = STORE_LIMIT


def parse_source(value: str, flag: str) -> Path | StoreSource:
    """A `--dataset`/`--valset` value: a JSON Lines file, or `store:agent=NAME[,limit=N]`."""
    if not value.startswith("store:"):
        path = Path(value)
        if not path.is_file():
            raise click.BadParameter(f"{value!r} is not a file", param_hint=flag)
        return path
    fields: dict[str, str] = {}
    for part in value.removeprefix("store:").split(","):
        key, sep, text = part.partition("=")
        if not sep or key.strip() not in ("agent", "limit") or not text.strip():
            raise click.BadParameter(
                f"{value!r}: expected store:agent=NAME[,limit=N]", param_hint=flag
            )
        fields[key.strip()] = text.strip()
    if "agent" not in fields:
        raise click.BadParameter(f"{value!r}: name the agent (store:agent=NAME)", param_hint=flag)
    limit = fields.get("limit", str(STORE_LIMIT))
    if not limit.isdigit() or not 1 <= int(limit) <= 1000:
        raise click.BadParameter(f"{value!r}: limit must be 1 to 1000", param_hint=flag)
    return StoreSource(fields["agent"], int(limit))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """One JSON object per line (blank lines skipped); a bad line, or an `id` given twice, is
    named by its number."""
    examples = []
    id_lines: dict[str, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except json.JSONDecodeError as exc:
            raise click.ClickException(f"{path} line {number}: not JSON ({exc.msg})") from exc
        if not isinstance(example, dict):
            kind = type(example).__name__
            raise click.ClickException(f"{path} line {number}: expected a JSON object, not {kind}")
        if "id" in example:  # ids name examples in the store: one id, one example
            first = id_lines.setdefault(str(example["id"]), number)
            if first != number:
                raise click.ClickException(
                    f"{path} line {number}: id {example['id']!r} is already on line {first}"
                )
        examples.append(example)
    if not examples:
        raise click.ClickException(f"{path} holds no examples")
    return examples


def task_examples(tasks: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stored tasks as examples: the input (wrapped as {"input": …} when not an object), with
    the task id as the example's `id` unless the input has one, so a recorded evaluation
    points back at the production task it came from."""
    examples = []
    for task in tasks:
        value = task["input"]
        example = dict(value) if isinstance(value, dict) else {"input": value}
        example.setdefault("id", task["id"])
        examples.append(example)
    return examples


def split_examples(
    examples: Sequence[dict[str, Any]], seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(trainset, valset): half each, chosen by `seed` (train gets the odd one), each kept in
    the order given so the files and the store read alike."""
    if len(examples) < 2:
        raise click.ClickException(
            "a dataset of one example cannot be split into train and val; add examples or "
            "give --valset"
        )
    chosen = set(random.Random(seed).sample(range(len(examples)), len(examples) // 2))
    train = [example for i, example in enumerate(examples) if i not in chosen]
    val = [example for i, example in enumerate(examples) if i in chosen]
    return train, val


def load_evaluate(spec: str) -> Callable[..., Any]:
    """`module:function` (the function may be `Class.attribute`), imported with the working
    directory on `sys.path`: a console script does not put it there, `python -m` would."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise click.BadParameter(f"{spec!r}: expected module:function", param_hint="--evaluate")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # the user's module runs here: any error is theirs to read
        raise click.ClickException(
            f"cannot import {module_name!r} for --evaluate: {type(exc).__name__}: {exc}"
        ) from exc
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise click.ClickException(f"--evaluate: {module_name!r} has no {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise click.ClickException(f"--evaluate: {spec} is not a function")
    return target


def needs_learn_extra(command: str, exc: ModuleNotFoundError) -> click.ClickException:
    """The one-line error for `command` when a learner's dependency (DEAP) is missing: the base
    install leaves the learners out. A missing module of our own is a bug, not an install
    matter: `exc` is raised again."""
    if not exc.name or exc.name.startswith("evolution_store"):
        raise exc
    return click.ClickException(
        f"{command} needs the learn extra ({exc.name} is not installed): {LEARN_EXTRA_HINT}"
    )


def _load_engine() -> Callable[..., OptimizeResult]:
    """`optimize_prompt`, or the one-line error naming the extra (`needs_learn_extra`)."""
    try:
        from .learn import optimize_prompt
    except ModuleNotFoundError as exc:
        raise needs_learn_extra("train apo", exc) from exc
    return optimize_prompt


async def _registry_prompt(store: Any, agent: str) -> dict[str, Any]:
    """The agent's production prompt, else its latest; by label, not `resolve_prompt`, so a
    running A/B experiment does not pick the seed."""
    for label in ("production", "latest"):
        page = await store.list_prompts(agent=agent, label=label, limit=1)
        if page.items:
            return page.items[0]
    raise click.ClickException(
        f"agent {agent!r} has no prompt in the registry; register one "
        "(evolution-store prompts create) or give --seed-prompt FILE"
    )


async def _stored_examples(store: Any, source: StoreSource) -> list[dict[str, Any]]:
    tasks = await store.agent_tasks(source.agent, limit=source.limit)
    if not tasks:
        raise click.ClickException(f"agent {source.agent!r} has no tasks with an input stored")
    return task_examples(tasks)


def _inputs(
    agent: str,
    seed_prompt: Path | None,
    train_source: Path | StoreSource,
    val_source: Path | StoreSource | None,
    *,
    seed: int,
    db: str | None,
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """(seed prompt, trainset, valset) from files and the store; the store, when any of them
    lives there, is opened once for all of them."""

    async def from_store(store: Any) -> dict[str, Any]:
        read: dict[str, Any] = {}
        if seed_prompt is None:
            read["seed"] = await _registry_prompt(store, agent)
        for name, source in (("train", train_source), ("val", val_source)):
            if isinstance(source, StoreSource):
                read[name] = await _stored_examples(store, source)
        return read

    stored_sources = [s for s in (train_source, val_source) if isinstance(s, StoreSource)]
    read = _call_store(db, from_store) if seed_prompt is None or stored_sources else {}
    if seed_prompt is not None:
        prompt = seed_prompt.read_text(encoding="utf-8")
    else:
        stored = read["seed"]
        prompt = stored["content"]
        click.echo(f"seed: {_name(stored)} [{stored['status']}]", err=True)
    if not prompt.strip():
        raise click.ClickException("the seed prompt is empty")

    def examples(name: str, source: Path | StoreSource) -> list[dict[str, Any]]:
        return read[name] if isinstance(source, StoreSource) else read_jsonl(source)

    if val_source is None:
        return (prompt, *split_examples(examples("train", train_source), seed))
    return prompt, examples("train", train_source), examples("val", val_source)


# -- progress and results -----------------------------------------------------------------------


class ProgressBar:
    """The optimiser's progress on `stream`: one line redrawn in place on a terminal; else a
    plain line when the best success changes or another tenth of the budget is spent, so a
    log keeps a short, readable history rather than a line (or a carriage return) per step."""

    WIDTH = 24
    STEPS = 10

    def __init__(self, stream: TextIO, *, tty: bool | None = None) -> None:
        self._stream = stream
        self._tty = stream.isatty() if tty is None else tty
        self._shown: tuple[int, float] | None = None  # (tenths of the budget, best success)
        self._drawn = False

    def __call__(self, progress: Progress) -> None:
        text = (
            f"{progress.calls_used}/{progress.budget} calls  best {progress.best_success:.3f}  "
            f"front {progress.front_size}  generation {progress.generation}"
        )
        if self._tty:
            share = progress.calls_used / progress.budget if progress.budget else 1.0
            filled = min(self.WIDTH, round(self.WIDTH * share))
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            # \x1b[K clears what a longer previous line left to the right.
            # color=True: click would strip the escape from a stream it thinks is no terminal.
            click.echo(f"\r[{bar}] {text}\x1b[K", file=self._stream, nl=False, color=True)
            self._drawn = True
            return
        tenths = progress.calls_used * self.STEPS // max(1, progress.budget)
        shown = (tenths, progress.best_success)
        if self._shown is None or tenths > self._shown[0] or shown[1] != self._shown[1]:
            self._shown = shown
            click.echo(text, file=self._stream)

    def close(self) -> None:
        """End the redrawn line, so what is printed next starts on a line of its own."""
        if self._drawn:
            click.echo("", file=self._stream)
            self._drawn = False


@contextlib.contextmanager
def _warnings_shown(bar: ProgressBar) -> Iterator[None]:
    """The optimiser's warnings (no LLM reachable, …) as one `warning:` line each on stderr
    when they happen, below the progress bar rather than through it."""

    def show(message: Warning | str, *args: Any, **kwargs: Any) -> None:
        bar.close()
        click.echo(f"warning: {message}", err=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def write_outputs(out: Path, result: OptimizeResult) -> list[Path]:
    """best_prompt.txt, all_variants.json (every candidate) and optimization_summary.json
    (`result.summary()`), as the first APO design wrote them."""
    documents: dict[str, Any] = {
        "all_variants.json": [candidate.to_dict() for candidate in result.candidates],
        "optimization_summary.json": result.summary(),
    }
    paths = [out / name for name in OUTPUT_FILES]
    paths[0].write_text(result.best.prompt, encoding="utf-8")
    for path in paths[1:]:
        text = json.dumps(documents[path.name], indent=2, ensure_ascii=False, default=str)
        path.write_text(text + "\n", encoding="utf-8")
    return paths


def _report(result: OptimizeResult, paths: Sequence[Path], recorded_in: str | None) -> None:
    summary = result.summary()
    best, baseline = result.best, result.baseline
    n = len(best.scores) or len(baseline.scores)
    click.echo(
        f"baseline {_score(baseline.success)} -> best {_score(best.success)} "
        f"({summary['improvement']:+.3f}) on {n} val examples"
    )
    seed = best.id == baseline.id
    which = "the seed prompt (no child passed the gate)" if seed else f"from {best.origin}"
    click.echo(
        f"best: {best.id} [{best.status}], {which}; {len(result.candidates)} candidates, "
        f"front of {len(result.front)}, {result.generations} generations"
    )
    spend = ", ".join(f"{phase} {calls}" for phase, calls in result.spend.items() if calls)
    click.echo(
        f"metric calls: {result.metric_calls} of {result.budget} ({spend or 'none'}); "
        f"LLM calls: {result.llm_calls}"
    )
    click.echo("wrote " + ", ".join(str(path) for path in paths))
    if recorded_in is not None:
        click.echo(f"recorded in {recorded_in} (run {result.run_id})")
        if best.status == "candidate":
            click.echo(f"to put it in production: evolution-store prompts approve {best.id}")


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


# -- the command --------------------------------------------------------------------------------


@train.command("apo")
@click.option("--agent", required=True, metavar="NAME", help="The agent whose prompt evolves.")
@click.option(
    "--seed-prompt",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="FILE",
    help="The prompt to start from (a Jinja2 template is fine).",
)
@click.option(
    "--from-registry",
    is_flag=True,
    help="Start from the agent's production prompt in the store (else its latest).",
)
@click.option(
    "--dataset",
    required=True,
    metavar="SOURCE",
    help="Examples: FILE.jsonl (one JSON object per line), or store:agent=NAME[,limit=N] for "
    f"the inputs of NAME's recent tasks in the store, failed ones first (limit 1-1000, default "
    f"{STORE_LIMIT}). Without --valset it is split in half by --seed.",
)
@click.option(
    "--valset",
    metavar="SOURCE",
    help="Validation examples (the Pareto front and the gate are measured on them); "
    "--dataset is then all training examples.",
)
@click.option(
    "--evaluate",
    "evaluate_spec",
    required=True,
    metavar="MODULE:FUNCTION",
    help="evaluate(prompt, example) -> Evaluation | float, sync or async; imported with the "
    "working directory on sys.path. One call is one metric call.",
)
@click.option(
    "--budget",
    type=click.IntRange(min=1),
    default=2000,
    metavar="N",
    show_default=True,
    help="Most metric calls (evaluate calls) to spend; never exceeded.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    metavar="N",
    show_default=True,
    help="Random seed (reproducible).",
)
@click.option(
    "--llm-base-url",
    metavar="URL",
    help="OpenAI-compatible base URL for reflective mutations. [default: "
    "$EVOLUTION_LLM_BASE_URL, else $OPENAI_BASE_URL, else http://127.0.0.1:1234/v1]",
)
@click.option("--llm-model", metavar="MODEL", help="Model name. [default: $EVOLUTION_LLM_MODEL]")
@click.option(
    "--max-llm-calls",
    type=click.IntRange(min=0),
    metavar="N",
    help="Cap on the optimiser's own LLM calls; past it, heuristic mutations only.",
)
@click.option(
    "--db",
    metavar="URL",
    help="Database URL: where the run is recorded, and --from-registry and store: datasets "
    "are read. [default: $EVOLUTION_STORE_URL, else sqlite:///./evolution.db]",
)
@click.option(
    "--no-record",
    is_flag=True,
    help="Write only the files in --out; record nothing in the store.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help=f"Directory for {', '.join(OUTPUT_FILES)} (created if missing).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print optimization_summary.json, not a report."
)
def apo(
    agent: str,
    seed_prompt: Path | None,
    from_registry: bool,
    dataset: str,
    valset: str | None,
    evaluate_spec: str,
    budget: int,
    seed: int,
    llm_base_url: str | None,
    llm_model: str | None,
    max_llm_calls: int | None,
    db: str | None,
    no_record: bool,
    out: Path,
    as_json: bool,
) -> None:
    """Evolve AGENT's prompt against an evaluation function (APO).

    A population of prompts is mutated by an LLM that reads the failures' feedback, by
    heuristics and by crossover, selected by NSGA-II over (success, tokens, latency) on the
    valset, and gated: a child is promoted to `candidate` only if it fixes failures without
    breaking what passed. Each candidate is a registry prompt (created_by apo); nothing
    reaches production without `prompts approve`. With no LLM reachable it falls back to
    heuristic mutations and says so once.
    """
    if seed_prompt is None and not from_registry:
        raise click.UsageError("give --seed-prompt FILE or --from-registry")
    if seed_prompt is not None and from_registry:
        raise click.UsageError("give --seed-prompt FILE or --from-registry, not both")
    optimize_prompt = _load_engine()  # first: a missing extra must not cost a database read
    train_source = parse_source(dataset, "--dataset")
    val_source = None if valset is None else parse_source(valset, "--valset")
    evaluate = load_evaluate(evaluate_spec)

    prompt, trainset, valset_examples = _inputs(
        agent, seed_prompt, train_source, val_source, seed=seed, db=db
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(f"cannot create {out}: {exc.strerror or exc}") from exc

    from .backends import redact_url
    from .errors import EvolutionStoreError
    from .learn.llm import default_base_url

    url = None if no_record else _store_url(db)
    tuning: dict[str, Any] = {} if max_llm_calls is None else {"max_llm_calls": max_llm_calls}
    bar = ProgressBar(sys.stderr)
    try:
        with _warnings_shown(bar):
            result = optimize_prompt(
                prompt,
                trainset,
                valset_examples,
                evaluate,
                llm=llm_base_url or default_base_url(),
                llm_model=llm_model,
                max_metric_calls=budget,
                seed=seed,
                store=url,
                agent=agent,
                progress=bar,
                **tuning,
            )
    except EvolutionStoreError as exc:
        raise click.ClickException(f"the run stopped: {exc}") from exc
    finally:
        bar.close()
    paths = write_outputs(out, result)
    if as_json:
        click.echo(json.dumps(result.summary(), indent=2, ensure_ascii=False, default=str))
    else:
        _report(result, paths, None if url is None else redact_url(url))
