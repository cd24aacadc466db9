"""`recstrata export` and `recstrata demo` (registered by recstrata.cli): bundles of trained models.

TensorFlow is imported inside the command functions only, so building the parser stays cheap.
"""

from __future__ import annotations

import json
import os

from recstrata._tf_logs import import_tensorflow


def register(subparsers) -> None:
    e = subparsers.add_parser(
        "export", help="split a trained model into a servable bundle",
        description="Export a trained model (a checkpoint directory written by `recstrata train`) "
                    "as a recstrata bundle: manifest, dense SavedModel and the embedding tables "
                    "in the tiered store (docs/bundle-format.md). The bundle appears atomically.")
    e.add_argument("model", metavar="CHECKPOINT_OR_MODEL",
                   help="checkpoint directory of `recstrata train` (config.json + checkpoint)")
    e.add_argument("out_dir", metavar="OUT_DIR", help="bundle directory to create")
    e.add_argument("--tiers", choices=("dram", "dram+ssd"), default="dram",
                   help="store tiers: everything in DRAM, or a DRAM cache over the SSD tier")
    e.add_argument("--dram-fraction", type=float,
                   help="with dram+ssd: DRAM cache per table as a share of its bytes (e.g. 0.1)")
    e.add_argument("--dram-capacity-bytes", type=int,
                   help="with dram+ssd: DRAM cache bytes per table")
    e.add_argument("--dram-min-bytes", type=int, default=0,
                   help="with --dram-fraction: no table's DRAM cache below this many bytes "
                        "(small tables are then cached whole)")
    e.add_argument("--cache-policy", choices=("lfu", "lru"))
    e.add_argument("--single-valued-layout", choices=("single", "lengths"), default="single",
                   help="request layout of single-valued features: ids [B], or ids [B,1] + "
                        "lengths [B] (lets a request say 'missing')")
    e.add_argument("--pooled-layout", choices=("blocks", "concat", "per_feature"),
                   default="blocks",
                   help="how pooled vectors feed the dense stage: 'blocks' (default, format "
                        "version 2: embeddings and first-order weights in one input each), "
                        "'concat' or 'per_feature' (format version 1, for older processors)")
    e.add_argument("--no-freeze-dense", action="store_true",
                   help="keep the dense stage's weights as variables (default: graph constants)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    e.add_argument("--redis-url", help="also write the tables once to this Redis Cluster "
                                       "(host:port,host:port seed nodes) for feature_store_type "
                                       "cluster_redis; the password is read from $RECSTRATA_REDIS_PASSWORD")
    e.add_argument("--redis-model", help="with --redis-url: the model name in the Redis keys")
    e.add_argument("--redis-key-space", help="with --redis-url: the key space to write (default: "
                                             "a fresh v<ms>-<hex>)")
    e.add_argument("--redis-no-publish", action="store_true",
                   help="with --redis-url: write the key space but leave the serving pointer")
    e.set_defaults(func=_export)

    x = subparsers.add_parser(
        "export-delta", help="write the embedding rows changed between two checkpoints as a delta",
        description="Write a delta of a served bundle version (docs/bundle-format.md, 'Deltas'): "
                    "the embedding rows of NEW_CHECKPOINT that differ from --since (the "
                    "checkpoint the bundle or the previous delta was made from), published "
                    "atomically as BUNDLE/deltas/<next sequence>/. A host serving BUNDLE applies "
                    "it in place at its next discovery pass. Only embedding rows: the dense "
                    "stage is refreshed with a full version.")
    x.add_argument("bundle", metavar="BUNDLE", help="the served version directory (BASE/<version>)")
    x.add_argument("new_checkpoint", metavar="NEW_CHECKPOINT",
                   help="checkpoint directory of `recstrata train` holding the new rows")
    x.add_argument("--since", metavar="OLD_CHECKPOINT",
                   help="checkpoint the bundle (or the previous delta) was made from; default: "
                        "read the rows from BUNDLE's own store (only while no host has it open)")
    x.add_argument("--base-version", type=int,
                   help="version number of BUNDLE (default: its directory name)")
    x.add_argument("--training-step", type=int, default=0, help="recorded in the delta")
    x.set_defaults(func=_export_delta)

    d = subparsers.add_parser(
        "demo", help="train, export and serve a model end to end on synthetic data",
        description="Generate synthetic click data, train a DeepFM with plain and compressed "
                    "embeddings, export a bundle with a DRAM cache smaller than its tables, serve "
                    "it through the C ABI and print served AUC, parity with Keras, tier hit "
                    "rates and latency. No network, no server; a couple of minutes on 2 cores.")
    d.add_argument("--workdir", help="keep data, checkpoints and the bundle here "
                                     "(default: a temporary directory, removed afterwards)")
    d.add_argument("--num-train", type=int, help="training examples (default 200000)")
    d.add_argument("--num-eval", type=int, help="eval examples (default 20000)")
    d.add_argument("--dram-fraction", type=float, default=0.05,
                   help="DRAM cache per table as a share of its bytes (default 0.05)")
    d.add_argument("--no-progress", action="store_true")
    d.add_argument("--json", help="also write the figures as JSON to this file")
    d.set_defaults(func=_demo)


