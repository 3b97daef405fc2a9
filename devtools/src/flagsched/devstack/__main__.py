"""``python -m flagsched.devstack dev up|down|status|env`` (the same as ``flagsched dev``)."""

from __future__ import annotations

import sys

from flagsched.devstack.cli import run

if __name__ == "__main__":
    sys.exit(run())
