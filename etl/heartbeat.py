"""Progress for a console that is not a terminal (a log file, CI): Rich draws no bars there, so a long
stage would be silent for minutes. `Heartbeat` prints the stage's state as one plain line every `every`
seconds (30 by default) instead; on a terminal it does nothing and the Rich bars show.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.markup import escape

HEARTBEAT_S = 30.0


def progress_line(bars: Any, elapsed_s: float) -> str:
    """'<elapsed> s: <task> <done>/<total>; ...' for the tasks of a Rich Progress that are not stopped."""
    shown = []
    for task in bars.tasks:
        if task.stop_time is not None:
            continue
        if task.total:
            shown.append(f"{task.description} {task.completed:,.0f}/{task.total:,.0f}")
        else:
            shown.append(str(task.description))
    return f"{elapsed_s:.0f} s: {'; '.join(shown) or 'working'}"


class Heartbeat:
    """While open, print `progress_line(bars)` every `every` seconds from a daemon thread when the bars'
    console is not a terminal."""

    def __init__(self, bars: Any, every: float = HEARTBEAT_S) -> None:
        self.bars = bars
        self.every = every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if not self.bars.console.is_terminal:
            self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.wait(self.every):
            line = escape(progress_line(self.bars, time.monotonic() - t0))
            self.bars.console.print(line, highlight=False, soft_wrap=True)
