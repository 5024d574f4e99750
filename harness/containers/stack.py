"""The containers target: a disposable backend started with testcontainers, on host networking.

Profiles (``harness/containers/images.toml``):

* ``embedded-in-container``: PostgreSQL 15 + wal2json in the locally built image (``build-images.sh``; built
  when missing, cached by tag and recipe), on 127.0.0.1 and a free port, with host networking (never Docker's
  default bridge). Our stack's auth, REST and realtime run in this process, attached to it by DSN
  (``EmbeddedStack(db_url=..., init_db=True)``), so the gate tests the same services against a containerised
  database.
* ``supabase-official``: the image set ``supabase start`` uses. Where an image is neither local nor pullable
  the start fails with one line (``ImageUnavailable``, exit 6), before anything runs.

Readiness is testcontainers' wait strategies (the log line PostgreSQL prints when it accepts connections),
never a sleep. Cleanup is by label (``runs.py``): Ryuk is off, so the run removes its containers at stop, a
reaper process removes them if the run is killed, and every start sweeps what dead runs left.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.containers.config import BUILD_SCRIPT, Profile, load_profile
from harness.containers.runs import Reaper, labels, remove_run, sweep

__all__ = ["ContainerStack", "ContainersError", "DockerUnavailable", "ImageUnavailable", "docker_answers"]

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # Ryuk's image needs a registry; runs.py reaps
READY = re.compile(r"database system is ready to accept connections")


class ContainersError(RuntimeError):
    """The containers target could not start; one line for the user."""


class DockerUnavailable(ContainersError):
    """No Docker daemon answers (exit 5)."""


class ImageUnavailable(ContainersError):
    """An image the profile needs is neither here nor pullable nor buildable (exit 6)."""


def docker_answers(timeout: float = 5.0) -> str | None:
    """None when a Docker daemon answers, else why not (one line)."""
    try:
        import docker

        client = docker.from_env(timeout=int(timeout))
        client.ping()
        client.close()
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return f"no Docker daemon answers ({first[:160]}); start one (bash .ci/dockerd) or use --target embedded"
    return None


def _host_container_class() -> Any:
    """testcontainers' ``DockerContainer`` for host networking: a container port *is* the host's port on
    127.0.0.1 (there is no mapping to look up), so port-based wait strategies (``HttpWaitStrategy``) work."""
    from testcontainers.core.container import DockerContainer

    class HostNetworkContainer(DockerContainer):
        def get_container_host_ip(self) -> str:
            return "127.0.0.1" if self._kwargs.get("network_mode") == "host" else str(super().get_container_host_ip())

        def get_exposed_port(self, port: int) -> int:
            return int(port) if self._kwargs.get("network_mode") == "host" else int(super().get_exposed_port(port))

    return HostNetworkContainer


def _free_port() -> int:
    from stack.postgres import free_port

    return free_port()


@dataclass
class ContainerStack:
    """Start with ``start()``, stop with ``stop()`` (or as a context manager); ``target()`` is the harness's view."""

    profile: str = "embedded-in-container"
    run: str = field(default_factory=lambda: "zc" + secrets.token_hex(4))
    log: Callable[[str], None] = lambda s: None
    build_timeout_s: float = 900.0
    realtime_mode: str = "streaming"
    netem: Any = None  # with_netem: the NetemLink the device networks cross (packet faults)
    with_netem: bool = False
    config: Profile | None = None
    stack: Any = None  # the EmbeddedStack attached to the container's PostgreSQL
    containers: list[Any] = field(default_factory=list)
    reaper: Reaper | None = None
    timings: dict[str, float] = field(default_factory=dict)
    pg_port: int = 0
    official: dict[str, str] | None = field(default=None, repr=False)  # supabase-official: URL, keys, DB URL
    scratch: list[Path] = field(default_factory=list)  # host directories of the run (Kong's config), removed at stop
    _pg_password: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)
    _docker_ok: bool = False  # a daemon answered: there may be something of the run to remove

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> ContainerStack:
        t0 = time.perf_counter()
        self.config = load_profile(self.profile)
        if why := docker_answers():
            raise DockerUnavailable(why)
        self._docker_ok = True
        self.log("containers: testcontainers' Ryuk is off (its image needs a registry); this run's containers "
                 f"are labelled org.zora.run={self.run} and removed by label at exit, by a reaper process if the "
                 "run is killed, and at the next start")
        sweep(self.log)
        try:
            self._ensure_images()
            self.timings["images"] = time.perf_counter() - t0
            self.reaper = Reaper(self.run).start()
            if self.profile == "embedded-in-container":
                self._start_embedded_in_container()
            else:
                self._start_official()
            if self.with_netem:
                from harness.containers.netem import NetemLink

                t = self.target()
                self.netem = NetemLink(self, t.host, int(t.url.rsplit(":", 1)[1]))  # stop() removes it if start fails
                self.netem.start()
                self.log(f"containers: device networks cross the netem link (container zora-{self.run}-netem, "
                         f"its own network namespace) at 127.0.0.1:{self.netem.port}")
        except BaseException:
            self.stop()
            raise
        self.timings["ready"] = time.perf_counter() - t0
        return self

    def stop(self) -> None:
        if self.netem is not None:
            self.netem.stop()
            self.netem = None
        if self.stack is not None:
            self.stack.stop()
            self.stack = None
        for c in reversed(self.containers):
            try:
                c.stop()
            except Exception as e:  # the label sweep below still removes it
                self.log(f"containers: stopping {getattr(c, 'image', c)} failed: {type(e).__name__}")
        self.containers.clear()
        for d in self.scratch:
            shutil.rmtree(d, ignore_errors=True)
        self.scratch.clear()
        if not self._docker_ok:
            return
        try:
            remove_run(self.run, self.log)
        except Exception as e:  # the daemon went away: the reaper and the next start's sweep remove what is left
            self.log(f"containers: could not remove run {self.run}'s containers now ({type(e).__name__}); the next "
                     "start removes them")
        finally:
            if self.reaper is not None:
                self.reaper.stop()
                self.reaper = None

    def __enter__(self) -> ContainerStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- images ----------------------------------------------------------------------------------
    def _ensure_images(self) -> None:
        import docker

        assert self.config is not None
        client = docker.from_env(timeout=60)
        try:
            if self.config.built_here or self.with_netem:  # the netem link runs in the local image too
                self._build_local()
            if self.config.built_here:
                return
            for name, image in self.config.images.items():
                try:
                    client.images.get(image)
                    continue
                except docker.errors.ImageNotFound:
                    pass
                self.log(f"containers: pulling {image}")
                try:
                    client.images.pull(image)
                except Exception as e:
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    raise ImageUnavailable(f"image {image} ({name}, profile {self.profile}) cannot be had: not here "
                                           f"and the pull failed ({first[:160]})") from None
        finally:
            client.close()

    @property
    def local_image(self) -> str:
        """The locally built PostgreSQL image (PostgreSQL, iproute2, socat): the netem link's image too."""
        return load_profile("embedded-in-container").images["postgres"]

    def _build_local(self) -> None:
        """``build-images.sh``: a no-op when the images exist with this recipe, a build of minutes otherwise."""
        local = load_profile("embedded-in-container")
        if shutil.which("bash") is None:
            raise ImageUnavailable("bash is needed to build the local images")
        t0 = time.perf_counter()
        try:
            res = subprocess.run(["bash", str(BUILD_SCRIPT), local.images.get("base", "zora/debian-base:bookworm"),
                                  local.images["postgres"]], capture_output=True, text=True,
                                 timeout=self.build_timeout_s)
        except subprocess.TimeoutExpired:
            raise ImageUnavailable(f"image {local.images['postgres']} cannot be had: its build took over "
                                   f"{self.build_timeout_s:.0f} s") from None
        for line in res.stdout.splitlines():
            if "cached" not in line and "done in" not in line:
                self.log(f"containers: {line}")
        if res.returncode == 5:
            raise DockerUnavailable(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "no Docker daemon")
        if res.returncode != 0:
            last = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"
            raise ImageUnavailable(f"image {local.images['postgres']} cannot be had: {last}")
        self.timings["build"] = time.perf_counter() - t0

    # -- embedded-in-container ---------------------------------------------------------------------
    def _container(self, image: str, **kw: Any) -> Any:
        kw.setdefault("network_mode", "host")  # host networking, never Docker's default bridge
        return _host_container_class()(image, labels=labels(self.run), **kw)

    def start_postgres(self, timeout: float = 60.0) -> str:
        """The profile's PostgreSQL on 127.0.0.1 and a free port; its superuser DSN (password via the env)."""
        from testcontainers.core.wait_strategies import LogMessageWaitStrategy

        assert self.config is not None
        self.pg_port = _free_port()
        c = (self._container(self.config.images["postgres"], name=f"zora-{self.run}-postgres")
             .with_env("PGPORT", str(self.pg_port)).with_env("POSTGRES_PASSWORD", self._pg_password)
             .waiting_for(LogMessageWaitStrategy(READY).with_startup_timeout(int(timeout))))
        self.containers.append(c)
        try:
            c.start()
        except Exception as e:
            raise ContainersError(f"PostgreSQL container did not become ready: {str(e).splitlines()[0][:200]}") from e
        return f"postgresql://postgres:{self._pg_password}@127.0.0.1:{self.pg_port}/postgres"

    def _start_embedded_in_container(self) -> None:
        from stack.server import EmbeddedStack

        t0 = time.perf_counter()
        dsn = self.start_postgres()
        self.timings["postgres"] = time.perf_counter() - t0
        self.stack = EmbeddedStack.from_fixtures(seed=False, db_url=dsn, init_db=True, realtime_mode=self.realtime_mode)
        self.stack.start()

    # -- supabase-official -----------------------------------------------------------------------
    def _start_official(self) -> None:
        from harness.containers.official import start_official

        start_official(self)

    # -- the harness's view --------------------------------------------------------------------------
    @property
    def postgres_container(self) -> Any:
        return self.containers[0] if self.containers else None

    def target(self) -> Any:
        from harness.targets import Target

        via = f"127.0.0.1:{self.netem.port}" if self.netem is not None and self.netem.port else ""
        if self.stack is not None:
            s = self.stack
            return Target("containers", s.api_url, s.anon_key, s.service_role_key, s.superuser_dsn,
                          name=f"containers-{self.profile}", devices_via=via)
        o = self.official
        if o is None:
            raise ContainersError("the containers target is not running")
        return Target("containers", o["url"], o["anon_key"], o["service_role_key"], o["db_url"],
                      name=f"containers-{self.profile}", devices_via=via)
