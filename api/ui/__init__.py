"""The dashboard: server-rendered pages at `/` beside the API (DESIGN §7, issue 22).

`install_ui(app)` adds the pages (`pages`, `learning_pages`) and serves `static/` (the CSS
and the few lines of JavaScript) at `/ui-static`. Pages are Jinja2 templates fed by the
store's reads; charts are SVG drawn on the server (`svg`); nothing is fetched from another
site, and every page works without JavaScript.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from .render import STATIC, STATIC_PATH


def install_ui(app: FastAPI) -> None:
    """Mount the dashboard's pages and static files on `app`."""
    from . import learning_pages, pages

    app.include_router(pages.router)
    app.include_router(learning_pages.router)
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC), name="ui-static")
