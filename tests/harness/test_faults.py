"""The nemesis: fault specs as data, the fault proxy against small local servers (what the client sees
under each fault, and what the history says), cleanup after SIGKILL, and our Phoenix client through the
proxy to the embedded stack (reset, black hole, a restart of realtime)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.faults import (
    Bandwidth,
    Blackhole,
    Down,
    DropFrames,
    FaultSpec,
    FaultSpecError,
    Latency,
    LimitData,
    Reset,
    StackFault,
    format_fault,
    parse_fault,
)

# -- specs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "spec"), [
    ("reset", Reset()),
    ("blackhole", Blackhole()),
    ("down", Down()),
    ("latency:200", Latency(200)),
    ("latency:200,jitter=20,dir=down,seed=7", Latency(200, 20, "down", 7)),
    (" latency:ms=0.5, dir=up ", Latency(0.5, direction="up")),
    ("bandwidth:64000", Bandwidth(64000)),
    ("bandwidth:rate=100,dir=down", Bandwidth(100, "down")),
    ("limit:5000,dir=down", LimitData(5000, "down")),
    ("limit_data:0", LimitData(0)),
    ("drop:postgres_changes,count=3", DropFrames("postgres_changes", 3)),
    ("restart_realtime", StackFault("restart_realtime")),
    ("restart_realtime:1.5", StackFault("restart_realtime", 1.5)),
    ("restart_postgres", StackFault("restart_postgres")),
    ("pause_postgres:3", StackFault("pause_postgres", 3)),
])
def test_parse_fault_reads_the_command_line(text: str, spec: FaultSpec) -> None:
    assert parse_fault(text) == spec
    assert parse_fault(format_fault(spec)) == spec


@pytest.mark.parametrize(("text", "needle"), [
    ("", "unknown fault ''"),
    ("partition", "unknown fault 'partition'"),
    ("latency", "latency: missing ms"),
    ("latency:-1", "ms must be >= 0"),
    ("latency:nan", "ms must be finite"),
    ("latency:inf", "ms must be finite"),
    ("latency:1e400", "ms must be finite"),
    ("latency:abc", "ms must be a number"),
    ("latency:200,jitter=-5", "jitter_ms must be >= 0"),
    ("latency:200,seed=-1", "seed must be >= 0"),
    ("latency:200,seed=1.5", "seed must be an integer"),
    ("latency:200,colour=red", "unknown key 'colour' (known: ms, jitter, dir, seed)"),
    ("latency:200,dir=sideways", "direction must be one of both, down, up"),
    ("latency:200,300", "unexpected value '300'"),
    ("latency:200,ms=300", "ms given twice"),
    ("bandwidth:0", "bytes_per_s must be > 0"),
    ("bandwidth:1.5", "bytes_per_s must be an integer"),
    ("limit:-1", "bytes must be >= 0"),
    ("drop:x", "drop: missing count"),
    ("drop:x,count=0", "count must be > 0"),
    ("reset:1", "reset takes none"),
    ("blackhole,dir=down", "unknown fault 'blackhole,dir=down'"),
    ("restart_postgres:3", "restart_postgres takes none"),
    ("pause_postgres:-2", "seconds must be >= 0"),
])
def test_a_bad_spec_is_one_line_naming_the_problem(text: str, needle: str) -> None:
    with pytest.raises(FaultSpecError) as e:
        parse_fault(text)
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, ValueError)


def test_specs_validate_when_built_and_carry_their_params() -> None:
    with pytest.raises(FaultSpecError, match="ms must be finite"):
        Latency(math.inf)
    with pytest.raises(FaultSpecError, match="direction must be one of"):
        Bandwidth(10, direction="left")  # type: ignore[arg-type]
    with pytest.raises(FaultSpecError, match="must be an integer"):
        LimitData(True)  # a bool is not a number of bytes
    with pytest.raises(FaultSpecError, match="kind must be one of"):
        StackFault("reboot")  # type: ignore[arg-type]
    assert Latency(200, 20, "down", 7).params() == {"ms": 200, "jitter_ms": 20, "direction": "down", "seed": 7}
    assert (Reset().name, Reset().params()) == ("reset", {})
    assert (DropFrames("x", 2).name, DropFrames("x", 2).params()) == ("drop_frames", {"contains": "x", "count": 2})
    assert (StackFault("pause_postgres", 2).name, StackFault("pause_postgres", 2).params()) == \
        ("pause_postgres", {"seconds": 2})
    with pytest.raises(FaultSpecError, match="cannot carry"):
        format_fault(DropFrames("a,b", 1))


_numbers = st.floats(0, 1e6, allow_nan=False).map(lambda x: round(x, 3))
_dirs = st.sampled_from(["both", "down", "up"])
_specs = st.one_of(
    st.builds(Latency, _numbers, _numbers, _dirs, st.integers(0, 2**31)),
    st.builds(Bandwidth, st.integers(1, 10**9), _dirs),
    st.builds(LimitData, st.integers(0, 10**9), _dirs),
    st.builds(DropFrames, st.text("abcxyz_\":{}", min_size=1).filter(lambda s: s == s.strip()), st.integers(1, 99)),
    st.just(Reset()), st.just(Blackhole()), st.just(Down()),
    st.builds(StackFault, st.sampled_from(["restart_realtime", "pause_postgres"]), _numbers),
)


@given(_specs)
def test_format_and_parse_round_trip(spec: FaultSpec) -> None:
    assert parse_fault(format_fault(spec)) == spec
