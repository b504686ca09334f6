"""`sleepsafe-train`: prepare real labelled data and train the models (torch; offline only).

sleepsafe-train prepare [--clips DIR] [--labels data/labels/eye_state.csv]
                        [--stills data/labels/stills.csv] [--data DIR]
sleepsafe-train eye-state --data DIR [--out models/checkpoints/eye_state.pt] [--epochs N] [--seed S]
sleepsafe-train temporal --data DIR [--data EXPORT ...] [--eye-model models/eye_state.onnx]
                         [--eye-folds CHECKPOINT]
sleepsafe-train score --data DIR [--eye-model models/eye_state.onnx]
                      [--temporal-model models/temporal.onnx|none] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sleepsafe.exitcodes import Exit
from sleepsafe.paths import cache_dir

from .dataset import ClipData, fold_path

REPO = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    return cache_dir() / "data"


def eye_probabilities(
    clips: list[ClipData], model_path: Path, folds: Path | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Per-frame P(closed) (mean of both eyes) from an exported eye-state model; -1 without a
    face.  With ``folds`` (the eye-state checkpoint whose leave-one-subject-out models were kept
    beside it), each training person's probabilities come from the fold model that never saw
    them: what the GRU meets on a new driver, not the shipped model's over-sure verdicts on its
    own training frames.  Also returns, per subject, which model gave them."""
    import numpy as np

    from edge_agent.config import ModelsConfig
    from edge_agent.inference.runtime import EyeStateModel
    from edge_agent.perception.eyecrop import model_input

    model = EyeStateModel(model_path, ModelsConfig(providers=["cpu"]), Path("/tmp"))
    out, source = {}, {}
    fold_models: dict[str, Any] = {}  # one load per person, not per clip
    for c in clips:
        fold = fold_path(folds, c.subject) if folds is not None else None
        if fold is not None and fold.is_file():
            from .eye_state import load_checkpoint, predict

            if c.subject not in fold_models:
                fold_models[c.subject] = load_checkpoint(fold)[0]
            p = predict(fold_models[c.subject], *c.eyes())
            source[c.subject] = fold.name
        else:
            p = model.predict(model_input(*c.eyes()))
            source[c.subject] = model_path.name
        p = p.reshape(len(c.crops), 2).mean(axis=1)
        face = c.features[:, -1] > 0.5
        out[c.clip] = np.where(face, p, -1.0).astype(np.float32)
    return out, source


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="sleepsafe-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("prepare", help="run the agent over the labelled clips; store crops and features")
    pr.add_argument("--clips", type=Path, help="clip directory (default: the fetch-clips cache)")
    pr.add_argument("--labels", type=Path, default=REPO / "data" / "labels" / "eye_state.csv")
    pr.add_argument(
        "--stills",
        type=Path,
        default=REPO / "data" / "labels" / "stills.csv",
        help="labelled faces in still images ('none' to leave them out)",
    )
    pr.add_argument("--data", type=Path, default=default_data_dir())
    es = sub.add_parser("eye-state", help="train the eye-state CNN (leave-one-subject-out + held-out test)")
    es.add_argument(
        "--data",
        type=Path,
        action="append",
        help="prepared clips, or a `sleepsafe-sink dataset export` with eye crops (repeatable)",
    )
    es.add_argument("--out", type=Path, default=REPO / "models" / "checkpoints" / "eye_state.pt")
    es.add_argument("--epochs", type=int, default=30)
    es.add_argument("--seed", type=int, default=7)
    es.add_argument(
        "--narrowed-share",
        type=float,
        default=0.0,
        help="share of open training crops narrowed but still open (look-down, laugh; v2.5, not shipped)",
    )
    es.add_argument("--no-progress", action="store_true")
    tp = sub.add_parser("temporal", help="train the temporal closure/drowsiness GRU")
    tp.add_argument(
        "--data",
        type=Path,
        action="append",
        help="prepared clips, or a `sleepsafe-sink dataset export` (repeatable; default: the prepared clips)",
    )
    tp.add_argument("--out", type=Path, default=REPO / "models" / "checkpoints" / "temporal.pt")
    tp.add_argument(
        "--eye-model",
        type=Path,
        default=REPO / "models" / "eye_state.onnx",
        help="eye-state ONNX whose probabilities feed the GRU ('none' to leave them out)",
    )
    tp.add_argument(
        "--eye-folds",
        type=Path,
        help="eye-state checkpoint whose leave-one-subject-out fold models (FILE.loso-S.pt) give "
        "each training person's probabilities (out of fold); others come from --eye-model",
    )
    sc = sub.add_parser(
        "score",
        help="score the shipped ONNX models on each held-out person of the prepared data, beside EAR alone",
    )
    sc.add_argument("--data", type=Path, default=default_data_dir())
    sc.add_argument("--eye-model", type=Path, default=REPO / "models" / "eye_state.onnx")
    sc.add_argument(
        "--temporal-model",
        type=Path,
        default=REPO / "models" / "temporal.onnx",
        help="temporal ONNX ('none' to score the eye-state model only)",
    )
    sc.add_argument("--json", action="store_true", help="print one JSON object")
    tp.add_argument("--steps", type=int, default=400)
    tp.add_argument("--seed", type=int, default=11)
    tp.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    from sleepsafe.logs import configure_logging

    configure_logging("warning")
    try:
        if args.command == "prepare":
            from edge_agent.devtools.clips import clips_dir

            from .dataset import prepare, prepare_stills

            source = args.clips or clips_dir()
            for path in prepare(source, args.labels, args.data):
                print(path)
            if str(args.stills) != "none":
                for path in prepare_stills(source, args.stills, args.data):
                    print(path)
            return 0
        from .dataset import load_all

        if args.command == "score":
            from edge_agent.inference.runtime import ModelError

            from .score import format_scores, score_eye_state, score_temporal

            clips = load_all(args.data)
            try:
                scores = {"eye_state": score_eye_state(clips, args.eye_model)}
                if str(args.temporal_model) != "none":
                    eye_probs, _ = eye_probabilities(clips, args.eye_model)
                    scores["temporal"] = score_temporal(clips, args.temporal_model, eye_probs)
            except ModelError as err:
                print(f"sleepsafe-train: {err}", file=sys.stderr)
                return Exit.DATAERR
            print(json.dumps(scores, indent=2) if args.json else format_scores(scores))
            return 0
        if args.command == "temporal":
            from .training import train_temporal

            report = train_temporal(
                args.data or [default_data_dir()],
                args.out,
                steps=args.steps,
                seed=args.seed,
                eye_model=None if str(args.eye_model) == "none" else args.eye_model,
                eye_folds=args.eye_folds,
                progress=not args.no_progress,
            )
            keys = ("leave_one_subject_out", "held_out", "data", "datasets")
            print(json.dumps({k: report[k] for k in keys if k in report}, indent=2))
            return 0
        from .training import train_eye_state

        report = train_eye_state(
            args.data or [default_data_dir()],
            args.out,
            epochs=args.epochs,
            seed=args.seed,
            narrowed_share=args.narrowed_share,
            progress=not args.no_progress,
        )
        keys = ("leave_one_subject_out", "held_out", "data", "datasets")
        print(json.dumps({k: report[k] for k in keys if k in report}, indent=2))
        return 0
    except (FileNotFoundError, ValueError) as err:
        print(f"sleepsafe-train: {err}", file=sys.stderr)
        return Exit.NOINPUT if isinstance(err, FileNotFoundError) else Exit.DATAERR


if __name__ == "__main__":
    sys.exit(main())
