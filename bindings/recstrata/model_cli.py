"""`recstrata info` and `recstrata predict`: look at and run a served model.

    recstrata info MODEL_DIR [--config JSON]
        prints the model's description (signature, session group) as JSON.
    recstrata predict MODEL_DIR --input NAME=FILE.npy [--input ...]
                      [--output NAME ...] [--config JSON] [--save OUT.npz]
                      [--repeat N]
        runs the model once on the given arrays (.npy files, or .npz files
        whose arrays are named like the inputs via --input @FILE.npz) and prints
        the outputs as JSON (or saves them to an .npz); --repeat times N runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def register(subparsers) -> None:
    info = subparsers.add_parser("info", help="describe a servable model (JSON)")
    info.add_argument("model_dir")
    info.add_argument("--config", default=None, help="model_config JSON (DeepRec keys)")
    info.set_defaults(func=_info)

    pred = subparsers.add_parser("predict", help="run a model on .npy/.npz inputs")
    pred.add_argument("model_dir")
    pred.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE.npy|@FILE.npz",
                      help="one signature input; repeat for each (or @file.npz holding all)")
    pred.add_argument("--output", "-o", action="append", default=None, metavar="NAME",
                      help="fetch only these outputs (repeatable)")
    pred.add_argument("--config", default=None, help="model_config JSON (DeepRec keys)")
    pred.add_argument("--save", default=None, metavar="OUT.npz", help="write outputs to an .npz")
    pred.add_argument("--repeat", type=int, default=1, help="run N times and report latency")
    pred.set_defaults(func=_predict)


def _load_feeds(specs: list[str]) -> dict:
    import numpy as np

    feeds = {}
    for spec in specs:
        if spec.startswith("@"):
            with np.load(spec[1:], allow_pickle=False) as npz:
                feeds.update({k: npz[k] for k in npz.files})
            continue
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--input expects NAME=FILE.npy or @FILE.npz, got {spec!r}")
        feeds[name] = np.load(path, allow_pickle=False)
    if not feeds:
        raise ValueError("give at least one --input")
    return feeds


def _jsonable(arr):
    if arr.dtype == object:
        return [x.decode("utf-8", "backslashreplace") if isinstance(x, bytes) else x
                for x in arr.ravel().tolist()]
    return arr.tolist()


def _info(args) -> int:
    from recstrata.processor import Model

    with Model(args.model_dir, args.config) as model:
        print(json.dumps(model.describe(), indent=2))
    return 0


def _predict(args) -> int:
    import numpy as np

    from recstrata.processor import Model

    feeds = _load_feeds(args.input)
    with Model(args.model_dir, args.config) as model:
        times = []
        for _ in range(max(1, args.repeat)):
            t0 = time.perf_counter()
            outputs = model.run(feeds, args.output)
            times.append(time.perf_counter() - t0)
    if args.save:
        np.savez(args.save, **outputs)
    else:
        print(json.dumps({k: {"dtype": str(v.dtype), "shape": list(v.shape), "values": _jsonable(v)}
                          for k, v in outputs.items()}))
    if args.repeat > 1:
        times.sort()
        print(f"{len(times)} runs: median {times[len(times) // 2] * 1e3:.3f} ms, "
              f"min {times[0] * 1e3:.3f} ms", file=sys.stderr)
    return 0
