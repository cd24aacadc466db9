"""The loader: opens (and warms) one model version, and closes it again.

TF Serving's loader role: it knows how to bring one servable up and down and
nothing about versions, policies or traffic (that is the manager's job).

- **Open.** :meth:`VersionLoader.load` opens the directory with the model
  factory (``recstrata.Model`` by default, whose constructor loads and warms
  up every session) on a short-lived loader thread and returns a
  :class:`LoadResult`; a failure is a result with the library's message, never
  an exception.
- **Loader priority.** With the inline session config
  (``inter_op_parallelism_threads < 0``, ``intra_op_parallelism_threads == 1``,
  no per-session pools: every TF op runs in the calling thread) all loading and
  warm-up work happens on the loader thread, which lowers its own scheduling
  priority by ``nice`` and may pin itself to ``cpus``, so a reload yields the
  CPU to serving threads. With pooled configs TF creates its pools during the
  load and they would inherit that priority and affinity for their whole life,
  so the loader then runs at normal priority. ``LoadResult.loader`` says which.
- **Close.** :meth:`VersionLoader.unload` closes the model and hands freed heap
  pages back to the OS.

Thread safety: a loader has no mutable state; any thread may call it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

__all__ = ["LoadResult", "VersionLoader"]

log = logging.getLogger("recstrata.serving")


@dataclass(frozen=True)
class LoadResult:
    """What one load produced: ``model`` or ``error`` (exactly one is set)."""

    model: Any
    error: str | None
    loader: str          # how the loader thread ran (priority, cpus)
    load_ms: float


class VersionLoader:
    """Opens and closes model versions (see module docstring).

    ``factory(path, config)`` returns an open model with ``close()``;
    ``None`` means ``recstrata.processor.Model``.
    """

    def __init__(self, *, nice: int = 10, cpus: Iterable[int] | None = None,
                 factory: Callable[..., Any] | None = None):
        self.nice = int(nice)
        self.cpus = None if cpus is None else sorted(set(cpus))
        self._factory = factory

    def load(self, path: str, config: dict) -> LoadResult:
        """Opens ``path`` with ``config`` on a fresh loader thread and waits for it."""
        inline = _runs_inline(config)
        loader = "normal priority (pooled session config)"
        if inline:
            loader = f"nice +{self.nice}" + (f", cpus {self.cpus}" if self.cpus else "")
        result: dict[str, Any] = {}

        def run():
            if inline:
                _lower_this_thread(self.nice, self.cpus)
            try:
                factory = self._factory
                if factory is None:
                    from recstrata.processor import Model as factory
                result["model"] = factory(path, config)
            except Exception as exc:  # the library's message goes to the caller
                result["error"] = f"{type(exc).__name__}: {exc}"

        t0 = time.perf_counter()
        t = threading.Thread(target=run, name="recstrata-loader", daemon=True)
        t.start()
        t.join()
        return LoadResult(result.get("model"), result.get("error"), loader,
                          (time.perf_counter() - t0) * 1e3)

    @staticmethod
    def unload(model: Any, label: str = "a model") -> None:
        """Closes ``model`` (errors are logged, not raised) and trims the heap."""
        try:
            model.close()
        except Exception:
            log.exception("closing %s failed", label)
        _malloc_trim()


def _runs_inline(config: dict) -> bool:
    """True when every TF op of a model opened with ``config`` runs in the calling thread."""
    try:
        return (int(config.get("inter_op_parallelism_threads", -1)) < 0
                and int(config.get("intra_op_parallelism_threads", 1)) == 1
                and not config.get("use_per_session_threads", False))
    except (TypeError, ValueError):  # a malformed value: the library will report it
        return False


def _lower_this_thread(nice: int, cpus: list[int] | None) -> None:
    """Lowers the calling thread's priority and/or pins it (Linux: both are per thread)."""
    try:
        if nice > 0:
            tid = threading.get_native_id()
            cur = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, cur + nice))
        if cpus:
            os.sched_setaffinity(0, cpus)  # pid 0 = the calling thread
    except (OSError, AttributeError, ValueError) as exc:  # not fatal: load at normal priority
        log.warning("could not lower the loader thread's priority: %s", exc)


def _malloc_trim() -> None:
    """Returns freed heap pages to the OS after an unload (glibc keeps them otherwise).

    glibc raises its mmap threshold after large frees, so a model's tensors
    often live on the heap and stay in RSS after the model is closed; without
    this, every reload leaves the process as large as at its peak.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
