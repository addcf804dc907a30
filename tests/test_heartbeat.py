"""Progress lines where the console is not a terminal (etl/heartbeat.py)."""

import io
import re
import time

from rich.console import Console
from rich.progress import Progress

from etl.heartbeat import Heartbeat, progress_line


def _bars(terminal: bool) -> tuple[Progress, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=200)
    return Progress(console=console, transient=True), out


def test_progress_line_lists_the_running_tasks():
    bars, _ = _bars(terminal=False)
    bars.add_task("etl: stock chunks", total=64, completed=12)
    bars.add_task("reading", total=None)
    done = bars.add_task("finished", total=3, completed=3)
    bars.stop_task(done)
    assert progress_line(bars, 95.4) == "95 s: etl: stock chunks 12/64; reading"


def test_a_line_at_every_interval_off_a_terminal_and_none_on_one():
    bars, out = _bars(terminal=False)
    task = bars.add_task("synth [x]", total=10)
    with bars, Heartbeat(bars, every=0.05):
        for step in range(4):
            bars.update(task, completed=step)
            time.sleep(0.06)
    lines = [ln for ln in out.getvalue().splitlines() if ln]
    assert len(lines) >= 2  # the brackets survive: the text is escaped before Rich reads markup
    assert all(re.fullmatch(r"\d+ s: synth \[x\] \d/10", ln) for ln in lines), lines
    count = len(lines)
    time.sleep(0.12)
    assert len([ln for ln in out.getvalue().splitlines() if ln]) == count  # stopped with the block

    bars, out = _bars(terminal=True)
    bars.add_task("synth", total=10)
    with Heartbeat(bars, every=0.01):
        time.sleep(0.05)
    assert out.getvalue() == ""
