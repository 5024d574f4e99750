"""Load profiles (Locust ``LoadTestShape``), chosen with ``--zora-profile`` (the locustfiles define none, so
Locust's own ``-u`` / ``-r`` / ``-t`` apply unless a profile is asked for).

* ``ci``: short and small, for every commit: every publisher class, two subscribers of each app, 20 s.
* ``stress``: shaped like a staging stress test: ramp to ``--zora-subscribers`` over a minute at most, hold for
  ``--zora-hold`` seconds with a fault from the fault proxy in the middle of the hold (``--zora-fault``, for
  ``--zora-fault-s``: a reset by default), then stop.
"""

from __future__ import annotations

import threading
from typing import Any

from harness.load.plugin import COORDINATOR, ZoraShape

__all__ = ["PROFILES", "CiProfile", "StressProfile"]


def _opts() -> Any:
    env = COORDINATOR.env
    assert env is not None and env.parsed_options is not None
    return env.parsed_options


class CiProfile(ZoraShape):
    seconds = 20.0

    def tick(self) -> tuple[int, float] | tuple[int, float, list[Any] | None] | None:
        if self.get_run_time() > self.seconds:
            return None
        pubs, subs = self.classes("publish"), self.classes("subscribe")
        n = len(pubs) * int(_opts().zora_publishers) + 2 * len(subs)
        return n, float(n), [*pubs, *subs]


class StressProfile(ZoraShape):
    def __init__(self) -> None:
        super().__init__()
        self._fault_started = False

    def tick(self) -> tuple[int, float] | tuple[int, float, list[Any] | None] | None:
        o = _opts()
        pubs, subs = self.classes("publish"), self.classes("subscribe")
        n = len(pubs) * int(o.zora_publishers) + int(o.zora_subscribers)
        rate = max(1.0, n / 60.0)
        ramp = n / rate
        t = self.get_run_time()
        if t > ramp + float(o.zora_hold):
            return None
        if not self._fault_started and t > ramp + float(o.zora_hold) / 2 and COORDINATOR.owner is not None:
            self._fault_started = True  # in its own thread: the shape's tick must not wait for the fault's end
            threading.Thread(target=COORDINATOR.owner.fault, args=(str(o.zora_fault), float(o.zora_fault_s)),
                             daemon=True).start()
        return n, rate, [*pubs, *subs]


PROFILES: dict[str, type[ZoraShape]] = {"ci": CiProfile, "stress": StressProfile}
