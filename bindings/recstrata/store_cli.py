"""`recstrata store-repair` (registered by recstrata.cli)."""

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
