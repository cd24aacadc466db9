"""The source: which versions of a model exist on disk and which ones to serve.

TF Serving's file-system source: it lists ``BASE/<version>/`` directories,
tells complete versions from copies still in progress, fingerprints a
version's files (so a failed load is retried once the directory changed) and
applies the model's :class:`VersionPolicy` to produce the *aspired* versions
the manager should serve. It opens nothing and holds no state besides the
policy: every call looks at the disk afresh.

Layout::

    BASE/1/saved_model.pb ...      # version 1: a SavedModel
    BASE/2/bundle.json ...         # version 2: a recstrata bundle
    BASE/3.tmp/                    # ignored: not an integer name

A version is a sub-directory whose name is a non-negative integer. It is
*complete* once it holds one of :data:`MARKERS`; an incomplete directory is
reported but never aspired.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Iterable

from recstrata.bundle.format import MANIFEST_FILE
from recstrata.errors import InvalidArgumentError

__all__ = ["MARKERS", "VersionPolicy", "Scan", "VersionSource", "scan_versions", "fingerprint"]

# A version directory is complete once one of these files is in it.
MARKERS = ("saved_model.pb", "saved_model.pbtxt", MANIFEST_FILE)


@dataclass(frozen=True)
class VersionPolicy:
    """Which complete versions of a model to serve.

    ``VersionPolicy.latest(n=1)``, ``VersionPolicy.all()``,
    ``VersionPolicy.specific([1, 3])``, or :meth:`parse` of ``"latest"``,
    ``"latest:2"``, ``"all"``, ``"specific:1,3"``.
    """

    kind: str = "latest"
    num_latest: int = 1
    versions: tuple[int, ...] = ()

    def __post_init__(self):
        if self.kind not in ("latest", "all", "specific"):
            raise InvalidArgumentError(f"unknown version policy {self.kind!r} (latest, all, specific)")
        if self.kind == "latest" and self.num_latest < 1:
            raise InvalidArgumentError("latest policy needs num_latest >= 1")
        if self.kind == "specific" and (not self.versions or any(v < 0 for v in self.versions)):
            raise InvalidArgumentError("specific policy needs a non-empty list of versions >= 0")

    @classmethod
    def latest(cls, n: int = 1) -> "VersionPolicy":
        return cls("latest", num_latest=int(n))

    @classmethod
    def all(cls) -> "VersionPolicy":
        return cls("all")

    @classmethod
    def specific(cls, versions: Iterable[int]) -> "VersionPolicy":
        return cls("specific", versions=tuple(sorted({int(v) for v in versions})))

    @classmethod
    def parse(cls, spec: "str | VersionPolicy | None") -> "VersionPolicy":
        if spec is None:
            return cls.latest()
        if isinstance(spec, VersionPolicy):
            return spec
        kind, _, arg = str(spec).partition(":")
        try:
            if kind == "latest":
                return cls.latest(int(arg) if arg else 1)
            if kind == "all" and not arg:
                return cls.all()
            if kind == "specific":
                return cls.specific(int(v) for v in arg.split(",") if v.strip())
        except ValueError:
            pass
        raise InvalidArgumentError(
            f"bad version policy {spec!r}: use latest, latest:N, all or specific:V1,V2")

    def select(self, available: Iterable[int]) -> set[int]:
        """The versions to serve out of the complete ones on disk."""
        avail = sorted(set(available))
        if self.kind == "latest":
            return set(avail[-self.num_latest:])
        if self.kind == "all":
            return set(avail)
        return set(avail) & set(self.versions)

    def describe(self) -> str:
        if self.kind == "latest":
            return "latest" if self.num_latest == 1 else f"latest:{self.num_latest}"
        if self.kind == "all":
            return "all"
        return "specific:" + ",".join(map(str, self.versions))


@dataclass(frozen=True)
class Scan:
    """One look at a base directory.

    ``error`` is set (and the rest empty) when the base directory cannot be
    listed; ``aspired`` is the subset of ``complete`` the policy wants.
    """

    complete: dict[int, str] = field(default_factory=dict)     # version -> directory
    incomplete: tuple[int, ...] = ()
    aspired: frozenset[int] = frozenset()
    error: str | None = None


def scan_versions(base: str) -> tuple[dict[int, str], tuple[int, ...], str | None]:
    """(complete {version: dir}, incomplete versions, error) of ``base``.

    Entries that are not directories with a non-negative integer name
    (``3.tmp``, ``.3``, files) are ignored. ``error`` is a message when
    ``base`` cannot be listed.
    """
    try:
        entries = list(os.scandir(base))
    except OSError as exc:
        return {}, (), f"cannot list base path {base}: {exc.strerror or exc}"
    complete, incomplete = {}, []
    for e in entries:
        if not e.name.isdigit() or not e.is_dir():
            continue
        v = int(e.name)
        if any(os.path.isfile(os.path.join(e.path, m)) for m in MARKERS):
            complete[v] = e.path
        else:
            incomplete.append(v)
    return complete, tuple(sorted(incomplete)), None


class VersionSource:
    """The versions of one model: a base directory and a policy."""

    def __init__(self, base: str, policy: "str | VersionPolicy | None" = None):
        self.base = os.path.abspath(base)
        self.policy = VersionPolicy.parse(policy)

    def scan(self) -> Scan:
        """Lists the base directory now and applies the policy."""
        complete, incomplete, error = scan_versions(self.base)
        if error is not None:
            return Scan(error=error)
        return Scan(complete, incomplete, frozenset(self.policy.select(complete)))


def fingerprint(path: str) -> tuple:
    """(relative path, size, mtime) of every file under ``path``: changes while a copy runs."""
    items = []
    for root, _dirs, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            with contextlib.suppress(OSError):
                st = os.stat(p)
                items.append((os.path.relpath(p, path), st.st_size, st.st_mtime_ns))
    return tuple(sorted(items))
