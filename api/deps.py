"""Dependencies shared by every router: the store, and API-key auth.

Auth is attached per router (`APIRouter(dependencies=[ReadAuth])`), never per route, so no
route can forget it. `ReadAuth` lets a read-only key through on GET/HEAD/OPTIONS only; any other
method needs a read-write key, so a router mixing reads and writes attaches `ReadAuth` once and
a `:ro` key still cannot write. `WriteAuth` always needs a read-write key (OTLP ingest).
With no `EVOLUTION_API_KEYS` configured both let everything through.

    401  no `Authorization: Bearer <key>` header, or an unknown key
    403  a read-only key on a write

`Approver` names who approved a change (a prompt promoted, an experiment stopped) without
storing the key: the first 16 hex digits of the key's SHA-256, or "anonymous" with keys off.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from evolution_store import EvolutionStore
from evolution_store.config import Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# Every dependency here is `async def` although none awaits: FastAPI runs a plain `def`
# dependency in its thread pool, a thread round trip per dependency per request (~0.25 ms on an
# idle machine, several ms on a busy one).


async def get_store(request: Request) -> EvolutionStore:
    return request.app.state.store


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


# Declared so /docs shows an "Authorize" button; the checks below decide what it means.
_bearer = HTTPBearer(auto_error=False, description="An EVOLUTION_API_KEYS key")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def key_may_write(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> bool | None:
    """None when auth is off; else whether the presented key may write. Raises 401."""
    keys: dict[str, bool] = request.app.state.api_keys
    if not keys:
        return None
    token = credentials.credentials.strip() if credentials is not None else ""
    if not token:
        raise HTTPException(
            401,
            "missing API key: send Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    may_write: bool | None = None
    # Compare against every key in constant time, so timing tells nothing about near misses.
    for key, writable in keys.items():
        if hmac.compare_digest(key.encode(), token.encode()):
            may_write = writable
    if may_write is None:
        raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "Bearer"})
    return may_write


async def require_read(request: Request, credentials: Credentials) -> None:
    """Any valid key for a safe method; a read-write key for everything else."""
    may_write = key_may_write(request, credentials)
    if may_write is False and request.method not in SAFE_METHODS:
        raise HTTPException(403, "this API key is read-only")


async def require_write(request: Request, credentials: Credentials) -> None:
    """A read-write key, whatever the method."""
    if key_may_write(request, credentials) is False:
        raise HTTPException(403, "this API key is read-only")


async def get_approver(request: Request, credentials: Credentials) -> str:
    """A fingerprint of the presented write key, recorded as who approved; never the key.

    The 16 hex digits tell keys apart in an audit while saying nothing usable about the key;
    the key is checked again here (401/403), so an approval can never record a key that could
    not have written."""
    may_write = key_may_write(request, credentials)
    if may_write is None:
        return "anonymous"
    if not may_write:
        raise HTTPException(403, "this API key is read-only")
    assert credentials is not None  # key_may_write raised 401 otherwise
    return fingerprint(credentials.credentials.strip())


def fingerprint(key: str) -> str:
    """What an approval records of the key that made it."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


#: For `APIRouter(dependencies=[ReadAuth])`: reads with any key, writes with a write key.
ReadAuth: Any = Depends(require_read)
#: For `include_router(router, dependencies=[WriteAuth])`: a read-write key for every route.
WriteAuth: Any = Depends(require_write)

StoreDep = Annotated[EvolutionStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
#: Who approves: the approving key's fingerprint (`get_approver`), "anonymous" with keys off.
Approver = Annotated[str, Depends(get_approver)]

# Query parameters several routers share.
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size (1–1000)")]
Cursor = Annotated[
    str | None, Query(max_length=1000, description="`next_cursor` of the previous page")
]
Nanos = Annotated[int | None, Query(ge=0, le=2**63 - 1, description="Unix time in nanoseconds")]
Text = Annotated[str | None, Query(min_length=1, max_length=1000)]
