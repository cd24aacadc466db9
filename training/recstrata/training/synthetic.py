"""Synthetic CTR data with a known ground truth (numpy only).

Ids of every sparse feature are Zipf-distributed over a bounded vocabulary ``[0, vocab)``
(rank r has probability proportional to ``1 / (r + 1) ** zipf``; ranks are scattered over the
vocabulary by a fixed permutation, so popular ids are not simply the small ones). A hidden
teacher, a factorisation machine with per-id biases and latent vectors plus linear dense
weights, turns every example into a click probability ``p``; the label is ``Bernoulli(p)``.
The teacher's own AUC on a split (``teacher_auc``) is the best any model can reach, so a trained
model's AUC can be judged against it.

Two teachers (``synthetic.structure``):

* ``independent`` (the default): every id's bias and latent vector are drawn alike and
  independently, so a rare id carries as much signal as a popular one. Nothing about an id can
  be shared with others: close to the worst case for embedding compression.
* ``structured``, closer to real logs: each id belongs to one of ``CLUSTERS`` clusters (a
  category) and its parameters are the cluster's plus its own part, and the own part shrinks
  with popularity rank r as ``(r + 1) ** -0.5`` (rare ids behave like their category; popular
  ids are distinctive). Scales are normalised so that the traffic-weighted logit variance
  matches the independent teacher's.

Data is generated in fixed blocks of ``BLOCK`` examples, block ``i`` of a split from its own
seed, so a split is the same stream whatever the batch size, device count or worker count, and
any part of it can be regenerated without the rest.
"""

from __future__ import annotations

import numpy as np

from recstrata.training import keys as K
from recstrata.training.spec import Config, SyntheticSpec

BLOCK = 4096
CLUSTERS = 32             # structured teacher: clusters (categories) per feature
CLUSTER_SHARE = 0.5       # ... share of a popular id's parameter variance that is its cluster's
P_MISSING = 0.02          # single-valued sparse and dense values missing at this rate
_SPLIT_ID = {"train": 1, "eval": 2}


def _inverse_transform(z: np.ndarray, f) -> np.ndarray:
    """Raw dense value whose configured normalisation gives back z."""
    if f.transform == "standard":
        return z * f.std + f.mean
    if f.transform == "log1p":
        return np.sign(z) * np.expm1(np.abs(z))
    return z


def _structured(rng, perm, p_rank, bias, latent, sigma_b, sigma_u):
    """Structured teacher parameters (module docstring), indexed by id like the independent
    ones. ``p_rank``: traffic share of each popularity rank."""
    V = perm.size
    cluster = rng.integers(0, CLUSTERS, V)                 # by id
    cb = rng.normal(0.0, 1.0, CLUSTERS)
    cl = rng.normal(0.0, 1.0, (CLUSTERS, latent.shape[1]))
    own = np.empty(V)
    own[perm] = (np.arange(V) + 1.0) ** -0.5               # by id, from its rank
    # traffic-weighted E[own^2] == 1: popular ids keep the independent teacher's scale
    own /= np.sqrt(np.sum(p_rank * (own[perm] ** 2)))
    a, b = np.sqrt(CLUSTER_SHARE), np.sqrt(1.0 - CLUSTER_SHARE)
    bias = sigma_b * (a * cb[cluster]) + b * own * bias
    latent = sigma_u * (a * cl[cluster]) + b * own[:, None] * latent
    return bias, latent


