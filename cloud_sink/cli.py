"""`sleepsafe-sink`: the fleet sink (MQTT issue).  Today only `install-service` works: it installs
the hardened sink unit with the same installer as the edge agent."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sleepsafe-sink", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the sink (not built yet)")
    from edge_agent.cli import add_install_args, cmd_install_service

    add_install_args(
        sub.add_parser("install-service", help="install (or remove) the systemd service"), "sink"
    )
    args = p.parse_args(argv)
    if args.command == "install-service":
        return cmd_install_service(args)
    print(
        "sleepsafe-sink: not available yet: see issue 5 (MQTT telemetry and the fleet sink)", file=sys.stderr
    )
    return 69  # EX_UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
