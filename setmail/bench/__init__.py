"""Benchmarks (not tests): ``scripts/bench core`` and, later, ``scripts/bench purchases N``."""
