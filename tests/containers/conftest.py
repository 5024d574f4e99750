"""The containers target's tests need a Docker daemon. Where none answers they are skipped, except in CI
(``CI=true``), where ``.ci/setup`` starts one: there a missing daemon fails them, so a skip never passes for CI."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [i for i in items if i.get_closest_marker("docker")]
    if not marked:
        return
    from harness.containers import docker_answers

    why = docker_answers()
    if why is None:
        return
    for item in marked:
        if os.environ.get("CI"):
            item.add_marker(pytest.mark.usefixtures("_docker_required_in_ci"))
        else:
            item.add_marker(pytest.mark.skip(reason=f"{why} (CI starts one: bash .ci/dockerd)"))


@pytest.fixture
def _docker_required_in_ci() -> None:
    from harness.containers import docker_answers

    pytest.fail(f"CI must run the containers tests: {docker_answers()}")
