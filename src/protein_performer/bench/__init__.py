"""Benchmarks (``protein-performer bench ...``)."""
