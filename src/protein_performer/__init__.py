"""protein-performer: long-context protein language models with FAVOR attention."""

__version__ = "0.1.0"
