"""`recstrata train CONFIG` and `recstrata eval ...` (registered by recstrata.cli).

TensorFlow is imported inside the command functions only, so building the parser stays cheap.
User mistakes (bad config, missing or bad data) raise ValueError/FileNotFoundError subclasses,
which the top-level CLI prints as one clear line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from recstrata._tf_logs import import_tensorflow


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train a CTR model from a JSON/YAML config",
        description="Train the model described by CONFIG (see docs/training.md). Resumes from "
                    "the latest checkpoint in the checkpoint directory when there is one and it "
                    "was written with the same config; a changed config is refused unless "
                    "--fresh is given.")
    p.add_argument("config", help="JSON or YAML training config")
    p.add_argument("--checkpoint-dir", help="override train.checkpoint_dir")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--batch-size", type=int, help="override train.batch_size (global)")
    p.add_argument("--devices", choices=("auto", "cpu", "mirrored"), help="override train.devices")
    p.add_argument("--max-steps-per-epoch", type=int, help="override train.max_steps_per_epoch")
    p.add_argument("--fail-on-bad-rows", action="store_true",
                   help="stop at the first bad data row instead of counting and skipping it")
    p.add_argument("--fresh", action="store_true",
                   help="delete the checkpoints in the checkpoint directory and start over "
                        "(needed when the config changed since they were written)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--delta-bundle", metavar="BUNDLE",
                   help="while training, write deltas of this served bundle version "
                        "(BASE/<version>, exported from the checkpoint training resumes from): "
                        "the embedding rows changed since the previous delta "
                        "(docs/training.md, 'Deltas')")
    p.add_argument("--delta-every-steps", type=int, default=0,
                   help="with --delta-bundle: a delta every N training steps")
    p.add_argument("--delta-every-seconds", type=float, default=0.0,
                   help="with --delta-bundle: a delta every S seconds")
    p.add_argument("--delta-dense", action="store_true",
                   help="with --delta-bundle: include the dense stage in a delta when its weights "
                        "changed (the host swaps it in and keeps the store); default: rows only")
    p.add_argument("--metrics-out", help="write the per-epoch history as JSON to this file")
    p.set_defaults(func=_train)

    e = subparsers.add_parser(
        "eval", help="evaluate a trained checkpoint (AUC, logloss)",
        description="Evaluate the latest checkpoint of CHECKPOINT_DIR on the config's eval split, "
                    "or on --data files in the config's format.")
    e.add_argument("checkpoint_dir", help="checkpoint directory written by `recstrata train`")
    e.add_argument("--data", nargs="+", help="data files to evaluate on (default: the eval split)")
    e.add_argument("--split", default="eval", choices=("train", "eval"),
                   help="split of the config to evaluate when --data is not given")
    e.add_argument("--fail-on-bad-rows", action="store_true")
    e.set_defaults(func=_eval)


def _overridden(args):
    from recstrata.training.spec import load_config

    cfg = load_config(args.config)
    t = cfg.train
    changes = {}
    for attr, val in (("checkpoint_dir", args.checkpoint_dir), ("epochs", args.epochs),
                      ("batch_size", args.batch_size), ("devices", args.devices),
                      ("max_steps_per_epoch", args.max_steps_per_epoch)):
        if val is not None:
            if attr in ("epochs", "batch_size") and val < 1:
                raise ValueError(f"--{attr.replace('_', '-')} must be >= 1")
            changes[attr] = val
    if args.no_progress:
        changes["progress"] = False
    raw = json.loads(json.dumps(cfg.raw))
    raw.setdefault("train", {}).update(changes)
    data = cfg.data
    if args.fail_on_bad_rows:
        data = dataclasses.replace(data, on_bad_row="fail")
        raw.setdefault("data", {})["on_bad_row"] = "fail"
    return dataclasses.replace(cfg, train=dataclasses.replace(t, **changes), data=data, raw=raw)


def _train(args) -> int:
    import_tensorflow()
    cfg = _overridden(args)
    from recstrata.training.trainer import Trainer

    tr = Trainer(cfg, fresh=args.fresh)
    try:
        if tr.cluster.is_chief:
            print(tr.summary(), file=sys.stderr)
        tr.restore()
        hook = None
        if args.delta_bundle:
            from recstrata.training.delta import DeltaHook

            hook = DeltaHook(args.delta_bundle, every_steps=args.delta_every_steps,
                             every_seconds=args.delta_every_seconds,
                             dense="changed" if args.delta_dense else False,
                             log=lambda s: print(s, file=sys.stderr))
            hook.start(tr.model)
            tr.step_hooks.append(hook)
        elif args.delta_every_steps or args.delta_every_seconds:
            raise ValueError("--delta-every-steps / --delta-every-seconds need --delta-bundle")
        history = tr.train()
        if hook is not None:
            hook.flush(tr.model, tr.global_step)   # the rows of the last steps
    finally:
        tr.close()
    out = [dataclasses.asdict(h) for h in history]
    if args.metrics_out and tr.cluster.is_chief:
        with open(args.metrics_out, "w") as fh:
            json.dump(out, fh, indent=1)
    if tr.cluster.is_chief:
        print(json.dumps({"history": out}))
    return 0


def _eval(args) -> int:
    import_tensorflow()
    from recstrata.training.spec import load_config
    from recstrata.training.trainer import CONFIG_FILE, Trainer, restore_model

    cpath = os.path.join(args.checkpoint_dir, CONFIG_FILE)
    if not os.path.isfile(cpath):
        raise FileNotFoundError(f"{args.checkpoint_dir}: not a recstrata checkpoint directory "
                                f"(no {CONFIG_FILE})")
    cfg = load_config(cpath)
    data = cfg.data
    if args.fail_on_bad_rows:
        data = dataclasses.replace(data, on_bad_row="fail")
    if args.data:
        if cfg.data.format == "synthetic":
            raise ValueError("--data needs a config with a file format (criteo or csv); "
                             "this model was trained on synthetic data")
        data = dataclasses.replace(data, eval=tuple(os.path.abspath(p) for p in args.data))
    cfg = dataclasses.replace(cfg, data=data,
                              train=dataclasses.replace(cfg.train, checkpoint_dir=None,
                                                        progress=False))
    tr = Trainer(cfg)
    try:
        restore_model(tr.model, args.checkpoint_dir)
        res = tr.evaluate(split=args.split)
    finally:
        tr.close()
    print(json.dumps(res))
    return 0
