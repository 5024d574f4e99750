"""Locust's own master and workers on this machine: the master's merged histograms are the histograms of the union
of the workers' raw samples, the completeness counts add up, and a worker that dies is reported, its counts kept."""

from __future__ import annotations

import math
import os
import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest
from hdrh.histogram import HdrHistogram

from harness.checks.stats import percentile
from harness.load.hdr import new_histogram
from stack.postgres import free_port
from tests.load.locust_support import locust_cmd, processes, results, start

pytestmark = pytest.mark.slow


def master_and_workers(tmp_path: Path, seconds: int, kill_one_after: float | None = None) -> int:
    port = free_port()
    common = ["--zora-vendors", "1", "--zora-rate", "2", "--zora-raw-samples", str(tmp_path / "raw")]
    with processes() as procs:
        master = start(procs, locust_cmd("--master", "--master-bind-port", str(port), "--web-port", str(free_port()),
                                         "--headless", "--expect-workers", "2", "--expect-workers-max-wait", "90",
                                         "-u", "12", "-r", "12", "-t", f"{seconds}s", "--only-summary",
                                         "--zora-report-dir", str(tmp_path / "reports"), *common),
                       tmp_path / "master.log")
        workers = [start(procs, locust_cmd("--worker", "--master-port", str(port), "--zora-master-wait", "60"),
                         tmp_path / f"worker{i}.log") for i in range(2)]
        if kill_one_after is not None:
            end = time.monotonic() + 120
            while "Run time limit set" not in (tmp_path / "master.log").read_text() and time.monotonic() < end:
                time.sleep(0.2)
            time.sleep(kill_one_after)
            os.killpg(workers[1].pid, signal.SIGKILL)
        code = master.wait(240)
    return code


def raw_samples(root: Path) -> dict[str, dict[str, list[int]]]:
    """node (w0, w1) -> histogram key -> every raw sample (ns) its subscribers wrote."""
    out: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for f in root.glob("*.txt"):
        node = f.name.split("-", 1)[0]
        for line in f.read_text().splitlines():
            key, ns = line.rsplit(" ", 1)
            out[node][key].append(int(ns))
    return out


def test_merged_percentiles_are_the_workers_raw_samples(tmp_path: Path) -> None:
    code = master_and_workers(tmp_path, seconds=12)
    assert code == 0, (tmp_path / "master.log").read_text()[-3000:]
    res, load = results(tmp_path / "reports")
    raw = raw_samples(tmp_path / "raw")
    assert set(raw) == {"w0", "w1"} and len(load["processes"]) == 2  # both workers' subscribers, both reported
    keys = {k for node in raw.values() for k in node}
    assert {"status_update|write_to_deliver", "order_visible|commit_to_deliver"} <= keys
    for key in keys:
        union = [ns for node in raw.values() for ns in node.get(key, [])]
        ours = new_histogram()
        for ns in union:
            ours.record_value(max(1, ns // 1000))
        merged = HdrHistogram.decode(load["histograms"][key].encode("ascii"))
        assert merged.equals(ours), key  # exactly the union's histogram, bucket for bucket
        fig = load["latency_ms"][key]
        assert fig["n"] == len(union)
        for p in (50, 99):
            exact_us = max(1, int(percentile([float(ns) for ns in union], p)) // 1000)
            # the exact nearest-rank percentile of the raw samples falls in the bucket the histogram reports
            assert merged.values_are_equivalent(exact_us, round(fig[f"p{p}"] * 1000)), (key, p)
            assert math.isclose(fig[f"p{p}"] * 1000, merged.get_value_at_percentile(p))
    c = load["completeness"]
    assert c["delivered"] == c["expected"] > 100 and c["lost"] == c["unseen"] == c["unexpected"] == 0
    assert sum(a["delivered"] for a in c["per_app"].values()) == c["delivered"]
    assert sum(g["expected"] for g in c["per_group"].values()) == c["expected"]
    n_w2d = sum(len(node.get(k, [])) for node in raw.values() for k in node if k.endswith("|write_to_deliver"))
    assert c["delivered"] <= n_w2d == load["latency_ms"]["*|write_to_deliver"]["n"]
    assert res["verdict"] == "GO"


def test_a_worker_that_dies_is_reported_and_its_counts_kept(tmp_path: Path) -> None:
    code = master_and_workers(tmp_path, seconds=16, kill_one_after=7)
    log = (tmp_path / "master.log").read_text()
    assert code == 1, log[-3000:]  # the run did not go as planned: NO-GO, naming the worker
    res, load = results(tmp_path / "reports")
    run_line = next(c for c in res["criteria"] if c["criterion"] == "run")
    [dead] = load["missing"]
    assert dead in run_line["summary"] and "counts up to its last report" in run_line["summary"]
    assert load["processes"][dead]["reports"] >= 1  # it reported before it died: kept
    assert load["reliability"]["subscribers"] == 9  # its subscribers are still counted
    assert "went missing" in log or "failed to send heartbeat" in log
