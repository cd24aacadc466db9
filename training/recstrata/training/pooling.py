"""Pooling of a feature's looked-up values into one vector per example (TensorFlow ops).

The one implementation of docs/embedding-keys.md section 4 in training: every table kind
(layers.SchemeEmbedding, FreqAwareEmbedding, the dynamic tables) pools through it, so they
cannot drift from each other or from the processor's native pooling.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["pool_values"]


def pool_values(vec, k, lengths, combiner: str):
    """vec [B, k, W] of the values' vectors, lengths [B] -> pooled [B, W]: sum, mean or sqrtn
    of the first lengths[b] values; zeros for an empty or missing value."""
    n = tf.cast(lengths, tf.float32)
    if k == 1:
        return vec[:, 0, :] * tf.cast(n > 0, tf.float32)[:, None]
    live = tf.cast(tf.range(k)[None, :] < tf.cast(lengths, tf.int32)[:, None], tf.float32)
    summed = tf.reduce_sum(vec * live[..., None], axis=1)
    if combiner == "sum":
        return summed
    nn = tf.maximum(n, 1.0)[:, None]
    return summed / (nn if combiner == "mean" else tf.sqrt(nn))
