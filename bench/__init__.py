"""The flagsched benchmark suite: ``python -m bench`` (what ``make bench`` runs).

See docs/benchmarks.md for what each benchmark measures and how.
"""
