"""What every SleepSafe command line shares: --version/--config/--set, the one-line error that
ends a failed command, and install-service (both ends install through it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .exitcodes import Exit


def die(prog: str, code: int, message: str) -> int:
    """The one-line error every command ends with (never a traceback)."""
    print(f"{prog}: {message}", file=sys.stderr)
    return code


def add_config_args(p: argparse.ArgumentParser, default_config: Path, example: str) -> None:
    """--version, --config and --set, the same for every daemon."""
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--config", type=Path, help=f"TOML config file (default {default_config} if present)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config value, e.g. --set {example} (repeatable)",
    )


def add_install_args(p: argparse.ArgumentParser, default_unit: str = "edge") -> None:
    p.add_argument("--unit", choices=("edge", "sink"), default=default_unit, help="which service")
    p.add_argument("--uninstall", action="store_true", help="disable and remove the service and its venv")
    p.add_argument(
        "--purge", action="store_true", help="with --uninstall: also config, credentials, state, user"
    )
    p.add_argument("--dry-run", action="store_true", help="print what would be done, change nothing")
    p.add_argument("--root", type=Path, default=Path("/"), help="install into this staging root")
    p.add_argument("--no-venv", action="store_true", help="do not create /opt/sleepsafe/venv")
    p.add_argument("--no-start", action="store_true", help="enable but do not start")


def cmd_install_service(args: argparse.Namespace) -> int:
    from sleepsafe.installer import InstallError
    from sleepsafe.installer import main as install

    try:
        return install(
            args.unit,
            args.root,
            args.dry_run,
            args.uninstall,
            args.purge,
            not args.no_venv,
            not args.no_start,
        )
    except (InstallError, OSError) as err:
        return die(
            "sleepsafe-" + args.unit,
            Exit.CANTCREAT if isinstance(err, OSError) else Exit.UNAVAILABLE,
            f"install-service: {err}",
        )
