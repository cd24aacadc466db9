"""`recstrata serve`: serve versioned model directories over HTTP.

    recstrata serve --model ctr=/models/ctr [--model NAME=BASE_DIR ...]
                    [--port 8500] [--host 127.0.0.1] [--poll-seconds 5]
                    [--policy latest|latest:N|all|specific:1,2] [--config JSON]
                    [--load-nice 10] [--retry-seconds 30]
                    [--max-batch-size N --max-queue-delay-us US]

Each BASE_DIR holds version directories ``BASE_DIR/<int>/`` (SavedModels or
recstrata bundles); see docs/serving.md. The native model host (docs/host.md)
discovers, loads, swaps and drains the versions. Once every model's first load has
been attempted the command prints one line ``serving on http://HOST:PORT`` to
stdout (``--port 0`` picks a free port) and serves until SIGINT/SIGTERM, then
stops the server and closes every model.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="serve versioned model directories over HTTP")
    p.add_argument("--model", "-m", action="append", required=True, metavar="NAME=BASE_DIR",
                   help="a model name and its base directory of version subdirectories (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8500, help="port (0: any free port)")
    p.add_argument("--poll-seconds", type=float, default=5.0,
                   help="seconds between version directory polls (0: never poll again)")
    p.add_argument("--policy", default="latest", help="latest, latest:N, all or specific:V1,V2")
    p.add_argument("--config", default=None, help="model_config JSON applied to every version")
    p.add_argument("--load-nice", type=int, default=10,
                   help="nice increment of the loader thread (inline session configs; 0: off)")
    p.add_argument("--retry-seconds", type=float, default=30.0,
                   help="a failed version is retried after this (or as soon as its files change)")
    p.add_argument("--max-batch-size", type=int, default=0,
                   help="server-side dynamic batching: rows per merged run (0 or 1: off, the default)")
    p.add_argument("--max-queue-delay-us", type=int, default=500,
                   help="with batching: how long a call waits for company, microseconds")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=_serve)


def _json_arg(text: str | None, flag: str) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{flag} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object")
    return value


def _serve(args) -> int:
    from recstrata.serving.http_server import ServingHTTPServer
    from recstrata.serving.manager import ModelManager

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    models = {}
    for spec in args.model:
        name, sep, base = spec.partition("=")
        if not sep or not name or not base:
            raise ValueError(f"--model expects NAME=BASE_DIR, got {spec!r}")
        if name in models:
            raise ValueError(f"--model {name!r} is given twice")
        models[name] = {"base_path": base, "policy": args.policy}
    if args.poll_seconds < 0:
        raise ValueError("--poll-seconds must be >= 0")
    batching = None
    if args.max_batch_size > 1:
        batching = {"max_batch_size": args.max_batch_size, "max_queue_delay_us": args.max_queue_delay_us}
    manager = ModelManager(models, config=_json_arg(args.config, "--config"),
                           poll_seconds=args.poll_seconds or None, retry_seconds=args.retry_seconds,
                           load_nice=args.load_nice, batching=batching)
    try:
        server = ServingHTTPServer(manager, host=args.host, port=args.port)
    except BaseException:
        manager.close()
        raise
    for name, st in manager.status().items():
        if not st["available"]:
            print(f"recstrata serve: warning: model {name!r} has no version serving yet "
                  f"({[v['error'] for v in st['versions'] if v['error']] or st['base_error'] or 'no complete version'})",
                  file=sys.stderr)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    print(f"serving on {server.url}", flush=True)
    try:
        stop.wait()
    finally:
        server.shutdown_and_close()
        manager.close()
    return 0
