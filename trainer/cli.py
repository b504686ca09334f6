"""`sleepsafe-worker`: run the sink's queued jobs, on the sink's machine or on another one (a GPU
box) against the same database; `sleepsafe-worker backtest` (also `sleepsafe-sink backtest`)
replays the stored labelled events through a registered model.  Reads the sink's configuration
(``--config``, ``--set``, ``SLEEPSAFE_SINK_*``), or with ``--config-stdin`` the JSON the sink
hands its embedded worker.

Exit codes: 0 ok, 65 nothing to backtest, 66 unknown model, 69 training packages, MLflow or the
database unavailable, 78 config.
"""

from __future__ import annotations

import argparse
import sys

from cloud_sink.cli import add_backtest_args
from cloud_sink.config import DEFAULT_SINK_CONFIG_PATH, SinkConfig, load_sink_config
from sleepsafe.cli import add_config_args, die
from sleepsafe.exitcodes import Exit
from sleepsafe.logs import configure_logging
from sleepsafe.settings import ConfigError, parse_overrides


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sleepsafe-worker", description=__doc__.split("\n\n")[0])
    add_config_args(p, DEFAULT_SINK_CONFIG_PATH, "store.url=postgresql+psycopg://...")
    p.add_argument("--config-stdin", action="store_true", help="read the configuration as JSON from stdin")
    p.add_argument("--once", action="store_true", help="exit when the queue is empty")
    p.add_argument("--parent-pid", type=int, help="stop when this process (the sink) is gone")
    sub = p.add_subparsers(dest="command")
    add_backtest_args(sub)
    args = p.parse_args(argv)
    configure_logging()
    from cloud_sink.jobs.embedded import missing_training_packages
    from cloud_sink.store import StoreError

    try:
        if args.config_stdin:
            cfg = SinkConfig.model_validate_json(sys.stdin.read())
        else:
            cfg = load_sink_config(args.config, parse_overrides(args.overrides))
    except (ConfigError, ValueError) as err:
        return die("sleepsafe-worker", Exit.CONFIG, f"config error: {str(err).splitlines()[0]}")
    configure_logging(cfg.logging.level, cfg.logging.format)
    missing = missing_training_packages()
    if missing:
        return die("sleepsafe-worker", Exit.UNAVAILABLE, missing)
    try:
        if args.command == "backtest":
            return _backtest(cfg, args)
        from .worker import worker_main

        return worker_main(cfg, once=args.once, parent_pid=args.parent_pid)
    except StoreError as err:
        return die("sleepsafe-worker", Exit.UNAVAILABLE, str(err))
    except KeyboardInterrupt:
        return 130


def _backtest(cfg: SinkConfig, args: argparse.Namespace) -> int:
    import json

    from cloud_sink.registry import RegistryUnavailable, UnknownModel
    from cloud_sink.store import Store

    from .backtest import backtest, format_backtest, parse_since

    try:
        since = parse_since(args.since)
    except ValueError as err:
        return die("sleepsafe-worker", Exit.USAGE, f"backtest: {err}")
    store = Store(cfg.database_url())
    try:
        report = backtest(
            cfg, store, args.model, since=since, held_out=args.held_out, held_out_share=args.held_out_share
        )
    except UnknownModel as err:
        return die("sleepsafe-worker", Exit.NOINPUT, f"backtest: {err}")
    except RegistryUnavailable as err:
        return die("sleepsafe-worker", Exit.UNAVAILABLE, f"backtest: {err}")
    except ValueError as err:
        return die("sleepsafe-worker", Exit.DATAERR, str(err))
    finally:
        store.close()
    print(json.dumps(report, indent=2) if args.json else format_backtest(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
