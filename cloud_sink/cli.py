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


def add_backtest_args(sub: Any) -> None:
    """`backtest`'s arguments: the sink's command hands them to the worker's, which runs it."""
    bt = sub.add_parser("backtest", help="replay the stored labelled events through a registered model")
    bt.add_argument(
        "--model", required=True, help="NAME@ALIAS or NAME/VERSION, e.g. sleepsafe-temporal@challenger"
    )
    bt.add_argument("--since", help="only events since: 7d, 12h, 2w or an ISO 8601 time")
    bt.add_argument("--held-out", action="store_true", help="only the vehicles the exports hold out")
    bt.add_argument(
        "--held-out-share", type=float, default=0.2, help="share of vehicles held out, as the job's (0-1)"
    )
    bt.add_argument("--json", action="store_true")


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
    rt = sub.add_parser("retrain", help="queue a retraining job; with --wait, print its progress live")
    rt.add_argument("--model", required=True, choices=("temporal", "eye-state"))
    rt.add_argument("--steps", type=int, help="training steps (temporal)")
    rt.add_argument("--epochs", type=int, help="training epochs (eye-state)")
    rt.add_argument("--seed", type=int)
    rt.add_argument("--since", help="only fleet events that started at or after this ISO 8601 time")
    rt.add_argument("--fleet-only", action="store_true", help="train on the fleet export alone")
    rt.add_argument(
        "--wait", action="store_true", help="follow the job to its end (exit 0 only if it succeeded)"
    )
    rt.add_argument(
        "--json", action="store_true", help="one JSON object a line, as GET /jobs/{id}/events sends"
    )
    add_backtest_args(sub)
    md = sub.add_parser("models", help="the model registry: versions and their aliases")
    msub = md.add_subparsers(dest="models_command", required=True)
    ml = msub.add_parser("list", help="every registered version, with aliases and gate verdicts")
    ml.add_argument("--json", action="store_true")
    ms = msub.add_parser("show", help="one version: NAME@ALIAS or NAME/VERSION")
    ms.add_argument("ref")
    mp = msub.add_parser("promote", help="point an alias (default @champion) at a version, audited")
    mp.add_argument("ref", help="NAME/VERSION or NAME@ALIAS, e.g. sleepsafe-temporal@challenger")
    mp.add_argument("--to", default="champion", choices=("champion", "challenger"))
    mp.add_argument("--reason", required=True, help="why, for the audit")
    mp.add_argument("--by", default=None, help="who (default: $USER)")
    mdm = msub.add_parser("demote", help="remove @challenger from a model, audited")
    mdm.add_argument("ref", help="NAME@challenger")
    mdm.add_argument("--reason", required=True)
    mdm.add_argument("--by", default=None)
    add_install_args(
        sub.add_parser("install-service", help="install (or remove) the systemd service"), "sink"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    if args.command == "install-service":
        return cmd_install_service(args)
    if args.command == "backtest":
        return _cmd_backtest(args)
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
        if args.command == "retrain":
            return _cmd_retrain(cfg, store, args)
        if args.command == "models":
            return _cmd_models(cfg, store, args)
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


def _cmd_backtest(args: argparse.Namespace) -> int:
    """The worker's backtest (it scores with the training code's feature windows), with this
    command's configuration: the sink itself imports nothing of the trainer."""
    import os

    argv = [sys.executable, "-m", "trainer"]
    if args.config:
        argv += ["--config", str(args.config)]
    for kv in args.overrides:
        argv += ["--set", kv]
    argv += ["backtest", "--model", args.model]
    if args.since:
        argv += ["--since", args.since]
    argv += ["--held-out-share", str(args.held_out_share)]
    argv += ["--held-out"] * args.held_out + ["--json"] * args.json
    sys.stdout.flush()
    os.execv(sys.executable, argv)
    return 0  # not reached


def _cmd_retrain(cfg: SinkConfig, store: Store, args: argparse.Namespace) -> int:
    import getpass

    from .jobs.dispatch import open_queue
    from .jobs.queue import check_params

    params = {
        k: v
        for k, v in {
            "steps": args.steps,
            "epochs": args.epochs,
            "seed": args.seed,
            "since": args.since,
        }.items()
        if v is not None
    }
    if args.fleet_only:
        params["fleet_only"] = True
    queue = open_queue(cfg, store)
    try:
        job = queue.submit(
            "retrain", args.model, check_params(args.model, params), f"cli:{getpass.getuser()}"
        )
    except ValueError as err:
        return _die(Exit.USAGE, f"retrain: {err}")
    if not args.wait:
        print(json.dumps(job) if args.json else f"job {job['id']} queued")
        return 0
    return follow(queue, job["id"], as_json=args.json)


def follow(queue: Any, job_id: str, *, as_json: bool, poll_s: float = 0.25) -> int:
    """Print the job's events as they come, until it ends; 0 only if it succeeded."""
    import time

    from .jobs.queue import FINAL

    cursor, waited, hinted = 0, 0.0, False
    while True:
        batch = queue.events(job_id, cursor)
        for ev in batch:
            cursor = ev["id"]
            print(json.dumps(ev) if as_json else _event_line(ev), flush=True)
        if batch:
            continue
        job = queue.get(job_id)
        if job["state"] in FINAL:
            if queue.events(job_id, cursor):
                continue
            if not as_json and job["result"]:
                r = job["result"]
                print(f"{r['model']}/{r['version']} (run {r['run_id']}): gate {r['gate']['summary']}")
            return 0 if job["state"] == "succeeded" else 1  # failed or cancelled
        if job["state"] == "queued" and waited > 15 and not hinted:
            print(
                "still queued: is a worker running "
                "(`sleepsafe-sink run` with jobs.worker, or `sleepsafe-worker`)?",
                file=sys.stderr,
            )
            hinted = True
        time.sleep(poll_s)
        waited += poll_s


def _event_line(ev: dict[str, Any]) -> str:
    d = ev["data"]
    if ev["kind"] == "progress":
        extra = f" loss {d['loss']:.4f}" if "loss" in d else ""
        return f"{ev['time']} {d['stage']} {d['done']}/{d['total']} ({d['fraction']:.0%}){extra}"
    if ev["kind"] == "state":
        why = d.get("error") or d.get("reason") or ""
        return f"{ev['time']} state {d['state']}" + (f": {why}" if why else "")
    if ev["kind"] == "stage":
        return f"{ev['time']} stage {d['stage']}"
    if ev["kind"] == "gate":
        return f"{ev['time']} gate {d['summary']}"
    return f"{ev['time']} {ev['kind']} " + json.dumps(d)[:300]


def _cmd_models(cfg: SinkConfig, store: Store, args: argparse.Namespace) -> int:
    import getpass

    from .registry import Registry, RegistryUnavailable, UnknownModel

    try:
        reg = Registry(cfg)
        reg.ensure_shipped(store=store)
        if args.models_command == "list":
            models = reg.describe(store)
            if args.json:
                print(json.dumps(models, indent=2))
                return 0
            for m in models:
                for v in m["versions"]:
                    aliases = " ".join("@" + a for a in v["aliases"])
                    gate = v["gate"]["summary"] if v["gate"] else v["tags"].get("source", "")
                    print(f"{m['name']}/{v['version']:<4} {aliases:<22} {gate}")
            return 0
        if args.models_command == "show":
            v = reg.resolve(args.ref)
            entry = next(m for m in reg.describe(store) if m["name"] == v.model)
            print(json.dumps(next(x for x in entry["versions"] if x["version"] == v.version), indent=2))
            return 0
        by = args.by or getpass.getuser()
        if args.models_command == "promote":
            out = reg.set_alias(store, args.ref, args.to, by, args.reason)
        else:
            name, _, alias = args.ref.partition("@")
            out = reg.remove_alias(store, name, alias or "challenger", by, args.reason)
        print(json.dumps(out))
        return 0
    except UnknownModel as err:
        return _die(Exit.NOINPUT, f"models: {err}")
    except ValueError as err:
        return _die(Exit.USAGE, f"models: {err}")
    except RegistryUnavailable as err:
        return _die(Exit.UNAVAILABLE, f"models: {err}")


if __name__ == "__main__":
    sys.exit(main())
