"""The gate's fault phases: the apps lose their network, the world keeps changing, and they must come back.

* ``resilience``: two regimes, one after the other, on every device's network at once (``network.py``):
  a **reset** (every connection closed: clients notice at once) and a **black hole** (nothing passes, sockets
  stay open: only a heartbeat notices; it lasts longer than two heartbeats of the client policy, so every
  client has noticed before it ends). During each, the drivers go on writing (the row-change flows: a
  broadcast missed while offline is gone for good, by Supabase's design, so none is sent then); after it,
  each probe must rejoin, refetch what it missed, and receive the next round live.
* ``churn``: many light probes behind one proxy, reset at random times drawn from the run's seed (stored in
  the plan, so the run can be replayed): every join attempt counts for connection reliability.

Every wait is bounded; what did not recover in time is recorded, and the checkers say so.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from harness.faults import Blackhole, FaultSpec, FaultTargetError, PacketFault, Reset, StackFault, format_fault, inject
from harness.flows import cart_sync, messages, order_flow, product_update, profile_updates, status_update
from harness.probes import Probe
from harness.records import Note, ProbeInfo, ProbeSet, SubInfo

if TYPE_CHECKING:
    from harness.lifecycle import Flow, Lifecycle

__all__ = ["ROW_FLOWS", "blackhole_seconds", "churn", "one_fault", "resilience", "wait_recovered"]

# flows whose events are rows: what a client misses of them while away, its refetch reads back
ROW_FLOWS: list[Flow] = [order_flow, status_update, cart_sync, messages, product_update, profile_updates]


def blackhole_seconds(heartbeat_s: float) -> float:
    """Long enough that every client's heartbeat has noticed: up to two heartbeats, and a margin."""
    return 2 * heartbeat_s + 3.0


def recover_seconds(backoff_s: tuple[float, ...]) -> float:
    """How long a client may take to be back: its longest backoff, the rejoin and the refetch, with room."""
    return max(backoff_s, default=1.0) + 20.0


