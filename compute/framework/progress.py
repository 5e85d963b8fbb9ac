"""Progress of a task's run for people watching it: totals, rate and ETA.

On a terminal the CLI shows a tqdm bar (given the total, it shows the ETA itself). Where
nobody watches a bar (cron, a pipe, a log file, a Prefect flow) :class:`ProgressLog`
writes a line at every tenth of the work and at least every minute, plus a last one:

    lines: 640/1235 inputs (52 %), 12.3 inputs/s, ETA 48 s

The total is what the task's pending query counted when the run started; runs sharing
the work (see :mod:`.runner`) may take some of it, so a run can end below its total.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

__all__ = ["ProgressBar", "ProgressLog", "format_duration", "format_progress", "progress_reporter"]


def format_duration(seconds: float) -> str:
    """``48 s``, ``12 min``, ``3.5 h``: rounded to what an operator needs."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 120 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_progress(name: str, done: int, total: int, elapsed_s: float, *, final: bool = False) -> str:
    """One progress line: done/total, percentage, rate and (unless ``final``) the ETA."""
    percent = 100.0 * done / total if total else 100.0
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    line = f"{name}: {done}/{total} inputs ({percent:.0f} %), {rate:.1f} inputs/s"
    if final:
        return f"{line}, done in {format_duration(elapsed_s)}"
    eta = format_duration(max(total - done, 0) / rate) if rate > 0 else "unknown"
    return f"{line}, ETA {eta}"


class ProgressLog:
    """Progress as log lines: ``start(total)``, ``update(n)`` per batch, ``close()``.

    A line is written when the work crosses the next ``step`` fraction of the total, or
    when ``interval_s`` have passed since the last line, and at ``close`` (if anything was
    done since the last line).
    """

    def __init__(
        self,
        name: str,
        emit: Callable[[str], None],
        *,
        step: float = 0.1,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._emit = emit
        self._interval_s = interval_s
        self._clock = clock
        self.total = 0
        self.done = 0
        self._started = clock()
        self._last_time = self._started
        self._last_done = 0
        # Steps counted in whole numbers: float fractions would miss 30 % (0.1 * 3 > 0.3).
        self._steps = max(1, round(1 / step))
        self._reached = 0

    def start(self, total: int) -> None:
        self.total = total
        self._started = self._last_time = self._clock()
        self._emit(f"{self.name}: {total} inputs pending")

    def update(self, n: int) -> None:
        self.done += n
        now = self._clock()
        reached = self.done * self._steps // self.total if self.total else self._steps
        if reached > self._reached or now - self._last_time >= self._interval_s:
            self._reached = max(reached, self._reached)
            self._line(now, final=False)

    def close(self) -> None:
        if self.done and self.done != self._last_done:
            self._line(self._clock(), final=True)

    def _line(self, now: float, *, final: bool) -> None:
        self._last_time, self._last_done = now, self.done
        self._emit(format_progress(self.name, self.done, self.total, now - self._started, final=final))


class ProgressBar:
    """A tqdm bar on stderr, told its total when the run starts (ProgressLog's interface)."""

    def __init__(self, name: str) -> None:
        from tqdm import tqdm

        self._bar = tqdm(desc=name, unit="input")

    def start(self, total: int) -> None:
        self._bar.total = total
        self._bar.refresh()

    def update(self, n: int) -> None:
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()


def progress_reporter(name: str, emit: Callable[[str], None]) -> ProgressBar | ProgressLog:
    """A bar when stderr is a terminal; else log lines through ``emit`` (cron, pipes, files)."""
    return ProgressBar(name) if sys.stderr.isatty() else ProgressLog(name, emit)
