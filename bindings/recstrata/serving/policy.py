"""Version policies as values: parse ``"latest:2"`` and friends, hand them to the host.

The native host (:mod:`recstrata.host`, docs/host.md) lists the version
directories and applies the policy; this module only turns the Python
spellings into the host's ``version_policy`` JSON and back into the short
form that status reports. It opens and lists nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from recstrata.errors import InvalidArgumentError

__all__ = ["VersionPolicy"]


@dataclass(frozen=True)
class VersionPolicy:
    """Which complete versions of a model to serve.

    ``VersionPolicy.latest(n=1)``, ``VersionPolicy.all()``,
    ``VersionPolicy.specific([1, 3])``, or :meth:`parse` of ``"latest"``,
    ``"latest:2"``, ``"all"``, ``"specific:1,3"``. Versions are >= 1 (the
    host ignores a directory named 0: version 0 in a call means "the default").
    """

    kind: str = "latest"
    num_latest: int = 1
    versions: tuple[int, ...] = ()

    def __post_init__(self):
        if self.kind not in ("latest", "all", "specific"):
            raise InvalidArgumentError(f"unknown version policy {self.kind!r} (latest, all, specific)")
        if self.kind == "latest" and self.num_latest < 1:
            raise InvalidArgumentError("latest policy needs num_latest >= 1")
        if self.kind == "specific" and (not self.versions or any(v < 1 for v in self.versions)):
            raise InvalidArgumentError("specific policy needs a non-empty list of versions >= 1")

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

    def to_config(self) -> dict[str, Any]:
        """The host's ``version_policy`` object (host_config.proto)."""
        if self.kind == "latest":
            return {"latest": {"num_versions": self.num_latest}}
        if self.kind == "all":
            return {"all": {}}
        return {"specific": {"versions": list(self.versions)}}

    def describe(self) -> str:
        """The short form, as the host's status reports it."""
        if self.kind == "latest":
            return "latest" if self.num_latest == 1 else f"latest:{self.num_latest}"
        if self.kind == "all":
            return "all"
        return "specific:" + ",".join(map(str, self.versions))
