"""Checkpoint → ONNX, offline, with the checks that make a model safe to ship to a vehicle.

fp32 export (opset 18, dynamic batch) → ``onnx.checker`` → strict shape inference → optional
simplification (onnxslim) → metadata in ``metadata_props`` → parity against torch on real crops
with onnxruntime (the export fails above the tolerance).  Variants: fp16 (for GPU/TensorRT) and
int8 static quantisation calibrated on training inputs (for CPU-only devices), each with its
own parity and accuracy figures.  Every file gets a model card JSON beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent.perception.eyecrop import CHANNELS, CROP_H, CROP_W
from sleepsafe.exitcodes import Exit

OPSET = 18
INPUT = "crops"
OUTPUT = "p_closed"
FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 5e-3


class ExportError(RuntimeError):
    """One line that says what is wrong, and the exit code that says which kind of wrong."""

    def __init__(self, message: str, code: Exit = Exit.DATAERR) -> None:
        super().__init__(message)
        self.code = code


def _input_code(err: Exception) -> Exit:
    """A checkpoint missing or not a checkpoint at all is an input problem; one of the wrong
    architecture or with weights that do not fit is a data problem."""
    from models.eye_state import UnreadableCheckpoint

    return Exit.NOINPUT if isinstance(err, (FileNotFoundError, UnreadableCheckpoint)) else Exit.DATAERR


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_writable(out: Path) -> None:
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ExportError(
            f"output {out}: cannot create {parent}: {err.strerror or err}", Exit.CANTCREAT
        ) from None
    if not os.access(parent, os.W_OK):
        raise ExportError(f"output {out}: {parent} is not writable", Exit.CANTCREAT)


def _run_ort(path: Path, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out: npt.NDArray[np.float32] = sess.run([OUTPUT], {INPUT: x})[0].astype(np.float32)
    return out


def _accuracy(
    path: Path, inputs: npt.NDArray[np.float32] | None, labels: npt.NDArray[np.int64] | None
) -> dict[str, Any] | None:
    if inputs is None or labels is None:
        return None
    from models.eye_state import metrics

    p = _run_ort(path, inputs)[:, 0]
    return metrics(labels, p)


def _set_metadata(model: Any, meta: dict[str, Any]) -> None:
    import onnx

    del model.metadata_props[:]
    for k, v in meta.items():
        entry = onnx.StringStringEntryProto(key=k, value=v if isinstance(v, str) else json.dumps(v))
        model.metadata_props.append(entry)


def _meta(
    name: str,
    arch: str,
    ckpt: dict[str, Any],
    inputs: dict[str, Any],
    outputs: dict[str, Any],
    preprocessing: str,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """What every exported model carries in ``metadata_props``."""
    import onnx
    import torch

    return {
        "name": name,
        "arch": arch,
        "version": ckpt.get("version", "0"),
        "input": inputs,
        "output": outputs,
        "preprocessing": preprocessing,
        "training_metrics": metrics,
        "data_sha256": ckpt.get("report", {}).get("data", {}).get("sha256", ""),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "opset": OPSET,
    }


def export_eye_state(
    checkpoint: Path,
    out: Path,
    *,
    fp16: bool = False,
    int8: bool = False,
    simplify: bool = True,
    tolerance: float = FP32_TOLERANCE,
    eval_inputs: npt.NDArray[np.float32] | None = None,
    eval_labels: npt.NDArray[np.int64] | None = None,
) -> dict[str, Any]:
    """Export and check.  ``eval_inputs``: model inputs of real held-out eyes
    (:func:`edge_agent.perception.eyecrop.model_input`) for the accuracy in each model card.  Returns a
    report with one entry per written file."""
    import onnx
    import torch

    from models.eye_state import ARCH, load_checkpoint

    _check_writable(out)
    try:
        model, ckpt = load_checkpoint(checkpoint)
    except (FileNotFoundError, ValueError) as err:
        raise ExportError(str(err), _input_code(err)) from None
    if int8 and "calibration_inputs" not in ckpt:
        raise ExportError(f"{checkpoint}: no int8 calibration inputs (a leave-one-out fold model?)")
    probe = np.asarray(ckpt["probe_inputs"], dtype=np.float32)
    report_train = ckpt.get("report", {})
    with torch.no_grad():
        expected = model(torch.from_numpy(probe)).numpy()

    with tempfile.TemporaryDirectory(prefix="sleepsafe-export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.onnx.export(
            model,
            (torch.from_numpy(probe[:2]),),
            str(raw),
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_shapes={"x": {0: batch}},
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
        proto = onnx.load(str(raw))
        if simplify:
            import onnxslim

            proto = onnxslim.slim(proto)
        onnx.checker.check_model(proto, full_check=True)
        proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
        held = report_train.get("held_out", {}).get("model", {})
        meta = _meta(
            "eye_state",
            ARCH,
            ckpt,
            {"name": INPUT, "shape": ["batch", CHANNELS, CROP_H, CROP_W], "dtype": "float32"},
            {"name": OUTPUT, "shape": ["batch", 1], "meaning": "P(eye closed)"},
            report_train.get("preprocessing", ""),
            {"held_out": held, "loso": report_train.get("leave_one_subject_out", [])},
        )
        _set_metadata(proto, meta)
        tmp_out = Path(tmp) / "fp32.onnx"
        onnx.save(proto, str(tmp_out))
        got = _run_ort(tmp_out, probe)
        diff = float(np.max(np.abs(got - expected)))
        if not diff <= tolerance:
            raise ExportError(
                f"parity: max |onnxruntime - torch| = {diff:.3g} exceeds {tolerance:g}; not written"
            )
        out.write_bytes(tmp_out.read_bytes())

    files = [_card(out, "fp32", diff, tolerance, meta, report_train, eval_inputs, eval_labels)]
    if fp16:
        from onnxconverter_common import float16

        half = float16.convert_float_to_float16(onnx.load(str(out)), keep_io_types=True)
        p16 = out.with_name(out.stem + ".fp16.onnx")
        onnx.save(half, str(p16))
        d16 = float(np.max(np.abs(_run_ort(p16, probe) - expected)))
        if not d16 <= FP16_TOLERANCE:
            raise ExportError(f"fp16 parity: {d16:.3g} exceeds {FP16_TOLERANCE:g}")
        files.append(_card(p16, "fp16", d16, FP16_TOLERANCE, meta, report_train, eval_inputs, eval_labels))
    if int8:
        p8 = out.with_name(out.stem + ".int8.onnx")
        _quantise(out, p8, np.asarray(ckpt["calibration_inputs"], dtype=np.float32))
        d8 = float(np.max(np.abs(_run_ort(p8, probe) - expected)))
        files.append(_card(p8, "int8", d8, None, meta, report_train, eval_inputs, eval_labels))
    return {"checkpoint": str(checkpoint), "files": files}


def _quantise(src: Path, dst: Path, calib: npt.NDArray[np.float32]) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{INPUT: calib[i : i + 32]} for i in range(0, len(calib), 32)])

        def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
            return next(self._it, None)

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )


def _card(
    path: Path,
    variant: str,
    diff: float,
    tolerance: float | None,
    meta: dict[str, Any],
    train: dict[str, Any],
    inputs: npt.NDArray[np.float32] | None,
    labels: npt.NDArray[np.int64] | None,
) -> dict[str, Any]:
    card = {
        "name": meta["name"],
        "file": path.name,
        "variant": variant,
        "sha256": _sha256(path),
        "bytes": path.stat().st_size,
        "version": meta["version"],
        "opset": OPSET,
        "input": meta["input"],
        "output": meta["output"],
        "preprocessing": meta["preprocessing"],
        "parity_max_abs_diff_vs_torch": diff,
        "parity_tolerance": tolerance,
        "accuracy_held_out": _accuracy(path, inputs, labels),
        "training": {
            "data": train.get("data", {}),
            "leave_one_subject_out": train.get("leave_one_subject_out", []),
            "held_out": train.get("held_out", {}),
        },
        "exported_at": meta["exported_at"],
        "torch": meta["torch"],
        "onnx": meta["onnx"],
    }
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def export_temporal(checkpoint: Path, out: Path, *, tolerance: float = FP32_TOLERANCE) -> dict[str, Any]:
    """The GRU as a one-step streaming model: x (N, 1, F), h (1, N, H) -> y (N, 1, 2), h_out."""
    import onnx
    import torch

    from models.temporal import ARCH, HIDDEN, N_FEATURES, load_checkpoint

    _check_writable(out)
    try:
        model, ckpt = load_checkpoint(checkpoint)
    except (FileNotFoundError, ValueError) as err:
        raise ExportError(str(err), _input_code(err)) from None
    frames = np.asarray(ckpt["probe_frames"], dtype=np.float32)
    # Reference: the probe clip run frame by frame through torch, carrying the state.
    with torch.no_grad():
        h = torch.zeros(1, 1, HIDDEN)
        expected = []
        for f in frames:
            y, h = model(torch.from_numpy(f[None, None]), h)
            expected.append(y.numpy()[0, 0])
    report_train = ckpt.get("report", {})
    with tempfile.TemporaryDirectory(prefix="sleepsafe-export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.onnx.export(
            model,
            (torch.zeros(2, 1, N_FEATURES), torch.zeros(1, 2, HIDDEN)),
            str(raw),
            input_names=["x", "h"],
            output_names=["y", "h_out"],
            dynamic_shapes={"x": {0: batch}, "h": {1: batch}},
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
        proto = onnx.load(str(raw))
        onnx.checker.check_model(proto, full_check=True)
        proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
        meta = _meta(
            "temporal",
            ARCH,
            ckpt,
            {"x": ["batch", 1, N_FEATURES], "h": [1, "batch", HIDDEN]},
            {"y": ["batch", 1, 2], "meaning": "P(eyes closed now), drowsiness score"},
            "edge_agent.perception.features.temporal_vector",
            {k: report_train.get(k) for k in ("leave_one_subject_out", "held_out")},
        )
        _set_metadata(proto, meta)
        tmp_out = Path(tmp) / "temporal.onnx"
        onnx.save(proto, str(tmp_out))
        import onnxruntime as ort

        sess = ort.InferenceSession(str(tmp_out), providers=["CPUExecutionProvider"])
        state = np.zeros((1, 1, HIDDEN), dtype=np.float32)
        got = []
        for f in frames:
            y, state = sess.run(["y", "h_out"], {"x": f[None, None], "h": state})
            got.append(y[0, 0])
        diff = float(np.max(np.abs(np.asarray(got) - np.asarray(expected))))
        if not diff <= tolerance:
            raise ExportError(
                f"parity: max |onnxruntime - torch| = {diff:.3g} exceeds {tolerance:g}; not written"
            )
        out.write_bytes(tmp_out.read_bytes())
    card = {
        "name": "temporal",
        "file": out.name,
        "variant": "fp32",
        "sha256": _sha256(out),
        "bytes": out.stat().st_size,
        "version": meta["version"],
        "opset": OPSET,
        "input": meta["input"],
        "output": meta["output"],
        "parity_max_abs_diff_vs_torch": diff,
        "parity_tolerance": tolerance,
        "parity_on": f"{len(frames)} real frames, streamed one at a time with the state carried",
        "training": {k: report_train.get(k) for k in ("data", "leave_one_subject_out", "held_out", "train")},
        "exported_at": meta["exported_at"],
        "torch": meta["torch"],
        "onnx": meta["onnx"],
    }
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return {"checkpoint": str(checkpoint), "files": [card]}
