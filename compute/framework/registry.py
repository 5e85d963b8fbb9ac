"""Every compute task by name, in the order the nightly flow runs them."""

from __future__ import annotations

from collections.abc import Callable

from skyledger.schema.errors import ConfigError

from skyledger.compute.tasks.abundances import AbundancesTask
from skyledger.compute.tasks.gradients import GradientsTask
from skyledger.compute.tasks.lines import LinesTask
from skyledger.compute.tasks.nebula import NebulaDiagnosticTask, NebulaNNTask
from skyledger.compute.tasks.rotation import RotationTask
from .task import Task

__all__ = ["TASKS", "get_task"]

#: name -> factory; upstream tasks first (abundances read the lines' results; rotation
#: reads the lines' velocities; gradients read abundances and rotation).
TASKS: dict[str, Callable[[], Task]] = {
    LinesTask.name: LinesTask,
    AbundancesTask.name: AbundancesTask,
    RotationTask.name: RotationTask,
    GradientsTask.name: GradientsTask,
    NebulaDiagnosticTask.name: NebulaDiagnosticTask,
    NebulaNNTask.name: NebulaNNTask,
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]()
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}") from None
