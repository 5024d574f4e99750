"""Negative controls of the resilience phase: each break must give a NO-GO naming the right criterion, for the
right reason. (The healthy case is scenarios/test_resilience.py.) A fast client policy keeps them short: a 2 s
heartbeat, so a black hole of 5 s is noticed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from harness.criteria import Verdict, load_criteria
from harness.flows import order_flow, status_update
from harness.lifecycle import Lifecycle
from harness.phoenix import ReconnectPolicy
from harness.resilience import resilience
from stack.server import EmbeddedStack

CRITERIA = load_criteria()
FAST = ReconnectPolicy(heartbeat_s=2.0, backoff_s=(0.5, 1.0, 2.0))


def judge_run(stack: EmbeddedStack, tmp: Path, body: Callable[[Lifecycle], Awaitable[None]],
              phases: tuple[str, ...] = ("flows", "resilience"), policy: ReconnectPolicy = FAST) -> Verdict:
    """A run of our probes only (the controls break the server or our client), ``body`` between open and close."""
    lc = Lifecycle(stack.target(), CRITERIA, tmp, js=False, quiet=True, phases=phases, seed=1, policy=policy)

    async def go() -> None:
        try:
            await lc.open()
            await body(lc)
            await lc.settle(2.0)
        finally:
            await lc.close()

    asyncio.run(go())
    lc.end(None)
    assert lc.verdict is not None
    return lc.verdict


def run(stack: EmbeddedStack, tmp: Path, policy: ReconnectPolicy = FAST,
        tweak: Callable[[Lifecycle], None] | None = None, recover_s: float = 6.0) -> Verdict:
    async def body(lc: Lifecycle) -> None:
        if tweak is not None:
            tweak(lc)
        await lc.flows([order_flow, status_update], 1)
        await resilience(lc, blackhole_s=5.0, settle_s=1.0, recover_s=recover_s)

    return judge_run(stack, tmp, body, policy=policy)


def test_a_client_that_never_reconnects_is_no_go_on_reconnect_time(stack: EmbeddedStack, tmp_path: Path) -> None:
    # waiting 6 s for it: the next fault comes after the 5 s limit has passed, so "never" is evidence, not cut short
    v = run(stack, tmp_path, ReconnectPolicy(heartbeat_s=2.0, backoff_s=(3600.0,)), recover_s=6.0)
    line = v.line("reconnect_reset").result
    assert not v.go and line.valid is False and "never rejoined" in line.summary, line.summary
    assert line.details["never"] == 8  # every app probe of the declaration


def test_a_rejoin_without_its_bindings_is_no_go_on_delivery_after_recovery(stack: EmbeddedStack,
                                                                          tmp_path: Path) -> None:
    def drop_bindings(lc: Lifecycle) -> None:  # realtime-py#213: the client rejoins, but without postgres_changes
        assert lc.scene is not None
        for p in lc.scene.probes.values():
            assert p.client is not None
            for ch in p.client.proto.channels.values():
                config = {k: v for k, v in ch.join_payload.get("config", {}).items() if k != "postgres_changes"}
                ch.join_payload = {**ch.join_payload, "config": config}

    v = run(stack, tmp_path, tweak=drop_bindings, recover_s=4.0)
    delivery = v.line("delivery").result
    assert not v.go and delivery.valid is False and delivery.details["counts"]["unseen"] > 0, delivery.summary
    assert delivery.details["counts"]["recovered"] == 0  # never live again, so it never refetched either
    assert v.line("reconnect_reset").result.valid is False  # joined, but never live: not rejoined


def test_an_offline_queue_that_replays_without_keys_is_no_go_on_offline_sync(stack: EmbeddedStack,
                                                                            tmp_path: Path) -> None:
    from harness.flows import cart_sync
    from harness.offline import offline

    async def body(lc: Lifecycle) -> None:
        await lc.flows([order_flow, cart_sync], 1)
        await offline(lc, replays=2, idempotent=False)  # each write sent twice, and nothing makes that harmless

    v = judge_run(stack, tmp_path, body, phases=("flows", "offline"))
    line = v.line("offline_sync").result
    assert not v.go and line.valid is False and "1 applied twice" in line.summary, line.summary
    assert [e["class"] for e in line.details["evidence"]] == ["duplicated"]  # the order; the cart and profile are
    # idempotent by nature (an upsert on the natural key, an update to the same value)


def test_a_server_refusing_joins_after_a_restart_is_no_go_on_reliability(tmp_path: Path) -> None:
    from harness.faults import StackFault, inject

    with EmbeddedStack.from_fixtures(seed=False, fault_refuse_joins_s=10.0) as broken:
        async def body(lc: Lifecycle) -> None:
            await lc.flows([order_flow], 1)
            await inject(broken, StackFault("restart_realtime"), lc.run.history)  # every socket dropped
            await asyncio.sleep(14.0)  # the clients reconnect at once, and are refused for 10 s
            await lc.flows([order_flow], 1)

        v = judge_run(broken, tmp_path, body)
    line = v.line("connection_reliability").result
    assert not v.go and line.valid is False and line.value < 99.9, line.summary
    assert any("UnableToJoin" in str(e["why"]) for e in line.details["evidence"])
