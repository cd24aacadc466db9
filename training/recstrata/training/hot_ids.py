"""Hot-id selection of frequency-aware tables (``"kind": "freq_aware"``), numpy only.

A :class:`HotIdTracker` counts the ids a table sees in training with a count-min sketch (depth
``sketch_depth`` rows of ``sketch_columns()`` counters, row d indexed by ``hash64(id, 1000 + d)
mod columns``; an id's estimate is the minimum of its counters, never below its true count). An
id becomes hot once its estimate reaches ``admit_count``: into a free slot while there is one;
once the hot table is full, into the slot of the hot id with the smallest estimate when the
newcomer's estimate is more than ``replace_ratio`` times that (0 = never replace; the
replaced id goes back to the tail, as CAFE, SIGMOD 2024, demotes ids that cooled down). A new
hot id's row starts as its current tail embedding, so promotion does not change its output.

The hot set is frozen at export: slot s of the hot table becomes the bundle row keyed by
``hot_ids[s]`` (docs/embedding-keys.md, section 3.5). The tracker's state (sketch and slot
order) is checkpointed with the model, so a resumed run picks the same hot ids as an
uninterrupted one.
"""

from __future__ import annotations

import numpy as np

from recstrata.training import keys as K

SKETCH_SEED = 1000   # sketch row d hashes with seed SKETCH_SEED + d (independent of any scheme)

__all__ = ["HotIdTracker", "SKETCH_SEED"]


class HotIdTracker:
    """Sketch + hot slots of one freq_aware table (not thread-safe; the trainer's loop owns it)."""

    def __init__(self, scheme: K.FreqAwareKeys):
        self.capacity = int(scheme.hot_rows)
        self.admit_count = int(scheme.admit_count)
        self.replace_ratio = float(scheme.replace_ratio)
        self.columns = int(scheme.sketch_columns())
        self.sketch = np.zeros((int(scheme.sketch_depth), self.columns), np.int64)
        self.hot_ids = np.empty(0, np.int64)          # slot order: hot_ids[s] holds slot s
        self._sorted = np.empty(0, np.int64)
        self._sorted_slots = np.empty(0, np.int64)

    @property
    def num_hot(self) -> int:
        return int(self.hot_ids.size)

    def _columns_of(self, uniq: np.ndarray) -> list[np.ndarray]:
        u = K.as_uint64(uniq)
        return [(K.hash64(u, SKETCH_SEED + d) % np.uint64(self.columns)).astype(np.int64)
                for d in range(self.sketch.shape[0])]

    def estimate(self, ids) -> np.ndarray:
        """Count-min estimate of each id's count so far (>= its true count)."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        cols = self._columns_of(ids)
        est = self.sketch[0, cols[0]]
        for d in range(1, len(cols)):
            est = np.minimum(est, self.sketch[d, cols[d]])
        return est

    def observe(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """Counts ``ids`` (one entry per occurrence) and promotes the ids that reached
        ``admit_count``, highest estimate first (ties: smaller id): into free slots while there
        are any, then (``replace_ratio`` > 0) into the slots of the coolest hot ids, each
        replaced when the newcomer's estimate exceeds ``replace_ratio`` times its own.
        Returns ``(new_hot_ids, their_slots)``, both int64 (empty when nothing changed)."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        none = np.empty(0, np.int64), np.empty(0, np.int64)
        if ids.size == 0:
            return none
        uniq, counts = np.unique(ids, return_counts=True)
        cols = self._columns_of(uniq)
        est = None
        for d, c in enumerate(cols):
            np.add.at(self.sketch[d], c, counts)
            e = self.sketch[d, c]
            est = e if est is None else np.minimum(est, e)
        cand = (est >= self.admit_count) & (self.slots(uniq) < 0)
        if not cand.any():
            return none
        new, new_est = uniq[cand], est[cand]
        order = np.lexsort((new, -new_est))
        new, new_est = new[order], new_est[order]
        free = self.capacity - self.num_hot
        into_free = new[:free]
        slots = [np.arange(self.num_hot, self.num_hot + into_free.size, dtype=np.int64)]
        hot_ids = np.concatenate([self.hot_ids, into_free])
        rest, rest_est = new[into_free.size:], new_est[into_free.size:]
        promoted = [into_free]
        if rest.size and self.replace_ratio > 0:
            # The coolest hot ids by their current estimates (a function of the sketch and the
            # hot set alone, so a resumed run replaces exactly as an uninterrupted one).
            hot_est = self.estimate(hot_ids)
            k = min(rest.size, hot_ids.size)
            victims = np.lexsort((np.arange(hot_ids.size), hot_est))[:k]
            swap = rest_est[:k] > self.replace_ratio * hot_est[victims]
            if swap.any():
                hot_ids = hot_ids.copy()
                hot_ids[victims[swap]] = rest[:k][swap]
                promoted.append(rest[:k][swap])
                slots.append(victims[swap].astype(np.int64))
        new, slots = np.concatenate(promoted), np.concatenate(slots)
        if new.size:
            self._set_hot(hot_ids)
        return new, slots

    def slots(self, ids) -> np.ndarray:
        """Hot slot of each id, -1 for ids that are not hot (same shape as ids)."""
        ids = np.asarray(ids, np.int64)
        if self._sorted.size == 0:
            return np.full(ids.shape, -1, np.int64)
        pos = np.searchsorted(self._sorted, ids)
        pos_c = np.minimum(pos, self._sorted.size - 1)
        return np.where(self._sorted[pos_c] == ids, self._sorted_slots[pos_c], -1)

    def _set_hot(self, hot_ids: np.ndarray) -> None:
        self.hot_ids = np.asarray(hot_ids, np.int64)
        order = np.argsort(self.hot_ids, kind="stable")
        self._sorted = self.hot_ids[order]
        self._sorted_slots = order.astype(np.int64)

    def lookup_arrays(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(sorted keys, their slots, count), each array padded to ``capacity`` (for the layer's
        in-graph searchsorted lookup; padding is never matched because of ``count``)."""
        pad = self.capacity - self.num_hot
        keys = np.concatenate([self._sorted, np.full(pad, np.iinfo(np.int64).max, np.int64)])
        slots = np.concatenate([self._sorted_slots, np.zeros(pad, np.int64)])
        return keys, slots, self.num_hot

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """(sketch, hot ids in slot order padded with 0 to capacity) for checkpoints."""
        pad = np.zeros(self.capacity - self.num_hot, np.int64)
        return self.sketch.copy(), np.concatenate([self.hot_ids, pad])

    def load_state(self, sketch: np.ndarray, hot_ids_padded: np.ndarray, count: int) -> None:
        sketch = np.asarray(sketch, np.int64)
        if sketch.shape != self.sketch.shape:
            raise ValueError(f"hot-id sketch of shape {sketch.shape}, the scheme needs {self.sketch.shape}")
        if not 0 <= int(count) <= self.capacity:
            raise ValueError(f"hot-id count {count} outside [0, {self.capacity}]")
        self.sketch = sketch.copy()
        self._set_hot(np.asarray(hot_ids_padded, np.int64)[:int(count)])
