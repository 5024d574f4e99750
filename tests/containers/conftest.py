"""The containers target's tests need a Docker daemon. Where none answers they are skipped, except in CI
(``CI=true``), where ``.ci/setup`` starts one: there a missing daemon fails them, so a skip never passes for CI."""

from __future__ import annotations

import os

import pytest

_why: list[str | None] = []  # asked once per session


def pytest_runtest_setup(item: pytest.Item) -> None:
    if not item.get_closest_marker("docker"):
        return
    if not _why:
        from harness.containers import docker_answers

        _why.append(docker_answers())
    why = _why[0]
    if why is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the containers tests: {why}", pytrace=False)
    pytest.skip(f"{why} (CI starts one: bash .ci/dockerd)")
