"""``python -m models``: the same as the console script."""

import sys

from models.cli import main

sys.exit(main())
