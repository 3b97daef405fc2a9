"""``python -m flagsched.cli``."""

import sys

from flagsched.cli import main

sys.exit(main())
