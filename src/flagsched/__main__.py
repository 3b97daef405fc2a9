"""``python -m flagsched``."""

import sys

from flagsched.cli import main

sys.exit(main())
