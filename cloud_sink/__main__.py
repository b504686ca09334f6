"""``python -m cloud_sink``: the same as the console script."""

import sys

from cloud_sink.cli import main

sys.exit(main())
