"""Serving many model versions from a directory tree, TF Serving style.

- :mod:`recstrata.serving.manager`: :class:`ModelManager` (discovers
  ``BASE/<version>/`` directories, loads and warms new versions before they
  get traffic, swaps atomically, closes old versions after they drain).
- :mod:`recstrata.serving.http_server`: a small standard-library HTTP server
  over a manager (JSON and DeepRec-protobuf predict, status, health, metrics).

Importing this package does not load the native library or TensorFlow.
"""

from recstrata.serving.manager import (  # noqa: F401
    ModelManager,
    UnavailableError,
    VersionPolicy,
)

__all__ = ["ModelManager", "UnavailableError", "VersionPolicy"]
