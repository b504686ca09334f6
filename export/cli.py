"""`sleepsafe-export`: not built yet — tracked in issue 4 (models: ONNX export)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("sleepsafe-export: not available yet: see issue 4 (models: ONNX export)", file=sys.stderr)
    return 69  # EX_UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
