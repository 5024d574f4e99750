"""Placeholder: the auth endpoint is being built."""

from __future__ import annotations

from starlette.routing import BaseRoute

from stack.settings import StackSettings

__all__ = ["routes"]


def routes(settings: StackSettings) -> list[BaseRoute]:
    return []