class Teacher:
    """The hidden model: per-feature Zipf samplers, id permutations, biases and latents."""

    def __init__(self, cfg: Config):
        syn: SyntheticSpec = cfg.data.synthetic
        self.cfg, self.syn = cfg, syn
        F = len(cfg.sparse)
        t = syn.teacher_dim
        pairs = max(F * (F - 1) // 2, 1)
        s = syn.teacher_scale
        sigma_b = np.sqrt(1.0 * s / F)                # per-id biases: logit variance s
        sigma_u = (0.5 * s / (t * pairs)) ** 0.25     # interactions: logit variance 0.5 s
        self.cdf, self.perm, self.bias, self.latent = [], [], [], []
        for i, f in enumerate(cfg.sparse):
            V = syn.vocab[f.name]
            rng = np.random.default_rng([syn.seed, 1000 + i])
            w = 1.0 / np.power(np.arange(1, V + 1, dtype=np.float64), syn.zipf)
            self.cdf.append(np.cumsum(w / w.sum()))
            perm = rng.permutation(V).astype(np.int64)
            self.perm.append(perm)
            bias = rng.normal(0.0, sigma_b, V)
            latent = rng.normal(0.0, sigma_u, (V, t))
            if syn.structure == "structured":
                bias, latent = _structured(rng, perm, w / w.sum(), bias, latent, sigma_b, sigma_u)
            self.bias.append(bias.astype(np.float32))
            self.latent.append(latent.astype(np.float32))
        D = len(cfg.dense)
        rng = np.random.default_rng([syn.seed, 999])
        self.dense_w = rng.normal(0.0, np.sqrt(0.5 * s / max(D, 1)), D).astype(np.float32)
        self.offset = -1.3

    def _sample_ids(self, rng, i: int, shape) -> np.ndarray:
        u = rng.random(shape)
        ranks = np.minimum(np.searchsorted(self.cdf[i], u), len(self.cdf[i]) - 1)
        return self.perm[i][ranks]

    def block(self, split: str, b: int, n: int) -> dict:
        """Block ``b`` (``n`` <= BLOCK examples) of ``split``: features, label, teacher prob."""
        cfg = self.cfg
        rng = np.random.default_rng([self.syn.seed, _SPLIT_ID[split], b])
        logit = np.full(n, self.offset, dtype=np.float64)
        out: dict = {}
        vecs = []
        for i, f in enumerate(cfg.sparse):
            k = f.max_values
            ids = self._sample_ids(rng, i, (n, k))
            if k == 1:
                lens = (rng.random(n) >= P_MISSING).astype(np.int32)
            else:
                lens = rng.integers(0, k + 1, n).astype(np.int32)
            w = K.pool_weights(lens, k, "mean")                       # teacher pools by mean
            # perm maps rank -> id; the teacher tables are indexed by id
            logit += (w * self.bias[i][ids]).sum(1)
            vecs.append((w[..., None] * self.latent[i][ids]).sum(1))
            ids = np.where(np.arange(k)[None, :] < lens[:, None], ids, 0)
            if f.dtype == "string":
                ids = np.array([f"{f.name}:{v}" for v in ids.reshape(-1)], dtype=object).reshape(n, k)
            out[f.name] = ids
            out[f.name + "/len"] = lens
        V = np.stack(vecs, 1)                                         # [n, F, t]
        sq = V.sum(1)
        logit += 0.5 * ((sq * sq).sum(-1) - (V * V).sum((1, 2)))
        D = len(cfg.dense)
        z = rng.normal(0.0, 1.0, (n, D)).astype(np.float32)
        miss = rng.random((n, D)) < P_MISSING
        zt = np.where(miss, np.array([f.default for f in cfg.dense], np.float32)[None, :], z)
        logit += zt @ self.dense_w
        raw = np.stack([_inverse_transform(z[:, j], f) for j, f in enumerate(cfg.dense)], 1) \
            if D else np.zeros((n, 0), np.float32)
        out["dense"] = np.where(miss, np.nan, raw).astype(np.float32)
        p = 1.0 / (1.0 + np.exp(-logit))
        out["label"] = (rng.random(n) < p).astype(np.float32)
        out["prob"] = p.astype(np.float32)
        return out


def num_examples(cfg: Config, split: str) -> int:
    syn = cfg.data.synthetic
    return syn.num_train if split == "train" else syn.num_eval


def blocks(teacher: Teacher, split: str):
    """Yield the blocks of a split in order."""
    total = num_examples(teacher.cfg, split)
    for b in range(-(-total // BLOCK)):
        yield teacher.block(split, b, min(BLOCK, total - b * BLOCK))


def teacher_auc(cfg: Config, split: str = "eval") -> float:
    """AUC of the teacher's own probabilities against the sampled labels of a split."""
    from recstrata.training.metrics import auc

    t = Teacher(cfg)
    ps, ys = [], []
    for blk in blocks(t, split):
        ps.append(blk["prob"])
        ys.append(blk["label"])
    return auc(np.concatenate(ys), np.concatenate(ps))
