"""The manager: named models from versioned directories, over the native host.

    mgr = ModelManager({"ctr": "/models/ctr"}, poll_seconds=5)
    out = mgr.predict("ctr", {"x": x})          # newest serving version
    out = mgr.predict("ctr", {"x": x}, version=1)
    mgr.pin("ctr", 1); mgr.unpin("ctr")         # roll back and forward
    print(mgr.status(), mgr.metrics_text())
    mgr.close()

A thin layer over :class:`recstrata.host.Host` (``rs_host``, docs/host.md):
version discovery, policies, load-and-warm before traffic, the atomic swap,
drain-then-close, retries of failed loads, loader priority and metrics are
the native host's, the same for C, Go and Python hosts. This module adds
the Python shape of it:

- **Config.** ``models`` is ``{name: base_dir}`` or ``{name: {"base_path",
  "policy", "config"}}``; ``policy`` is a :class:`VersionPolicy` or its
  string form; ``config`` (per model) is merged over the manager's
  ``config`` by the host. ``poll_seconds`` starts the host's discovery
  thread; ``retry_seconds`` and ``load_nice`` are the host's. The first
  load of every model happens in the constructor; a model whose first load
  failed is reported in :meth:`status`.
- **Errors.** Unknown model or version: ``NotFoundError``. A known model
  with no version serving: :class:`UnavailableError` with the host's reason
  (the newest failed load, or why the base directory cannot be listed).
  After :meth:`close`: ``FailedPreconditionError``.
- **Status** in TF Serving's spelling: per model ``available``, ``serving``,
  ``default_version`` (``None`` when nothing serves), ``policy``,
  ``pinned``, ``incomplete_versions``, ``base_error``; per version ``state``
  (``LOADING``, ``AVAILABLE``, ``FAILED``, ``UNLOADING``, ``END``), ``error``,
  ``load_ms``, ``load_failures``, ``loader``, ``in_flight``, ``requests``,
  ``errors``, ``batching``, ``path``.
- **Thread safety.** Every method may be called from any thread.
  :meth:`close` waits for calls already inside the library.
"""

from __future__ import annotations

import threading
from os import fspath
from typing import Any, Iterable, Mapping

from recstrata.errors import FailedPreconditionError, InvalidArgumentError
from recstrata.serving.policy import VersionPolicy

__all__ = ["ModelManager", "VersionPolicy", "UnavailableError"]

# host state -> the TF Serving name status() reports
_STATES = {"loading": "LOADING", "ready": "AVAILABLE", "failed": "FAILED",
           "unloading": "UNLOADING", "end": "END"}


class UnavailableError(FailedPreconditionError):
    """The model exists but no version of it is serving (yet, or any more)."""


class LeasedModel:
    """The model version a lease holds: ``run``, ``predict_bytes``, ``signature``, ``closed``."""

    def __init__(self, mgr: "ModelManager", name: str, lease):
        self._mgr, self._name, self._lease = mgr, name, lease
        self.version = lease.version
        self._released = False

    def run(self, feeds: Mapping[str, Any], outputs: Iterable[str] | str | None = None) -> dict:
        return self._lease.run(feeds, outputs)

    def predict_bytes(self, request: bytes) -> bytes:
        return self._lease.predict_bytes(request)

    def signature(self) -> dict:
        """The version's signature ({"inputs": [...], "outputs": [...]}), cached per version.

        The first call per (model, version) asks the version itself (a
        PredictRequest of size 0, counted once in the host's request metrics).
        """
        return self._mgr._signature(self._name, self.version, self._lease)

    @property
    def closed(self) -> bool:
        """True once the host has closed this version (its lease released, no other holder)."""
        if not self._released or self._mgr._leases_held(self._name, self.version):
            return False
        if self._mgr.closed:
            return True  # the host's shutdown closed every version nobody holds
        try:
            versions = self._mgr.status(self._name)["versions"]
        except FailedPreconditionError:  # closed meanwhile
            return True
        for v in versions:
            if v["version"] == self.version:
                return v["state"] in ("END", "FAILED", "LOADING")
        return True


