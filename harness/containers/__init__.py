"""The containers target (``--target containers``): a disposable backend in Docker, through testcontainers.

``ContainerStack(profile)`` starts it (``stack.py``); ``config.py`` reads the profiles' images and ports
(``images.toml``); ``runs.py`` labels and reaps the run's containers (Ryuk is off: its image needs a registry);
``build-images.sh`` builds the local images from Debian packages; ``netem.py`` puts packet-level faults
(``tc netem``) on a device's network in a network namespace of the run.
"""

from __future__ import annotations

from harness.containers.config import PROFILES, ContainersConfigError, load_profile
from harness.containers.stack import ContainersError, ContainerStack, DockerUnavailable, ImageUnavailable, docker_answers

__all__ = ["PROFILES", "ContainerStack", "ContainersConfigError", "ContainersError", "DockerUnavailable",
           "ImageUnavailable", "docker_answers", "load_profile"]
