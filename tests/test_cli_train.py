"""`evolution-store train apo`: a real optimiser run against a fake OpenAI-compatible server the
test starts and an evaluate module written into `tmp_path`; the three files it writes, the
registry rows it records (both backends), the store as a dataset and a seed, progress on a
terminal and in a log, and one-line refusals."""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from factories import span_record

from evolution_store import EvolutionStore
from evolution_store.cli import cli
from evolution_store.cli_train import ProgressBar, split_examples
from evolution_store.learn import Progress
from evolution_store.learn.fake_llm import FakeChatServer, unreachable_base_url
from evolution_store.models import TaskIn
from evolution_store.registry_models import ApproveIn, PromptIn

SEED = "You answer {{ question }}."
#: The environment: each example needs one instruction; the feedback names only the symptom.
FIXES = {"cite": "Always cite your sources.", "brief": "Be brief.", "polite": "Be polite."}
EVALUATE = f"""
from evolution_store.learn import Evaluation

FIXES = {FIXES!r}


def evaluate(prompt, example):
    need = example["needs"]
    cost = dict(tokens=len(prompt) / 4, latency_ms=len(prompt) / 10)
    if FIXES[need] in prompt:
        return Evaluation(score=1.0, **cost)
    return Evaluation(score=0.0, feedback=f"the reply lacked: {{need}}", **cost)
"""


def reflect(messages: list[dict]) -> str:
    """A reflection LM that adds the instruction for every symptom the failures name."""
    text = "\n".join(message["content"] for message in messages)
    current = re.search(r"<current_prompt>\s*(.*?)\s*</current_prompt>", text, re.S)
    prompt = current.group(1) if current else SEED
    fixes = [fix for need, fix in FIXES.items() if f"lacked: {need}" in text and fix not in prompt]
    return "```\n" + "\n".join([prompt, *fixes]) + "\n```"


def examples(count: int) -> list[dict[str, Any]]:
    return [
        {"id": f"ex-{i}", "question": f"q{i}", "needs": list(FIXES)[i % len(FIXES)]}
        for i in range(count)
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`tmp_path` as the working directory, holding seed.j2, data.jsonl and an evaluate module
    (a fresh module name per test: the runner imports it into this process)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the command puts the cwd on it
    monkeypatch.delenv("EVOLUTION_STORE_URL", raising=False)
    (tmp_path / "seed.j2").write_text(SEED)
    write_jsonl(tmp_path / "data.jsonl", examples(12))
    (tmp_path / "module.txt").write_text(f"apo_eval_{uuid.uuid4().hex}")
    (tmp_path / f"{(tmp_path / 'module.txt').read_text()}.py").write_text(EVALUATE)
    return tmp_path


@pytest.fixture
def llm() -> Iterator[FakeChatServer]:
    with FakeChatServer(reflect) as server:
        yield server


def train(workdir: Path, *args: str, evaluate: str | None = None) -> Result:
    module = (workdir / "module.txt").read_text()
    flags = ["--evaluate", evaluate or f"{module}:evaluate"]
    return CliRunner().invoke(cli, ["train", "apo", "--agent", "support", *flags, *args])


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def refused(result: Result, exit_code: int = 1) -> str:
    """The error line of a command that failed: on stderr, no traceback."""
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1].startswith("Error: "), result.stderr
    return result.stderr.strip().splitlines()[-1]


