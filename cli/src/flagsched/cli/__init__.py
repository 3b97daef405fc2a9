"""The ``flagsched`` command: the one composition root (:mod:`flagsched.cli.app`)."""

from flagsched.cli.app import build_parser, main, with_endpoints

__all__ = ["build_parser", "main", "with_endpoints"]
