"""Training and evaluation with tf.distribute: the custom loop, checkpoints, metrics.

Devices and the strategy: :mod:`recstrata.training.cluster` (``Cluster`` and ``make_cluster``
are re-exported here).

Exactly-once: see :mod:`recstrata.training.data`. Each step, every replica gets its own slice of
the global batch; the loss is ``sum(weight * bce) / sum(weight over the whole global batch)``
(the weight sum is all-reduced), and the optimizer sums the replicas' gradients, so a step is the
same update whatever the number of replicas or workers, and zero-weight padding contributes
nothing. Evaluation gathers every replica's predictions and computes exact AUC and log loss on
the real (weight > 0) examples.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import sys
import time
from typing import Callable

import numpy as np

from recstrata.training import checkpoint_dir as ckdir
from recstrata.training.cluster import Cluster, make_cluster  # noqa: F401  (re-exported)
from recstrata.training import data as D
from recstrata.training import metrics
from recstrata.training import keys as K
from recstrata.training.spec import Config, load_config

CONFIG_FILE = ckdir.CONFIG_FILE


def _tf():
    import tensorflow as tf

    return tf


# ----------------------------------------------------------------------------- trainer

@dataclasses.dataclass
class EpochResult:
    epoch: int
    steps: int
    train_examples: int
    train_loss: float
    train_bad_rows: int
    eval_auc: float | None = None
    eval_logloss: float | None = None
    eval_examples: int | None = None
    eval_bad_rows: int | None = None
    seconds: float = 0.0


class Trainer:
    """Builds the model under the strategy and runs training / evaluation.

    ``record_indices=True`` keeps the example indices this process trained on (tests use it to
    prove exactly-once). ``log`` receives progress lines (chief only).

    A ``train.checkpoint_dir`` that holds checkpoints of another config is refused
    (:class:`~recstrata.training.checkpoint_dir.CheckpointConfigError`) unless ``fresh=True``,
    which deletes them (chief) and makes :meth:`restore` start over.
    """

    def __init__(self, cfg: Config, cluster: Cluster | None = None, record_indices: bool = False,
                 log: Callable[[str], None] | None = None, fresh: bool = False):
        tf = _tf()
        import keras

        from recstrata.training.models import RecModel

        self.cfg = cfg
        self.cluster = cluster or make_cluster(cfg.train.devices)
        self.strategy = self.cluster.strategy
        self.log = log if log is not None else (lambda s: print(s, file=sys.stderr, flush=True))
        self.record_indices = record_indices
        self.seen_indices: list[np.ndarray] = []
        self.layout = D.Layout.for_global_batch(
            cfg.train.batch_size, self.cluster.replicas_per_worker, self.cluster.num_workers,
            self.cluster.worker)
        if self.layout.global_batch != cfg.train.batch_size:
            self._say(f"note: global batch {cfg.train.batch_size} rounded up to "
                      f"{self.layout.global_batch} ({self.cluster.num_replicas} replicas)")
        keras.utils.set_random_seed(cfg.train.seed)
        from recstrata.training.models import has_dynamic

        self.dynamic_store = None
        self.sharding = None     # multi-worker dynamic tables: this worker's shard
        if has_dynamic(cfg):
            from recstrata.training import dynamic

            store_dir = cfg.train.dynamic_store_dir
            if self.cluster.num_workers > 1:
                self.sharding = dynamic.Sharding(self.cluster.num_workers, self.cluster.worker,
                                                 self.cluster.replicas_per_worker)
                if store_dir is not None:   # one working store per worker, even on a shared disk
                    store_dir = os.path.join(store_dir, f"w{self.cluster.worker}")
            self.dynamic_store = dynamic.open_for_config(
                cfg, self.cluster.replicas_per_worker, store_dir, self.sharding)
        if self.cluster.num_workers > 1 and any(isinstance(f.scheme, K.FreqAwareKeys) for f in cfg.sparse):
            raise NotImplementedError(
                "freq_aware tables train on one worker (any number of local replicas): each "
                "worker would pick its own hot ids (the hot-id sketch is not all-reduced)")
        policy = self._precision_policy()
        old_policy = keras.mixed_precision.dtype_policy()
        try:
            if policy:
                keras.mixed_precision.set_dtype_policy(policy)
            with self.strategy.scope():
                self.model = RecModel(cfg, dynamic_store=self.dynamic_store, name="rec_model")
                self.model.build_with_dummy()
                self.optimizer = self._make_optimizer(policy == "mixed_float16")
                self.optimizer.build(self.model.trainable_variables)
                self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
                self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
                self.best_auc = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_auc")
                self.bad_epochs = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_epochs")
        finally:
            keras.mixed_precision.set_dtype_policy(old_policy)
        self.ckpt = tf.train.Checkpoint(model=tf.train.Checkpoint(**self.model.checkpoint_variables()),
                                        optimizer=self.optimizer,
                                        epoch=self.epoch, step_in_epoch=self.step_in_epoch,
                                        best_auc=self.best_auc, bad_epochs=self.bad_epochs)
        self.manager = None
        self.checkpoint_state = ckdir.prepare(cfg, fresh, wipe_allowed=self.cluster.is_chief)
        if self.checkpoint_state == "fresh":
            self._say(f"--fresh: deleted the checkpoints in {cfg.train.checkpoint_dir}; "
                      f"training from the start")
        if cfg.train.checkpoint_dir:
            self.manager = self._manager(cfg.train.checkpoint_dir, ckdir.CHECKPOINT_NAME)
        self._train_step = None
        self._eval_step = None
        # Called after every training step with the trainer (e.g. recstrata.training.delta's
        # DeltaHook, which writes deltas of a served bundle every N steps or seconds).
        self.step_hooks: list[Callable[["Trainer"], None]] = []
        self.global_step = 0   # steps run by this Trainer object (all epochs)

    # -- setup helpers
    def _say(self, msg: str) -> None:
        if self.cluster.is_chief:
            self.log(msg)

    def _precision_policy(self) -> str | None:
        mp = self.cfg.train.mixed_precision
        if mp == "off":
            return None
        if mp == "float16":
            if not _tf().config.list_logical_devices("GPU"):
                self._say("note: mixed_precision float16 needs a GPU; training in float32")
                return None
            return "mixed_float16"
        return "mixed_bfloat16"

    def _make_optimizer(self, loss_scale: bool):
        import keras

        t = self.cfg.train
        opt = {"adam": lambda: keras.optimizers.Adam(t.learning_rate),
               "adagrad": lambda: keras.optimizers.Adagrad(t.learning_rate),
               "sgd": lambda: keras.optimizers.SGD(t.learning_rate)}[t.optimizer]()
        return keras.optimizers.LossScaleOptimizer(opt) if loss_scale else opt

    def _manager(self, directory: str, name: str):
        tf = _tf()
        if self.cluster.is_chief:
            os.makedirs(directory, exist_ok=True)
            with open(os.path.join(directory, CONFIG_FILE), "w") as fh:
                fh.write(self.cfg.to_json())
            path = directory
        else:   # non-chief workers write to a scratch dir that is removed after each save
            path = os.path.join(directory, f".worker{self.cluster.worker}")
        return tf.train.CheckpointManager(self.ckpt, path, max_to_keep=3, checkpoint_name=name)

    def _save(self) -> None:
        if self.manager is None:
            return
        for layer in self.model.embedding_stage.freq_aware.values():
            layer.save_tracker()
        if self.dynamic_store is None:
            self.manager.save()
        elif self.sharding is not None:
            self._save_sharded()
        else:
            # The dynamic tables' snapshot ckpt-N.dyn is complete before ckpt-N becomes the
            # latest checkpoint (the manager writes the "checkpoint" file last).
            latest = self.manager.latest_checkpoint
            n = int(latest.rsplit("-", 1)[1]) + 1 if latest else 1
            prefix = os.path.join(self.manager.directory, f"{ckdir.CHECKPOINT_NAME}-{n}")
            from recstrata.training import dynamic

            self.dynamic_store.snapshot(prefix + dynamic.SNAPSHOT_SUFFIX)
            self.manager.save(checkpoint_number=n)
            keep = {p + dynamic.SNAPSHOT_SUFFIX for p in self.manager.checkpoints}
            for d in os.listdir(self.manager.directory):
                full = os.path.join(self.manager.directory, d)
                if d.endswith(dynamic.SNAPSHOT_SUFFIX) and full not in keep:
                    shutil.rmtree(full, ignore_errors=True)
        if not self.cluster.is_chief:
            shutil.rmtree(self.manager.directory, ignore_errors=True)

    def _save_sharded(self) -> None:
        """Multi-worker dynamic tables: every worker writes its shard's snapshot
        ``ckpt-N.dyn.w<k>`` into the (shared) checkpoint directory, then the chief saves
        ``ckpt-N``; so ``ckpt-N`` is never the latest without all its shards."""
        from recstrata.training import dynamic

        latest = self.manager.latest_checkpoint if self.cluster.is_chief else None
        mine = int(latest.rsplit("-", 1)[1]) + 1 if latest else 1
        # the chief's numbering, for every worker (the other managers write scratch copies)
        n = int(round(self._reduce_counts([mine if self.cluster.is_chief else 0])[0]))
        directory = self.cfg.train.checkpoint_dir
        os.makedirs(directory, exist_ok=True)
        prefix = os.path.join(directory, f"{ckdir.CHECKPOINT_NAME}-{n}")
        shard = dynamic.shard_snapshot_dir(prefix, self.cluster.worker)
        if os.path.exists(shard):    # left by an interrupted run that never saved ckpt-N
            shutil.rmtree(shard)
        self.dynamic_store.snapshot(shard)
        self._reduce_counts([1])     # barrier: every shard is written
        if self.cluster.is_chief:
            have = dynamic.shard_snapshot_dirs(prefix)
            if len(have) != self.cluster.num_workers:
                raise dynamic.DynamicTableError(
                    f"{prefix}: found {len(have)} of the {self.cluster.num_workers} workers' "
                    f"dynamic-table shards ({dynamic.SHARD_SUFFIX}<k>): with dynamic tables, "
                    f"train.checkpoint_dir must be one directory shared by every worker")
        self.manager.save(checkpoint_number=n)
        keep = {os.path.basename(p) for p in self.manager.checkpoints}
        tail = f"{dynamic.SHARD_SUFFIX}{self.cluster.worker}"
        for d in os.listdir(directory):
            if d.endswith(tail) and d[:-len(tail)] not in keep:
                shutil.rmtree(os.path.join(directory, d), ignore_errors=True)

    def close(self) -> None:
        """Close the dynamic tables' working store (a Trainer without dynamic tables: no-op)."""
        if self.dynamic_store is not None:
            self.dynamic_store.close()

    def restore(self) -> bool:
        """Restore the latest checkpoint of ``train.checkpoint_dir``; False when there is none."""
        tf = _tf()
        if not self.cfg.train.checkpoint_dir or self.checkpoint_state == "fresh":
            return False
        latest = tf.train.latest_checkpoint(self.cfg.train.checkpoint_dir)
        if not latest:
            return False
        self.ckpt.restore(latest).assert_existing_objects_matched()
        for layer in self.model.embedding_stage.freq_aware.values():
            layer.load_tracker()
        if self.dynamic_store is not None:
            from recstrata.training import dynamic

            self.dynamic_store.restore(_snapshot_for(latest, self.sharding))
        self._say(f"resuming from {latest} (same config): epoch {int(self.epoch.numpy())}, "
                  f"step {int(self.step_in_epoch.numpy())} of that epoch; --fresh starts over")
        return True

    # -- distribution of host batches
    def _distribute(self, batch: dict):
        R, w = self.layout.replicas_per_worker, self.cluster.worker
        n = self.layout.per_replica
        if self.cluster.num_replicas == 1:
            return batch

        def value_fn(ctx):
            r = ctx.replica_id_in_sync_group - w * R
            return {k: v[r * n:(r + 1) * n] for k, v in batch.items()}

        return self.strategy.experimental_distribute_values_from_function(value_fn)

    def _local(self, value) -> np.ndarray:
        parts = self.strategy.experimental_local_results(value)
        return np.concatenate([np.asarray(p).reshape(-1) for p in parts])

    def _build_steps(self):
        tf = _tf()
        import keras

        model, opt, strategy = self.model, self.optimizer, self.strategy
        scaled = isinstance(opt, keras.optimizers.LossScaleOptimizer)

        dynamic_tables = bool(self.dynamic_store is not None)
        sharding = self.sharding

        def replica_train(b):
            ctx = tf.distribute.get_replica_context()
            w = b["weight"]
            wsum = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(w))
            with tf.GradientTape() as tape:
                pre = model.embedding_stage.prefetch(b, w, sharding) if dynamic_tables else None
                if pre:
                    for p in pre.values():
                        tape.watch(p.rows)
                logits = model.forward(b, training=True, prefetched=pre)
                per = tf.nn.sigmoid_cross_entropy_with_logits(labels=b["label"], logits=logits)
                loss = tf.reduce_sum(per * w) / tf.maximum(wsum, 1.0)
                obj = opt.scale_loss(loss) if scaled else loss
            variables = model.trainable_variables
            rows = [p.rows for p in pre.values()] if pre else []
            grads = tape.gradient(obj, variables + rows)
            opt.apply_gradients(zip(grads[:len(variables)], variables))
            if pre:
                from recstrata.training import dynamic

                replica = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
                for (tname, p), g in zip(pre.items(), grads[len(variables):]):
                    g = tf.zeros_like(p.rows) if g is None else tf.convert_to_tensor(g)
                    info = model.embedding_stage.dynamic[tname].info
                    if sharding is not None:   # the gradients go back to the ids' owners
                        dynamic.sharded_apply(ctx, info, sharding, p.exchange, g)
                    else:
                        dynamic.apply_op(info, p.keys, p.counts, g, replica)
            return loss, tf.sigmoid(logits), wsum

        @tf.function
        def train_step(dist):
            loss, prob, wsum = strategy.run(replica_train, args=(dist,))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None), prob, wsum

        def replica_eval(b):
            if dynamic_tables and sharding is not None:   # rows from their owners' shards
                pre = model.embedding_stage.prefetch(b, b["weight"], sharding)
                p = tf.sigmoid(model.forward(b, training=False, prefetched=pre))
            else:
                p = tf.sigmoid(model(b, training=False))
            return p, b["label"], b["weight"], b["index"]

        @tf.function
        def eval_step(dist):
            out = strategy.run(replica_eval, args=(dist,))
            if self.cluster.num_replicas == 1:
                return out
            return tuple(strategy.gather(v, axis=0) for v in out)

        self._train_step, self._eval_step = train_step, eval_step

    def _reduce_counts(self, counts) -> np.ndarray:
        """Sum small integer counters over workers (one all-reduce)."""
        tf = _tf()
        local = np.asarray(counts, np.float64)
        if self.cluster.num_workers == 1:
            return local
        R = self.layout.replicas_per_worker

        def fn(ctx):
            first = (ctx.replica_id_in_sync_group % R) == 0
            return tf.constant(local if first else np.zeros_like(local))

        v = self.strategy.experimental_distribute_values_from_function(fn)
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None).numpy()

    # -- public API
    def train(self, eval_each_epoch: bool = True,
              stop_after_steps: int | None = None) -> list[EpochResult]:
        """Run (or continue, after ``restore``) training for ``train.epochs`` epochs.

        ``stop_after_steps`` abandons the run after that many steps of this call without saving
        (simulates a crash or preemption; tests use it to prove resume).
        """
        if self._train_step is None:
            self._build_steps()
        cfg, t = self.cfg, self.cfg.train
        history: list[EpochResult] = []
        self._steps_this_call = 0
        have_eval = cfg.data.format == "synthetic" or bool(cfg.data.eval)
        while int(self.epoch.numpy()) < t.epochs:
            ep = int(self.epoch.numpy())
            skip = int(self.step_in_epoch.numpy())
            t0 = time.time()
            source = D.make_source(cfg, "train")
            ds = D.iterate(cfg, source, self.layout, skip=skip, limit=t.max_steps_per_epoch)
            total = None
            if cfg.data.format == "synthetic":   # known length: show a full bar with an ETA
                total = -(-cfg.data.synthetic.num_train // self.layout.global_batch) - skip
                if t.max_steps_per_epoch:
                    total = min(total, t.max_steps_per_epoch - skip)
            bar = self._progress(f"epoch {ep + 1}/{t.epochs}", total)
            loss_sum = w_sum = 0.0
            steps = 0
            recent_p, recent_y, recent_w = [], [], []
            observe = bool(self.model.embedding_stage.freq_aware)
            for batch in ds:
                if observe:   # hot ids are picked on the host, between steps
                    self.model.embedding_stage.observe_hot_ids(batch)
                loss, prob, wsum = self._train_step(self._distribute(batch))
                wsum_g = float(self._local(wsum)[0]) if self.cluster.num_replicas > 1 else float(wsum)
                loss_sum += float(loss) * wsum_g
                w_sum += wsum_g
                steps += 1
                self.step_in_epoch.assign_add(1)
                if self.record_indices:
                    idx = batch["index"].numpy()
                    self.seen_indices.append(idx[batch["weight"].numpy() > 0])
                if bar is not None:
                    recent_p.append(self._local(prob) if self.cluster.num_replicas > 1 else prob.numpy())
                    recent_y.append(batch["label"].numpy())
                    recent_w.append(batch["weight"].numpy())
                    if len(recent_p) > 200:
                        del recent_p[0], recent_y[0], recent_w[0]
                    if steps % 10 == 1:
                        a = metrics.auc(np.concatenate(recent_y), np.concatenate(recent_p),
                                        np.concatenate(recent_w))
                        bar.set_postfix(loss=f"{loss_sum / max(w_sum, 1):.4f}", auc=f"{a:.4f}")
                    bar.update(1)
                if t.checkpoint_every_steps and int(self.step_in_epoch.numpy()) % t.checkpoint_every_steps == 0:
                    self._save()
                self._steps_this_call += 1
                self.global_step += 1
                for hook in self.step_hooks:
                    hook(self)
                if stop_after_steps is not None and self._steps_this_call >= stop_after_steps:
                    if bar is not None:
                        bar.close()
                    return history
            if bar is not None:
                bar.close()
            rows, bad = self._reduce_counts([source.stats.rows, source.stats.bad_rows])
            self._report_bad(source.stats, int(bad), "train")
            res = EpochResult(epoch=ep + 1, steps=steps, train_examples=int(round(w_sum)),
                              train_loss=loss_sum / max(w_sum, 1.0), train_bad_rows=int(bad))
            if eval_each_epoch and have_eval:
                ev = self.evaluate()
                res.eval_auc, res.eval_logloss = ev["auc"], ev["logloss"]
                res.eval_examples, res.eval_bad_rows = ev["examples"], ev["bad_rows"]
            res.seconds = time.time() - t0
            history.append(res)
            self.epoch.assign_add(1)
            self.step_in_epoch.assign(0)
            stop = self._early_stopping(res)
            self._save()
            self._say(f"epoch {res.epoch}: train loss {res.train_loss:.5f} on {res.train_examples} "
                      f"examples ({res.train_bad_rows} bad rows)"
                      + (f", eval AUC {res.eval_auc:.5f} logloss {res.eval_logloss:.5f}"
                         if res.eval_auc is not None else "") + f", {res.seconds:.1f}s")
            if stop:
                self._say(f"early stopping: no eval AUC gain > {t.early_stopping_min_delta} for "
                          f"{t.early_stopping_patience} epoch(s); best AUC {float(self.best_auc.numpy()):.5f}")
                break
        return history

    def _early_stopping(self, res: EpochResult) -> bool:
        t = self.cfg.train
        if res.eval_auc is None or not math.isfinite(res.eval_auc):
            return False
        if res.eval_auc > float(self.best_auc.numpy()) + t.early_stopping_min_delta:
            self.best_auc.assign(res.eval_auc)
            self.bad_epochs.assign(0)
            return False
        self.bad_epochs.assign_add(1)
        return t.early_stopping_patience > 0 and int(self.bad_epochs.numpy()) >= t.early_stopping_patience

    def _report_bad(self, stats: D.ParseStats, bad_total: int, split: str) -> None:
        if bad_total:
            self._say(f"warning: {bad_total} bad {split} row(s) skipped (kept as zero-weight "
                      f"slots); first: " + "; ".join(stats.first_errors[:3]))
        if stats.truncated_values:
            self._say(f"note: {stats.truncated_values} {split} id(s) beyond max_values were cut "
                      f"(this worker)")

    def _progress(self, desc: str, total: int | None = None):
        if not (self.cfg.train.progress and self.cluster.is_chief):
            return None
        from tqdm.auto import tqdm

        return tqdm(desc=desc, total=total, unit="step", file=sys.stderr, dynamic_ncols=True,
                    leave=True)

    def evaluate(self, split: str = "eval", source=None, return_predictions: bool = False) -> dict:
        """Exact AUC and log loss on a split (every example once, gathered over replicas)."""
        if self._eval_step is None:
            self._build_steps()
        src = source or D.make_source(self.cfg, split)
        ps, ys, ws, ix = [], [], [], []
        for batch in D.iterate(self.cfg, src, self.layout):
            p, y, w, i = (np.asarray(v) for v in self._eval_step(self._distribute(batch)))
            ps.append(p), ys.append(y), ws.append(w), ix.append(i)
        p, y, w, i = (np.concatenate(a) if a else np.zeros(0) for a in (ps, ys, ws, ix))
        keep = w > 0
        _, bad = self._reduce_counts([src.stats.rows, src.stats.bad_rows])
        self._report_bad(src.stats, int(bad), split)
        out = {"auc": metrics.auc(y[keep], p[keep]), "logloss": metrics.logloss(y[keep], p[keep]),
               "examples": int(keep.sum()), "bad_rows": int(bad)}
        if return_predictions:
            order = np.argsort(i[keep], kind="stable")
            out["index"], out["prob"], out["label"] = i[keep][order], p[keep][order], y[keep][order]
        return out

    def summary(self) -> str:
        from recstrata.training.models import format_summary

        return format_summary(self.model.summary_rows())


def _snapshot_for(prefix: str, sharding=None) -> str:
    """The dynamic-table snapshot of checkpoint ``prefix`` this process restores: ``.dyn`` of a
    one-worker run, or this worker's shard ``.dyn.w<k>`` of a run of as many workers."""
    from recstrata.training import dynamic

    shards = dynamic.shard_snapshot_dirs(prefix)
    single = prefix + dynamic.SNAPSHOT_SUFFIX
    have = (f"{len(shards)} worker shards ({dynamic.SHARD_SUFFIX}0..{len(shards) - 1})" if shards
            else "a one-worker snapshot (.dyn)" if os.path.isdir(single) else None)
    if have is None:
        raise FileNotFoundError(f"{prefix}: the checkpoint has no dynamic-table snapshot "
                                f"{single} or {dynamic.SHARD_SUFFIX}<k> (written by another "
                                f"version, or damaged)")
    want = sharding.num_workers if sharding is not None else 1
    if want == 1 and not shards:
        return single
    if want > 1 and len(shards) == want:
        return shards[sharding.worker]
    raise dynamic.DynamicTableError(
        f"{prefix}: its dynamic tables were saved as {have}, this run has {want} worker(s): "
        f"resume with the same number of workers (re-sharding the rows is not implemented)")


def load_trained(checkpoint_dir: str, checkpoint: str | None = None):
    """Rebuild a trained model from a checkpoint directory written by training.

    Returns ``(model, cfg)``; ``checkpoint`` picks one checkpoint prefix (default: latest).
    The optimizer state is not restored (inference / export only).
    """
    tf = _tf()
    from recstrata.training.models import RecModel

    path = os.path.join(checkpoint_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{checkpoint_dir}: not a recstrata checkpoint directory "
                                f"(no {CONFIG_FILE})")
    cfg = load_config(path)
    from recstrata.training.models import has_dynamic

    store = None
    if has_dynamic(cfg):
        from recstrata.training import dynamic

        store = dynamic.open_for_config(cfg)    # temporary working store, restored below
    model = RecModel(cfg, dynamic_store=store, name="rec_model")
    model.owns_dynamic_store = store is not None
    model.build_with_dummy()
    restore_model(model, checkpoint_dir, checkpoint)
    return model, cfg


def restore_model(model, checkpoint_dir: str, checkpoint: str | None = None) -> str:
    """Load a checkpoint's model weights into a built RecModel; returns the prefix used."""
    tf = _tf()
    prefix = checkpoint or tf.train.latest_checkpoint(checkpoint_dir)
    if not prefix:
        raise FileNotFoundError(f"{checkpoint_dir}: no checkpoint found")
    ck = tf.train.Checkpoint(model=tf.train.Checkpoint(**model.checkpoint_variables()))
    ck.restore(prefix).expect_partial().assert_existing_objects_matched()
    for layer in model.embedding_stage.freq_aware.values():
        layer.load_tracker()
    store = getattr(model, "dynamic_store", None)
    if store is not None:   # the dynamic tables' rows are in the checkpoint's snapshot
        from recstrata.training import dynamic

        shards = dynamic.shard_snapshot_dirs(prefix)
        sharding = getattr(store, "sharding", None)
        if sharding is not None and sharding.num_workers > 1:   # a worker: its own shard
            store.restore(_snapshot_for(prefix, sharding))
        elif shards:    # a multi-worker run's checkpoint: the union of its shards
            store.restore_union(shards)
        else:
            snap = prefix + dynamic.SNAPSHOT_SUFFIX
            if not os.path.isdir(snap):
                raise FileNotFoundError(f"{prefix}: the checkpoint has no dynamic-table snapshot {snap}")
            store.restore(snap)
    return prefix