class Lease:
    """One serving version, held until released (``with mgr.lease("m") as l: l.model.run(...)``)."""

    def __init__(self, mgr: "ModelManager", name: str, lease):
        self._mgr, self._native = mgr, lease
        self.version: int = lease.version
        self.model = LeasedModel(mgr, name, lease)
        self._done = False

    def release(self) -> None:
        with self._mgr._lock:
            if self._done:
                return
            self._done = True
            self._mgr._held[(self.model._name, self.version)] -= 1
        self.model._released = True
        self._native.release()

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class ModelManager:
    """Serves named models from ``BASE/<version>/`` directories (see module docstring)."""

    def __init__(self, models: Mapping[str, Any] | None = None, *,
                 config: Mapping[str, Any] | None = None,
                 poll_seconds: float | None = None,
                 retry_seconds: float = 30.0,
                 load_nice: int = 10,
                 batching: Mapping[str, int] | None = None):
        from recstrata.host import Host

        if not models:
            raise InvalidArgumentError("ModelManager needs at least one model")
        specs, self._names = [], []
        for name, spec in models.items():
            spec = dict(spec) if isinstance(spec, Mapping) else {"base_path": spec}
            unknown = set(spec) - {"base_path", "policy", "config"}
            if unknown or "base_path" not in spec:
                raise InvalidArgumentError(f"model {name!r}: expected base_path, policy, config; "
                                           f"got {sorted(spec)}")
            entry = {"name": name, "base_path": fspath(spec["base_path"]),
                     "version_policy": VersionPolicy.parse(spec.get("policy")).to_config()}
            if spec.get("config"):
                entry["model_config"] = dict(spec["config"])
            specs.append(entry)
            self._names.append(name)
        host_config: dict[str, Any] = {"models": specs, "retry_seconds": float(retry_seconds),
                                       "load_nice": int(load_nice)}
        if config:
            host_config["model_config"] = dict(config)
        if poll_seconds:
            host_config["poll_interval_seconds"] = float(poll_seconds)
        if batching:
            host_config["batching"] = dict(batching)
        self._lock = threading.Lock()
        self._held: dict[tuple[str, int], int] = {}       # (model, version) -> leases out
        self._signatures: dict[tuple[str, int], dict] = {}
        self._closed = False
        self._host = Host(host_config)

    @property
    def model_names(self) -> list[str]:
        return sorted(self._names)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def host(self):
        """The native :class:`recstrata.host.Host` underneath."""
        return self._host

    # ---- requests ---------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPreconditionError("model manager is closed")

    def _unavailable(self, name: str, exc: FailedPreconditionError) -> Exception:
        """The host's "no version serving" as UnavailableError; other preconditions unchanged."""
        if self._closed:
            return FailedPreconditionError("model manager is closed")
        try:
            ready = self._host.status(name)["ready"]
        except Exception:
            return exc
        return exc if ready else UnavailableError(str(exc))

    def lease(self, name: str, version: int | None = None) -> Lease:
        """A :class:`Lease` on a serving version (newest by default); it stays open until released."""
        self._check_open()
        try:
            native = self._host.acquire(name, _version(version))
        except FailedPreconditionError as exc:
            raise self._unavailable(name, exc) from None
        with self._lock:
            key = (name, native.version)
            self._held[key] = self._held.get(key, 0) + 1
        return Lease(self, name, native)

    def predict(self, name: str, feeds: Mapping[str, Any], version: int | None = None,
                outputs: Iterable[str] | str | None = None) -> dict:
        """``Model.run`` on the chosen version (numpy feeds with the signature's dtypes)."""
        return self.predict_versioned(name, feeds, version, outputs)[0]

    def predict_versioned(self, name: str, feeds: Mapping[str, Any], version: int | None = None,
                          outputs: Iterable[str] | str | None = None) -> tuple[dict, int]:
        """(outputs, version that answered)."""
        self._check_open()
        try:
            return self._host.run_versioned(name, feeds, _version(version), outputs)
        except FailedPreconditionError as exc:
            raise self._unavailable(name, exc) from None

    def predict_bytes(self, name: str, request: bytes, version: int | None = None) -> bytes:
        """DeepRec PredictRequest bytes in, PredictResponse bytes out."""
        self._check_open()
        try:
            return self._host.predict_bytes(name, request, _version(version))
        except FailedPreconditionError as exc:
            raise self._unavailable(name, exc) from None

    def _leases_held(self, name: str, version: int) -> int:
        with self._lock:
            return self._held.get((name, version), 0)

    def _signature(self, name: str, version: int, lease) -> dict:
        key = (name, version)
        with self._lock:
            sig = self._signatures.get(key)
        if sig is None:
            import json

            sig = json.loads(lease.predict_bytes(b""))
            with self._lock:
                self._signatures[key] = sig
        return sig

    # ---- lifecycle control ------------------------------------------------

    def poll(self, name: str | None = None) -> list[str]:
        """One discovery pass now; returns what changed, for logs and tests.

        Changes made meanwhile by the host's own discovery thread are
        reported too. After :meth:`close`: ``[]``.
        """
        if self._closed:
            return []
        try:
            before = self.status(name) if name else self.status()
            self._host.reload(name)
            after = self.status(name) if name else self.status()
        except FailedPreconditionError:
            if self._closed:
                return []
            raise
        if name:
            before, after = {name: before}, {name: after}
        actions = []
        for model, st in after.items():
            old = {v["version"]: v for v in before.get(model, {}).get("versions", [])}
            changed = False
            for v in sorted(st["versions"], key=lambda v: v["version"]):
                was = old.get(v["version"], {})
                if v["state"] == was.get("state") and v["load_failures"] == was.get("load_failures", 0):
                    continue
                changed = True
                if v["state"] == "AVAILABLE":
                    actions.append(f"{model}: version {v['version']} available ({v['load_ms']:.0f} ms)")
                elif v["state"] == "FAILED":
                    actions.append(f"{model}: version {v['version']} failed to load: {v['error']}")
                elif v["state"] in ("UNLOADING", "END"):
                    actions.append(f"{model}: version {v['version']} retired")
            if changed:
                with self._lock:  # a version number may now be another load: ask it again
                    for key in [k for k in self._signatures if k[0] == model]:
                        del self._signatures[key]
        return actions

    def pin(self, name: str, version: int) -> None:
        """Serves only ``version`` of ``name`` now (rollback); see :meth:`recstrata.host.Host.pin`."""
        self._check_open()
        self._host.pin(name, int(version))

    def unpin(self, name: str) -> None:
        self._check_open()
        self._host.unpin(name)

    def set_policy(self, name: str, policy: "str | VersionPolicy") -> None:
        """A new version policy for ``name`` (also removes a pin), applied now."""
        self._check_open()
        self._host.set_policy(name, VersionPolicy.parse(policy).to_config())

    def close(self) -> None:
        """Refuses new calls, waits for running ones, closes every version nobody holds. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._host.close()

    def __enter__(self) -> "ModelManager":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- reporting --------------------------------------------------------

    def status(self, name: str | None = None) -> dict:
        """``{name: {...}}`` (or one model's dict), translated from the host's status."""
        self._check_open()
        doc = self._host.status()
        out = {m["name"]: _model_status(m) for m in doc["models"]}
        if name is None:
            return out
        if name not in out:
            from recstrata.errors import NotFoundError

            raise NotFoundError(f"no model named {name!r} (models: {sorted(out)})")
        return out[name]

    @property
    def polls(self) -> int:
        """Discovery passes the host ran."""
        return int(self._host.status()["polls"])

    def metrics_text(self) -> str:
        """The host's Prometheus exposition ("" once closed)."""
        if self._closed:
            return ""
        try:
            return self._host.metrics_text()
        except FailedPreconditionError:
            return ""


def _version(version: int | None) -> int:
    if version is None:
        return 0
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        from recstrata.errors import NotFoundError

        raise NotFoundError(f"version {version!r} is not a version number (>= 1)")
    return version


def _model_status(m: dict) -> dict:
    versions = []
    for v in m["versions"]:
        versions.append({**v, "state": _STATES.get(v["state"], v["state"].upper()),
                         "error": v["error"] or None})
    return {
        "name": m["name"], "base_path": m["base_path"], "policy": m["policy"], "pinned": m["pinned"],
        "serving": list(m["serving"]), "default_version": m["default_version"] or None,
        "available": bool(m["ready"]), "versions": versions,
        "incomplete_versions": list(m["incomplete_versions"]), "base_error": m["base_error"] or None,
    }
