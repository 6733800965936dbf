"""The ``protein-performer`` command line: parses arguments and calls into the library, nothing more.

One module per command family: ``train.py`` (train, evaluate, convert), ``use.py`` (embed, fill-mask,
score, probe), ``analysis.py`` (analyze, report). A command's function turns its arguments into one
library call and prints the result.

Errors a user can fix are one line, exit status 2, no traceback: :class:`UserError` raised here, and
the ``ValueError`` / ``OSError`` the library raises for bad files and values. The library names a
setting in backquotes (```max_steps```); the message shows the option of the command that was run
(``--max-steps``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from .. import __version__
from ..errors import UserError
from . import analysis, train, use
from .common import HelpFormatter, set_threads

# What the library raises for a user's bad input: a missing or unreadable file, an output path that
# cannot be written (OSError), a malformed file or a bad value (ValueError; FastaError is one).
USER_ERRORS = (UserError, OSError, ValueError)
_SETTING = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def as_options(message: str, parser: argparse.ArgumentParser | None) -> str:
    """The library's ```setting``` names in ``message`` → the options of ``parser`` (bare names where
    the command has no such option)."""
    options = {}
    for action in parser._actions if parser is not None else []:
        long = [o for o in action.option_strings if o.startswith("--")]
        if long:
            options[action.dest] = long[0]
    return _SETTING.sub(lambda m: options.get(m.group(1), m.group(1)), message)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="protein-performer",
        description="Long-context protein language models with FAVOR attention (Performers): train, evaluate, embed, "
                    "score variants, probe, convert pretrained Transformers, and the paper's analyses.",
        epilog="`protein-performer COMMAND --help` shows a command's options, their defaults and an example.",
        formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train.add_parsers(sub)
    use.add_parsers(sub)
    analysis.add_parsers(sub)
    _document(parser)
    return parser


def _document(parser: argparse.ArgumentParser) -> None:
    """Every command's parser (nested ones too) lays out help like the top level's and opens its
    ``--help`` with the one-line summary it has in its family's list."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {choice.dest: choice.help for choice in action._choices_actions}
            for name, child in action.choices.items():
                child.formatter_class = HelpFormatter
                if child.description is None:
                    child.description = summaries.get(name)
                _document(child)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..memory import retain_freed_memory

    retain_freed_memory()
    set_threads(args)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as err:
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank fails alike: one message
            print(f"protein-performer: error: {as_options(str(err), getattr(args, 'parser', None))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("protein-performer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
