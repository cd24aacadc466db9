"""Helpers shared by the serving tests (test_model_manager.py, test_http_server.py).

``build_const_model(path, value)``: a SavedModel whose serving_default maps
x [-1,2] f32 to y [-1] f32 = value (a variable), so each version answers a
different constant. ``const_models``: session fixture with templates answering
1.0, 2.0, 3.0. ``put_version(base, v, template)``: copy to a temporary name, then
rename into ``base/v`` (how writers should publish a version).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

X = {"x": np.ones((3, 2), np.float32)}


def build_const_model(path: Path, value: float) -> Path:
    """A SavedModel whose serving_default maps x [-1,2] f32 to y [-1] f32 = value."""
    import tensorflow as tf

    class Const(tf.Module):
        def __init__(self):
            super().__init__()
            self.c = tf.Variable(np.float32(value), name="c")

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.reduce_sum(x, axis=1) * 0.0 + self.c}

    m = Const()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    return path


@pytest.fixture(scope="session")
def const_models(tmp_path_factory) -> dict[int, Path]:
    """Template SavedModels answering 1.0, 2.0 and 3.0; copy them into version dirs."""
    root = tmp_path_factory.mktemp("const_models")
    return {v: build_const_model(root / f"c{v}", float(v)) for v in (1, 2, 3)}


def put_version(base: Path, version: int, template: Path) -> Path:
    """Copies a template to a temporary name, then renames it into place (atomic)."""
    tmp = base / f".{version}.tmp"
    shutil.copytree(template, tmp)
    os.rename(tmp, base / str(version))
    return base / str(version)




def assert_outputs(out: dict, exp: dict) -> None:
    """Two model outputs ({name: array}) have the same keys and (float) values."""
    assert out.keys() == exp.keys()
    for k in out:
        np.testing.assert_allclose(out[k], exp[k], rtol=1e-6, atol=1e-7)


def build_busy_model(path, steps=20):
    """x [-1,2] -> y = sum(x) per row, after `steps` single-thread 256x256 matmuls (a model
    whose runs keep a core busy: 20 steps ~30-100 ms, 60 steps ~0.1-0.5 s)."""
    import tensorflow as tf

    class Busy(tf.Module):
        def __init__(self):
            super().__init__()
            self.big = tf.Variable(np.full((256, 256), 1e-3, np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def serve(self, x):
            h = tf.tile(tf.reshape(tf.reduce_sum(x), [1, 1]), [256, 256])
            for _ in range(steps):
                h = tf.matmul(h, self.big) + 1.0
            return {"y": tf.reduce_sum(x, axis=1) + tf.reduce_sum(h) * 0.0}

    m = Busy()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})
    return path
