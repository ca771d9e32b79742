"""The worker (evolution_store/worker.py): the schedule as a pure function; a worker on a real
store (SQLite and Postgres) running a run-now request, storing the analysis report, recording
a failing job and going on, picking up requests while it serves, keeping its schedule across a
restart and coming sooner while success falls; and `evolution-store worker` itself — `--once`,
SIGTERM, bad flags."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from factories import pattern, task_in

from evolution_store import EvolutionStore
from evolution_store.cli import cli
from evolution_store.cli_worker import parse_interval
from evolution_store.models import ExecutionIn
from evolution_store.worker import (
    JobOutcome,
    Worker,
    WorkerSettings,
    consecutive_drops,
    interval,
    next_run_at,
    patterns_markdown,
    run_patterns,
)

HOUR = 3600.0

# -- the schedule -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rates", "drops"),
    [
        ([], 0),
        ([0.9], 0),
        ([0.9, 0.8], 1),
        ([0.9, 0.8, 0.7], 2),
        ([0.7, 0.9, 0.8], 1),  # only the drops that end with the newest count
        ([0.9, 0.8, 0.85], 0),  # recovering
        ([0.9, 0.895], 0),  # under MIN_DROP: noise
        ([0.9, None, 0.5], 1),
        ([0.9, 0.8, None], 1),  # an analysis without finished executions says nothing
    ],
)
def test_consecutive_drops(rates, drops) -> None:
    assert consecutive_drops(rates) == drops


def test_the_interval_halves_per_drop_down_to_the_floor() -> None:
    assert interval([0.9, 0.9], every=HOUR, min_every=300) == HOUR
    assert interval([0.9, 0.8], every=HOUR, min_every=300) == HOUR / 2
    assert interval([0.9, 0.8, 0.7], every=HOUR, min_every=300) == HOUR / 4
    falling = [1 - i / 10 for i in range(10)]
    assert interval(falling, every=HOUR, min_every=300) == 300
    assert interval(falling, every=120, min_every=300) == 120  # a floor above `every`


def test_next_run_at_follows_the_last_scheduled_run() -> None:
    assert next_run_at(None, [0.5, 0.1]) == 0.0  # never ran: due now
    assert next_run_at(1000.0, [], every=HOUR) == 1000.0 + HOUR
    assert next_run_at(1000.0, [0.9, 0.5], every=HOUR, min_every=60) == 1000.0 + HOUR / 2


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("1h", 3600), ("1.5d", 129600)]
)
def test_intervals_read_from_flags(text, seconds) -> None:
    assert parse_interval(text) == seconds


def test_a_mining_run_reads_as_markdown() -> None:
    found = [pattern("config.temperature <= 0.3", q=0.001, explanation="Cooler runs succeed.")]
    text = patterns_markdown(found, {"new": 1, "updated": 0, "stale": 2})
    assert text.startswith("# Patterns\n\n1 pattern(s) found: 1 new, 0 seen before, 2 no")
    assert "- **success** `config.temperature <= 0.3` (q = 0.001): Cooler runs succeed.\n" in text


# -- a worker on a real store -------------------------------------------------------------------


async def seed_executions(store: EvolutionStore, statuses: list[str]) -> None:
    for status in statuses:
        task, _ = await store.create_task(task_in())
        execution = await store.start_execution(task["id"], ExecutionIn())
        await store.set_execution_status(execution["id"], status)


async def test_a_run_now_request_is_run_and_its_report_stored(store: EvolutionStore) -> None:
    await seed_executions(store, ["succeeded"] * 4 + ["failed"])
    requested = await store.request_job_run("analysis")
    finished = await Worker(store, name="test-worker").run_requested()
    assert [run["id"] for run in finished] == [requested["id"]]
    run = await store.get_job_run(requested["id"])
    assert run["status"] == "succeeded" and run["worker"] == "test-worker"
    assert run["result"] == {"executions": 5, "success_rate": 0.8, "opportunities": ANY_INT}
    report = await store.get_report(run["report_id"])
    assert report["kind"] == "analysis" and report["job_run_id"] == run["id"]
    assert report["summary"]["executions"] == 5 and report["summary"]["success_rate"] == 0.8
    assert report["body"]["executions"]["total"] == 5
    assert report["markdown"] and report["has_html"]
    assert report["window"]["start"] is not None and report["window"]["end"] is not None
    assert "<html" in (await store.report_text(report["id"], "html")).lower()


class _AnyInt:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, int) and not isinstance(other, bool)


ANY_INT = _AnyInt()


async def failing(store: EvolutionStore, agent: str | None, run_id: str) -> JobOutcome:
    raise RuntimeError(f"no data for {agent}\nsecond line")


async def test_a_failing_job_is_recorded_and_the_worker_goes_on(store: EvolutionStore) -> None:
    seen: list[dict[str, Any]] = []
    jobs = {"analysis": failing, "patterns": run_patterns}
    worker = Worker(store, WorkerSettings(agent="support"), jobs=jobs, on_run=seen.append)
    finished = await worker.run_once()
    assert [(run["job"], run["status"]) for run in finished] == [
        ("analysis", "failed"),
        ("patterns", "succeeded"),
    ]
    assert finished[0]["error"] == "RuntimeError: no data for support"
    assert finished[1]["result"] == {"patterns": 0, "new": 0, "updated": 0, "stale": 0}
    assert (await store.get_report(finished[1]["report_id"]))["kind"] == "patterns"
    assert seen == finished
    assert all(run["trigger"] == "schedule" for run in finished)


async def test_a_serving_worker_picks_up_requests_and_stops(store: EvolutionStore) -> None:
    worker = Worker(store, WorkerSettings(poll=0.05))
    serving = asyncio.create_task(worker.serve())
    scheduled = await wait_for_runs(store, 2)  # both jobs were due at once
    assert {run["trigger"] for run in scheduled} == {"schedule"}
    requested = await store.request_job_run("patterns", agent="billing")
    done = await wait_for_status(store, requested["id"], "succeeded")
    assert done["agent"] == "billing" and done["report_id"]
    worker.stop()
    await asyncio.wait_for(serving, 60)
    assert (await store.list_job_runs(status="requested")).items == []


async def wait_for_runs(store: EvolutionStore, count: int) -> list[dict[str, Any]]:
    for _ in range(600):
        page = await store.list_job_runs(status="succeeded")
        if len(page.items) >= count:
            return page.items
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} runs succeeded: {page.items}")


async def wait_for_status(store: EvolutionStore, run_id: str, status: str) -> dict[str, Any]:
    for _ in range(600):
        run = await store.get_job_run(run_id)
        if run["status"] == status:
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} is still {run['status']}")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def report_with_rate(store: EvolutionStore, rate: float) -> None:
    await store.save_report(
        kind="analysis", agent=None, summary={"success_rate": rate}, body={"rate": rate}
    )


async def test_the_schedule_resumes_after_a_restart_and_comes_sooner_while_success_falls(
    store: EvolutionStore,
) -> None:
    clock = Clock(time.time())
    noop = {"analysis": _noop, "patterns": _noop}
    first = Worker(store, WorkerSettings(every=HOUR, min_every=60), jobs=noop, clock=clock)
    assert await first.request_due() == ["analysis", "patterns"]
    await first.run_requested()
    assert await first.request_due() == []  # not due again yet

    restarted = Worker(store, WorkerSettings(every=HOUR, min_every=60), jobs=noop, clock=clock)
    last = {job: await last_requested(store, job) for job in ("analysis", "patterns")}
    due = await restarted.due_times()
    assert due["analysis"] == pytest.approx(last["analysis"] + HOUR, abs=1e-3)
    clock.now = max(last.values()) + HOUR / 2 + 1
    assert await restarted.request_due() == []

    for rate in (0.9, 0.8, 0.7):  # two drops in a row: a quarter of the interval
        await report_with_rate(store, rate)
    assert (await restarted.due_times())["patterns"] == pytest.approx(
        last["patterns"] + HOUR / 4, abs=1e-3
    )
    assert await restarted.request_due() == ["analysis", "patterns"]
    await report_with_rate(store, 0.75)  # recovering: back to the full interval
    assert (await restarted.due_times())["analysis"] == pytest.approx(clock.now + HOUR, abs=1e-3)


async def last_requested(store: EvolutionStore, job: str) -> float:
    iso = (await store.list_job_runs(job=job, limit=1)).items[0]["requested_at"]
    return datetime.fromisoformat(iso).timestamp()


async def _noop(store: EvolutionStore, agent: str | None, run_id: str) -> JobOutcome:
    return JobOutcome()


# -- the command --------------------------------------------------------------------------------


def test_once_runs_each_job_and_exits(store_url: str) -> None:
    result = CliRunner().invoke(cli, ["worker", "--db", store_url, "--once"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("analysis (schedule) succeeded: executions 0")
    assert lines[1].startswith("patterns (schedule) succeeded: patterns 0")
    assert "; report " in lines[0] and "; report " in lines[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--every", "soon"], "not an interval"),
        (["--every", "0.5s"], "shorter than one second"),
        (["--db", "mysql://x/y"], "Error"),
    ],
)
def test_bad_flags_are_one_line(args, message) -> None:
    result = CliRunner().invoke(cli, ["worker", "--once", *args], catch_exceptions=False)
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output


def test_sigterm_stops_a_serving_worker(store_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "evolution_store", "worker", "--db", store_url, "--every", "1h"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
        text=True,
    )
    try:
        first = process.stdout.readline()  # the first scheduled run has finished
        assert first.startswith("analysis (schedule) succeeded"), process.stderr.read()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "Traceback" not in err
