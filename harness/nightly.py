"""``zora-harness nightly``: the gate, a short load profile, the report and a CI summary, in one run directory.

1. The gate, with every gate flag as given (``--target``, ``--no-faults``, ``--probes``, ...): its run
   directory is the nightly's, and it writes ``index.html`` there as every run does.
2. The load profile, when the ``load`` package is importable and exposes one (``load/`` is written by another
   part of the project; until it exists, or when it has no profile, this step is skipped with a note):
   ``load.nightly_profile(run_dir=RUN / "load", target=TARGET, quiet=...) -> int``, where ``TARGET`` is the
   gate's ``harness.targets.Target``, or None for the embedded stack (the profile starts its own), and the
   returned int is its exit code (0 GO, 1 NO-GO, anything else an error). It writes its files under ``RUN/load/``.
3. ``RUN/summary.md``: a Markdown summary fit for a CI job summary (the headline, every criterion's figure and
   limit, what was not tested, why not GO, the load profile's note), appended to ``$GITHUB_STEP_SUMMARY`` when
   that variable is set.

The exit code is the gate's (0 GO, 1 NO-GO, 2, 3, 4, 128+n as ``gate``); when the gate is GO and the load profile
ran and did not pass, 1 (NO-GO) for its NO-GO, 4 for an error of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["LOAD_ENTRY", "NIGHTLY_EPILOG", "find_load_profile", "nightly", "write_summary"]

LOAD_ENTRY = "nightly_profile"  # the callable the load package exposes for the nightly's short profile

NIGHTLY_EPILOG = """examples:
  zora-harness nightly --no-faults                      # the embedded stack, a short night
  SUPABASE_URL=... SUPABASE_ANON_KEY=... SUPABASE_SERVICE_ROLE_KEY=... zora-harness nightly --target url

writes into the gate's run directory: index.html, summary.md (and, when load/ has a profile, load/);
summary.md is appended to $GITHUB_STEP_SUMMARY when that variable is set.

exit codes: those of `gate` (0 GO, 1 NO-GO, 2 usage, 3 unreachable, 4 internal, 130/143/129 interrupted);
a GO gate whose load profile is NO-GO exits 1, one whose load profile failed exits 4."""


ROOT = Path(__file__).resolve().parent.parent


def find_load_profile(root: Path = ROOT) -> tuple[Callable[..., int] | None, str]:
    """The load package's nightly profile, or None and why not (a sentence for the summary). ``load/`` sits at the
    project's root beside ``harness/`` (``locust -f load``), which an installed console script does not have on its
    path: it is added for the import when the directory is there."""
    if (root / "load").is_dir() and str(root) not in sys.path:
        sys.path.append(str(root))
    if importlib.util.find_spec("load") is None:
        return None, "load profile skipped: there is no load/ package yet"
    try:
        module = importlib.import_module("load")
    except Exception as e:  # its import failing must not cost the night its gate report
        return None, f"load profile skipped: importing load/ failed ({type(e).__name__}: {e})"
    fn = getattr(module, LOAD_ENTRY, None)
    if not callable(fn):
        return None, f"load profile skipped: load/ exposes no {LOAD_ENTRY}()"
    return fn, ""


def write_summary(run_dir: Path, text: str, step_summary: str | None) -> list[str]:
    """``run_dir/summary.md``, and the same appended to the CI's job summary file; returns problems (one line each)."""
    problems = []
    (run_dir / "summary.md").write_text(text, encoding="utf-8")
    if step_summary:
        try:
            with open(step_summary, "a", encoding="utf-8") as f:
                f.write(text + "\n")
        except OSError as e:
            problems.append(f"could not append to $GITHUB_STEP_SUMMARY ({step_summary}): {e.strerror or e}")
    return problems


def _load(args: argparse.Namespace, run_dir: Path, target_of: Callable[[argparse.Namespace], Any]) -> tuple[int, str]:
    if args.no_load:
        return 0, "load profile skipped: --no-load"
    fn, why = find_load_profile()
    if fn is None:
        return 0, why
    try:
        code = int(fn(run_dir=run_dir / "load", target=target_of(args), quiet=args.quiet))
    except Exception as e:
        return 4, f"load profile failed: {type(e).__name__}: {e}"
    verdict = {0: "GO", 1: "NO-GO"}.get(code, f"error (exit {code})")
    return (0 if code == 0 else 1 if code == 1 else 4), f"load profile ({LOAD_ENTRY}): {verdict}; its files in load/"


def nightly(args: argparse.Namespace, run_gate: Callable[[argparse.Namespace], tuple[int, Any]],
            target_of: Callable[[argparse.Namespace], Any]) -> int:
    """The whole night (see the module's docstring). ``run_gate`` is the CLI's gate (exit code and its
    ``GateResult``, None when it stopped before a verdict); ``target_of`` gives the target the flags name."""
    from harness.report.text import markdown_summary

    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    code, result = run_gate(args)
    if result is None:  # no verdict: the target could not be used, or the stack did not start
        if step_summary:
            with contextlib.suppress(OSError), open(step_summary, "a", encoding="utf-8") as f:
                f.write(f"## Zora nightly: no verdict\n\nThe gate stopped before a verdict (exit {code}); see the "
                        "job's log.\n")
        return code
    run_dir: Path = result.run_dir
    load_code, note = _load(args, run_dir, target_of) if code == 0 else (0, "load profile skipped: the gate was NO-GO")
    notes = [note]
    titles = _titles(run_dir)
    text = markdown_summary(result.verdict, where=str(run_dir / "index.html"), notes=notes, titles=titles,
                            heading="Zora nightly")
    for p in write_summary(run_dir, text, step_summary):
        print(f"zora-harness: {p}", file=sys.stderr)
    print(f"zora-harness: nightly: {note}", file=sys.stderr)
    print(f"zora-harness: report {run_dir / 'index.html'}; summary {run_dir / 'summary.md'}", file=sys.stderr)
    return code if code != 0 else load_code


def _titles(run_dir: Path) -> dict[str, str]:
    from harness.criteria import CriteriaError, parse_criteria

    try:
        return {c.id: c.title for c in parse_criteria((run_dir / "criteria.toml").read_text(encoding="utf-8"))}
    except (OSError, UnicodeDecodeError, CriteriaError):
        return {}
