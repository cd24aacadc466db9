"""`recstrata store-repair` and `recstrata redis-pointer` (registered by recstrata.cli)."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    r = subparsers.add_parser(
        "store-repair", help="salvage a damaged embedding store and report what was dropped",
        description="Open the store with recovery \"repair\": keep every record that passes its "
                    "checksum, rewrite damaged data files without the bad records (the damaged "
                    "file is kept as *.corrupt) and list every range left out. Exit status 0 "
                    "when nothing was dropped, 3 when something was (see the report).")
    r.add_argument("dir", help="store directory (a bundle's is BUNDLE/store)")
    r.add_argument("--json", action="store_true", help="print the whole report as JSON")
    r.set_defaults(func=_repair)

    p = subparsers.add_parser(
        "redis-pointer", help="show, roll back or clean a model's serving key space in Redis",
        description="The serving pointer of a model served with feature_store_type cluster_redis "
                    "(docs/store.md, \"Remote tier\"): `get` prints it, `rollback` swaps serving "
                    "and backup atomically (every host follows within redis_poll_ms), `drop "
                    "SPACE` deletes a key space that is neither serving nor backup. The password "
                    "is read from $RECSTRATA_REDIS_PASSWORD.")
    p.add_argument("op", choices=("get", "rollback", "drop"))
    p.add_argument("space", nargs="?", default="", help="with drop: the key space to delete")
    p.add_argument("--redis-url", required=True, help="seed nodes, host:port,host:port")
    p.add_argument("--redis-model", required=True, help="model name in the Redis keys")
    p.set_defaults(func=_pointer)


def _repair(args) -> int:
    from recstrata.store import repair

    report = repair(args.dir)
    dropped = report["dropped"]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for d in dropped:
            print(f"dropped {d['records']} record(s), {d['bytes']} bytes of table "
                  f"'{d['table']}' at offset {d['offset']} of {d['file']}: {d['reason']}")
        rows = {name: t["rows"] for name, t in report["tables"].items()}
        print(f"repaired {args.dir}: {len(dropped)} range(s) dropped; rows per table {rows}")
    return 3 if dropped else 0


def _pointer(args) -> int:
    import os

    from recstrata.store import Store

    if args.op == "drop" and not args.space:
        raise ValueError("drop needs the key space to delete")
    with Store(None, tiers="dram+redis", redis_url=args.redis_url, redis_model=args.redis_model,
               redis_password=os.environ.get("RECSTRATA_REDIS_PASSWORD", ""),
               dram_capacity_bytes=1 << 16) as s:
        print(json.dumps(s.remote_pointer(args.op, args.space)))
    return 0
