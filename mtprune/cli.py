"""The ``mtprune`` command line. Each verb lives in a module of ``mtprune.commands`` that offers
``register(subparsers)``; bad input ends with one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import importlib
import sys

from mtprune import __version__
from mtprune.errors import MtpruneError

# verbs, in the order ``mtprune --help`` lists them
COMMANDS = ["tasks", "models", "eval", "train", "attribute", "prune", "explain", "export", "sweep", "overlap", "transfer",
            "unseen", "quota"]  # quota: also "budget", its old name


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as for every other bad input
        self.exit(2, f"mtprune: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mtprune", description="Task-specific, training-free pruning of multi-task language models.")
    parser.add_argument("--version", action="version", version=f"mtprune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"mtprune.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()  # reads the method registry, plugins included
    except MtpruneError as exc:
        print(f"mtprune: error: {exc}", file=sys.stderr)
        return 2
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse has printed its line
        return int(exc.code or 0)
    try:
        return int(args.func(args) or 0)
    except MtpruneError as exc:
        print(f"mtprune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtprune: interrupted", file=sys.stderr)
        return 130
    finally:
        from mtprune import distributed

        distributed.destroy()  # under torchrun: leave the process group (a no-op otherwise)


if __name__ == "__main__":
    sys.exit(main())