def read_store(url: str, fn: Callable[[EvolutionStore], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        async with await EvolutionStore.open(url) as store:
            return await fn(store)

    return asyncio.run(run())


def outputs(out: Path) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    return (
        (out / "best_prompt.txt").read_text(),
        json.loads((out / "all_variants.json").read_text()),
        json.loads((out / "optimization_summary.json").read_text()),
    )


# -- a run, recorded (both backends) ------------------------------------------------------------


def test_apo_writes_its_three_files_and_the_registry_rows(
    workdir: Path, llm: FakeChatServer, store_url: str
) -> None:
    result = ok(
        train(
            workdir, "--seed-prompt", "seed.j2", "--dataset", "data.jsonl", "--budget", "60",
            "--llm-base-url", llm.base_url, "--db", store_url, "--out", "run",
        )
    )  # fmt: skip
    best_prompt, variants, summary = outputs(workdir / "run")

    # The files: the best prompt, every candidate, the summary.
    assert best_prompt == summary["best"]["prompt"]
    keys = {"id", "prompt", "parent_ids", "origin", "generation", "status", "success", "tokens"}
    assert all(keys | {"latency_ms"} <= set(variant) for variant in variants)
    assert variants[0]["origin"] == "seed" and variants[0]["prompt"] == SEED
    baseline, best_success = summary["baseline"]["success"], summary["best"]["success"]
    assert baseline == 0.0 and best_success > 0.5  # the environment is easy
    assert summary["improvement"] == best_success
    assert 0 < summary["calls_used"] <= 60 and summary["budget"] == 60
    assert {"generations", "population", "front", "spend"} <= set(summary)
    assert llm.calls > 0

    # The report says what happened and how to promote the winner.
    best_id = summary["best"]["id"]
    said = f"baseline 0.000 -> best {best_success:.3f} (+{best_success:.3f}) on 6 val examples"
    assert said in result.stdout
    assert f"evolution-store prompts approve {best_id}" in result.stdout
    assert "run/optimization_summary.json" in result.stdout
    assert "calls  best" in result.stderr  # plain progress lines: not a terminal

    # The registry: every candidate is an apo prompt with its lineage; nothing in production.
    async def registry(store: EvolutionStore) -> dict[str, Any]:
        prompts = (await store.list_prompts(agent="support", limit=1000)).items
        tasks = (await store.list_tasks(tag=f"apo-run:{summary['run_id']}", limit=1000)).items
        experiments = (await store.list_experiments(agent="support")).items
        return {"prompts": prompts, "tasks": tasks, "experiments": experiments}

    stored = read_store(store_url, registry)
    by_id = {prompt["id"]: prompt for prompt in stored["prompts"]}
    assert sorted(by_id) == sorted(variant["id"] for variant in variants)
    assert {prompt["created_by"] for prompt in stored["prompts"]} == {"apo"}
    assert "production" not in {prompt["status"] for prompt in stored["prompts"]}
    best = by_id[best_id]
    assert best["status"] == "candidate" and best["content"] == best_prompt
    assert best["parent_ids"] == summary["best"]["parent_ids"] and best["fitness"]["n"] == 6
    # Every example evaluated is a task of the run; every gate a regression experiment.
    assert {task["name"] for task in stored["tasks"]} == {"apo.evaluate"}
    assert {task["input"]["id"] for task in stored["tasks"]} == {f"ex-{i}" for i in range(12)}
    assert stored["experiments"] and {e["kind"] for e in stored["experiments"]} == {"regression"}


def test_apo_learns_from_the_store_starting_at_the_production_prompt(
    workdir: Path, llm: FakeChatServer, store_url: str
) -> None:
    async def production_traffic(store: EvolutionStore) -> str:
        prompt, _ = await store.create_prompt(
            PromptIn(agent="support", content=SEED, status="candidate")
        )
        await store.approve_prompt(prompt["id"], ApproveIn(), approved_by="local")
        for example in examples(6):
            await store.create_task(TaskIn(id=f"task-{example['id']}", input=example))
            attributes = {
                "evolution.task.id": f"task-{example['id']}",
                "gen_ai.agent.name": "support",
            }
            await store.ingest([span_record(attributes=attributes)])
        return prompt["id"]

    production_id = read_store(store_url, production_traffic)
    result = ok(
        train(
            workdir, "--from-registry", "--dataset", "store:agent=support,limit=4",
            "--budget", "40", "--llm-base-url", llm.base_url, "--db", store_url, "--out", "run",
        )
    )  # fmt: skip
    _, variants, summary = outputs(workdir / "run")
    assert f"seed: support v1 ({production_id}) [production]" in result.stderr
    # The seed is the production prompt itself (the same content is not stored twice) ...
    assert summary["baseline"]["id"] == production_id == variants[0]["id"]

    # ... and the examples were the four newest tasks' inputs, split two and two.
    async def evaluated(store: EvolutionStore) -> list[dict[str, Any]]:
        return (await store.list_tasks(tag=f"apo-run:{summary['run_id']}", limit=100)).items

    tasks = read_store(store_url, evaluated)
    assert {task["input"]["id"] for task in tasks} == {f"ex-{i}" for i in (2, 3, 4, 5)}
    assert summary["baseline"]["n"] == 2
    status = read_store(store_url, lambda store: store.get_prompt(production_id))["status"]
    assert status == "production"  # a learner never moves production


# -- without a store ----------------------------------------------------------------------------


def test_no_record_writes_only_the_files_and_json_prints_the_summary(
    workdir: Path, llm: FakeChatServer
) -> None:
    write_jsonl(workdir / "val.jsonl", examples(15)[12:])
    result = ok(
        train(
            workdir, "--seed-prompt", "seed.j2", "--dataset", "data.jsonl", "--valset",
            "val.jsonl", "--budget", "30", "--llm-base-url", llm.base_url, "--no-record",
            "--out", "nested/run", "--json",
        )
    )  # fmt: skip
    summary = json.loads(result.stdout)
    assert summary == outputs(workdir / "nested" / "run")[2]
    assert summary["baseline"]["n"] == 3  # scored on --valset; all of data.jsonl trains
    assert summary["best"]["id"].startswith("apo-")  # ids of an unrecorded run
    assert not (workdir / "evolution.db").exists()


def test_an_unreachable_llm_falls_back_with_one_warning(workdir: Path) -> None:
    result = ok(
        train(
            workdir, "--seed-prompt", "seed.j2", "--dataset", "data.jsonl", "--budget", "30",
            "--llm-base-url", unreachable_base_url(), "--no-record", "--out", "run",
        )
    )  # fmt: skip
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "heuristic" in warnings[0], result.stderr
    assert outputs(workdir / "run")[2]["calls_used"] <= 30


# -- refusals -----------------------------------------------------------------------------------


def test_refusals_are_one_line(workdir: Path, tmp_path: Path) -> None:
    common = ["--dataset", "data.jsonl", "--out", "run", "--no-record"]
    seed = ["--seed-prompt", "seed.j2"]
    assert "--seed-prompt FILE or --from-registry" in refused(train(workdir, *common), 2)
    both = train(workdir, *seed, "--from-registry", *common)
    assert "not both" in refused(both, 2)

    (workdir / "bad.jsonl").write_text('{"a": 1}\n\n[1, 2]\n')
    bad = train(workdir, *seed, "--dataset", "bad.jsonl", "--out", "run")
    assert refused(bad) == "Error: bad.jsonl line 3: expected a JSON object, not list"
    (workdir / "bad.jsonl").write_text('{"a": 1}\n{oops\n')
    not_json = train(workdir, *seed, "--dataset", "bad.jsonl", "--out", "run")
    assert "bad.jsonl line 2: not JSON" in refused(not_json)
    (workdir / "bad.jsonl").write_text('{"id": "x"}\n{"id": "x"}\n')
    twice = train(workdir, *seed, "--dataset", "bad.jsonl", "--out", "run")
    assert "line 2: id 'x' is already on line 1" in refused(twice)
    write_jsonl(workdir / "one.jsonl", examples(1))
    one = train(workdir, *seed, "--dataset", "one.jsonl", "--out", "run")
    assert "cannot be split" in refused(one)

    for source in ("store:limit=3", "store:agent=a,limit=0", "store:agent=a,who=b", "nope.jsonl"):
        assert "--dataset" in refused(train(workdir, *seed, "--dataset", source, "--out", "run"), 2)
    missing = train(workdir, *seed, *common, evaluate="no_such_module:evaluate")
    assert "cannot import 'no_such_module' for --evaluate: ModuleNotFoundError" in refused(missing)
    module = (workdir / "module.txt").read_text()
    assert "has no 'nope'" in refused(train(workdir, *seed, *common, evaluate=f"{module}:nope"))
    assert "module:function" in refused(train(workdir, *seed, *common, evaluate=module), 2)

    # The store is opened only when asked, and says what it lacks.
    db = ["--db", f"sqlite:///{tmp_path / 'empty.db'}"]
    no_prompt = train(workdir, "--from-registry", *db, "--dataset", "data.jsonl", "--out", "run")
    assert "agent 'support' has no prompt in the registry" in refused(no_prompt)
    no_tasks = train(workdir, *seed, *db, "--dataset", "store:agent=support", "--out", "run")
    assert refused(no_tasks) == "Error: agent 'support' has no tasks with an input stored"
    assert not (workdir / "run").exists()  # nothing is created before the inputs are read


def test_a_missing_learn_extra_names_the_install(workdir: Path) -> None:
    # A fresh interpreter in which DEAP cannot be imported, as on a base install.
    code = "import sys; sys.modules['deap'] = None; from evolution_store.cli import cli; cli()"
    args = ["train", "apo", "--agent", "a", "--seed-prompt", "seed.j2"]
    args += ["--dataset", "data.jsonl", "--evaluate", "m:f", "--out", "run"]
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == (
        "Error: train apo needs the learn extra (deap is not installed): "
        "pip install 'evolution-store[learn]'"
    )


# -- pieces -------------------------------------------------------------------------------------


def test_the_split_is_half_and_half_by_seed_and_train_gets_the_extra() -> None:
    rows = examples(7)
    train, val = split_examples(rows, seed=3)
    assert (len(train), len(val)) == (4, 3)
    assert sorted(r["id"] for r in train + val) == sorted(r["id"] for r in rows)
    assert split_examples(rows, seed=3) == (train, val)  # deterministic
    assert train == [r for r in rows if r in train]  # file order kept
    assert any(split_examples(rows, seed=s)[1] != val for s in range(4, 10))


def test_progress_redraws_on_a_terminal_and_prints_lines_in_a_log() -> None:
    steps = [Progress(calls, 100, best, 2, calls // 10) for calls, best in
             [(5, 0.2), (8, 0.2), (9, 0.4), (15, 0.4), (21, 0.4), (100, 0.5)]]  # fmt: skip
    terminal = io.StringIO()
    bar = ProgressBar(terminal, tty=True)
    for step in steps:
        bar(step)
    assert "\n" not in terminal.getvalue() and terminal.getvalue().count("\r[") == len(steps)
    assert terminal.getvalue().endswith("[########################] 100/100 calls  best 0.500  "
                                        "front 2  generation 10\x1b[K")  # fmt: skip
    bar.close()
    bar.close()
    assert terminal.getvalue().endswith("\x1b[K\n")

    log = io.StringIO()
    plain = ProgressBar(log, tty=False)
    for step in steps:
        plain(step)
    plain.close()
    # A line when the best changes or another tenth of the budget is spent; no redraws.
    calls = [int(line.split("/")[0]) for line in log.getvalue().splitlines()]
    assert calls == [5, 9, 15, 21, 100] and "\r" not in log.getvalue()
