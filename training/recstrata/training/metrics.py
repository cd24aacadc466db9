"""Exact evaluation metrics on host arrays (numpy): weighted ROC AUC and log loss."""

from __future__ import annotations

import numpy as np


def auc(labels, scores, weights=None) -> float:
    """Exact (tie-aware) ROC AUC: P(score_pos > score_neg) + 0.5 P(tie), example-weighted.

    Returns NaN when one class is absent.
    """
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    w = np.ones_like(y) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    keep = w > 0
    y, s, w = y[keep], s[keep], w[keep]
    pos_w = w * (y > 0.5)
    neg_w = w * (y <= 0.5)
    P, N = pos_w.sum(), neg_w.sum()
    if P <= 0 or N <= 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    s, pos_w, neg_w = s[order], pos_w[order], neg_w[order]
    # group ties
    uniq, start = np.unique(s, return_index=True)
    pos_g = np.add.reduceat(pos_w, start)
    neg_g = np.add.reduceat(neg_w, start)
    neg_below = np.cumsum(neg_g) - neg_g
    return float(((neg_below + 0.5 * neg_g) * pos_g).sum() / (P * N))


def logloss(labels, probs, weights=None, eps: float = 1e-7) -> float:
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    p = np.clip(np.asarray(probs, dtype=np.float64).reshape(-1), eps, 1 - eps)
    w = np.ones_like(y) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    if w.sum() <= 0:
        return float("nan")
    return float(-(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / w.sum())
