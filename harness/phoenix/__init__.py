"""Phoenix channels, client side: a sans-IO protocol, a thin asyncio transport (``aio``) and a blocking,
gevent-friendly one (``sync``, for Locust: imported from there, so asyncio users never load it)."""

from __future__ import annotations

from harness.phoenix.aio import AsyncPhoenix
from harness.phoenix.protocol import (
           SUPABASE_JS_POLICY,
           ChannelState,
           Closed,
           Message,
           PhoenixProtocol,
           ReconnectPolicy,
           Reply,
)

__all__ = ["SUPABASE_JS_POLICY", "AsyncPhoenix", "ChannelState", "Closed", "Message", "PhoenixProtocol",
           "ReconnectPolicy", "Reply"]
