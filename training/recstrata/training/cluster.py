"""Devices and the tf.distribute strategy of a training run (``train.devices``).

``auto`` uses MultiWorkerMirroredStrategy when ``TF_CONFIG`` names more than one worker, else
MirroredStrategy over all local GPUs when there are any, else the default (single CPU)
strategy; ``mirrored`` forces MirroredStrategy over the local GPUs, or over all logical CPU
devices when there is no GPU (how tests run multi-device on CPU); ``cpu`` forces one CPU device.
"""

from __future__ import annotations

import dataclasses
import json
import os

__all__ = ["Cluster", "make_cluster", "tf_config_workers"]


def _tf():
    import tensorflow as tf

    return tf


@dataclasses.dataclass
class Cluster:
    strategy: object
    num_workers: int = 1
    worker: int = 0
    replicas_per_worker: int = 1

    @property
    def is_chief(self) -> bool:
        return self.worker == 0

    @property
    def num_replicas(self) -> int:
        return self.num_workers * self.replicas_per_worker


def tf_config_workers() -> int:
    try:
        cfg = json.loads(os.environ.get("TF_CONFIG", "") or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"TF_CONFIG is not valid JSON: {exc}") from None
    return len(cfg.get("cluster", {}).get("worker", []))


def make_cluster(devices: str = "auto") -> Cluster:
    """Pick the tf.distribute strategy (see module docstring). Create it before other TF work:
    MultiWorkerMirroredStrategy must be created at program start."""
    tf = _tf()
    if devices == "auto" and tf_config_workers() > 1:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        resolver = strategy.cluster_resolver
        nw = len(resolver.cluster_spec().as_dict().get("worker", []))
        worker = int(resolver.task_id or 0)
        return Cluster(strategy, nw, worker, strategy.num_replicas_in_sync // nw)
    gpus = tf.config.list_logical_devices("GPU")
    if devices == "cpu":
        return Cluster(tf.distribute.OneDeviceStrategy("/cpu:0"))
    if gpus and devices in ("auto", "mirrored"):
        strategy = tf.distribute.MirroredStrategy([g.name for g in gpus])
        return Cluster(strategy, replicas_per_worker=strategy.num_replicas_in_sync)
    if devices == "mirrored":
        cpus = [c.name for c in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(
            cpus, cross_device_ops=tf.distribute.ReductionToOneDevice(reduce_to_device=cpus[0]))
        return Cluster(strategy, replicas_per_worker=strategy.num_replicas_in_sync)
    return Cluster(tf.distribute.get_strategy())
