"""`recstrata serve`: serve versioned model directories over HTTP.

    recstrata serve --model ctr=/models/ctr [--model NAME=BASE_DIR ...]
                    [--port 8500] [--host 127.0.0.1] [--poll-seconds 5]
                    [--policy latest|latest:N|all|specific:1,2] [--config JSON]
                    [--load-config JSON] [--load-nice 10] [--reload availability|resource]

Each BASE_DIR holds version directories ``BASE_DIR/<int>/`` (SavedModels or
recstrata bundles); see docs/serving.md. Once every model's first load has
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
    p.add_argument("--load-config", default=None,
                   help="model_config JSON overrides for versions loaded by a reload")
    p.add_argument("--load-nice", type=int, default=10,
                   help="nice increment of the loader thread (inline session configs)")
    p.add_argument("--reload", choices=("availability", "resource"), default="availability",
                   help="availability: old version serves until the new one is ready (default); "
                        "resource: unload first (less memory, requests fail meanwhile)")
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
        models[name] = {"base_path": base, "policy": args.policy}
    manager = ModelManager(models, config=_json_arg(args.config, "--config"),
                           load_config=_json_arg(args.load_config, "--load-config"),
                           load_nice=args.load_nice, reload=args.reload)
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
    if args.poll_seconds > 0:
        manager.start(args.poll_seconds)
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
