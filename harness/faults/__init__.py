"""The nemesis: faults between the probes and the target, and of the embedded stack, recorded as data.

Faults are data (``spec.py``): frozen specs with a ``name`` and ``params()``, whose ``start`` and ``end``
become ``Fault`` records (same ``fault_id``) in the run's history. ``wsframes.py`` reads WebSocket frames
(sans-IO) for the calibration fault ``DropFrames``. The proxy that applies them comes next.
"""

from __future__ import annotations

from harness.faults.spec import (
    Bandwidth,
    Blackhole,
    Down,
    DropFrames,
    FaultSpec,
    FaultSpecError,
    Latency,
    LimitData,
    ProxyFault,
    Reset,
    StackFault,
    format_fault,
    parse_fault,
)

__all__ = ["Bandwidth", "Blackhole", "Down", "DropFrames", "FaultSpec", "FaultSpecError", "Latency", "LimitData",
           "ProxyFault", "Reset", "StackFault", "format_fault", "parse_fault"]
