"""The manager: named models, aspired versions, availability-preserving swaps.

    mgr = ModelManager({"ctr": "/models/ctr"}, poll_seconds=5)
    out = mgr.predict("ctr", {"x": x})          # newest available version
    out = mgr.predict("ctr", {"x": x}, version=1)
    print(mgr.status())
    mgr.close()

TF Serving's split: :mod:`recstrata.serving.source` says which versions exist
and which the policy wants (the *aspired* versions); :mod:`recstrata.serving.loader`
opens and closes one version; this module decides when to load, publishes,
retires, drains and reports.

Contracts
- **Discovery** (the source). A version is a sub-directory whose name is a
  non-negative integer, complete once it holds ``saved_model.pb`` (or
  ``saved_model.pbtxt``) or ``bundle.json``; incomplete directories (a copy in
  progress) are listed in :meth:`status` and never loaded. Writers should copy
  to a temporary name and rename it into place; a copy in place works too, as
  a load that fails on half-written files is retried (below).
- **Policies** (:class:`VersionPolicy`): ``latest`` (the newest N complete
  versions, N=1 by default), ``all``, ``specific`` (a fixed list).
- **Load before traffic.** A new version is opened by the loader entirely off
  the request path; only then is it published, by replacing the model's
  version table in one assignment under the manager lock. Requests without a
  version go to the newest published version.
- **Drain before close.** Every request holds a reference to the version it
  uses (taken and dropped under the lock; no lock is held while the model
  runs). A replaced version is *retired*: it gets no new requests and is
  closed, off the request path, when its last in-flight request returns.
- **Availability first.** A version leaves the table only when at least one
  version the policy wants is serving. A failed load keeps the old version
  serving, is reported in :meth:`status` (``state: "FAILED"`` and the
  library's message), and is retried at a later poll when the directory
  changed or after ``retry_seconds``.
- **Loader priority** (the loader): loads run on a short-lived thread at
  ``load_nice`` / ``load_cpus`` when the session config runs every op inline,
  at normal priority otherwise (reported as ``loader`` in :meth:`status`).
  ``load_config`` holds config overrides applied only to versions opened by a
  *reload* (not the first load of a model), e.g. ``{"warmup_runs": 2}``.
- **Thread safety.** Every public method may be called from any thread.
  :meth:`poll` calls are serialized (one discovery/load pass at a time).
- **Memory.** During a reload both versions are resident (availability over
  memory, like TF Serving's default). ``reload="resource"`` retires the old
  version first (requests get :class:`UnavailableError` until the new one is
  loaded) for hosts that cannot hold two copies.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from os import PathLike, fspath
from typing import Any, Callable, Iterable, Mapping

from recstrata.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError
from recstrata.serving.loader import VersionLoader
from recstrata.serving.source import VersionPolicy, VersionSource, fingerprint

__all__ = ["ModelManager", "VersionPolicy", "UnavailableError"]

log = logging.getLogger("recstrata.serving")

# Version states reported by status() (TF Serving's names).
LOADING, AVAILABLE, UNLOADING, END, FAILED = "LOADING", "AVAILABLE", "UNLOADING", "END", "FAILED"


class UnavailableError(FailedPreconditionError):
    """The model exists but no version of it is serving (yet, or any more)."""


class _Servable:
    """One loaded version. ``refs``/``retired``/``closing`` change under the manager lock."""

    __slots__ = ("name", "version", "path", "model", "refs", "retired", "closing", "requests")

    def __init__(self, name: str, version: int, path: str, model: Any):
        self.name, self.version, self.path, self.model = name, version, path, model
        self.refs = 0
        self.retired = False
        self.closing = False
        self.requests = 0


@dataclass
class _VersionRecord:
    """What status() reports about one version."""

    version: int
    path: str
    state: str = LOADING
    error: str | None = None
    load_ms: float | None = None
    loaded_at: float | None = None
    failures: int = 0
    last_attempt: float = 0.0
    fingerprint: Any = None
    loader: str | None = None


@dataclass
class _ModelState:
    name: str
    source: VersionSource
    config: dict
    serving: dict = field(default_factory=dict)      # version -> _Servable (replaced, never mutated)
    records: dict = field(default_factory=dict)      # version -> _VersionRecord
    incomplete: list = field(default_factory=list)
    base_error: str | None = None
    last_poll: float | None = None
    loaded_once: bool = False


class _Lease:
    """A reference to one serving version; released on exit (see ModelManager.lease)."""

    __slots__ = ("_mgr", "servable")

    def __init__(self, mgr: "ModelManager", servable: _Servable):
        self._mgr, self.servable = mgr, servable

    @property
    def model(self):
        return self.servable.model

    @property
    def version(self) -> int:
        return self.servable.version

    def __enter__(self) -> "_Lease":
        return self

    def __exit__(self, *exc) -> None:
        self._mgr._release(self.servable)


class ModelManager:
    """Serves named models from ``BASE/<version>/`` directories (see module docstring).

    ``models``: ``{name: base_dir}`` or ``{name: {"base_path": ..., "policy": ...,
    "config": {...}}}``. ``config``: model_config dict applied to every model
    (per-model configs are merged over it). ``poll_seconds``: start a
    background poll thread with that interval (None: call :meth:`poll`
    yourself). The first load of every model happens in the constructor
    (``initial_poll=True``), so a manager is ready when it returns; models
    whose first load failed are reported in :meth:`status`.
    """

    def __init__(self, models: Mapping[str, Any] | None = None, *,
                 config: Mapping[str, Any] | None = None,
                 load_config: Mapping[str, Any] | None = None,
                 poll_seconds: float | None = None,
                 retry_seconds: float = 30.0,
                 load_nice: int = 10,
                 load_cpus: Iterable[int] | None = None,
                 reload: str = "availability",
                 initial_poll: bool = True,
                 model_factory: Callable[..., Any] | None = None):
        if reload not in ("availability", "resource"):
            raise InvalidArgumentError("reload must be 'availability' or 'resource'")
        self._lock = threading.Condition(threading.Lock())
        self._poll_lock = threading.Lock()
        self._models: dict[str, _ModelState] = {}
        self._draining: set[_Servable] = set()
        self._closers: list[threading.Thread] = []
        self._closed = False
        self._config = dict(config or {})
        self._load_config = dict(load_config or {})
        self._retry_seconds = float(retry_seconds)
        self._loader = VersionLoader(nice=load_nice, cpus=load_cpus, factory=model_factory)
        self._reload = reload
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._poll_seconds: float | None = None
        self.polls = 0
        for name, spec in (models or {}).items():
            if isinstance(spec, Mapping):
                self.add_model(name, **spec, poll=False)
            else:
                self.add_model(name, spec, poll=False)
        if initial_poll:
            self.poll()
        if poll_seconds:
            self.start(poll_seconds)

    # ---- configuration ----------------------------------------------------

    def add_model(self, name: str, base_path: str | PathLike, policy: Any = None,
                  config: Mapping[str, Any] | None = None, poll: bool = True) -> None:
        """Adds a model to serve; with ``poll`` its versions are loaded now."""
        if not isinstance(name, str) or not name or "/" in name or ":" in name:
            raise InvalidArgumentError(f"model name must be a non-empty string without '/' or ':': {name!r}")
        st = _ModelState(name, VersionSource(fspath(base_path), policy),
                         {**self._config, **dict(config or {})})
        with self._lock:
            if self._closed:
                raise FailedPreconditionError("model manager is closed")
            if name in self._models:
                raise InvalidArgumentError(f"model {name!r} is already managed")
            self._models[name] = st
        if poll:
            self.poll(name)

    @property
    def model_names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    # ---- requests ---------------------------------------------------------

    def lease(self, name: str, version: int | None = None) -> _Lease:
        """A reference to a serving version: ``with mgr.lease("ctr") as l: l.model.run(...)``.

        The version stays open until the lease is released. Raises
        ``NotFoundError`` (unknown model or version) or ``UnavailableError``
        (no version serving).
        """
        with self._lock:
            if self._closed:
                raise FailedPreconditionError("model manager is closed")
            st = self._models.get(name)
            if st is None:
                raise NotFoundError(f"no model named {name!r} (models: {sorted(self._models)})")
            serving = st.serving
            if version is None:
                if not serving:
                    raise UnavailableError(self._unavailable_message(st))
                s = serving[max(serving)]
            else:
                s = serving.get(version) if isinstance(version, int) else None
                if s is None:
                    raise NotFoundError(f"version {version!r} of model {name!r} is not serving "
                                        f"(serving: {sorted(serving)})")
            s.refs += 1
            s.requests += 1
            return _Lease(self, s)

    def predict(self, name: str, feeds: Mapping[str, Any], version: int | None = None,
                outputs: Iterable[str] | str | None = None) -> dict:
        """``Model.run`` on the chosen version (newest serving one by default)."""
        with self.lease(name, version) as lease:
            return lease.model.run(feeds, outputs)

    def predict_bytes(self, name: str, request: bytes, version: int | None = None) -> bytes:
        """``Model.predict_bytes`` (DeepRec PredictRequest -> PredictResponse bytes)."""
        with self.lease(name, version) as lease:
            return lease.model.predict_bytes(request)

    def _release(self, s: _Servable) -> None:
        with self._lock:
            s.refs -= 1
            close_now = s.retired and s.refs == 0 and not s.closing
            if close_now:
                s.closing = True
        if close_now:  # the last request of a retired version: close it off this thread
            self._close_later(s)

    @staticmethod
    def _unavailable_message(st: _ModelState) -> str:
        msg = f"model {st.name!r} has no version available"
        failed = [r for r in st.records.values() if r.state == FAILED]
        if failed:
            r = max(failed, key=lambda r: r.version)
            msg += f" (version {r.version} failed to load: {r.error})"
        elif st.base_error:
            msg += f" ({st.base_error})"
        elif not st.records:
            msg += f" (no complete version directory under {st.source.base})"
        return msg

    # ---- polling ----------------------------------------------------------

    def start(self, poll_seconds: float) -> None:
        """Starts the background poll thread (idempotent)."""
        if poll_seconds <= 0:
            raise InvalidArgumentError("poll_seconds must be > 0")
        with self._lock:
            if self._closed:
                raise FailedPreconditionError("model manager is closed")
            self._poll_seconds = float(poll_seconds)
            if self._poller is not None:
                return
            self._poller = threading.Thread(target=self._poll_loop, name="recstrata-poll", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            try:
                self.poll()
            except Exception:  # never let the thread die; the error is in status()
                log.exception("model poll failed")

    def poll(self, name: str | None = None) -> list[str]:
        """One discovery pass: loads wanted versions, retires unwanted ones.

        Returns a list of human-readable actions taken (for logs and tests).
        """
        actions: list[str] = []
        with self._poll_lock:
            with self._lock:
                if self._closed:
                    return actions
                states = [self._models[name]] if name else list(self._models.values())
            for st in states:
                self._poll_model(st, actions)
            self.polls += 1
        return actions

    def _poll_model(self, st: _ModelState, actions: list[str]) -> None:
        st.last_poll = time.time()
        scan = st.source.scan()
        st.base_error = scan.error
        if scan.error is not None:
            return
        st.incomplete = list(scan.incomplete)
        on_disk, wanted = scan.complete, scan.aspired
        for v in sorted(wanted, reverse=True):  # newest first: it gets traffic soonest
            if v in st.serving or self._stop.is_set():
                continue
            rec = st.records.get(v)
            if rec is None or rec.state == END:
                rec = _VersionRecord(v, on_disk[v])
                with self._lock:  # status() iterates records under the lock
                    st.records[v] = rec
            elif rec.state == FAILED and not self._should_retry(rec):
                continue
            if self._reload == "resource":
                self._retire_versions(st, [u for u in st.serving if u not in wanted], actions)
            self._load(st, rec, actions)
        serving = st.serving
        unwanted = [v for v in serving if v not in wanted]
        if unwanted and any(v in wanted for v in serving):  # availability: keep old until new serves
            self._retire_versions(st, unwanted, actions)
        for v, rec in st.records.items():
            if rec.state == FAILED and v not in on_disk:
                rec.state, rec.error = END, f"removed from disk after failing: {rec.error}"

    def _should_retry(self, rec: _VersionRecord) -> bool:
        if time.time() - rec.last_attempt >= self._retry_seconds:
            return True
        return fingerprint(rec.path) != rec.fingerprint  # the directory changed since

    def _load(self, st: _ModelState, rec: _VersionRecord, actions: list[str]) -> None:
        rec.state, rec.error = LOADING, None
        rec.last_attempt = time.time()
        rec.fingerprint = fingerprint(rec.path)
        config = dict(st.config)
        if st.loaded_once:
            config.update(self._load_config)
        res = self._loader.load(rec.path, config)
        rec.loader = res.loader
        if res.error is not None:
            rec.state, rec.error = FAILED, res.error
            rec.failures += 1
            actions.append(f"{st.name}: version {rec.version} failed to load: {res.error}")
            log.warning("model %s version %s failed to load: %s", st.name, rec.version, res.error)
            return
        rec.load_ms = res.load_ms
        s = _Servable(st.name, rec.version, rec.path, res.model)
        with self._lock:
            if self._closed:  # close() ran while we loaded: do not publish
                closed = True
            else:
                closed = False
                st.serving = {**st.serving, rec.version: s}  # the atomic publish
                st.loaded_once = True
        if closed:
            self._loader.unload(res.model, f"model {st.name} version {rec.version}")
            rec.state = END
            return
        rec.state, rec.loaded_at = AVAILABLE, time.time()
        actions.append(f"{st.name}: version {rec.version} available ({rec.load_ms:.0f} ms)")
        log.info("model %s version %s available (%.0f ms)", st.name, rec.version, rec.load_ms)

    def _retire_versions(self, st: _ModelState, versions: list[int], actions: list[str]) -> None:
        if not versions:
            return
        to_close = []
        with self._lock:
            serving = dict(st.serving)
            for v in versions:
                s = serving.pop(v, None)
                if s is None:
                    continue
                s.retired = True
                self._draining.add(s)
                if s.refs == 0 and not s.closing:
                    s.closing = True
                    to_close.append(s)
            st.serving = serving  # unpublished: no new request can find them
        for v in versions:
            rec = st.records.get(v)
            if rec is not None:
                rec.state = UNLOADING
            actions.append(f"{st.name}: version {v} retired")
        for s in to_close:
            self._close_servable(s)

    # ---- closing ----------------------------------------------------------

    def _close_later(self, s: _Servable) -> None:
        t = threading.Thread(target=self._close_servable, args=(s,), name="recstrata-unload", daemon=True)
        with self._lock:
            self._closers = [c for c in self._closers if c.is_alive()]
            self._closers.append(t)
        t.start()

    def _close_servable(self, s: _Servable) -> None:
        self._loader.unload(s.model, f"model {s.name} version {s.version}")
        with self._lock:
            self._draining.discard(s)
            st = self._models.get(s.name)
            rec = st.records.get(s.version) if st else None
            if rec is not None and rec.state == UNLOADING:
                rec.state = END
            self._lock.notify_all()
        log.info("model %s version %s unloaded", s.name, s.version)

    def close(self, timeout: float | None = 30.0) -> None:
        """Stops polling, refuses new requests, closes every version after it drains.

        Waits up to ``timeout`` seconds for in-flight requests. Idempotent.
        """
        self._stop.set()
        poller = self._poller
        if poller is not None and poller is not threading.current_thread():
            poller.join()
        with self._poll_lock:  # no load in progress from here on
            with self._lock:
                if self._closed:
                    return
                self._closed = True
                states = list(self._models.values())
        for st in states:
            self._retire_versions(st, list(st.serving), [])
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._draining:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    log.warning("close(): %d versions still have requests in flight", len(self._draining))
                    break
                self._lock.wait(left)
            closers = list(self._closers)
        for t in closers:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> "ModelManager":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- status -----------------------------------------------------------

    def status(self, name: str | None = None) -> dict:
        """``{name: {...}}`` (or one model's dict): versions with state, errors, load times."""
        with self._lock:
            if name is not None and name not in self._models:
                raise NotFoundError(f"no model named {name!r} (models: {sorted(self._models)})")
            states = [self._models[name]] if name else list(self._models.values())
            out = {st.name: self._model_status(st) for st in states}
        return out[name] if name is not None else out

    def _model_status(self, st: _ModelState) -> dict:
        serving = st.serving
        live = {s.version: s for s in self._draining if s.name == st.name}
        live.update({s.version: s for s in serving.values()})  # a re-loaded version wins
        versions = []
        for v in sorted(st.records, reverse=True):
            r = st.records[v]
            s = live.get(v)
            versions.append({
                "version": v, "state": r.state, "path": r.path, "error": r.error,
                "load_ms": None if r.load_ms is None else round(r.load_ms, 1),
                "loaded_at": r.loaded_at, "load_failures": r.failures, "loader": r.loader,
                "in_flight": s.refs if s else 0, "requests": s.requests if s else 0,
            })
        return {
            "name": st.name, "base_path": st.source.base, "policy": st.source.policy.describe(),
            "serving": sorted(serving), "default_version": max(serving) if serving else None,
            "available": bool(serving), "versions": versions,
            "incomplete_versions": list(st.incomplete), "base_error": st.base_error,
            "last_poll": st.last_poll,
        }
