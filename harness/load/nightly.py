"""The nightly's short load profile: ``locust -f load --headless --zora-profile ci`` in a child process.

``zora-harness nightly`` calls ``load.nightly_profile(run_dir=..., target=..., quiet=...)`` after a GO gate
(``harness/nightly.py``). Locust runs in its own process because importing it monkey-patches the importer
with gevent; the target's URL and keys reach it as ``SUPABASE_*`` environment variables, never as arguments
(``ps`` shows arguments). Its run directory goes under ``run_dir``; its exit code is returned as it is (0 GO,
1 NO-GO, 2 / 3 unusable target, 4 a crash), and a child that outlives ``timeout_s`` is stopped and counts as 4.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.procs import stop_groups

__all__ = ["nightly_profile"]

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600.0  # the ci profile holds 20 s; the embedded stack starts in a few


def nightly_profile(run_dir: Path, target: Any = None, quiet: bool = False, timeout_s: float = TIMEOUT_S) -> int:
    """Run the ci load profile against ``target`` (a ``harness.targets.Target``; None: the embedded stack;
    ``"containers"``: the containers target, started by the profile)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPABASE_")}
    argv = [sys.executable, "-m", "locust", "-f", str(ROOT / "load"), "--headless", "--only-summary",
            "--zora-profile", "ci", "--zora-report-dir", str(run_dir),
            "--html", str(run_dir / "locust.html"), "--csv", str(run_dir / "locust")]
    if target is None:
        argv += ["--target", "embedded"]
    elif target == "containers":  # the containers target (its default profile), started by the profile itself
        argv += ["--target", "containers"]
    else:
        argv += ["--target", "url"]
        env.update({"SUPABASE_URL": target.url, "SUPABASE_ANON_KEY": target.anon_key,
                    "SUPABASE_SERVICE_ROLE_KEY": target.service_role_key})
        if target.db_url:
            env["SUPABASE_DB_URL"] = target.db_url
    log = run_dir / "locust.log"
    with log.open("wb") as out:
        p = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out if quiet else None, stderr=subprocess.STDOUT
                             if quiet else None, start_new_session=True)
        try:
            return p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            stop_groups([p], 60)
            print(f"zora-harness: the load profile ran past {timeout_s:g} s and was stopped", file=sys.stderr)
            return 4
        except BaseException:  # Ctrl-C / SIGTERM of the nightly: the child (its own session) goes too
            stop_groups([p], 60)
            raise
