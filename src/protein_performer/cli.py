"""The ``protein-performer`` command line: parses arguments and calls into the library, nothing more.

Errors a user can fix (bad files, bad arguments) are raised as :class:`UserError` anywhere below and
printed here as one line, with exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import sys


class UserError(Exception):
    """A problem with the user's input: reported as one line, exit status 2."""


def _bench(args: argparse.Namespace) -> int:
    if args.what == "attention":
        from .bench.attention import main as bench_attention

        return bench_attention(args.rest)
    raise UserError(f"unknown benchmark {args.what!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="protein-performer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="run a benchmark (see `protein-performer bench attention --help`)", add_help=False)
    bench.add_argument("what", choices=["attention"])
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"protein-performer: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("protein-performer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
