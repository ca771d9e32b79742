"""`evolution-store analyze` end to end on a seeded store (both backends): the report in each
format, to stdout or a file; `--propose` against a fake OpenAI-compatible server makes at most
three drafts by "lab" and never touches production; a dead LLM costs only the proposals; bad
flags are one-line errors."""

from __future__ import annotations

import asyncio
import json
import socket

from analysis_seed import AGENT, seed
from click.testing import CliRunner, Result

from evolution_store import EvolutionStore
from evolution_store.cli import cli
from evolution_store.learn.fake_llm import FakeChatServer
from evolution_store.registry_models import ApproveIn, PromptIn

PROMPT = "You answer support questions. {{ question }}"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["analyze", *args])


async def _seeded(url: str, *, prompt: bool) -> str | None:
    """Seed the store; with `prompt`, give the agent a production prompt and return its id."""
    store = await EvolutionStore.open(url)
    try:
        await seed(store)
        if not prompt:
            return None
        made, _ = await store.create_prompt(
            PromptIn(agent=AGENT, content=PROMPT, status="candidate")
        )
        await store.approve_prompt(made["id"], ApproveIn(), approved_by="test")
        return made["id"]
    finally:
        await store.close()


async def _prompts(url: str) -> tuple[list[dict], dict]:
    store = await EvolutionStore.open(url)
    try:
        listed = (await store.list_prompts(agent=AGENT, limit=100)).items
        return listed, await store.resolve_prompt(AGENT)
    finally:
        await store.close()


def revise(messages: list[dict]) -> str:
    """A revision that names the problem it was asked about, so each draft differs."""
    problem = next(
        line for line in messages[-1]["content"].splitlines() if line.startswith("Problem")
    )
    return f"```\n{PROMPT}\nMind this: {problem}\n```"


def test_markdown_to_stdout_and_json_and_html_to_files(store_url, tmp_path):
    asyncio.run(_seeded(store_url, prompt=False))
    shown = invoke("--db", store_url)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith("# Lab report ")
    assert "20 executions (20 finished); success rate 70.0%" in shown.stdout
    assert "| 1 | error | TimeoutError: request \\<uuid> to \\<path>" in shown.stdout

    target = tmp_path / "report.json"
    written = invoke("--db", store_url, "--agent", AGENT, "--format", "json", "-o", str(target))
    assert written.exit_code == 0, written.output
    assert written.stdout == "" and f"written to {target}" in written.stderr
    report = json.loads(target.read_text())
    assert report["window"]["agent"] == AGENT and report["executions"]["succeeded"] == 14
    assert [o["kind"] for o in report["opportunities"]][:2] == ["error", "error"]

    page = tmp_path / "report.html"
    assert invoke("--db", store_url, "--format", "html", "-o", str(page)).exit_code == 0
    html = page.read_text()
    assert html.startswith("<!doctype html>") and "TimeoutError" in html and "<script" not in html


def test_propose_stores_at_most_three_lab_drafts_and_leaves_production(store_url):
    production = asyncio.run(_seeded(store_url, prompt=True))
    with FakeChatServer(revise) as server:
        result = invoke(
            "--db", store_url, "--propose", "--llm-base-url", server.base_url, "--format", "json"
        )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    proposals = report["proposals"]
    assert len(proposals) == 3 and server.calls == 3
    # Every run is the one agent's, so every opportunity, low success included, names it.
    assert {o["agent"] for o in report["opportunities"]} == {AGENT}
    top = [o["id"] for o in report["opportunities"][:3]]
    assert [p["opportunity"] for p in proposals] == top

    listed, resolved = asyncio.run(_prompts(store_url))
    drafts = {p["id"]: p for p in listed if p["created_by"] == "lab"}
    assert set(drafts) == {p["prompt_id"] for p in proposals}
    for proposal in proposals:
        draft = drafts[proposal["prompt_id"]]
        assert draft["status"] == "draft" and draft["parent_ids"] == [production]
        assert report["id"] in draft["note"] and proposal["opportunity"] in draft["note"]
        assert "Mind this: Problem" in draft["content"]
    assert resolved["id"] == production  # production is never changed by the lab
    assert "draft " in result.stderr


def test_a_dead_llm_costs_only_the_proposals(store_url):
    asyncio.run(_seeded(store_url, prompt=True))
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    result = invoke("--db", store_url, "--propose", "--llm-base-url", dead, "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["proposals"] == []
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "no usable reply" in notes[0]
    listed, _ = asyncio.run(_prompts(store_url))
    assert [p["created_by"] for p in listed] == ["human"]


def test_without_a_prompt_nothing_is_asked(store_url):
    asyncio.run(_seeded(store_url, prompt=False))
    with FakeChatServer(revise) as server:
        result = invoke("--db", store_url, "--propose", "--llm-base-url", server.base_url)
    assert result.exit_code == 0, result.output
    assert server.calls == 0
    assert "note: no prompt in the registry to revise for: support" in result.stderr


def test_bad_flags_are_one_line_errors(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = invoke("--db", url, "--since", "yesterday")
    assert result.exit_code == 2 and "neither an ISO-8601 time" in result.stderr
    result = invoke("--db", url, "--since", "2999-01-01")
    assert result.exit_code == 1 and result.stderr == "Error: since must be before until\n"
    result = invoke("--db", url, "--format", "pdf")
    assert result.exit_code == 2 and "Traceback" not in result.output
    result = invoke("--db", url, "-o", str(tmp_path / "missing" / "r.md"))
    assert result.exit_code == 1 and result.stderr.startswith("Error: cannot write")
