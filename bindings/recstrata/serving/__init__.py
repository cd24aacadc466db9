"""Serving many model versions from a directory tree, TF Serving style.

TF Serving's three roles, one module each (layers point down):

- :mod:`recstrata.serving.source`: :class:`VersionPolicy` and the version
  source (lists ``BASE/<version>/`` directories, tells complete from
  incomplete, fingerprints, applies the policy).
- :mod:`recstrata.serving.loader`: opens and warms one version on a
  low-priority loader thread, closes it again.
- :mod:`recstrata.serving.manager`: :class:`ModelManager` (aspired versions
  per model, loads new versions before they get traffic, swaps atomically,
  closes old versions after they drain, status).
- :mod:`recstrata.serving.http_server`: a small standard-library HTTP server
  over a manager (JSON and DeepRec-protobuf predict, status, health, metrics).

Importing this package does not load the native library or TensorFlow.
"""

from recstrata.serving.manager import ModelManager, UnavailableError  # noqa: F401
from recstrata.serving.source import VersionPolicy  # noqa: F401

__all__ = ["ModelManager", "UnavailableError", "VersionPolicy"]
