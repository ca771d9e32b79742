"""Turning arbitrary Python values into bounded JSON text for span attributes and REST bodies.

Arguments and return values can be anything (a 50 MB document, a client object, a numpy
array), and the decorator runs on every call, so values are shrunk *before* they are dumped
(long strings cut, long containers sliced, unknown objects replaced by a short repr) and the
result is capped. Serialising never raises: a value that cannot be encoded becomes its repr.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

try:  # orjson is several times faster; the stdlib is the fallback for slim installs
    import orjson as _orjson
except ImportError:  # pragma: no cover - orjson is a declared dependency
    _orjson = None

MAX_VALUE_CHARS = 16 * 1024
"""Cap for `input.value` / `output.value`: enough for prompts and answers, not for documents."""
MAX_ITEMS = 100
MAX_REPR = 200
JSON_MIME = "application/json"
TEXT_MIME = "text/plain"


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not break the traced call
        text = f"<{type(value).__qualname__}>"
    return text if len(text) <= MAX_REPR else text[:MAX_REPR] + "…"


def _default(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)  # pydantic v2 models
    if callable(dump):
        try:
            return dump(mode="json")
        except Exception:
            return _short_repr(value)
    if isinstance(value, set | frozenset):
        return list(value)[:MAX_ITEMS]
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    return _short_repr(value)


def shrink(value: Any, limit: int = MAX_VALUE_CHARS, depth: int = 3) -> Any:
    """A cheap structural preview of `value` whose JSON is not much larger than `limit`."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit]
    if depth <= 0:
        return _short_repr(value) if not isinstance(value, Mapping | list | tuple) else "…"
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for index, (key, item) in enumerate(value.items()):
            if index >= MAX_ITEMS:
                out["…"] = f"{len(value) - MAX_ITEMS} more items"
                break
            out[key if isinstance(key, str) else str(key)] = shrink(item, limit, depth - 1)
        return out
    if isinstance(value, list | tuple):
        items = [shrink(item, limit, depth - 1) for item in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"… {len(value) - MAX_ITEMS} more items")
        return items
    return value


def dumps(value: Any) -> str:
    """JSON text for `value`; unknown objects become short reprs. Never raises."""
    if _orjson is not None:
        try:
            return _orjson.dumps(value, default=_default, option=_orjson.OPT_NON_STR_KEYS).decode()
        except Exception:  # e.g. ints beyond 64 bits: let the stdlib try
            pass
    try:
        return json.dumps(value, default=_default, ensure_ascii=False, separators=(",", ":"))
    except Exception:
        return json.dumps(_short_repr(value))


def capped(text: str, limit: int = MAX_VALUE_CHARS) -> tuple[str, bool]:
    """`text` cut to `limit` characters with a marker saying how much was dropped."""
    if len(text) <= limit:
        return text, False
    return f"{text[:limit]}…[truncated, {len(text)} chars in all]", True


def value_attributes(prefix: str, value: Any, limit: int = MAX_VALUE_CHARS) -> dict[str, str]:
    """OpenInference-style `<prefix>.value` / `<prefix>.mime_type` for one value.

    Strings are stored as text; everything else as JSON. A value cut by the cap is no longer
    valid JSON, so its mime type says `text/plain`.
    """
    if isinstance(value, str):
        text, _ = capped(value, limit)
        return {f"{prefix}.value": text, f"{prefix}.mime_type": TEXT_MIME}
    text, truncated = capped(dumps(shrink(value, limit)), limit)
    return {
        f"{prefix}.value": text,
        f"{prefix}.mime_type": TEXT_MIME if truncated else JSON_MIME,
    }


def jsonable(value: Any, limit: int = 1024 * 1024) -> Any:
    """`value` as plain JSON data (for REST bodies and the embedded store), cut at `limit`."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    text = dumps(shrink(value, limit, depth=32))
    return json.loads(text)
