"""The HTTP side of evolution-store: `create_app(settings)` builds the FastAPI app (REST under
`/api/v1`, OTLP/HTTP at `/v1/traces`, `/healthz`); `api.serve` runs it with uvicorn."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Lazy, so importing a submodule (api.grpc_server, api.errors) does not build the routers.
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)
