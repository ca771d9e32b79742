"""How a page is answered: Jinja2 templates (autoescaped), the filters they share, query
parameters read leniently, and errors as HTML pages rather than the API's JSON.

Every UI route is a `PageRoute`: whatever a route raises — a store error, a bad parameter,
a missing key — becomes a page with the right status (or the login redirect), never a 500
and never JSON a person would have to read.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError

from evolution_store.errors import EvolutionStoreError

from ..errors import STATUS_BY_ERROR
from . import svg
from .auth import LoginRequired, login_url

logger = logging.getLogger("evolution_store.ui")

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
#: where `install_ui` serves `static/`
STATIC_PATH = "/ui-static"

_RELATIVE = re.compile(r"^(\d{1,6})(m|h|d)$")
_UNITS = {"m": 60, "h": 3600, "d": 86400}


class BadParameter(Exception):
    """A query parameter a person typed that means nothing: a 400 page naming it."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")


def parse_time(name: str, value: str | None, *, now_ns: int | None = None) -> int | None:
    """`24h`, `7d`, `30m` (that long ago), an ISO 8601 time (UTC unless it says), or
    nothing; Unix nanoseconds."""
    value = (value or "").strip()
    if not value:
        return None
    now_ns = now_ns if now_ns is not None else time.time_ns()
    if match := _RELATIVE.match(value):
        return max(0, now_ns - int(match[1]) * _UNITS[match[2]] * 1_000_000_000)
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadParameter(name, "use 24h, 7d, 30m or an ISO time like 2026-01-31T12:00") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ns = int(when.timestamp() * 1e9)
    if not 0 <= ns < 2**63:
        raise BadParameter(name, "a time between 1970 and 2262")
    return ns


def choice(name: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    value = (value or "").strip()
    if not value:
        return None
    if value not in allowed:
        raise BadParameter(name, "one of " + ", ".join(allowed))
    return value


def plain(name: str, value: str | None, *, most: int = 500) -> str | None:
    value = (value or "").strip()
    if len(value) > most or any(ord(c) < 32 for c in value):
        raise BadParameter(name, f"at most {most} printable characters")
    return value or None


# -- filters ----------------------------------------------------------------------------------


def fmt_ns(ns: int | None) -> str:
    if ns is None:
        return "—"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_iso(value: str | None) -> str:
    if not value:
        return "—"
    return value.replace("T", " ").split(".")[0].removesuffix("Z") + " UTC"


def fmt_num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    return svg.fmt_value(float(value)) if digits == 3 else f"{value:.{digits}f}"


def fmt_pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def fmt_ms(value: float | None) -> str:
    return "—" if value is None else svg.fmt_duration(value * 1e6)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.ChainableUndefined,
    )
    env.filters.update(
        ns=fmt_ns,
        iso=fmt_iso,
        num=fmt_num,
        pct=fmt_pct,
        ms=fmt_ms,
        duration=lambda ns: "—" if ns is None else svg.fmt_duration(ns),
    )
    env.globals.update(svg=svg, static=STATIC_PATH)
    return env


ENV = _environment()


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    page = ENV.get_template(template).render(request=request, **context)
    return HTMLResponse(page, status_code=status)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    who = getattr(request.state, "viewer", None)
    return render(
        request, "error.html", status=status, message=message, status_code=status, viewer=who
    )


def _status_of(exc: EvolutionStoreError) -> int:
    return next(code for cls, code, _ in STATUS_BY_ERROR if isinstance(exc, cls))


class PageRoute(APIRoute):
    """An APIRoute whose errors are pages: store errors with the API's status codes, bad
    parameters 400, validation 422, a missing key the login redirect."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired as exc:
                return RedirectResponse(login_url(exc.next_url), status_code=303)
            except BadParameter as exc:
                return error_page(request, 400, str(exc))
            except EvolutionStoreError as exc:
                return error_page(request, _status_of(exc), str(exc))
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                where = ".".join(str(part) for part in first.get("loc", ())[1:])
                return error_page(request, 422, f"{where}: {first.get('msg', 'invalid value')}")
            except ValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                return error_page(request, 422, str(first.get("msg", "invalid value")))
            except HTTPException as exc:
                return error_page(request, exc.status_code, str(exc.detail))

        return page
