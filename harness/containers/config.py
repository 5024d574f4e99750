"""The containers target's settings, read once: profiles, image names and versions, ports.

They live in ``harness/containers/images.toml`` (the one place the versions are pinned); another file of the
same shape can be given with ``$ZORA_CONTAINERS_CONFIG``, and any one image with ``$ZORA_IMAGE_<NAME>``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["BUILD_SCRIPT", "DEFAULT_CONFIG", "PROFILES", "ContainersConfigError", "Profile", "load_profile"]

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "images.toml"
BUILD_SCRIPT = HERE / "build-images.sh"
PROFILES = ("embedded-in-container", "supabase-official")


class ContainersConfigError(ValueError):
    """A profile or config file that cannot be used; one line for the user (exit 2)."""


@dataclass(frozen=True)
class Profile:
    name: str
    images: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)
    source: str = ""

    @property
    def built_here(self) -> bool:
        """Images made by ``build-images.sh`` (never pulled)."""
        return self.name == "embedded-in-container"


def load_profile(name: str, env: Mapping[str, str] | None = None) -> Profile:
    e = os.environ if env is None else env
    if name not in PROFILES:
        raise ContainersConfigError(f"container profile {name!r}: not one of {', '.join(PROFILES)}")
    path = Path(e.get("ZORA_CONTAINERS_CONFIG") or DEFAULT_CONFIG)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as ex:
        raise ContainersConfigError(f"containers config {path}: {ex.strerror or ex}") from None
    except tomllib.TOMLDecodeError as ex:
        raise ContainersConfigError(f"containers config {path}: {ex}") from None
    section = data.get(name)
    if not isinstance(section, dict):
        raise ContainersConfigError(f"containers config {path}: no [{name}] table")
    images = {k: str(v) for k, v in section.items() if isinstance(v, str)}
    for k in list(images):
        images[k] = e.get(f"ZORA_IMAGE_{k.upper()}", images[k])
    raw_ports = section.get("ports", {})
    if not isinstance(raw_ports, dict) or not all(isinstance(v, int) and 0 <= v <= 65535 for v in raw_ports.values()):
        raise ContainersConfigError(f"containers config {path}: [{name}.ports] must map names to ports 0-65535")
    if "postgres" not in images:
        raise ContainersConfigError(f"containers config {path}: [{name}] names no postgres image")
    return Profile(name, images, dict(raw_ports), str(path))
