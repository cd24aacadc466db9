"""The native model host: many models, integer version directories, hot swap.

    from recstrata.host import Host

    with Host({"models": [{"name": "ctr", "base_path": "/models/ctr"}],
               "poll_interval_seconds": 5}) as host:
        out = host.run("ctr", {"x": x})               # newest serving version
        out, v = host.run_versioned("ctr", {"x": x}, version=2)
        with host.acquire("ctr") as lease:            # several calls, one version
            lease.run({"x": x}); lease.predict_bytes(req)
        host.pin("ctr", 1)                            # roll back; host.pin("ctr", 0) unpins
        print(host.status(), host.metrics_text())

A thin cffi layer over ``rs_host_*`` (recstrata.h, docs/host.md): discovery,
version policies, warm-before-traffic, drain-before-close and metrics all
live in the library, the same for C, Go and Python hosts.

Contracts
- Every method may be called from any number of threads at once; cffi
  releases the GIL for the native call.
- :meth:`Host.close` refuses new calls (``FailedPreconditionError``), shuts
  the native host down (calls already inside the library finish on their
  version), waits for them, then frees the native host. Leases
  stay usable until released (a lease pins its version, even after close).
- Feeds are numpy arrays with the signature's dtypes (strict, as for
  :class:`recstrata.processor.Model`); lists are converted with numpy's
  default dtype (the host does not look the signature up). Outputs are fresh
  numpy arrays.
- Errors raise the typed exceptions of :mod:`recstrata.errors`: unknown model
  or version ``NotFoundError``, no version serving ``FailedPreconditionError``,
  bad config or policy ``InvalidArgumentError``.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from recstrata import _native
from recstrata._handle import NativeHandle
from recstrata._native import check, ffi, take_string
from recstrata.errors import InvalidArgumentError
from recstrata.processor import _copy_out, _Inputs

__all__ = ["Host", "Lease", "policy_json"]


def policy_json(policy: "str | Mapping[str, Any]") -> str:
    """JSON of a version policy: a dict as in the config, or ``"latest"``,
    ``"latest:N"``, ``"all"``, ``"specific:V1,V2"``."""
    if isinstance(policy, Mapping):
        return json.dumps(dict(policy))
    kind, _, arg = str(policy).partition(":")
    try:
        if kind == "latest":
            return json.dumps({"latest": {"num_versions": int(arg) if arg else 1}})
        if kind == "all" and not arg:
            return json.dumps({"all": {}})
        if kind == "specific":
            return json.dumps({"specific": {"versions": [int(v) for v in arg.split(",") if v.strip()]}})
    except ValueError:
        pass
    raise InvalidArgumentError(f"bad version policy {policy!r}: use latest, latest:N, all or specific:V1,V2")


def _c(s: str | None):
    return ffi.NULL if s is None else s.encode("utf-8")


def _run_args(feeds: Mapping[str, Any], outputs):
    if not isinstance(feeds, Mapping):
        raise TypeError("feeds must be a mapping of input name to array")
    inputs = _Inputs(feeds, {}, {})
    if isinstance(outputs, str):
        outputs = [outputs]
    bufs = [ffi.new("char[]", o.encode("utf-8")) for o in (outputs or [])]
    names = ffi.new("const char*[]", bufs) if bufs else ffi.NULL
    return inputs, bufs, names


def _take_result(L, result) -> dict:
    err = ffi.new("rs_error**")
    try:
        t = ffi.new("rs_tensor*")
        out = {}
        for i in range(L.rs_result_count(result)):
            check(L.rs_result_output(result, i, t, err), err)
            out[ffi.string(t.name).decode("utf-8")] = _copy_out(t)
        return out
    finally:
        L.rs_result_free(result)


def _take_bytes(L, out, size) -> bytes:
    try:
        return ffi.unpack(ffi.cast("char*", out[0]), size[0]) if size[0] else b""
    finally:
        L.rs_free(out[0])


class Lease(NativeHandle):
    """One version of a model, held until :meth:`release` (or ``with`` exit). Calls on a
    lease may run from several threads at once; release waits for them."""

    _what = "lease"
    _closed_word = "released"

    def __init__(self, handle):
        self._init_handle()
        self._lib = _native.lib()
        self._adopt(handle)
        self.version = int(self._lib.rs_lease_version(handle))

    def run(self, feeds: Mapping[str, Any], outputs: Iterable[str] | str | None = None) -> dict:
        inputs, bufs, names = _run_args(feeds, outputs)
        out = ffi.new("rs_result**")
        err = ffi.new("rs_error**")
        h = self._enter()
        try:
            code = self._lib.rs_lease_run(h, inputs.tensors, inputs.count, names, len(bufs), out, err)
        finally:
            self._leave()
        check(code, err)
        return _take_result(self._lib, out[0])

    def predict_bytes(self, request: bytes) -> bytes:
        req = ffi.from_buffer(request) if len(request) else ffi.NULL
        out, size, err = ffi.new("void**"), ffi.new("size_t*"), ffi.new("rs_error**")
        h = self._enter()
        try:
            code = self._lib.rs_lease_predict(h, req, len(request), out, size, err)
        finally:
            self._leave()
        check(code, err)
        return _take_bytes(self._lib, out, size)

    def describe(self) -> dict:
        """The leased version's description (signature inputs and outputs with dtypes and
        shapes, as ``Model.describe``); not counted as a request."""
        out = ffi.new("char**")
        err = ffi.new("rs_error**")
        h = self._enter()
        try:
            code = self._lib.rs_lease_describe_json(h, out, err)
        finally:
            self._leave()
        check(code, err)
        return json.loads(take_string(out[0]))

    def release(self) -> None:
        self.close()

    def _free(self, handle) -> None:
        self._lib.rs_lease_release(handle)


class Host(NativeHandle):
    """A native host of named, versioned models (see the module docstring).

    ``config``: a dict or JSON string (HostConfig: ``models`` [{``name``,
    ``base_path``, ``version_policy``, ``model_config``}], ``model_config``,
    ``poll_interval_seconds``, ``retry_seconds``).
    """

    _what = "host"

    def __init__(self, config: "Mapping[str, Any] | str"):
        self._init_handle()
        self._lib = L = _native.lib()
        text = config if isinstance(config, str) else json.dumps(config)
        out = ffi.new("rs_host**")
        err = ffi.new("rs_error**")
        check(L.rs_host_open(text.encode("utf-8"), out, err), err)
        self._adopt(out[0])

    # ---- lifetime ---------------------------------------------------------

    def _call(self, fn, *args):
        err = ffi.new("rs_error**")
        h = self._enter()
        try:
            code = fn(h, *args, err)
        finally:
            self._leave()
        check(code, err)

    def _stop(self, handle) -> None:
        err = ffi.new("rs_error**")
        check(self._lib.rs_host_shutdown(handle, err), err)  # safe while calls run

    def _free(self, handle) -> None:
        self._lib.rs_host_close(handle)

    # ---- calls ------------------------------------------------------------

    def run_versioned(self, model: str, feeds: Mapping[str, Any], version: int = 0,
                      outputs: Iterable[str] | str | None = None) -> tuple[dict, int]:
        """(outputs, version that answered); ``version`` 0 is the default (newest serving)."""
        inputs, bufs, names = _run_args(feeds, outputs)
        out = ffi.new("rs_result**")
        got = ffi.new("int64_t*")
        self._call(self._lib.rs_host_run, _c(model), int(version), inputs.tensors, inputs.count, names,
                   len(bufs), out, got)
        return _take_result(self._lib, out[0]), int(got[0])

    def run(self, model: str, feeds: Mapping[str, Any], version: int = 0,
            outputs: Iterable[str] | str | None = None) -> dict:
        return self.run_versioned(model, feeds, version, outputs)[0]

    def predict_bytes_versioned(self, model: str, request: bytes, version: int = 0) -> tuple[bytes, int]:
        """DeepRec PredictRequest bytes in; (PredictResponse bytes, version) out."""
        req = ffi.from_buffer(request) if len(request) else ffi.NULL
        out, size, got = ffi.new("void**"), ffi.new("size_t*"), ffi.new("int64_t*")
        self._call(self._lib.rs_host_predict, _c(model), int(version), req, len(request), out, size, got)
        return _take_bytes(self._lib, out, size), int(got[0])

    def predict_bytes(self, model: str, request: bytes, version: int = 0) -> bytes:
        return self.predict_bytes_versioned(model, request, version)[0]

    def acquire(self, model: str, version: int = 0) -> Lease:
        """A :class:`Lease` on one serving version (``with host.acquire("m") as l: ...``)."""
        out = ffi.new("rs_lease**")
        self._call(self._lib.rs_host_acquire, _c(model), int(version), out)
        return Lease(out[0])

    # ---- lifecycle control ------------------------------------------------

    def reload(self, model: str | None = None) -> None:
        """One discovery pass now (every model when ``model`` is None)."""
        self._call(self._lib.rs_host_reload, _c(model))

    def set_policy(self, model: str, policy: "str | Mapping[str, Any]") -> None:
        self._call(self._lib.rs_host_set_policy, _c(model), policy_json(policy).encode("utf-8"))

    def pin(self, model: str, version: int) -> None:
        """Serve only ``version`` of ``model`` (0: remove the pin)."""
        self._call(self._lib.rs_host_pin, _c(model), int(version))

    def unpin(self, model: str) -> None:
        self.pin(model, 0)

    # ---- reporting --------------------------------------------------------

    def _text(self, fn) -> str:
        out = ffi.new("char**")
        self._call(fn, out)
        return take_string(out[0])

    def status(self, model: str | None = None) -> dict:
        """The status document (``{"models": [...], ...}``) or one model's entry."""
        doc = json.loads(self._text(self._lib.rs_host_status_json))
        if model is None:
            return doc
        for m in doc["models"]:
            if m["name"] == model:
                return m
        from recstrata.errors import NotFoundError

        raise NotFoundError(f"no model named {model!r}")

    def metrics_text(self) -> str:
        """Prometheus text exposition of the host's metrics."""
        return self._text(self._lib.rs_host_metrics_text)

    # ---- dynamic core allocation -------------------------------------------

    def replan_cores(self) -> dict:
        """One re-plan decision now (``core_allocation: "dynamic"``): the decision
        ``{"decision", "changed", "forced", "reason", "apply_errors", "plan"}``."""
        return json.loads(self._text(self._lib.rs_host_replan_cores))

    def _force_core_plan(self, cpus: Mapping[str, str]) -> dict:
        """TEST HOOK (``rs_host_force_core_plan``): moves models to CPUs, ``{"model": "0-1"}``,
        like a re-plan would."""
        plan = json.dumps({"models": [{"name": n, "cpus": c} for n, c in cpus.items()]})
        out = ffi.new("char**")
        self._call(self._lib.rs_host_force_core_plan, plan.encode("utf-8"), out)
        return json.loads(take_string(out[0]))
