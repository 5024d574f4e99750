"""The gate's progress display: a live status line on a terminal, milestone lines only elsewhere."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from harness.history import History
from harness.progress import Progress
from harness.records import Change, Op


def test_live_status_line_counts_from_the_history(tmp_path: Path) -> None:
    h = History(tmp_path / "history.jsonl")
    out = io.StringIO()
    show = Progress(h, stream=out, live=True)

    async def go() -> None:
        show.start()
        show.set_stage("round 1/3: order_flow")
        h.append(Op(process="c1", type="invoke", f="place_order", op_id=1))
        h.append(Op(process="c1", type="ok", f="place_order", op_id=1))
        h.append(Op(process="c1", type="info", f="place_order", op_id=2))
        h.append(Change(probe="vendor", channel="c", table="orders", type="INSERT"))
        await asyncio.sleep(0.3)
        show.say("round 1/3 done")
        await asyncio.sleep(0.3)  # redrawn below the milestone
        await show.stop()

    asyncio.run(go())
    h.close()
    text = out.getvalue()
    assert "round 1/3: order_flow  |  ops 1 ok 0 fail 1 info  |  1 events seen" in text
    assert "round 1/3 done\n" in text
    assert text.endswith("\r\033[K")  # the status line is gone when the run ends


def test_off_a_terminal_only_milestones_and_quiet_means_nothing(tmp_path: Path) -> None:
    out = io.StringIO()
    show = Progress(History(tmp_path / "h.jsonl"), stream=out)  # a StringIO is not a terminal
    show.say("preflight ok")
    show.draw()
    assert out.getvalue().count("\n") == 1 and "\r" not in out.getvalue() and "preflight ok" in out.getvalue()
    quiet = io.StringIO()
    Progress(None, quiet=True, stream=quiet).say("anything")
    assert quiet.getvalue() == ""
