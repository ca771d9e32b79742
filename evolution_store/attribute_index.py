"""Which span attributes are indexed for reward selectors, inside the writer's transaction.

A reward's link selectors (`{"gen_ai.conversation.id": "c-1"}`) must find spans by attribute
value without scanning their JSON. The keys selectors use are registered in `indexed_keys`;
from then on every new span's values of those keys get `span_attributes` rows (digests, see
`span_rows.attribute_digest`), and a key seen for the first time is back-filled from the spans
already stored.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .group_commit import WriteContext
from .models import RESERVED_LINK_KEYS
from .schema import indexed_keys, span_attributes, span_bucket, spans
from .span_rows import index_digests, indexed_values

_INDEXED_KEYS = sa.select(indexed_keys.c.key)


async def indexed_key_set(conn: AsyncConnection, ctx: WriteContext) -> set[str]:
    """Attribute keys copied into `span_attributes` (the link keys and every key a selector
    has used). Read once per transaction: another process may have registered a key since."""
    if "indexed_keys" not in ctx.cache:
        rows = await ctx.backend.fetch_all(conn, _INDEXED_KEYS, {})
        ctx.cache["indexed_keys"] = {row[0] for row in rows}
    return ctx.cache["indexed_keys"]


async def register_keys(conn: AsyncConnection, ctx: WriteContext, keys: Iterable[str]) -> None:
    """Start indexing new selector keys, back-filling the spans already stored."""
    known = await indexed_key_set(conn, ctx)
    for key in [key for key in keys if key not in known]:
        await ctx.backend.insert_ignore(
            conn, indexed_keys, [{"key": key, "created_at": ctx.now_ns}]
        )
        if key not in RESERVED_LINK_KEYS:  # ids are columns already: nothing to copy
            await _backfill_key(conn, ctx, key)
        known.add(key)


async def _backfill_key(conn: AsyncConnection, ctx: WriteContext, key: str) -> None:
    # A substring test narrows the scan in SQL; the JSON is parsed only for candidates.
    needle = orjson.dumps(key).decode()
    result = await conn.stream(
        sa.select(spans.c.pk, spans.c.attributes).where(
            spans.c.attributes.contains(needle, autoescape=True)
        )
    )
    # The same rows ingest writes for a span with this key indexed (`span_rows`).
    batch = [
        {"bucket": span_bucket(pk), "digest": digest, "span_pk": pk}
        async for pk, text in result
        for digest in index_digests(indexed_values(orjson.loads(text), (key,)))
    ]
    await ctx.backend.insert_ignore(conn, span_attributes, batch)