async def wait_recovered(probes: list[Probe], since: int, timeout: float, now: Callable[[], int],
                         grace_s: float = 1.0) -> list[str]:
    """Wait (bounded) until every probe is back after ``since`` (run clock); the names of those that are not.

    A probe is back when its socket went after ``since`` and it has refetched since, or when ``grace_s`` passed
    without its socket going (its connection survived): a reset is noticed within milliseconds, so a probe
    is never taken for back merely because its socket has not closed yet."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    grace = int(grace_s * 1e9)
    while True:
        t = now()
        behind = [p.name for p in probes if not p.recovered(since)
                  or ((p.dropped_t is None or p.dropped_t < since) and t - since < grace)]
        if not behind or loop.time() >= deadline:
            return behind
        await asyncio.sleep(0.05)


async def resilience(lc: Lifecycle, blackhole_s: float | None = None, settle_s: float = 2.0,
                     recover_s: float | None = None) -> None:
    """Reset, then black hole, on every device's network; writes during each; recovery and a live round after.
    ``recover_s`` bounds the wait for the clients to be back (default: their longest backoff and 20 s)."""
    assert lc.scene is not None and lc.network is not None
    net, scene, clock = lc.network, lc.scene, lc.run.clock
    hold = blackhole_s if blackhole_s is not None else blackhole_seconds(lc.policy.heartbeat_s)
    wait = recover_s if recover_s is not None else recover_seconds(lc.policy.backoff_s)
    for spec, seconds in ((Reset(), 0.0), (Blackhole(), hold)):
        # what is still on its way (a broadcast of the round before) arrives first: a fault would make it a loss
        # that no refetch can make good, by Supabase's design
        await asyncio.sleep(settle_s)
        lc.stage(f"resilience: {spec.name}" + (f" for {seconds:g} s" if seconds else ""))
        t0 = clock.now()
        applied = await net.apply(spec)
        await lc.flows(ROW_FLOWS, 1, label=f"during the {spec.name}: ")
        if seconds:
            await asyncio.sleep(max(0.0, seconds - (clock.now() - t0) / 1e9))
            await net.clear(applied)
        lc.stage(f"resilience: recovering from the {spec.name}")
        behind = await wait_recovered(scene.all_probes(), t0, wait, clock.now)
        if behind:
            lc.run.history.append(Note(text=f"not recovered from the {spec.name} in time", data={"probes": behind}))
        lc.show.say(f"{spec.name}: {len(scene.all_probes()) - len(behind)} of {len(scene.all_probes())} probes back"
                    + (f"; not back: {', '.join(behind[:5])}" if behind else ""))
        await lc.flows(ROW_FLOWS, 1, label=f"after the {spec.name}: ")
    for extra in lc.extra_faults:
        await asyncio.sleep(settle_s)
        await one_fault(lc, extra, wait)


async def one_fault(lc: Lifecycle, spec: FaultSpec, wait: float) -> None:
    """One more fault the user asked for (``--fault``): a network fault on every device for ``fault_s``, or a
    fault of the embedded stack; writes meanwhile, then recovery and a live round."""
    assert lc.scene is not None and lc.network is not None
    clock = lc.run.clock
    label = format_fault(spec)
    lc.stage(f"resilience: {label}")
    t0 = clock.now()
    if isinstance(spec, StackFault):
        injected = asyncio.ensure_future(inject(lc.stack, spec, lc.run.history))
        await asyncio.sleep(0)  # its start is recorded, and the fault begun, before the first write of the round
        await lc.flows(ROW_FLOWS, 1, label=f"during {label}: ")
        await injected
    elif isinstance(spec, PacketFault):  # tc netem on the containers target's link, under every device network
        link = getattr(lc.stack, "netem", None)
        if link is None:
            raise FaultTargetError(f"{label} needs the containers target's netem link (--target containers)")
        await asyncio.to_thread(link.apply, spec, lc.run.history, list(lc.network.proxies))
        try:
            await lc.flows(ROW_FLOWS, 1, label=f"during {label}: ")
            await asyncio.sleep(max(0.0, lc.fault_s - (clock.now() - t0) / 1e9))
        finally:
            await asyncio.to_thread(link.clear, lc.run.history)
    else:
        applied = await lc.network.apply(spec)
        await lc.flows(ROW_FLOWS, 1, label=f"during {label}: ")
        await asyncio.sleep(max(0.0, lc.fault_s - (clock.now() - t0) / 1e9))
        await lc.network.clear(applied)
    behind = await wait_recovered(lc.scene.all_probes(), t0, wait, clock.now)
    if behind:
        lc.run.history.append(Note(text=f"not recovered from {label} in time", data={"probes": behind}))
    await lc.flows(ROW_FLOWS, 1, label=f"after {label}: ")


async def churn(lc: Lifecycle, probes: int = 100, resets: int = 4, seconds: float = 12.0,
                settle_s: float = 2.0) -> None:
    """``probes`` light subscribers behind one proxy, reset ``resets`` times at random moments of ``seconds``
    (from the run's seed): their join attempts are the evidence for connection reliability."""
    assert lc.scene is not None and lc.network is not None
    rng = random.Random(lc.seed)
    proxy = await lc.network.add("churn")
    token = lc.scene.actors["customer-2/phone"].token
    policy = lc.policy
    infos = [ProbeInfo(name=f"churn-{i}", app="churn", user="customer-2", flavour="ours", via=proxy.name,
                       heartbeat_s=policy.heartbeat_s, backoff_s=policy.backoff_s, topics=(f"churn-{i}",),
                       subs=(SubInfo(table="orders", filter=f"user_id=eq.{uuid.UUID(int=rng.getrandbits(128))}"),))
             for i in range(probes)]
    lc.run.history.append(ProbeSet(probes=tuple(infos)))
    await asyncio.sleep(settle_s)  # the last round's events arrive before the churn's joins start
    target = lc.run.target
    net = lc.network
    group = [Probe(lc.run, i, token, url=net.url("churn", target.realtime_url), rest_url=net.url("churn", target.url))
             for i in infos]
    lc.stage(f"churn: {probes} probes joining")
    try:
        for i in range(0, len(group), 25):  # joined in batches, as apps start: not a join storm
            await asyncio.gather(*(p.start() for p in group[i:i + 25]))
        # random moments at least ``gap`` apart (so each reset is one outage, not two merged): k uniform points
        # in the room left, sorted, spread by the gaps
        gap = min(2.0, seconds / max(resets, 1))
        moments = [x + i * gap for i, x in enumerate(sorted(rng.uniform(0, seconds - (resets - 1) * gap)
                                                            for _ in range(resets)))]
        lc.stage(f"churn: {resets} resets in {seconds:g} s (seed {lc.seed})")
        start = asyncio.get_running_loop().time()
        for m in moments:
            await asyncio.sleep(max(0.0, start + m - asyncio.get_running_loop().time()))
            await proxy.apply(Reset())
        t_last = lc.run.clock.now()
        behind = await wait_recovered(group, t_last, recover_seconds(policy.backoff_s), lc.run.clock.now)
        if behind:
            lc.run.history.append(Note(text="churn probes not recovered in time", data={"probes": behind}))
        lc.show.say(f"churn: {len(group) - len(behind)} of {len(group)} probes back after {resets} resets")
    finally:
        await asyncio.gather(*(p.stop() for p in group), return_exceptions=True)
