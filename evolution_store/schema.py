"""Tables, in SQLAlchemy Core. The schema changes only through `migrations/`; this module is
what the migrations were written from and what queries and the writer are built on.

JSON-valued columns are `Text` holding JSON: the writer serialises each value once, and
Postgres COPY takes the text as is. Timestamps are integers in Unix nanoseconds, like OTel.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()


def Varchar(length: int) -> sa.String:  # noqa: N802 - a column type, named like one
    """VARCHAR(length) compared byte by byte on both backends: SQLite's default (BINARY), and
    on Postgres the "C" collation (migration 0003). Ids, tags, keys and names need no
    language's sort order, and Postgres compares in the database's locale otherwise: a
    `strcoll` on every b-tree comparison, a measurable share of its CPU on span ingest
    (bench/README.md, 'Collation "C"'). Both backends also sort these columns alike."""
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


# SQLite only aliases the rowid for INTEGER PRIMARY KEY, so the surrogate key is INTEGER there
# and BIGINT (identity) on Postgres.
BigPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", Varchar(200), primary_key=True),
    sa.Column("name", Varchar(500), nullable=False),
    sa.Column("input", sa.Text, nullable=True),
    sa.Column("status", Varchar(16), nullable=False),
    sa.Column("metadata", sa.Text, nullable=False, server_default="{}"),
    sa.Column("tags", sa.Text, nullable=False, server_default="[]"),
    # The per-task span counter: the writer advances it to hand out `spans.sequence`.
    sa.Column("span_count", sa.BigInteger, nullable=False, server_default="0"),
    # "api" when created by a caller, "span" when created on the fly by an arriving span; a
    # later explicit create fills in the name and input the span could not know.
    sa.Column("origin", Varchar(8), nullable=False, server_default="api"),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Index("ix_tasks_created", "created_at", "id"),
    sa.Index("ix_tasks_status_created", "status", "created_at"),
)

task_tags = sa.Table(
    "task_tags",
    metadata,
    sa.Column("tag", Varchar(200), primary_key=True),
    sa.Column("task_id", Varchar(200), primary_key=True),
)

executions = sa.Table(
    "executions",
    metadata,
    sa.Column("id", Varchar(200), primary_key=True),
    sa.Column("task_id", Varchar(200), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("status", Varchar(16), nullable=False),
    sa.Column("config", sa.Text, nullable=False, server_default="{}"),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("ended_at", sa.BigInteger, nullable=True),
    sa.Column("origin", Varchar(8), nullable=False, server_default="api"),
    sa.UniqueConstraint("task_id", "attempt", name="uq_executions_task_attempt"),
    # The pattern learner reads executions newest first, from a time on (migration 0007).
    sa.Index("ix_executions_created", "created_at", "id"),
)

spans = sa.Table(
    "spans",
    metadata,
    sa.Column("pk", BigPK, primary_key=True, autoincrement=True),
    sa.Column("trace_id", Varchar(32), nullable=False),
    sa.Column("span_id", Varchar(16), nullable=False),
    sa.Column("parent_span_id", Varchar(16), nullable=True),
    sa.Column("name", Varchar(1000), nullable=False),
    sa.Column("kind", Varchar(16), nullable=False),
    sa.Column("start_time", sa.BigInteger, nullable=False),
    sa.Column("end_time", sa.BigInteger, nullable=True),
    sa.Column("duration_ns", sa.BigInteger, nullable=True),
    sa.Column("status_code", Varchar(8), nullable=False),
    sa.Column("status_message", sa.Text, nullable=False),
    sa.Column("attributes", sa.Text, nullable=False),
    sa.Column("events", sa.Text, nullable=False),
    sa.Column("links", sa.Text, nullable=False),
    sa.Column("resource", sa.Text, nullable=False),
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("task_id", Varchar(200), nullable=False),
    sa.Column("execution_id", Varchar(200), nullable=False),
    sa.Column("sequence", sa.BigInteger, nullable=False),
    sa.Column("tags", sa.Text, nullable=False),
    sa.Column("agent", Varchar(500), nullable=True),
    sa.Column("operation", Varchar(100), nullable=True),
    sa.Column("model", Varchar(500), nullable=True),
    sa.Column("input_tokens", sa.BigInteger, nullable=True),
    sa.Column("output_tokens", sa.BigInteger, nullable=True),
    sa.Column("cost", sa.Float, nullable=True),
    sa.Column("ingested_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("trace_id", "span_id", name="uq_spans_identity"),
    # by span id alone: `ix_spans_bucket_span_id`, below
    sa.Index("ix_spans_task_sequence", "task_id", "sequence"),
    sa.Index("ix_spans_agent_start", "agent", "start_time"),
)

span_tags = sa.Table(
    "span_tags",
    metadata,
    sa.Column("tag", Varchar(200), primary_key=True),
    sa.Column("span_pk", sa.BigInteger, primary_key=True),
    # Several rows per span: keyed by the primary key alone, SQLite writes one b-tree less.
    # No index by span: a span's tags are read from `spans.tags`, the same list as JSON.
    sqlite_with_rowid=False,
)

# The attribute index: (key, value) -> span, for the link keys and every key a reward selector
# has used. It makes selector resolution and `attribute=key:value` filters index lookups
# instead of scans over every span's JSON. A pair is stored as its 64-bit digest
# (`span_rows.attribute_digest`), not as text: smaller entries make a smaller index, of which
# each commit rewrites fewer pages (migration 0004). Its key leads with the span's bucket
# (`span_bucket`).
span_attributes = sa.Table(
    "span_attributes",
    metadata,
    sa.Column("bucket", sa.Integer, primary_key=True),
    sa.Column("digest", sa.BigInteger, primary_key=True),
    sa.Column("span_pk", sa.BigInteger, primary_key=True),
    sqlite_with_rowid=False,
)

#: Spans are numbered in the order they arrive (`spans.pk`); each run of 2**16 of them is a
#: bucket. The two indexes whose keys are random for every span — span ids and attribute
#: digests — lead with the bucket, so a group's new entries all land in the newest bucket's
#: part of each b-tree. Keyed on the random value alone, each commit would touch nearly every
#: page of both indexes, and SQLite writes every page a commit touched: the cost of a span
#: would grow with the store (bench/README.md, "Bucketed indexes"). A lookup by span id or
#: digest probes each bucket in use (`in_span_buckets`): one index probe per 65,536 spans
#: stored.
SPAN_BUCKET_BITS = 16


def span_bucket(pk: int) -> int:
    """The bucket of the span whose primary key is `pk`."""
    return pk >> SPAN_BUCKET_BITS


def _bucket_sql(pk: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    # `span_bucket` in SQL. The shift is written out, not bound: SQLite uses an index on an
    # expression only for the very same expression, and a bound parameter is not the same.
    return pk.op(">>")(sa.literal_column(str(SPAN_BUCKET_BITS)))


_BUCKET_OF_PK = _bucket_sql(spans.c.pk)

# Span ids, by bucket (`by_span_id`).
sa.Index("ix_spans_bucket_span_id", _BUCKET_OF_PK, spans.c.span_id)


def _buckets_in_use() -> sa.Select[Any]:
    # 0 up to the newest span's bucket, counted by a recursive CTE nested in the subquery, so
    # a statement may use it any number of times; max(pk) is one step down the primary key.
    newest = sa.select(
        sa.func.coalesce(sa.func.max(spans.c.pk), sa.literal_column("0"))
    ).scalar_subquery()
    numbers = sa.select(sa.literal_column("0").label("n")).cte(
        "span_buckets", recursive=True, nesting=True
    )
    numbers = numbers.union_all(
        sa.select(numbers.c.n + sa.literal_column("1")).where(numbers.c.n < _bucket_sql(newest))
    )
    return sa.select(numbers.c.n)


def in_span_buckets(bucket: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """`bucket IN (every bucket in use)`: with an equality on the next column of a bucketed
    index, one index probe per bucket instead of a scan of the index."""
    return bucket.in_(_buckets_in_use())


def by_span_id(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
    """A condition on `spans.span_id` (`==`, `IN`) made to go through the bucketed index."""
    return sa.and_(in_span_buckets(_BUCKET_OF_PK), condition)


def span_id_equals(span_id: Any) -> sa.ColumnElement[bool]:
    """`spans.span_id = span_id` (a value or a bind parameter) through the bucketed index."""
    return by_span_id(spans.c.span_id == span_id)


def digest_matches(digest: Any) -> sa.Select[Any]:
    """The primary keys of the spans whose indexed attributes include `digest`."""
    return sa.select(span_attributes.c.span_pk).where(
        in_span_buckets(span_attributes.c.bucket), span_attributes.c.digest == digest
    )


# The attribute keys `span_attributes` covers: the link keys of OTLP_NOTES, which migration
# 0001 registers, and every key a reward selector has named since.
indexed_keys = sa.Table(
    "indexed_keys",
    metadata,
    sa.Column("key", Varchar(200), primary_key=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

rewards = sa.Table(
    "rewards",
    metadata,
    sa.Column("pk", BigPK, primary_key=True, autoincrement=True),
    sa.Column("id", Varchar(200), nullable=False, unique=True),
    sa.Column("name", Varchar(200), nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("dimensions", sa.Text, nullable=False),
    sa.Column("feedback", sa.Text, nullable=True),
    sa.Column("source", Varchar(16), nullable=False),
    sa.Column("tags", sa.Text, nullable=False),
    sa.Column("metadata", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("target_kind", Varchar(16), nullable=False),
    sa.Column("target_span_id", Varchar(16), nullable=True),
    sa.Column("target_trace_id", Varchar(32), nullable=True),
    sa.Column("target_execution_id", Varchar(200), nullable=True),
    sa.Column("target_task_id", Varchar(200), nullable=True),
    sa.Column("selectors", sa.Text, nullable=True),
    sa.Column("resolved_at", sa.BigInteger, nullable=True),
    sa.Index("ix_rewards_name", "name", "pk"),
    sa.Index("ix_rewards_target_span", "target_span_id"),
    sa.Index("ix_rewards_target_trace", "target_trace_id"),
    sa.Index("ix_rewards_target_execution", "target_execution_id"),
    sa.Index("ix_rewards_target_task", "target_task_id"),
    sa.Index("ix_rewards_resolved", "resolved_at", "pk"),
)

reward_selectors = sa.Table(
    "reward_selectors",
    metadata,
    sa.Column("key", Varchar(200), primary_key=True),
    sa.Column("value", Varchar(500), primary_key=True),
    sa.Column("reward_pk", sa.BigInteger, primary_key=True),
    sa.Index("ix_reward_selectors_reward", "reward_pk"),
)

reward_links = sa.Table(
    "reward_links",
    metadata,
    sa.Column("reward_pk", sa.BigInteger, primary_key=True),
    sa.Column("span_pk", sa.BigInteger, primary_key=True),
    # Copied from the span so a reward's linked ids are read from this table's primary key
    # alone (SQLite: WITHOUT ROWID keeps it in the key's b-tree), never from the wide spans.
    sa.Column("span_id", Varchar(16), nullable=False),
    sa.Index("ix_reward_links_span", "span_pk"),
    sqlite_with_rowid=False,
)

reward_tags = sa.Table(
    "reward_tags",
    metadata,
    sa.Column("tag", Varchar(200), primary_key=True),
    sa.Column("reward_pk", sa.BigInteger, primary_key=True),
    sa.Index("ix_reward_tags_reward", "reward_pk"),
)

# The tags of the spans each reward is linked to, kept up to date as links and span tags are
# added, so "rewards by tag" is one index range instead of a join through every tagged span.
reward_span_tags = sa.Table(
    "reward_span_tags",
    metadata,
    sa.Column("tag", Varchar(200), primary_key=True),
    sa.Column("reward_pk", sa.BigInteger, primary_key=True),
    sqlite_with_rowid=False,
)


# -- the prompt registry (DESIGN §7) ------------------------------------------------------------

# A prompt's content never changes: a change is a new row (a new version of its agent).
prompts = sa.Table(
    "prompts",
    metadata,
    sa.Column("id", Varchar(64), primary_key=True),
    sa.Column("agent", Varchar(200), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    # What makes a post idempotent: the digest of agent, content and parents (a retry of the
    # same proposal finds its row instead of making a new version).
    sa.Column("digest", Varchar(64), nullable=False),
    sa.Column("parent_ids", sa.Text, nullable=False),
    sa.Column("status", Varchar(16), nullable=False),
    sa.Column("fitness", sa.Text, nullable=True),
    sa.Column("created_by", Varchar(16), nullable=False),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("approved_by", Varchar(64), nullable=True),
    sa.Column("approved_at", sa.BigInteger, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("agent", "version", name="uq_prompts_agent_version"),
    sa.UniqueConstraint("agent", "digest", name="uq_prompts_agent_digest"),
    sa.Index("ix_prompts_agent_status", "agent", "status"),
)

# Movable names (`production`, `latest`, your own) per agent; a label names one prompt.
prompt_labels = sa.Table(
    "prompt_labels",
    metadata,
    sa.Column("agent", Varchar(200), primary_key=True),
    sa.Column("label", Varchar(100), primary_key=True),
    sa.Column("prompt_id", Varchar(64), nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Index("ix_prompt_labels_prompt", "prompt_id"),
)

experiments = sa.Table(
    "experiments",
    metadata,
    sa.Column("id", Varchar(64), primary_key=True),
    sa.Column("agent", Varchar(200), nullable=False),
    sa.Column("kind", Varchar(16), nullable=False),
    sa.Column("status", Varchar(16), nullable=False),
    # [{prompt_id, weight}], in order: the first variant is what the others are tested against
    sa.Column("variants", sa.Text, nullable=False),
    # everything else the experiment was created with (regression target/control examples,
    # baseline prompt, the reward name results are computed from)
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("winner", Varchar(64), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("stopped_at", sa.BigInteger, nullable=True),
    sa.Index("ix_experiments_agent_status", "agent", "status"),
)

# What a regression run measured: one row per variant (prompt) and example.
experiment_results = sa.Table(
    "experiment_results",
    metadata,
    sa.Column("experiment_id", Varchar(64), primary_key=True),
    sa.Column("prompt_id", Varchar(64), primary_key=True),
    sa.Column("example_id", Varchar(200), primary_key=True),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("tokens", sa.Float, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)


# -- the pattern learner (DESIGN §7) ------------------------------------------------------------

# One row per condition and context (`id` is a digest of the two), updated by every mining run
# that finds it again; the JSON columns are the Pattern record's parts as the miner made them.
patterns = sa.Table(
    "patterns",
    metadata,
    sa.Column("id", Varchar(64), primary_key=True),
    # The context's agent and task name, copied out of `context` for the filters.
    sa.Column("agent", Varchar(500), nullable=True),
    sa.Column("task_name", Varchar(500), nullable=True),
    sa.Column("kind", Varchar(16), nullable=False),
    sa.Column("context", sa.Text, nullable=False),
    sa.Column("condition", sa.Text, nullable=False),
    sa.Column("feature", sa.Text, nullable=False),
    sa.Column("effect", sa.Text, nullable=False),
    sa.Column("evidence", sa.Text, nullable=False),
    sa.Column("explanation", sa.Text, nullable=False),
    sa.Column("status", Varchar(16), nullable=False),
    # The sort keys of a list: q ascending, then |difference| descending.
    sa.Column("q_value", sa.Float, nullable=False),
    sa.Column("effect_size", sa.Float, nullable=False),
    sa.Column("first_seen", sa.BigInteger, nullable=False),
    sa.Column("last_seen", sa.BigInteger, nullable=False),
    sa.Column("applied", sa.Text, nullable=True),
    # The mining run (one `save_patterns` call) that last found it.
    sa.Column("run_id", Varchar(64), nullable=False),
    sa.Index("ix_patterns_agent_status", "agent", "status"),
)


# -- the worker: its job runs and the reports they store (issue 23) ------------------------------

# A report a job made (the lab technician's analysis, a pattern mining run): what it found as
# JSON, and what a person reads, rendered once when it is stored.
reports = sa.Table(
    "reports",
    metadata,
    sa.Column("id", Varchar(64), primary_key=True),
    sa.Column("kind", Varchar(32), nullable=False),
    sa.Column("agent", Varchar(200), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    # The window of runs the report covers (Unix ns; None: unbounded on that side).
    sa.Column("window_start", sa.BigInteger, nullable=True),
    sa.Column("window_end", sa.BigInteger, nullable=True),
    # The headline figures a list shows (executions, success rate, …); `body` is the whole.
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("markdown", sa.Text, nullable=True),
    sa.Column("html", sa.Text, nullable=True),
    sa.Column("job_run_id", Varchar(64), nullable=True),
    sa.Index("ix_reports_created", "created_at", "id"),
    sa.Index("ix_reports_kind_agent_created", "kind", "agent", "created_at"),
)

# One run of a worker job: requested (run now, or due on the schedule), claimed by a worker
# (running), then succeeded or failed with its error.
job_runs = sa.Table(
    "job_runs",
    metadata,
    sa.Column("id", Varchar(64), primary_key=True),
    sa.Column("job", Varchar(32), nullable=False),
    sa.Column("status", Varchar(16), nullable=False),
    sa.Column("trigger", Varchar(16), nullable=False),
    sa.Column("agent", Varchar(200), nullable=True),
    sa.Column("requested_at", sa.BigInteger, nullable=False),
    sa.Column("started_at", sa.BigInteger, nullable=True),
    sa.Column("finished_at", sa.BigInteger, nullable=True),
    # Who claimed it (host and process id), so a stuck run can be traced to its worker.
    sa.Column("worker", Varchar(200), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("report_id", Varchar(64), nullable=True),
    # What the run did, as JSON (e.g. the counts of patterns new, updated and stale).
    sa.Column("result", sa.Text, nullable=True),
    sa.Index("ix_job_runs_requested", "requested_at", "id"),
    sa.Index("ix_job_runs_status_requested", "status", "requested_at"),
)
