"""REST latency on the embedded stack: p50/p99 of a customer's typical select and of an order insert.

    .venv/bin/python bench/rest_latency.py [--n 500]

The stack runs in its own process (`zora-harness stack up`), the client here on one keep-alive
HTTP connection, sequential requests, so each figure is one request's full round trip through
the gateway, JWT check, role switch, RLS and JSON rendering. Percentiles are exact over all samples.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack_process import StackProcess  # noqa: E402
from harness.checks.stats import percentile  # noqa: E402
from stack import jwt  # noqa: E402

ALICE = "00000000-0000-4000-a000-000000000021"
VERA = "00000000-0000-4000-b000-000000000011"
KALE = "00000000-0000-4000-c000-000000000101"


def timed(n: int, fn: Callable[[], None]) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    args = ap.parse_args()
    n = max(10, min(args.n, 20_000))
    secret = secrets.token_urlsafe(48)
    stack = StackProcess(jwt_secret=secret)
    env = stack.env
    try:
        now = int(time.time())
        tok = jwt.encode({"sub": ALICE, "role": "authenticated", "aud": "authenticated", "iat": now,
                          "exp": now + 3600}, secret)
        headers = {"apikey": env["ANON_KEY"], "Authorization": f"Bearer {tok}"}
        with httpx.Client(base_url=env["REST_URL"], headers=headers, timeout=10) as h:
            select = "/orders?select=*,order_items(*,product:products(name,price)),vendor:vendors(shop_name)" \
                     "&order=created_at.desc&limit=20"

            def read() -> None:
                r = h.get(select)
                assert r.status_code == 200, r.text

            def insert() -> None:
                r = h.post("/orders", json={"user_id": ALICE, "vendor_id": VERA, "total": 4.5},
                           headers={"Prefer": "return=representation"})
                assert r.status_code == 201, r.text

            timed(20, read)  # warm up: connection, schema cache, plans
            reads = timed(n, read)
            inserts = timed(n, insert)
        print(f"REST latency on the embedded stack, {n} sequential requests each, ms (client -> response)")
        for label, v in (("customer select (orders + items + products + vendor, RLS)", reads),
                         ("order insert (RLS check, trigger notification, representation)", inserts)):
            print(f"  {label:<66} p50 {percentile(v, 50):6.2f}  p99 {percentile(v, 99):6.2f}  max {max(v):7.2f}")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
