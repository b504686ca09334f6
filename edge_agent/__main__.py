"""``python -m edge_agent``: the same as the console script."""

import sys

from edge_agent.cli import main

sys.exit(main())
