"""One `process` run of the abundances task, in its own process, for the concurrency test.

``python -m tests.compute.claims_worker ROLE SYNC_DIR`` (from the repository root, with
SKYLEDGER_DATABASE_URL set). Files in SYNC_DIR force the two runs to overlap, whatever
the machine's load: run ``a`` computes its first batch only after run ``b`` has loaded
one of its own, and ``b`` starts only after ``a`` has loaded its first batch. Without
claims ``b`` would then read ``a``'s batch as pending (``a`` has not succeeded yet).
Prints the run summary as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from skyledger.compute.tasks.abundances import AbundancesParams, AbundancesTask
from skyledger.compute.framework.runner import process
from skyledger.schema.database import connect
from skyledger.schema.settings import Settings

PARAMS = AbundancesParams(n_draws=10)
WAIT_S = 300  # only a guard against a hung test: the order, not the timing, is what matters


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared: the other run did not get that far")
        time.sleep(0.05)


class SyncedAbundances(AbundancesTask):
    def __init__(self, role: str, sync: Path) -> None:
        super().__init__()
        self.role, self.sync = role, sync

    def load(self, session, input_ids, params):
        batch = super().load(session, input_ids, params)
        (self.sync / f"{self.role}-loaded").touch()
        return batch

    def compute(self, batch, params, device, workers=1):
        if self.role == "a":
            wait_for(self.sync / "b-loaded")
        return super().compute(batch, params, device, workers)


def main() -> None:
    role, sync = sys.argv[1], Path(sys.argv[2])
    if role == "b":
        wait_for(sync / "a-loaded")
    db = connect(Settings())
    try:
        summary = process(db, SyncedAbundances(role, sync), PARAMS, batch_size=2)
    finally:
        db.dispose()
    print(json.dumps(asdict(summary)))


if __name__ == "__main__":
    main()
