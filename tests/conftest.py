"""Fixtures shared by the harness's own tests: one embedded stack per session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from stack.postgres import Cluster
from stack.server import EmbeddedStack


@pytest.fixture(scope="session")
def stack() -> Iterator[EmbeddedStack]:
    """The Zora schema with the demo seed, on a throwaway cluster, for the whole session.

    With ``ZORA_TEST_STACK_DB_URL=1`` the stack is given that cluster as an existing database
    (``db_url``, ``init_db``), so the same tests check the mode that assumes the login roles.
    """
    if os.environ.get("ZORA_TEST_STACK_DB_URL"):
        with Cluster() as cluster, EmbeddedStack.from_fixtures(seed=True, db_url=cluster.dsn(), init_db=True) as s:
            assert s._assume_roles
            yield s
        return
    with EmbeddedStack.from_fixtures(seed=True) as s:
        yield s


@pytest.fixture
def http(stack: EmbeddedStack) -> Iterator[httpx.Client]:
    """A plain HTTP client carrying the anon API key, for wire-level tests."""
    with httpx.Client(base_url=stack.api_url, headers={"apikey": stack.anon_key}, timeout=10) as c:
        yield c


@pytest.fixture
def service_headers(stack: EmbeddedStack) -> dict[str, str]:
    return {"apikey": stack.service_role_key, "Authorization": f"Bearer {stack.service_role_key}"}


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.test"


@pytest.fixture
def new_user(stack: EmbeddedStack, service_headers: dict[str, str]) -> Any:
    """Create a confirmed user through the admin API; returns a factory (email, password) -> user json."""

    def make(email: str | None = None, password: str = "password-123", **meta: Any) -> dict[str, Any]:
        email = email or unique_email()
        r = httpx.post(
            f"{stack.api_url}/auth/v1/admin/users",
            headers=service_headers,
            json={"email": email, "password": password, "email_confirm": True, "user_metadata": meta},
            timeout=10,
        )
        r.raise_for_status()
        user: dict[str, Any] = r.json()
        user["password"] = password
        return user

    return make
