"""Worker processes for CPU fits: one process per core, each with one torch thread.

Most of a chunk's operations are on arrays too small for torch to split across threads
(two threads measured 1.36x one), while chunks are independent: two single-thread
processes measured 1.46-1.62x one process with two threads. The pool is created on first
use and kept for the life of the process (spawning a worker and importing torch costs
seconds, a page of spectra takes about as long). Workers exit when their parent does,
even when it is killed outright: a SIGKILLed ``skyledger process`` leaves none behind.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

__all__ = ["worker_pool", "shutdown_pool"]

_POOL: ProcessPoolExecutor | None = None
_SIZE = 0


def _watch_parent(parent: int) -> None:
    # An orphan is re-parented (to init or a subreaper): its parent pid changes.
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _start_worker(parent: int) -> None:
    import torch

    torch.set_num_threads(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()


def worker_pool(size: int) -> ProcessPoolExecutor:
    """The process pool of ``size`` workers (created, or re-created at a new size, here)."""
    global _POOL, _SIZE
    if _POOL is None or _SIZE != size:
        shutdown_pool()
        _POOL = ProcessPoolExecutor(size, mp_context=get_context("spawn"), initializer=_start_worker, initargs=(os.getpid(),))
        _SIZE = size
    return _POOL


def shutdown_pool() -> None:
    """Stop the workers (also done at interpreter exit); a later fit starts new ones."""
    global _POOL, _SIZE
    if _POOL is not None:
        _POOL.shutdown(wait=True, cancel_futures=True)
    _POOL, _SIZE = None, 0


atexit.register(shutdown_pool)
