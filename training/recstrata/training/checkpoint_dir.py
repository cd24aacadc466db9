"""A checkpoint directory belongs to one config: resume only with that config, or start fresh.

`recstrata train` writes the validated config as ``config.json`` into its checkpoint
directory. Before a trainer resumes from (or writes into) a directory that holds
checkpoints, :func:`prepare` compares that file with the config being trained:

- same config: resume (the trainer says so);
- changed config: :class:`CheckpointConfigError` naming the changed fields, unless
  ``fresh=True``, which deletes the directory's checkpoints and starts over.

Fields that only say how long or where to train may change between runs without
making the checkpoint mean something else (:data:`RESUMABLE`): resuming with more
epochs or another device setting is the usual case.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
from typing import Any

from recstrata.training.spec import Config, SpecError, load_config

CONFIG_FILE = "config.json"
CHECKPOINT_NAME = "ckpt"  # tf.train.CheckpointManager's checkpoint_name

# train.* fields that may differ between the run that wrote a checkpoint and the run resuming it.
RESUMABLE = frozenset({
    "epochs", "progress", "checkpoint_dir", "checkpoint_every_steps", "devices",
    "max_steps_per_epoch", "early_stopping_patience", "early_stopping_min_delta",
    "dynamic_store_dir",
})


class CheckpointConfigError(ValueError):
    """The checkpoint directory was written by another config (or cannot be checked)."""


def _comparable(cfg: Config) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d.pop("source_path", None)
    d.pop("raw", None)
    d.pop("base_dir", None)
    for k in RESUMABLE:
        d["train"].pop(k, None)
    for split in ("train", "eval"):
        paths = d["data"].get(split)
        if paths:
            d["data"][split] = [os.path.abspath(p) for p in paths]
    return d


def _diff(a: Any, b: Any, path: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            _diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k), out)
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{path}[{i}]", out)
    elif a != b:
        out.append(path)


def config_changes(old: Config, new: Config) -> list[str]:
    """Dotted names of the fields that differ, ignoring :data:`RESUMABLE` ones."""
    out: list[str] = []
    _diff(_comparable(old), _comparable(new), "", out)
    return out


def has_checkpoint(directory: str) -> bool:
    """True when ``directory`` holds a checkpoint (TensorFlow's index file or ckpt-* files)."""
    return (os.path.isfile(os.path.join(directory, "checkpoint"))
            or bool(glob.glob(os.path.join(directory, f"{CHECKPOINT_NAME}-*"))))


def wipe(directory: str) -> int:
    """Deletes what training wrote into ``directory``; returns the number of entries removed.

    Only training's own files go (checkpoints, their index, config.json, worker scratch
    folders); anything else in the directory is left alone."""
    names = (["checkpoint", CONFIG_FILE]
             + [os.path.basename(p) for p in glob.glob(os.path.join(directory, f"{CHECKPOINT_NAME}-*"))]
             + [os.path.basename(p) for p in glob.glob(os.path.join(directory, ".worker*"))])
    removed = 0
    for name in names:
        p = os.path.join(directory, name)
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.lexists(p):
            os.remove(p)
        else:
            continue
        removed += 1
    return removed


def prepare(cfg: Config, fresh: bool = False, wipe_allowed: bool = True) -> str:
    """Checks ``cfg.train.checkpoint_dir`` against ``cfg``; returns what will happen.

    Returns "none" (no directory configured), "new" (no checkpoint there yet), "resume"
    (checkpoint written by this config) or "fresh" (``fresh=True``: the old checkpoints
    were deleted when ``wipe_allowed``; other workers of a cluster pass False and only
    skip the restore). Raises CheckpointConfigError for a changed config without
    ``fresh``, or a directory whose config.json is missing or unreadable."""
    directory = cfg.train.checkpoint_dir
    if not directory or not has_checkpoint(directory):
        return "none" if not directory else "new"
    if fresh:
        if wipe_allowed:
            wipe(directory)
        return "fresh"
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path):
        raise CheckpointConfigError(
            f"{directory}: holds checkpoints but no {CONFIG_FILE}, so it cannot be checked "
            f"against this config; pass --fresh to delete them and start over, or choose "
            f"another --checkpoint-dir")
    try:
        old = load_config(path)
    except (SpecError, ValueError, OSError) as exc:
        raise CheckpointConfigError(
            f"{path}: cannot be read ({exc}); pass --fresh to delete the checkpoints and "
            f"start over, or choose another --checkpoint-dir") from None
    changed = config_changes(old, cfg)
    if changed:
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise CheckpointConfigError(
            f"{directory}: its checkpoints were trained with another config (changed: {shown}); "
            f"pass --fresh to delete them and start over, or choose another --checkpoint-dir")
    return "resume"
