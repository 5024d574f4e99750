"""Cold start of the embedded stack: initdb + Supabase base + Zora migrations + seed + HTTP ready.

Each round starts a brand-new cluster in a fresh process (nothing cached between
rounds), so the figure is what a user waits for after `zora-harness stack up`.
Goal (issue "Foundation"): <= 5 s on a 2-core machine.

    .venv/bin/python bench/stack_startup.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ONE_ROUND = """
import json, time
t0 = time.perf_counter()
from stack.server import EmbeddedStack
t_import = time.perf_counter() - t0
s = EmbeddedStack.from_fixtures(seed=True)
s.start()
print(json.dumps({"import": t_import, **s.timings}))
s.stop()
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rows = []
    for _ in range(max(1, min(args.rounds, 50))):
        out = subprocess.run([sys.executable, "-c", ONE_ROUND], capture_output=True, text=True, cwd=ROOT,
                             timeout=120, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"embedded stack cold start, {len(rows)} rounds (seconds: min / median / max)")
    for key, label in [("postgres", "initdb + postgres ready"), ("migrations", "base + migrations + seed"),
                       ("ready", "total until HTTP ready"), ("import", "python imports (not in total)")]:
        vals = [r[key] for r in rows]
        print(f"  {label:<32} {min(vals):6.3f} {statistics.median(vals):6.3f} {max(vals):6.3f}")
    worst = max(r["ready"] for r in rows)
    print(f"  goal <= 5 s: {'met' if worst <= 5 else 'NOT met'} (worst round {worst:.2f} s)")


if __name__ == "__main__":
    main()
