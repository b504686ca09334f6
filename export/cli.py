"""`sleepsafe-export`: turn a trained checkpoint into checked ONNX files with model cards.

    sleepsafe-export eye-state --checkpoint models/checkpoints/eye_state.pt --out models/eye_state.onnx \\
        [--fp16] [--int8] [--no-simplify] [--data DIR] [--json]

Exit codes: 0 ok, 65 the export failed a check (parity, checker), 66 a missing or unreadable
checkpoint, 73 an output that cannot be written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sleepsafe.exitcodes import Exit

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="sleepsafe-export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    es = sub.add_parser("eye-state", help="export the eye-state CNN")
    es.add_argument("--checkpoint", type=Path, default=REPO / "models" / "checkpoints" / "eye_state.pt")
    es.add_argument("--out", type=Path, default=REPO / "models" / "eye_state.onnx")
    es.add_argument("--fp16", action="store_true", help="also write the fp16 variant (GPU/TensorRT)")
    es.add_argument(
        "--int8", action="store_true", help="also write the int8 variant (CPU), calibrated on real crops"
    )
    es.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    es.add_argument(
        "--data", type=Path, help="prepared data: score each variant on the held-out subjects (pooled)"
    )
    es.add_argument("--json", action="store_true", help="print the report as JSON")
    tp = sub.add_parser("temporal", help="export the temporal GRU as a one-step streaming model")
    tp.add_argument("--checkpoint", type=Path, default=REPO / "models" / "checkpoints" / "temporal.pt")
    tp.add_argument("--out", type=Path, default=REPO / "models" / "temporal.onnx")
    tp.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)

    from .onnx_export import ExportError, export_eye_state, export_temporal

    if args.command == "temporal":
        try:
            report = export_temporal(args.checkpoint, args.out)
        except ExportError as err:
            print(f"sleepsafe-export: {err}", file=sys.stderr)
            return err.code
        f = report["files"][0]
        print(
            json.dumps(report)
            if args.json
            else f"{f['file']}: {f['bytes']} bytes, streaming parity {f['parity_max_abs_diff_vs_torch']:.2e}"
        )
        return 0

    inputs = labels = None
    if args.data:
        from edge_agent.perception.eyecrop import model_input
        from models.dataset import TEST_SUBJECTS, eye_samples, load_all

        try:
            held = eye_samples(load_all(args.data), TEST_SUBJECTS)
            inputs, labels = model_input(held.crops, held.lids), held.labels
        except (FileNotFoundError, ValueError) as err:
            print(f"sleepsafe-export: {err}", file=sys.stderr)
            return Exit.NOINPUT
    try:
        report = export_eye_state(
            args.checkpoint,
            args.out,
            fp16=args.fp16,
            int8=args.int8,
            simplify=not args.no_simplify,
            eval_inputs=inputs,
            eval_labels=labels,
        )
    except ExportError as err:
        print(f"sleepsafe-export: {err}", file=sys.stderr)
        return err.code
    if args.json:
        print(json.dumps(report))
    else:
        for f in report["files"]:
            acc = f["accuracy_held_out"]
            extra = f", held-out balanced accuracy {acc['balanced_accuracy']}" if acc else ""
            print(
                f"{f['file']}: {f['variant']}, {f['bytes']} bytes, "
                f"parity {f['parity_max_abs_diff_vs_torch']:.2e}{extra}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
