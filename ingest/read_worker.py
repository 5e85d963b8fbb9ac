"""A read-ahead worker process: reads the files it is sent and stores the groups it is told to.

Workers are plain ``python -c`` subprocesses (:data:`WORKER_CODE`) fed pickled messages
on stdin and answering each with one pickled reply on stdout, in order. Not
multiprocessing's ``spawn``: it re-runs the parent's ``__main__`` script in every child,
which breaks any caller's script that lacks an ``if __name__ == "__main__"`` guard. The
parent's side is :class:`skyledger.ingest.read_ahead.ReadAhead`.

Messages: ("setup", StoreTarget, root) once, no reply (storing workers only);
("read", index, job, root, ship_limit, limits) -> Prepared (a stub if held);
("store", indexes, survey_ids) -> Stored; ("close",) -> Closed. Any -> Failure.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import queue
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skyledger.ingest.inflate import InputLimits
from skyledger.ingest.prepare import Job, Prepared, prepare
from skyledger.ingest.store import Store
from skyledger.ingest.store_groups import Member, groupable
from skyledger.schema.errors import DatabaseError

__all__ = ["Closed", "Failure", "StoreTarget", "Stored", "WORKER_CODE", "serve"]

WORKER_CODE = "from skyledger.ingest.read_worker import serve; serve()"


@dataclass(frozen=True)
class StoreTarget:
    """Where storing workers write: the database (libpq conninfo) and the batch id, and
    whether content stored under another survey is loaded again (see ``Store``)."""

    conninfo: str
    batch_id: str | None = None
    allow_duplicate_content: bool = False


def _die_with_parent() -> None:
    # Linux: the kernel sends SIGTERM to this worker when its parent dies, even by
    # SIGKILL; elsewhere the closed stdin ends the loop. SIGTERM ends the process at
    # once: an open transaction dies with its connection.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@dataclass
class Failure:
    path: str
    trace: str
    database: str | None = None  # a DatabaseError's message: the loader raises it as one


@dataclass
class Stored:
    outcomes: list[Any]  # FileOutcome, in file order


@dataclass
class Closed:
    pass


class _Slot:
    """A reply in the making; replies leave a worker in the order of their messages."""

    __slots__ = ("_done", "reply")

    def __init__(self) -> None:
        self._done = threading.Event()
        self.reply: Any = None

    def fill(self, reply: Any) -> None:
        self.reply = reply
        self._done.set()

    def wait(self) -> Any:
        self._done.wait()
        return self.reply


class _Worker:
    """A worker's state: the files it holds for groups, and its store (storing workers).

    Reads run on the worker's main thread; stores and the closing flush run in order on
    a storing thread, so the worker goes on reading while the database server inserts a
    group (the thread waits on the socket with the GIL released); a third thread writes
    the replies in message order.
    """

    def __init__(self, results: Any) -> None:
        self.store: Store | None = None  # made on setup
        self.held: dict[int, Member] = {}  # job index -> Member
        self._groupable: Any = None  # groupable, storing workers only
        self._results = results
        self._replies: queue.SimpleQueue[_Slot | None] = queue.SimpleQueue()
        self._stores: queue.SimpleQueue[tuple[str, Any, _Slot]] = queue.SimpleQueue()
        self._replier = threading.Thread(target=self._reply_loop, name="skyledger-reader-replies", daemon=True)
        self._replier.start()
        self._storer: threading.Thread | None = None

    def handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "setup":
            target, root = message[1], message[2]
            self.store = Store(target.conninfo, root=root, batch_id=target.batch_id,
                               allow_duplicate_content=target.allow_duplicate_content)  # fmt: skip
            self._groupable = groupable
            self._storer = threading.Thread(target=self._store_loop, name="skyledger-reader-store", daemon=True)
            self._storer.start()
            return
        slot = _Slot()
        self._replies.put(slot)
        if kind == "read":
            try:
                slot.fill(self.read(*message[1:]))
            except Exception:  # noqa: BLE001 - a bug in a reader: the parent re-raises it with this trace
                slot.fill(Failure(message[2].path, traceback.format_exc()))
        elif kind == "store":
            indexes, survey_ids = message[1], message[2]
            missing = [i for i in indexes if i not in self.held]
            if missing:  # a loader bug: say which files, rather than dying
                slot.fill(Failure("", f"asked to store files {missing} this worker does not hold"))
                return
            self._stores.put(("store", ([self.held.pop(i) for i in indexes], survey_ids), slot))
        elif kind == "close":
            if self._storer is None:
                slot.fill(Closed())  # nothing stored, nothing to flush
            else:
                self._stores.put(("close", None, slot))
        else:
            slot.fill(Failure("", f"unknown message {kind!r}"))

    def read(
        self, index: int, job: Job, root: Path | None, ship_limit: int | None, limits: InputLimits | None = None
    ) -> Prepared:
        prepared = prepare(job, root, ship_limit=ship_limit, limits=limits)
        if self._groupable is None:
            return prepared
        member = self._groupable(prepared, job.reader, index, time.perf_counter() - prepared.seconds)
        if member is None:
            return prepared
        self.held[index] = member
        return dataclasses.replace(prepared, contents=None, held=True, held_bytes=member.nbytes)

    def _store_loop(self) -> None:
        while True:
            kind, payload, slot = self._stores.get()
            if kind == "store":
                members, survey_ids = payload
                self.store.survey_ids.update(survey_ids)
                try:
                    slot.fill(Stored(self.store.store_group(members)))
                except DatabaseError as err:
                    slot.fill(Failure(members[0].prepared.path, traceback.format_exc(), database=str(err)))
                except Exception:  # noqa: BLE001 - a bug: the parent re-raises it with this trace
                    slot.fill(Failure(members[0].prepared.path, traceback.format_exc()))
            else:
                try:
                    self.store.close()
                    slot.fill(Closed())
                except Exception as err:  # noqa: BLE001 - psycopg's: the flush of the last groups failed
                    slot.fill(Failure("", traceback.format_exc(),
                                       database=f"could not make the last stored files durable: {err}"))  # fmt: skip
                return

    def _reply_loop(self) -> None:
        try:
            while (slot := self._replies.get()) is not None:
                pickle.dump(slot.wait(), self._results, protocol=pickle.HIGHEST_PROTOCOL)
                self._results.flush()
        except (BrokenPipeError, ValueError):
            pass  # the parent is gone, or the stream was closed on the way out

    def finish(self) -> None:
        """Write the outstanding replies (the input has ended)."""
        self._replies.put(None)
        self._replier.join()


def serve() -> None:
    """A worker's loop: one reply per message (see above), until EOF."""
    _die_with_parent()
    messages = os.fdopen(os.dup(0), "rb")
    results = os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)  # a stray print must not corrupt the result stream
    worker = _Worker(results)
    try:
        while True:
            try:
                message = pickle.load(messages)
            except EOFError:
                break  # the parent closed the stream, or died
            worker.handle(message)
        worker.finish()
    except (KeyboardInterrupt, BrokenPipeError):
        return  # Ctrl-C reaches the whole process group; a broken pipe means the parent is gone
