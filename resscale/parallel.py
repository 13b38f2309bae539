"""Run independent tasks in parallel, cache each finished one on disk, resume.

:func:`run_tasks` is the generic executor behind ``resscale simulate`` and the
report sweeps:

* ``tasks`` is a list of picklable arguments, ``fn(task)`` computes one;
* with a :class:`~resscale._storage.ChunkStore` and ``keys``, every finished
  task is stored atomically under its key as soon as it completes, and tasks
  whose key is already stored are not run again (resume after Ctrl-C / kill);
* ``workers=1`` runs in this process; ``workers=None`` (default) or ``>1``
  uses a local :class:`concurrent.futures.ProcessPoolExecutor` ("spawn"
  start method; each worker's BLAS is limited to ``cpu_count // workers``
  threads so processes do not oversubscribe the cores). Workers end with
  the parent, whatever ends it: SIGTERM/SIGHUP of the parent terminate the
  pool (and raise :class:`WorkersTerminated`, exit code 128 + signal), and on
  SIGKILL each worker is ended by the kernel (Linux PR_SET_PDEATHSIG) or by
  its own parent-pid poll within about 0.5 s;
* ``scheduler="tcp://host:port"`` (or a ``dask.distributed.Client``) sends the
  tasks to a Dask cluster instead (``pip install "dask[distributed]"``);
  results come back to this process, which stores them, so workers need no
  shared file system;
* a Rich progress bar (on stderr) counts ``weights`` (e.g. networks per chunk).

``fn`` and the tasks must be picklable for processes and Dask (module-level
functions, :func:`functools.partial` of them).
"""
from __future__ import annotations

import os
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import nullcontext
from multiprocessing import get_context
from typing import Callable, Optional, Sequence

from .inputs import check_bool, check_int, check_real


class WorkersTerminated(SystemExit):
    """Raised in the parent by SIGTERM/SIGHUP while worker processes run (exit code 128 + signal)."""


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker end when ``parent_pid`` ends, by any signal (also SIGKILL).

    On Linux the kernel sends SIGTERM to the worker when its parent dies
    (prctl PR_SET_PDEATHSIG); everywhere a daemon thread also polls the parent
    pid every 0.5 s and exits the process once the parent is gone.
    """
    import threading
    import time

    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except Exception:  # pragma: no cover - no libc/prctl: the poll below still works
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="resscale-parent-watch", daemon=True).start()


def _init_worker(threads: int, parent_pid: int) -> None:  # process-pool initializer
    _die_with_parent(parent_pid)
    _limit_blas(threads)


def _limit_blas(threads: int) -> None:
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(int(threads))
    except Exception:  # threadpoolctl missing: leave BLAS as it is
        pass
    # torch is not imported here (slow); code that uses it reads this variable
    os.environ["RESSCALE_WORKER_THREADS"] = str(int(threads))


def _progress(enabled: bool, description: str, total: float):
    if not enabled:
        return nullcontext(None), None
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(),
                    console=Console(file=sys.stderr), transient=False)
    return prog, prog


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def run_tasks(fn: Callable, tasks: Sequence, *, keys: Optional[Sequence[str]] = None, store=None,
              workers: Optional[int] = None, scheduler=None, progress: bool = False,
              description: str = "tasks", weights: Optional[Sequence[float]] = None,
              on_result: Optional[Callable] = None) -> list:
    """Run ``fn(task)`` for every task; return the results in task order.

    Parameters
    ----------
    fn, tasks : callable and its arguments (one call per task)
    keys : one unique string per task (required with ``store``)
    store : :class:`resscale._storage.ChunkStore` or None
        Finished results are saved there atomically; stored keys are loaded, not rerun.
    workers : int or None
        1: in-process; None: ``os.cpu_count()`` processes; n > 1: n processes.
    scheduler : str or dask.distributed.Client or None
        Dask scheduler address; overrides ``workers``.
    progress : bool
        Rich progress bar on stderr.
    weights : per-task progress increments (default 1 each)
    on_result : callable(index, result), called in this process as each task finishes
        (after it is stored), e.g. to inject an interruption in tests.
    """
    tasks = list(tasks)
    n = len(tasks)
    if keys is not None:
        keys = list(keys)
        if len(keys) != n or len(set(keys)) != n:
            raise ValueError("keys must be unique, one per task")
    if store is not None and keys is None:
        raise ValueError("a store needs keys")
    workers = check_int("workers", workers, lo=1, allow_none=True)
    progress = check_bool("progress", progress)
    weights = [1.0] * n if weights is None else [check_real("weights[i]", w, lo=0.0) for w in weights]
    if len(weights) != n:
        raise ValueError("weights must have one entry per task")

    results: list = [None] * n
    done = [False] * n
    if store is not None:
        for i, k in enumerate(keys):
            val = store.load(k)
            if val is not None:
                results[i], done[i] = val, True
    pending = [i for i in range(n) if not done[i]]

    ctx, prog = _progress(progress, description, sum(weights))
    with ctx:
        bar = None
        if prog is not None:
            bar = prog.add_task(description, total=sum(weights),
                                completed=sum(w for w, d in zip(weights, done) if d))

        def finish(i, res):
            if store is not None:
                store.save(keys[i], res)
            results[i] = res
            if prog is not None:
                prog.advance(bar, weights[i])
            if on_result is not None:
                on_result(i, res)

        if not pending:
            return results
        if scheduler is not None:
            _run_dask(fn, tasks, pending, scheduler, finish, keys)
        elif workers == 1 or len(pending) == 1 and workers is None:
            for i in pending:
                finish(i, fn(tasks[i]))
        else:
            nw = min(workers or default_workers(), len(pending))
            _run_processes(fn, tasks, pending, nw, finish)
    return results


def _kill_workers(ex) -> None:
    """Terminate the pool's worker processes now (shutdown alone waits for running tasks)."""
    procs = list((getattr(ex, "_processes", None) or {}).values())
    for p in procs:
        try:
            p.terminate()
        except Exception:  # pragma: no cover - already gone
            pass
    for p in procs:
        try:
            p.join(2.0)
            if p.is_alive():  # pragma: no cover - ignores SIGTERM
                p.kill()
        except Exception:  # pragma: no cover
            pass


