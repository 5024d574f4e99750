"""REST latency on the embedded stack: p50/p99 of a customer's typical select, an aggregate, a many-to-many
embed and an order insert.

    .venv/bin/python bench/rest_latency.py [--n 500]

The aggregate (orders grouped by vendor: count, sum, avg) and the many-to-many embed (products with their tags
through a junction table the bench adds, ``bench_product_tags``) must stay within 2x of the plain embedded
select's p50 and p99 on the same run; the last line says whether they did.

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
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stack_process import StackProcess  # noqa: E402
from harness.checks.stats import percentile  # noqa: E402
from stack import jwt  # noqa: E402

ALICE = "00000000-0000-4000-a000-000000000021"
VERA = "00000000-0000-4000-b000-000000000011"
KALE = "00000000-0000-4000-c000-000000000101"


def interleaved(n: int, fns: list[Callable[[], None]]) -> list[list[float]]:
    """Samples of several requests taken in turn, so a busy moment of the machine falls on all of them
    alike and their ratios compare like with like."""
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(n):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter_ns()
            fn()
            out[i].append((time.perf_counter_ns() - t0) / 1e6)
    return out


def timed(n: int, fn: Callable[[], None]) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


# a junction table for the many-to-many embed (the Zora schema has none) and PostgREST's in-database setting
# that allows aggregates, as a project would set them
M2M_SQL = """
alter role authenticator set pgrst.db_aggregates_enabled to 'true';
create table public.bench_tags (id int primary key, name text not null);
create table public.bench_product_tags (
    product_id uuid references public.products (id), tag_id int references public.bench_tags (id),
    primary key (product_id, tag_id));
insert into public.bench_tags select g, 'tag ' || g from generate_series(1, 8) g;
insert into public.bench_product_tags select p.id, t.id from public.products p, public.bench_tags t
    where (abs(hashtext(p.id::text || t.id)) % 3) = 0;
"""


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
        with psycopg.connect(env["DB_URL"], autocommit=True) as db:
            db.execute(M2M_SQL)
        with httpx.Client(base_url=env["REST_URL"], headers=headers, timeout=10) as h:
            select = "/orders?select=*,order_items(*,product:products(name,price)),vendor:vendors(shop_name)" \
                     "&order=created_at.desc&limit=20"

            def read() -> None:
                r = h.get(select)
                assert r.status_code == 200, r.text

            def aggregate() -> None:
                r = h.get("/orders?select=vendor_id,count(),total.sum(),total.avg()")
                assert r.status_code == 200, r.text

            def many_to_many() -> None:
                r = h.get("/products?select=name,price,bench_tags(name)&order=name&limit=20")
                assert r.status_code == 200 and "bench_tags" in r.text, r.text

            def insert() -> None:
                r = h.post("/orders", json={"user_id": ALICE, "vendor_id": VERA, "total": 4.5},
                           headers={"Prefer": "return=representation"})
                assert r.status_code == 201, r.text

            for fn in (read, aggregate, many_to_many):
                timed(20, fn)  # warm up: connection, schema cache, plans
            reads, aggs, m2ms = interleaved(n, [read, aggregate, many_to_many])
            inserts = timed(n, insert)
        print(f"REST latency on the embedded stack, {n} sequential requests each, ms (client -> response)")
        for label, v in (("customer select (orders + items + products + vendor, RLS)", reads),
                         ("aggregate (orders by vendor: count, sum, avg; RLS)", aggs),
                         ("many-to-many embed (products + tags through a junction)", m2ms),
                         ("order insert (RLS check, trigger notification, representation)", inserts)):
            print(f"  {label:<66} p50 {percentile(v, 50):6.2f}  p99 {percentile(v, 99):6.2f}  max {max(v):7.2f}")
        worst = max(percentile(v, q) / percentile(reads, q) for v in (aggs, m2ms) for q in (50, 99))
        print(f"  aggregate and many-to-many within 2x of the plain embedded select (p50, p99): "
              f"{'yes' if worst <= 2 else 'NO'} (worst ratio {worst:.2f})")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
