"""One ASGI app per stack: the gateway in front, then /auth/v1, /rest/v1 and /realtime/v1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Mount

from stack import auth, rest
from stack.db import Pools
from stack.ddl import DdlWatch
from stack.gateway import GatewayMiddleware
from stack.realtime import server as realtime
from stack.settings import StackSettings

__all__ = ["create_app"]


def create_app(settings: StackSettings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.pools = await Pools.open(settings.rest_dsn, settings.auth_dsn, settings.db_pool_size)
        app.state.ddl = DdlWatch(settings.realtime_dsn)
        await app.state.ddl.start()
        app.state.realtime = realtime.Realtime(settings, mode=settings.realtime_mode, ddl=app.state.ddl)
        await app.state.realtime.start()
        try:
            yield
        finally:
            await app.state.realtime.stop()
            await app.state.ddl.stop()
            await app.state.pools.close()

    app = Starlette(
        routes=[
            Mount("/auth/v1", routes=auth.routes(settings)),
            Mount("/rest/v1", routes=rest.routes(settings)),
            Mount("/realtime/v1", routes=realtime.routes(settings)),
        ],
        middleware=[
            Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"],
                       expose_headers=["Content-Range", "Content-Location", "Preference-Applied"]),
            Middleware(GatewayMiddleware, keys=(settings.anon_key, settings.service_role_key),
                       max_body_bytes=settings.max_body_bytes),
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app
