"""TensorFlow-op twins of :mod:`recstrata.training.keys` for int64 ids (in-graph key derivation).

The model derives row keys inside its graph so that a Keras model (and an in-graph SavedModel)
takes raw int64 ids. These functions must agree bit for bit with the numpy reference; the tests
check it on edge-case and random ids. String ids are hashed to int64 in the input pipeline
(:func:`recstrata.training.keys.string_ids`), never in the graph.
"""

from __future__ import annotations

import tensorflow as tf

from recstrata.training import keys as K


def _u(v: int) -> tf.Tensor:
    return tf.constant(v & 0xFFFFFFFFFFFFFFFF, dtype=tf.uint64)


def as_uint64(ids: tf.Tensor) -> tf.Tensor:
    ids = tf.convert_to_tensor(ids)
    if ids.dtype == tf.uint64:
        return ids
    return tf.bitcast(tf.cast(ids, tf.int64), tf.uint64)


def hash64(u: tf.Tensor, seed: int) -> tf.Tensor:
    z = u + _u((int(seed) + 1) * K.GOLDEN)
    z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, _u(30))) * _u(K.MIX1)
    z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, _u(27))) * _u(K.MIX2)
    return tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, _u(31)))


def _to_i64(u: tf.Tensor) -> tf.Tensor:
    # every row key is < 2**63, so a bitcast is a plain conversion
    return tf.bitcast(u, tf.int64)


def row_keys(scheme: K.KeyScheme, ids: tf.Tensor) -> tf.Tensor:
    """ids int64 [...] -> int64 [..., num_subtables], identical to ``scheme.row_keys``."""
    u = as_uint64(ids)
    if isinstance(scheme, K.FreqAwareKeys):   # column 0: the id itself (the hot table's key)
        return tf.concat([_to_i64(u)[..., None], row_keys(scheme.tail, u)], axis=-1)
    if isinstance(scheme, K.PlainKeys):
        h = hash64(u, scheme.seed) if scheme.hashed else u
        return _to_i64(tf.math.floormod(h, _u(scheme.rows)))[..., None]
    if isinstance(scheme, K.MultiHashKeys):
        if scheme.strategy == "qr":
            v = tf.math.floormod(hash64(u, scheme.seed) if scheme.hashed else u, _u(scheme.vocab))
            m = _u(scheme.m)
            return _to_i64(tf.stack([tf.math.floormod(v, m), tf.math.floordiv(v, m)], axis=-1))
        return _to_i64(tf.stack([tf.math.floormod(hash64(u, scheme.seed + i), _u(n))
                                 for i, n in enumerate(scheme.sizes)], axis=-1))
    if isinstance(scheme, K.BinaryCodeKeys):
        code = hash64(u, scheme.seed) if scheme.hashed else u
        if scheme.bits < 64:
            code = tf.bitwise.bitwise_and(code, _u((1 << scheme.bits) - 1))
        cols = []
        for pos in scheme.block_positions():
            if scheme.strategy == "succession":
                cols.append(tf.bitwise.bitwise_and(tf.bitwise.right_shift(code, _u(pos[0])),
                                                   _u((1 << len(pos)) - 1)))
            else:
                r = tf.zeros_like(code)
                for i, p in enumerate(pos):
                    bit = tf.bitwise.bitwise_and(tf.bitwise.right_shift(code, _u(p)), _u(1))
                    r = tf.bitwise.bitwise_or(r, tf.bitwise.left_shift(bit, _u(i)))
                cols.append(r)
        return _to_i64(tf.stack(cols, axis=-1))
    raise TypeError(f"unknown key scheme {scheme!r}")
