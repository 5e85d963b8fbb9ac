"""Start-up time of the command line: `skyledger --help` and `skyledger sql "SELECT 1"`.

Median wall time and CPU time (user + system of the child) over N runs, and the import
time of the top-level packages (`python -X importtime`, self times summed per package).
The `sql` runs need a running embedded server with the schema at this code's head in
``--home`` (run `skyledger init` there first). ``--compare BIN`` times another install's
`skyledger` (e.g. a checkout of main) the same way; give it its own ``--compare-home``.

    python benchmarks/cli_startup.py --home /tmp/skyledger-bench-home
    python benchmarks/cli_startup.py --home H --compare /work/main/.venv/bin/skyledger --compare-home H2

Results: docs/database.md ("Start-up time of the command line"). Timings depend on the
machine's load; the script prints the load average before and after.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["time_command", "import_times"]


def time_command(cmd: list[str], env: dict[str, str], runs: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``runs`` runs of ``cmd``."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def import_times(python: str, args: list[str], env: dict[str, str], runs: int = 5) -> tuple[float, list[tuple[str, float]]]:
    """Median total import milliseconds, and the six packages that cost most (mean ms)."""
    code = "import sys; from skyledger.api.cli import main; sys.argv = ['skyledger'] + sys.argv[1:]; main()"
    totals, per_package = [], collections.Counter()
    for _ in range(runs):
        proc = subprocess.run([python, "-X", "importtime", "-c", code, *args], env=env, capture_output=True, text=True)
        run = collections.Counter()
        for line in proc.stderr.splitlines():
            if m := re.match(r"import time:\s+(\d+) \|\s+\d+ \| \s*(\S+)", line):
                run[m.group(2).split(".")[0]] += int(m.group(1))
        totals.append(sum(run.values()) / 1000)
        per_package.update(run)
    return statistics.median(totals), [(name, us / 1000 / runs) for name, us in per_package.most_common(6)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="SKYLEDGER_HOME with a running, initialised server")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--compare", help="another skyledger executable to time the same way")
    parser.add_argument("--compare-home", type=Path, help="SKYLEDGER_HOME for --compare")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYLEDGER_")}
    this = str(Path(sys.executable).with_name("skyledger"))
    installs = [("this", this, args.home)]
    if args.compare:
        installs.append(("compare", args.compare, args.compare_home or args.home))
    print(f"load average before: {os.getloadavg()}")
    wall, cpu = time_command([sys.executable, "-c", "pass"], env, args.runs)
    print(f"python -c pass: wall {wall:.2f} s, cpu {cpu:.2f} s")
    for label, exe, home in installs:
        python = str(Path(exe).with_name("python"))
        for argv in (["--help"], ["sql", "SELECT 1"]):
            run_env = env | {"SKYLEDGER_HOME": str(home)}
            wall, cpu = time_command([exe, *argv], run_env, args.runs)
            total, top = import_times(python, argv, run_env)
            packages = ", ".join(f"{name} {ms:.0f}" for name, ms in top)
            print(f"{label} skyledger {' '.join(argv)}: wall {wall:.2f} s, cpu {cpu:.2f} s; imports {total:.0f} ms ({packages})")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
