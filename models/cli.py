"""`sleepsafe-train`: prepare real labelled data and train the models (torch; offline only).

sleepsafe-train prepare [--clips DIR] [--labels data/labels/eye_state.csv] [--data DIR]
sleepsafe-train eye-state --data DIR [--out models/checkpoints/eye_state.pt] [--epochs N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sleepsafe" / "data"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="sleepsafe-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("prepare", help="run the agent over the labelled clips; store crops and features")
    pr.add_argument("--clips", type=Path, help="clip directory (default: the fetch-clips cache)")
    pr.add_argument("--labels", type=Path, default=REPO / "data" / "labels" / "eye_state.csv")
    pr.add_argument("--data", type=Path, default=default_data_dir())
    es = sub.add_parser("eye-state", help="train the eye-state CNN (leave-one-subject-out + held-out test)")
    es.add_argument("--data", type=Path, default=default_data_dir())
    es.add_argument("--out", type=Path, default=REPO / "models" / "checkpoints" / "eye_state.pt")
    es.add_argument("--epochs", type=int, default=30)
    es.add_argument("--seed", type=int, default=7)
    es.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    from edge_agent.logs import configure_logging

    configure_logging("warning")
    try:
        if args.command == "prepare":
            from edge_agent.clips import clips_dir

            from .dataset import prepare

            for path in prepare(args.clips or clips_dir(), args.labels, args.data):
                print(path)
            return 0
        from .dataset import load_all
        from .eye_state import TrainConfig, run_training

        report = run_training(
            load_all(args.data),
            args.out,
            TrainConfig(epochs=args.epochs, seed=args.seed),
            not args.no_progress,
        )
        print(
            json.dumps(
                {k: report[k] for k in ("leave_one_subject_out", "held_out", "data") if k in report}, indent=2
            )
        )
        return 0
    except (FileNotFoundError, ValueError) as err:
        print(f"sleepsafe-train: {err}", file=sys.stderr)
        return 66 if isinstance(err, FileNotFoundError) else 65


if __name__ == "__main__":
    sys.exit(main())
