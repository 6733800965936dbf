"""Attention benchmark; see ``protein_performer.bench.attention`` (``--help`` for options)."""
import sys

from protein_performer.bench.attention import main

if __name__ == "__main__":
    sys.exit(main())