def _export(args) -> int:
    import_tensorflow()
    from recstrata.training.export import export_bundle

    if not os.path.isdir(args.model):
        raise FileNotFoundError(f"{args.model}: no such checkpoint directory")
    try:
        info = export_bundle(args.model, args.out_dir, tiers=args.tiers,
                             dram_fraction=args.dram_fraction,
                             dram_capacity_bytes=args.dram_capacity_bytes,
                             dram_min_bytes=args.dram_min_bytes,
                             cache_policy=args.cache_policy,
                             single_valued_layout=args.single_valued_layout,
                             pooled_layout=args.pooled_layout,
                             freeze_dense=not args.no_freeze_dense,
                             overwrite=args.overwrite,
                             redis_url=args.redis_url,
                             redis_password=os.environ.get("RECSTRATA_REDIS_PASSWORD", ""),
                             redis_model=args.redis_model, redis_key_space=args.redis_key_space,
                             redis_publish=not args.redis_no_publish, log=print)
    except FileExistsError as exc:   # a user mistake: one clear line from the CLI
        raise ValueError(str(exc)) from None
    m = info["manifest"]
    print(f"bundle {info['path']}: {len(m['sparse_features'])} sparse features, "
          f"{len(m['tables'])} tables ({info['table_bytes'] / 2**20:.1f} MiB), "
          f"{info['seconds']['total']:.1f} s")
    if info.get("redis"):
        r = info["redis"]
        print(f"redis model {r['model']}: wrote key space {r['key_space']}; "
              f"serving {r['serving']!r}, backup {r['backup']!r}")
    return 0


def _export_delta(args) -> int:
    import_tensorflow()
    from recstrata.training.delta import write_delta_from_checkpoints

    for p in [args.new_checkpoint] + ([args.since] if args.since else []):
        if not os.path.isdir(p):
            raise FileNotFoundError(f"{p}: no such checkpoint directory")
    info = write_delta_from_checkpoints(args.bundle, args.since, args.new_checkpoint,
                                        base_version=args.base_version,
                                        training_step=args.training_step)
    if info is None:
        print("no embedding row changed: no delta written")
    else:
        print(f"delta {info['sequence']} at {info['path']}: {info['rows']} rows, "
              f"{info['bytes'] / 2**20:.2f} MiB, {info['seconds']:.2f} s")
    return 0


def _demo(args) -> int:
    import_tensorflow()
    from recstrata.training.demo import run_demo

    if args.dram_fraction is not None and not 0 < args.dram_fraction <= 1:
        raise ValueError("--dram-fraction must be in (0, 1]")
    res = run_demo(args.workdir, num_train=args.num_train, num_eval=args.num_eval,
                   dram_fraction=args.dram_fraction, progress=not args.no_progress)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({k: v for k, v in res.items() if k != "bundle_stats"}, fh, indent=1,
                      default=float)
    return 0
