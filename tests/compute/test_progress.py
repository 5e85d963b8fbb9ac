"""Progress log lines: totals, rate, ETA, at every tenth and at least every interval."""

from __future__ import annotations

from skyledger.compute.framework.progress import ProgressLog, format_duration, format_progress


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_format_progress_line():
    assert format_progress("lines", 640, 1235, 52.0) == "lines: 640/1235 inputs (52 %), 12.3 inputs/s, ETA 48 s"
    assert format_progress("lines", 1235, 1235, 100.0, final=True) == "lines: 1235/1235 inputs (100 %), 12.3 inputs/s, done in 100 s"
    assert format_duration(30) == "30 s" and format_duration(600) == "10 min" and format_duration(4 * 3600) == "4.0 h"


def test_a_line_at_every_tenth_and_after_a_quiet_interval():
    clock, out = Clock(), []
    log = ProgressLog("lines", out.append, step=0.1, interval_s=60, clock=clock)
    log.start(100)
    assert out == ["lines: 100 inputs pending"]
    for _ in range(25):  # 25 batches of 1, one second each: lines at 10 % and 20 %
        clock.t += 1
        log.update(1)
    assert out[1:] == [
        "lines: 10/100 inputs (10 %), 1.0 inputs/s, ETA 90 s",
        "lines: 20/100 inputs (20 %), 1.0 inputs/s, ETA 80 s",
    ]
    clock.t += 100  # a slow batch: a line after the interval even below the next tenth
    log.update(1)
    assert out[-1].startswith("lines: 26/100 inputs (26 %)")
    log.update(50)  # a big batch jumps several tenths: one line
    assert len(out) == 5 and out[-1].startswith("lines: 76/100")
    log.update(3)  # below the next tenth, within the interval: no line until the end
    assert len(out) == 5
    log.close()
    assert out[-1].startswith("lines: 79/100 inputs (79 %)") and "done in" in out[-1]
