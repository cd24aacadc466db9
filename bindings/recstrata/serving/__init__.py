"""Serving many model versions from a directory tree, over the native host.

- :mod:`recstrata.serving.manager`: :class:`ModelManager`, the Python face of
  the native host (``rs_host``, :mod:`recstrata.host`, docs/host.md), which
  discovers versions, loads and warms them before traffic, swaps, drains and
  closes them, and keeps the metrics.
- :mod:`recstrata.serving.policy`: :class:`VersionPolicy` (``"latest:2"`` and
  friends as the host's ``version_policy``).
- :mod:`recstrata.serving.http_server`: a small standard-library HTTP server
  over a manager (JSON and DeepRec-protobuf predict, status, health, metrics).

Importing this package does not load the native library or TensorFlow.
"""

from recstrata.serving.manager import ModelManager, UnavailableError  # noqa: F401
from recstrata.serving.policy import VersionPolicy  # noqa: F401

__all__ = ["ModelManager", "UnavailableError", "VersionPolicy"]
