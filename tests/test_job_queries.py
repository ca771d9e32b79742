"""The worker's reads (evolution_store/job_queries.py) on both backends: runs and reports
newest first with their filters and cursor pages, each job with its last run, and refused
filters."""

from __future__ import annotations

import pytest

from evolution_store import EvolutionStore, InvalidInput, NotFound


async def finished(store: EvolutionStore, job: str, status: str, **kwargs) -> dict:
    await store.request_job_run(job, **kwargs)
    run = await store.claim_job_run(worker="w", jobs=(job,))
    assert run is not None
    return await store.finish_job_run(run["id"], status=status)


async def test_runs_are_listed_newest_first_with_filters_and_pages(store) -> None:
    made = [
        await finished(store, "analysis", "succeeded", trigger="schedule"),
        await finished(store, "patterns", "failed"),
        await finished(store, "analysis", "failed", agent="support"),
        await store.request_job_run("patterns", trigger="schedule"),
    ]
    ids = [run["id"] for run in made]
    newest_first = ids[::-1]
    assert [run["id"] for run in (await store.list_job_runs()).items] == newest_first
    by_job = await store.list_job_runs(job="analysis")
    assert [run["id"] for run in by_job.items] == [ids[2], ids[0]]
    assert [run["id"] for run in (await store.list_job_runs(status="failed")).items] == [
        ids[2],
        ids[1],
    ]
    assert [run["id"] for run in (await store.list_job_runs(trigger="schedule")).items] == [
        ids[3],
        ids[0],
    ]
    assert [run["id"] for run in (await store.list_job_runs(agent="support")).items] == [ids[2]]

    first = await store.list_job_runs(limit=3)
    assert [run["id"] for run in first.items] == newest_first[:3]
    rest = await store.list_job_runs(limit=3, cursor=first.next_cursor)
    assert [run["id"] for run in rest.items] == newest_first[3:] and rest.next_cursor is None


async def test_each_job_is_listed_with_its_last_run(store) -> None:
    assert [(job["name"], job["last_run"]) for job in await store.list_jobs()] == [
        ("analysis", None),
        ("patterns", None),
    ]
    await finished(store, "analysis", "succeeded")
    last = await store.request_job_run("analysis")
    jobs = {job["name"]: job for job in await store.list_jobs()}
    assert jobs["analysis"]["last_run"]["id"] == last["id"]
    assert jobs["patterns"]["last_run"] is None and jobs["patterns"]["description"]


async def test_reports_are_listed_newest_first_by_summary(store) -> None:
    made = []
    for kind, agent in (("analysis", None), ("patterns", None), ("analysis", "support")):
        made.append(
            await store.save_report(
                kind=kind, agent=agent, summary={"n": len(made)}, body={"big": "x" * 1000}
            )
        )
    ids = [report["id"] for report in made]
    page = await store.list_reports()
    assert [report["id"] for report in page.items] == ids[::-1]
    assert all("body" not in report and "markdown" not in report for report in page.items)
    assert page.items[0]["summary"] == {"n": 2}
    assert [r["id"] for r in (await store.list_reports(kind="analysis")).items] == [
        ids[2],
        ids[0],
    ]
    assert [r["id"] for r in (await store.list_reports(agent="support")).items] == [ids[2]]
    first = await store.list_reports(limit=2)
    rest = await store.list_reports(limit=2, cursor=first.next_cursor)
    assert [r["id"] for r in [*first.items, *rest.items]] == ids[::-1]
    with pytest.raises(NotFound):
        await store.get_report("0000000000000000")
    with pytest.raises(NotFound):
        await store.report_text("0000000000000000", "markdown")


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"job": "compile"}, "job"),
        ({"status": "done"}, "status"),
        ({"trigger": "cron"}, "trigger"),
        ({"limit": 0}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
async def test_bad_run_filters_are_refused_naming_the_field(store, filters, field) -> None:
    with pytest.raises(InvalidInput) as refused:
        await store.list_job_runs(**filters)
    assert refused.value.field == field
