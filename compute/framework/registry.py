"""Every compute task by name, in the order the nightly flow runs them.

A task registers itself: its module in ``compute/tasks/`` decorates the class with
:func:`register`, which checks it against the :class:`~.task.Task` protocol. The registry
imports every module of that package the first time it is asked, so adding a task
touches no file but its own. The run order follows each task's ``after`` (the tasks whose
results it reads): upstream first, then by name.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any, TypeVar

from pydantic import BaseModel

from skyledger.schema.errors import ConfigError
from skyledger.schema.results import RESULT_VIEWS

from .task import FlagDoc, ResultTable, Task

__all__ = ["get_task", "register", "task_names", "tasks", "unregister"]

_TASK_PACKAGE = "skyledger.compute.tasks"
_REGISTERED: dict[str, type] = {}
_discovered = False

T = TypeVar("T", bound=type)

#: Methods of the Task protocol (see task.py for what each does).
_METHODS = ("pending", "upstream_runs", "model_files", "load", "compute")


def _check(cls: type) -> list[str]:
    """What ``cls`` lacks to be a task; empty when it follows the protocol."""
    problems = []
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        problems.append("name must be an identifier string")
    version = getattr(cls, "version", None)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        problems.append("version must be an int >= 1 (bumped by hand when results change)")
    params = getattr(cls, "Params", None)
    if not (inspect.isclass(params) and issubclass(params, BaseModel)):
        problems.append("Params must be a pydantic model")
    tables = getattr(cls, "result_tables", None)
    if not tables or not all(isinstance(t, ResultTable) for t in tables):
        problems.append("result_tables must be a non-empty tuple of ResultTable.of(Model)")
    else:
        undeclared = [t.name for t in tables if t.name not in RESULT_VIEWS]
        if undeclared:
            problems.append(f"result tables {undeclared} are not declared with schema.results.result_table")
    flags = getattr(cls, "flags", None)
    if not isinstance(flags, tuple) or not all(isinstance(f, FlagDoc) for f in flags):
        problems.append("flags must be a tuple of FlagDoc")
    after = getattr(cls, "after", None)
    if not isinstance(after, tuple) or not all(isinstance(a, str) for a in after):
        problems.append("after must be a tuple of task names (the tasks whose results it reads)")
    problems += [f"method {m}() is missing" for m in _METHODS if not callable(getattr(cls, m, None))]
    return problems


def register(cls: T) -> T:
    """Class decorator: add a task to the registry after checking it against the protocol."""
    problems = _check(cls)
    if problems:
        raise ConfigError(f"task class {cls.__qualname__} does not follow the Task protocol: " + "; ".join(problems))
    name = cls.name  # type: ignore[attr-defined]
    known = _REGISTERED.get(name)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise ConfigError(f"two tasks are named {name!r}: {known.__qualname__} and {cls.__qualname__}")
    _REGISTERED[name] = cls
    return cls


def unregister(name: str) -> None:
    """Take a task out of the registry (tests that register a task of their own)."""
    _REGISTERED.pop(name, None)


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    package = importlib.import_module(_TASK_PACKAGE)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        importlib.import_module(f"{_TASK_PACKAGE}.{info.name}")
    _discovered = True


def _ordered() -> list[str]:
    """Task names with every task after those it reads from, ties by name."""
    remaining = {name: {a for a in cls.after if a in _REGISTERED} for name, cls in _REGISTERED.items()}
    order: list[str] = []
    while remaining:
        ready = sorted(n for n, deps in remaining.items() if not deps)
        if not ready:
            raise ConfigError(f"tasks read from each other in a cycle: {sorted(remaining)}")
        # One at a time, so a task reached early does not let its dependants overtake
        # independent tasks that sort before them.
        first = ready[0]
        order.append(first)
        del remaining[first]
        for deps in remaining.values():
            deps.discard(first)
    return order


def task_names() -> list[str]:
    """Every registered task, upstream first."""
    _discover()
    return _ordered()


def tasks() -> dict[str, Any]:
    """name -> task class (a factory of a fresh task), upstream first."""
    return {name: _REGISTERED[name] for name in task_names()}


def get_task(name: str) -> Task:
    _discover()
    try:
        return _REGISTERED[name]()
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; tasks: {', '.join(task_names())}") from None
