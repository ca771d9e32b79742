"""Who is looking at the dashboard, and whether they may press its write buttons.

With `EVOLUTION_API_KEYS` set, a browser cannot send `Authorization` headers on links and
forms, so the UI asks for a key once (`/login`) and keeps it in a cookie that scripts cannot
read (HttpOnly) and other sites cannot make the browser send (SameSite=Strict). Only the
UI's routes read that cookie: the API under `/api/v1` still takes the header alone, so the
cookie widens nothing. A request with `Authorization: Bearer <key>` is accepted too.

The write buttons post to UI routes that check again that the key may write (`require_write`:
a read-only key gets a 403 page) and that the form came from this site (`Origin`).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from fastapi import HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials

from ..deps import fingerprint, key_may_write

COOKIE = "evolution_ui_key"


class LoginRequired(Exception):
    """Keys are on and the request carries none that is valid: off to the login form."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


@dataclass(frozen=True)
class Viewer:
    """The person at the browser: whether keys are on, whether theirs may write, and the
    fingerprint an approval records (never the key)."""

    auth_on: bool
    may_write: bool
    approver: str


def presented_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[len("bearer ") :].strip()
    return request.cookies.get(COOKIE, "").strip()


def check_key(request: Request, key: str) -> bool | None:
    """None with keys off; else whether `key` may write. False-y key or unknown key: raises
    `HTTPException(401)` (the API's own check, in constant time)."""
    credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=key or " ")
    return key_may_write(request, credentials if key else None)


async def viewer(request: Request) -> Viewer:
    """The dependency every page takes: raises `LoginRequired` without a valid key."""
    key = presented_key(request)
    try:
        may_write = check_key(request, key)
    except HTTPException as exc:
        raise LoginRequired(_here(request)) from exc
    if may_write is None:
        who = Viewer(auth_on=False, may_write=True, approver="anonymous")
    else:
        who = Viewer(auth_on=True, may_write=may_write, approver=fingerprint(key))
    request.state.viewer = who  # for an error page, which has no dependencies of its own
    return who


def require_write(request: Request, who: Viewer) -> None:
    """Refuse a write button pressed with a read-only key, or posted from another site."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, "this form was posted from another site")
    if not who.may_write:
        raise HTTPException(
            403, "this key is read-only: it can look at everything but change nothing"
        )


def safe_next(next_url: str | None) -> str:
    """Where to go after logging in: a path on this site, never another site."""
    if not next_url or not next_url.startswith("/") or next_url.startswith("//"):
        return "/"
    if "\\" in next_url or any(ord(c) < 32 for c in next_url):
        return "/"
    return next_url


def login_url(next_url: str) -> str:
    return "/login?next=" + quote(safe_next(next_url), safe="")


def _here(request: Request) -> str:
    if request.method != "GET":
        # A button pressed after the cookie went: back to the page it was on.
        referer = urlsplit(request.headers.get("referer", "/"))
        return referer.path + ("?" + referer.query if referer.query else "")
    query = request.url.query
    return request.url.path + ("?" + query if query else "")
