"""``python -m export``: the same as the console script."""

import sys

from export.cli import main

sys.exit(main())
