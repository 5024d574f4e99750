"""Packet-level faults on the containers target's link: a packet black hole (tc netem, or nftables drops on a
kernel without sch_netem) gives the same reconnection regime as the fault proxy's black hole."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.checks import analyze
from harness.checks.reconnection import check_reconnection
from harness.containers import ContainerStack
from harness.criteria import load_criteria
from harness.faults import FaultSpecError, PacketFault, format_fault, parse_fault
from harness.flows import order_flow
from harness.history import read_history
from harness.lifecycle import Lifecycle
from harness.phoenix import ReconnectPolicy
from harness.records import Fault, Record
from harness.resilience import one_fault

FAST = ReconnectPolicy(heartbeat_s=2.0, backoff_s=(1.0, 2.0, 5.0, 10.0))
HOLE_S = 7.0  # longer than two heartbeats: only a heartbeat notices, as in the gate's black hole


def test_packet_faults_parse_format_and_refuse_bad_values() -> None:
    assert parse_fault("netem_blackhole") == PacketFault("blackhole")
    assert parse_fault("netem_loss:30") == PacketFault("loss", 30.0)
    assert parse_fault("netem_delay:200") == PacketFault("delay", 200.0)
    for spec in (PacketFault("blackhole"), PacketFault("loss", 12.5), PacketFault("delay", 200)):
        assert parse_fault(format_fault(spec)) == spec
    assert PacketFault("blackhole").name == "blackhole"  # the proxy's name: the same regime for the checkers
    for bad in ("netem_loss", "netem_loss:0", "netem_loss:101", "netem_delay:x", "netem_blackhole:3"):
        with pytest.raises(FaultSpecError):
            parse_fault(bad)


def test_the_link_commands_touch_only_its_own_loopback() -> None:
    from harness.containers.netem import netem_args, nft_script
    from harness.faults import FaultTargetError

    assert netem_args(PacketFault("blackhole")) == ["tc", "qdisc", "replace", "dev", "lo", "root", "netem", "loss",
                                                    "100%"]
    assert netem_args(PacketFault("delay", 200))[-2:] == ["delay", "200ms"]
    assert nft_script(PacketFault("blackhole")).endswith("out drop")
    assert "numgen random mod 100 lt 30 drop" in nft_script(PacketFault("loss", 30))
    with pytest.raises(FaultTargetError, match="cannot delay"):
        nft_script(PacketFault("delay", 10))


@pytest.fixture(scope="module")
def linked() -> Iterator[ContainerStack]:
    with ContainerStack(with_netem=True) as cs:
        yield cs


def _run(cs: ContainerStack, tmp: Path, text: str) -> list[Record]:
    lc = Lifecycle(cs.target(), load_criteria(), tmp, js=False, quiet=True, phases=("flows", "resilience"),
                   policy=FAST, fault_s=HOLE_S, stack=cs)

    async def go() -> None:
        try:
            await lc.open()
            await lc.flows([order_flow], 1)
            await one_fault(lc, parse_fault(text), wait=20.0)
            await lc.settle(2.0)
        finally:
            await lc.close()

    asyncio.run(go())
    lc.end(None)
    return read_history(lc.run.dir / "history.jsonl").records


@pytest.mark.docker
@pytest.mark.slow
def test_a_packet_black_hole_gives_the_proxy_black_holes_regime(linked: ContainerStack, tmp_path: Path) -> None:
    regimes = {}
    for text in ("blackhole", "netem_blackhole"):
        records = _run(linked, tmp_path / text, text)
        faults = [r for r in records if isinstance(r, Fault) and r.name == "blackhole"]
        assert faults and {f.phase for f in faults} == {"start", "end"}
        if text.startswith("netem"):
            assert all(f.params["layer"] == "packet" for f in faults), faults[0].params
            assert {f.target for f in faults} == {f.target for f in faults if f.target.startswith("net:")}
        a = analyze(records)
        recs = [r for r in a.recoveries() if r.regime == "blackhole"]
        assert recs, "no probe was reached by the black hole"
        assert all(r.disconnected and r.rejoined_t is not None for r in recs), recs
        detection = [r.detection_ms or 0 for r in recs]
        rejoined = [r.ms("rejoined") or 0 for r in recs]
        print(f"{text}: {len(recs)} probes; detection {min(detection):.0f}-{max(detection):.0f} ms; "
              f"rejoined {min(rejoined):.0f}-{max(rejoined):.0f} ms after the end; via "
              f"{faults[0].params.get('via', 'fault proxy')}")
        # the black-hole regime: noticed by the heartbeat (not at once, as a reset is), back within 5 s of the end
        assert min(detection) >= FAST.heartbeat_s * 1000 * 0.9, detection
        assert max(rejoined) < 5000, rejoined
        line = next(c for c in load_criteria() if c.id == "reconnect_blackhole")
        res = check_reconnection(a.recoveries(), "blackhole", "rejoined", line.statistic, line.max_ms)
        regimes[text] = (res.valid, sorted({r.probe for r in recs}))
    assert regimes["netem_blackhole"] == regimes["blackhole"]  # same verdict, same probes reached


class _Records:
    closed = False

    def __init__(self) -> None:
        self.records: list[Fault] = []

    def append(self, rec: Fault) -> int:
        self.records.append(rec)
        return len(self.records)


@pytest.mark.docker
def test_loss_and_delay_on_the_link_are_recorded_or_refused_with_the_reason(linked: ContainerStack) -> None:
    from harness.faults import FaultTargetError

    link = linked.netem
    assert link is not None
    h = _Records()
    link.apply(PacketFault("loss", 30), h, ["net:a", "net:b"])
    link.clear(h)
    assert [(r.phase, r.target) for r in h.records] == [("start", "net:a"), ("start", "net:b"), ("end", "net:a"),
                                                        ("end", "net:b")]
    assert h.records[0].params["percent"] == 30 and h.records[0].params["layer"] == "packet"
    if link.has_netem:
        link.apply(PacketFault("delay", 50), h, ["net:a"])
        link.clear(h)
    else:  # this kernel: no sch_netem; nftables drops but cannot delay
        with pytest.raises(FaultTargetError, match="no tc netem"):
            link.apply(PacketFault("delay", 50), h, ["net:a"])
