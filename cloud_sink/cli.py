"""`sleepsafe-sink`: the fleet sink — MQTT ingest, storage, HTTP API and dashboard.

Exit codes follow sysexits.h, as the edge agent's: 0 ok, 69 database unavailable, 71 API port
not bindable, 78 config.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from sleepsafe.cli import add_config_args, add_install_args, cmd_install_service, die
from sleepsafe.exitcodes import Exit
from sleepsafe.logs import configure_logging
from sleepsafe.redact import redacted
from sleepsafe.settings import ConfigError, parse_overrides

from .config import DEFAULT_SINK_CONFIG_PATH, load_sink_config
from .labels import EVENT_LABELS, LABELLER_PATTERN

if TYPE_CHECKING:
    from .config import SinkConfig
    from .store import Store

log = structlog.get_logger(__name__)


def _die(code: int, message: str) -> int:
    return die("sleepsafe-sink", code, message)


def printable_config(cfg: SinkConfig) -> dict[str, Any]:
    """The config as check-config prints it: tokens and the MQTT password are SecretStr already;
    the database password inside ``store.url`` is masked the way the store logs its URL, and
    any other URL password too (the output is pasted into tickets)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    out: dict[str, Any] = cfg.model_dump(mode="json")
    # A URL SQLAlchemy cannot parse keeps its text: the generic mask below still applies.
    with contextlib.suppress(ArgumentError):
        if cfg.store.url:
            out["store"]["url"] = make_url(cfg.store.url).render_as_string(hide_password=True)
    masked: dict[str, Any] = redacted(out)
    return masked


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sleepsafe-sink", description="SleepSafe fleet sink.")
    add_config_args(p, DEFAULT_SINK_CONFIG_PATH, "store.url=postgresql+psycopg://...")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="subscribe, store and serve the API and dashboard")
    sub.add_parser("migrate", help="bring the database schema up to date and exit")
    sub.add_parser("check-config", help="validate the configuration and print it (secrets hidden)")
    st = sub.add_parser("stats", help="print the stored totals as JSON")
    st.add_argument("--dead-letters", type=int, default=0, metavar="N", help="also the newest N dead letters")
    pr = sub.add_parser("prune", help="delete rows older than store.retain_days now and exit")
    pr.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    pr.add_argument("--json", action="store_true", help="print the counts as JSON")
    lb = sub.add_parser("label", help="label an event (confirmed, false_alarm, unsure) and exit")
    lb.add_argument("event_id", help="the event's id (as in /events and the dashboard)")
    lb.add_argument("--as", dest="label", required=True, choices=EVENT_LABELS, help="the verdict")
    lb.add_argument("--note", default="", help="why, in a few words")
    lb.add_argument("--by", default=None, help="who says so (default: $USER)")
    lb.add_argument("--json", action="store_true", help="print the label as JSON")
    ds = sub.add_parser("dataset", help="the labelled fleet events as a training set")
    dsub = ds.add_subparsers(dest="dataset_command", required=True)
    ex = dsub.add_parser("export", help="write a versioned, hashed dataset of the labelled events")
    ex.add_argument("--out", type=Path, required=True, help="a new (or empty) directory")
    ex.add_argument("--since", help="only events that started at or after this ISO 8601 time")
    ex.add_argument(
        "--labels", default=",".join(EVENT_LABELS), help=f"comma-separated, of {', '.join(EVENT_LABELS)}"
    )
    ex.add_argument("--held-out-share", type=float, default=0.2, help="share of vehicles held out (0-1)")
    add_install_args(
        sub.add_parser("install-service", help="install (or remove) the systemd service"), "sink"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    if args.command == "install-service":
        return cmd_install_service(args)
    from .store import Store, StoreError

    try:
        cfg = load_sink_config(args.config, parse_overrides(args.overrides))
        configure_logging(cfg.logging.level, cfg.logging.format)
        if args.command == "check-config":
            print(json.dumps(printable_config(cfg), indent=2))
            print("config OK", file=sys.stderr)
            return 0
        if cfg.api.enabled and args.command == "run" and not cfg.api_tokens():
            raise ConfigError(
                "api: no bearer token: set api.tokens or put one per line in "
                f"$CREDENTIALS_DIRECTORY/{cfg.api.token_credential} (or set api.enabled=false)"
            )
        store = Store(cfg.database_url())
        if args.command == "migrate":
            print(f"schema up to date: {store.safe_url}")
            return 0
        if args.command == "stats":
            out = store.statistics()
            if args.dead_letters:
                out["dead_letters"] = store.dead_letters(args.dead_letters)
            print(json.dumps(out, indent=2))
            return 0
        if args.command == "label":
            return _cmd_label(store, args)
        if args.command == "dataset":
            return _cmd_export(store, args)
        if args.command == "prune":
            return _cmd_prune(cfg, store, dry_run=args.dry_run, as_json=args.json)
        from .service import serve

        return serve(cfg, store)
    except ConfigError as err:
        return _die(Exit.CONFIG, f"config error: {err}")
    except StoreError as err:
        return _die(Exit.UNAVAILABLE, str(err))
    except KeyboardInterrupt:
        return 130


def _cmd_export(store: Store, args: argparse.Namespace) -> int:
    from datetime import datetime

    from .dataset import EmptyExport, export

    try:
        since = datetime.fromisoformat(args.since) if args.since else None
    except ValueError:
        return _die(Exit.USAGE, f"dataset export: --since {args.since[:40]!r} is not an ISO 8601 time")
    if not 0.0 <= args.held_out_share < 1.0:
        return _die(Exit.USAGE, "dataset export: --held-out-share must be in [0, 1)")
    labels = tuple(x.strip() for x in args.labels.split(",") if x.strip())
    try:
        manifest = export(store, args.out, since=since, labels=labels, held_out_share=args.held_out_share)
    except EmptyExport as err:
        return _die(Exit.DATAERR, f"dataset export: {err}")
    except ValueError as err:
        return _die(Exit.USAGE, f"dataset export: {err}")
    except OSError as err:
        return _die(Exit.CANTCREAT, f"dataset export: {err}")
    held = manifest["held_out"]
    by_label = ", ".join(f"{k} {v}" for k, v in manifest["counts"]["label"].items())
    print(
        f"{args.out}: {manifest['events']} events ({by_label}) "
        f"from {len(manifest['counts']['device'])} vehicles, {len(held['devices'])} held out; "
        f"dataset {manifest['dataset_id'][:12]}"
    )
    return 0


def _cmd_label(store: Store, args: argparse.Namespace) -> int:
    import getpass
    import uuid

    from .store import UnknownEvent

    try:
        event_id = str(uuid.UUID(args.event_id))
    except ValueError:
        return _die(Exit.USAGE, f"label: {args.event_id[:80]!r} is not an event id (a UUID)")
    by = args.by or getpass.getuser()
    if not re.match(LABELLER_PATTERN, by):
        return _die(Exit.USAGE, f"label: --by {by[:80]!r}: a name of up to 64 letters, digits and _ . @ - ")
    try:
        row = store.label_event(event_id, args.label, by, args.note, token="cli")
    except UnknownEvent:
        return _die(Exit.NOINPUT, f"label: no event {event_id} in {store.safe_url}")
    if args.json:
        print(json.dumps({"event_id": event_id, **row}))
    else:
        was = f" (was {row['previous']})" if row["previous"] else ""
        print(f"{event_id}: {row['label']}{was}, by {row['labeller']}")
    return 0


def _cmd_prune(cfg: SinkConfig, store: Store, *, dry_run: bool, as_json: bool) -> int:
    """What `run` does every store.prune_interval_s, once, for a cron job or before a migration;
    ``--dry-run`` shows what the configured retention would delete before anything is."""
    from .store import PRUNE_BY

    retain = cfg.store.retain_days.model_dump()
    rows = store.prune(dry_run=dry_run, retain=retain, batch=cfg.store.prune_batch)
    if as_json:
        print(json.dumps({"dry_run": dry_run, "rows": rows, "retain_days": retain}, indent=2))
        return 0
    verb = "would delete" if dry_run else "deleted"
    for name, n in rows.items():
        days = retain.get(name)
        why = f"{PRUNE_BY[name][1]} older than {days:g} days" if days else "kept forever"
        print(f"{name}: {verb} {n} ({why})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