def _install_term_handlers():
    """In the main thread: SIGTERM/SIGHUP raise WorkersTerminated, so the pool is shut down."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, _frame):
        raise WorkersTerminated(128 + signum)

    old = {}
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            prev = signal.getsignal(sig)
            if prev in (signal.SIG_DFL, None):  # leave handlers installed by the application alone
                old[sig] = prev
                signal.signal(sig, handler)
        except (ValueError, OSError):  # pragma: no cover
            pass
    return old


def _restore_handlers(old) -> None:
    import signal

    for sig, prev in old.items():
        try:
            signal.signal(sig, prev)
        except (ValueError, OSError):  # pragma: no cover
            pass


def _run_processes(fn, tasks, pending, nw, finish):
    threads = max(1, default_workers() // nw)
    old_handlers = _install_term_handlers()
    ex = ProcessPoolExecutor(max_workers=nw, mp_context=get_context("spawn"),
                             initializer=_init_worker, initargs=(threads, os.getpid()))
    futs = {}
    try:
        queue = list(pending)
        # keep at most 2 tasks per worker in flight, so an interrupt loses little work
        while queue or futs:
            while queue and len(futs) < 2 * nw:
                i = queue.pop(0)
                futs[ex.submit(fn, tasks[i])] = i
            finished, _ = wait(list(futs), return_when=FIRST_COMPLETED)
            for f in finished:
                i = futs.pop(f)
                finish(i, f.result())
    except BaseException:
        for f in futs:
            f.cancel()
        _kill_workers(ex)
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        _restore_handlers(old_handlers)
    ex.shutdown(wait=True)


def _run_dask(fn, tasks, pending, scheduler, finish, keys):
    try:
        from dask.distributed import Client, as_completed
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError('a Dask scheduler needs dask.distributed: pip install "dask[distributed]"') from exc
    own = not isinstance(scheduler, Client)
    client = Client(scheduler) if own else scheduler
    try:
        futs = {}
        for i in pending:
            name = f"resscale-{keys[i]}-{os.getpid()}" if keys is not None else None
            kw = {"key": name} if name else {}
            futs[client.submit(fn, tasks[i], pure=False, **kw)] = i
        try:
            for f in as_completed(list(futs)):
                finish(futs[f], f.result())
        except BaseException:
            client.cancel(list(futs))
            raise
    finally:
        if own:
            client.close()
