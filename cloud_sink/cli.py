"""`sleepsafe-sink`: not built yet — tracked in issue 5 (MQTT telemetry and the fleet sink)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print(
        "sleepsafe-sink: not available yet: see issue 5 (MQTT telemetry and the fleet sink)", file=sys.stderr
    )
    return 69  # EX_UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
