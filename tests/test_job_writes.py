"""The worker's writes (evolution_store/job_writes.py) through the store, on both backends: a
run requested once however often it is asked for, claimed by one worker only, finished once,
and reports stored as given; unknown jobs and bad values refused."""

from __future__ import annotations

import asyncio

import pytest

from evolution_store import Conflict, EvolutionStore, InvalidInput, NotFound


async def test_a_request_waits_for_a_worker_and_is_not_doubled(store: EvolutionStore) -> None:
    run = await store.request_job_run("analysis")
    assert run["job"] == "analysis" and run["status"] == "requested"
    assert run["trigger"] == "manual" and run["agent"] is None
    assert run["requested_at"] and run["started_at"] is None and run["finished_at"] is None
    again = await store.request_job_run("analysis", trigger="schedule")
    assert again["id"] == run["id"] and again["trigger"] == "manual"  # the waiting one
    other_agent = await store.request_job_run("analysis", agent="support")
    other_job = await store.request_job_run("patterns")
    assert len({run["id"], other_agent["id"], other_job["id"]}) == 3


async def test_claiming_takes_the_oldest_request_once(store: EvolutionStore) -> None:
    first = await store.request_job_run("patterns")
    second = await store.request_job_run("analysis", agent="support")
    claimed = await store.claim_job_run(worker="host:1")
    assert claimed is not None and claimed["id"] == first["id"]
    assert claimed["status"] == "running" and claimed["worker"] == "host:1"
    assert claimed["started_at"] is not None
    only_analysis = await store.claim_job_run(worker="host:2", jobs=("analysis",))
    assert only_analysis is not None and only_analysis["id"] == second["id"]
    assert await store.claim_job_run(worker="host:1") is None
    # Once claimed, "run now" asks for a new run instead of joining the running one.
    assert (await store.request_job_run("patterns"))["id"] != first["id"]


async def test_concurrent_claims_hand_each_run_to_one_worker(store: EvolutionStore) -> None:
    requested = [await store.request_job_run("analysis", agent=f"a{i}") for i in range(3)]
    claims = await asyncio.gather(*(store.claim_job_run(worker=f"w{i}") for i in range(6)))
    claimed = [claim["id"] for claim in claims if claim is not None]
    assert sorted(claimed) == sorted(run["id"] for run in requested)


async def test_claiming_one_run_by_id(store: EvolutionStore) -> None:
    first = await store.request_job_run("analysis")
    second = await store.request_job_run("patterns")
    claimed = await store.claim_job_run(worker="w", run_id=second["id"])
    assert claimed is not None and claimed["id"] == second["id"]
    assert await store.claim_job_run(worker="w", run_id=second["id"]) is None
    assert (await store.get_job_run(first["id"]))["status"] == "requested"


async def test_a_run_finishes_once_with_its_outcome(store: EvolutionStore) -> None:
    await store.request_job_run("patterns")
    run = await store.claim_job_run(worker="w")
    assert run is not None
    done = await store.finish_job_run(
        run["id"], status="succeeded", result={"new": 2, "updated": 1, "stale": 0}
    )
    assert done["status"] == "succeeded" and done["finished_at"] is not None
    assert done["result"] == {"new": 2, "updated": 1, "stale": 0} and done["error"] is None
    with pytest.raises(Conflict, match="succeeded, not running"):
        await store.finish_job_run(run["id"], status="failed", error="late")

    await store.request_job_run("analysis")
    failing = await store.claim_job_run(worker="w")
    assert failing is not None
    failed = await store.finish_job_run(failing["id"], status="failed", error="x" * 10_000)
    assert failed["status"] == "failed" and len(failed["error"]) == 4000


async def test_unknown_jobs_runs_and_values_are_refused(store: EvolutionStore) -> None:
    with pytest.raises(NotFound, match="the jobs are analysis, patterns"):
        await store.request_job_run("compile")
    with pytest.raises(InvalidInput) as refused:
        await store.request_job_run("analysis", trigger="cron")
    assert refused.value.field == "trigger"
    with pytest.raises(NotFound):
        await store.finish_job_run("0000000000000000", status="failed")
    requested = await store.request_job_run("analysis")
    with pytest.raises(Conflict, match="requested, not running"):
        await store.finish_job_run(requested["id"], status="succeeded")
    with pytest.raises(InvalidInput):
        await store.finish_job_run(requested["id"], status="running")
    with pytest.raises(NotFound):
        await store.get_job_run("nope")


async def test_a_report_is_stored_as_given(store: EvolutionStore) -> None:
    body = {"executions": 12, "success_rate": {"value": 0.75}, "notes": ["é", None]}
    report = await store.save_report(
        kind="analysis",
        agent="support",
        summary={"executions": 12, "success_rate": 0.75},
        body=body,
        markdown="# Analysis\n",
        html="<html><body>Analysis</body></html>",
        window=(1_700_000_000_000_000_000, 1_700_086_400_000_000_000),
        job_run_id="abc",
    )
    assert report["kind"] == "analysis" and report["agent"] == "support"
    assert report["body"] == body and report["markdown"] == "# Analysis\n"
    assert report["summary"] == {"executions": 12, "success_rate": 0.75}
    assert report["window"] == {"start": "2023-11-14T22:13:20Z", "end": "2023-11-15T22:13:20Z"}
    assert report["job_run_id"] == "abc" and report["has_html"] is True
    assert await store.report_text(report["id"], "html") == "<html><body>Analysis</body></html>"
    bare = await store.save_report(kind="patterns", agent=None, summary={}, body={})
    assert bare["has_html"] is False and bare["markdown"] is None
    assert bare["window"] == {"start": None, "end": None}
    assert await store.report_text(bare["id"], "html") is None


@pytest.mark.parametrize(
    ("kind", "summary", "body", "field"),
    [
        ("", {}, {}, "kind"),
        ("k" * 33, {}, {}, "kind"),
        ("analysis", [], {}, "summary"),
        ("analysis", {}, "text", "body"),
    ],
)
async def test_a_bad_report_is_refused(store, kind, summary, body, field) -> None:
    with pytest.raises(InvalidInput) as refused:
        await store.save_report(kind=kind, agent=None, summary=summary, body=body)
    assert refused.value.field == field


def _downgrade_on(connection, revision: str) -> None:
    from alembic import command

    from evolution_store.migrate import alembic_config

    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, revision)


async def test_the_migration_goes_down_and_up(store: EvolutionStore) -> None:
    import sqlalchemy as sa

    from evolution_store.migrate import upgrade_engine

    await store.request_job_run("analysis")
    engine = store._writer_engine  # noqa: SLF001 - migrations run on the writer's engine
    async with engine.begin() as conn:
        await conn.run_sync(_downgrade_on, "0007")
        tables = await conn.run_sync(lambda sync: set(sa.inspect(sync).get_table_names()))
        assert not tables & {"reports", "job_runs"}
    await upgrade_engine(engine)
    assert (await store.list_job_runs()).items == []
    assert (await store.request_job_run("analysis"))["status"] == "requested"
