"""`sleepsafe-train`: not built yet — tracked in issue 4 (models: training)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("sleepsafe-train: not available yet: see issue 4 (models: training)", file=sys.stderr)
    return 69  # EX_UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
