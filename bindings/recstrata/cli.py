"""The `recstrata` command line.

Each area of the project contributes its subcommands through a module with a
``register(subparsers)`` function listed in _COMMAND_MODULES; the module is
imported only to build the parser, and heavy imports (TensorFlow) happen inside
the command functions, so `recstrata --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

_COMMAND_MODULES = (
    "recstrata.training.train_cli",   # train, eval
    "recstrata.training.export_cli",  # export, demo (bundles made from trained models)
    "recstrata.model_cli",            # info, predict (one model, in this process)
    "recstrata.serve_cli",            # serve (HTTP, versioned model directories)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recstrata",
        description="Train, export and serve recommendation models with tiered embeddings.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real missing dependency, not an absent module
                raise
            continue
        module.register(sub)
    return parser


def _version() -> str:
    import recstrata

    return f"recstrata {recstrata.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a clear one-line error, not a traceback, for user mistakes
        from recstrata.errors import RecstrataError

        if isinstance(exc, (RecstrataError, ValueError, FileNotFoundError)):
            print(f"recstrata {args.command}: error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
