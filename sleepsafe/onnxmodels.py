"""ONNX Runtime sessions of the project's models, for the vehicle and the sink alike: provider
choice, checks, warm-up, IO binding.

One factory for every model: execution providers in the configured order of preference
(TensorRT with its engine and timing caches in the state directory → CUDA → CPU).  A provider
this onnxruntime build lacks is skipped with one warning naming it; the providers in use are
reported.  A model file that is missing, corrupt or of the wrong shape is refused with one
clear line (:class:`ModelError`).  Only onnxruntime and numpy (imported when a model loads).
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import structlog

# The eye-state model's input per eye: a standardised grey crop and its opening mask, 24 x 48.
EYE_CHANNELS, EYE_H, EYE_W = 2, 24, 48


class SessionOptions(Protocol):
    """What a session is opened with (the edge agent's ModelsConfig has these, and more)."""

    @property
    def providers(self) -> Sequence[str]: ...
    @property
    def fp16(self) -> bool: ...
    @property
    def threads(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Options:
    providers: Sequence[str] = ("cuda", "cpu")
    fp16: bool = False
    threads: int = 1


log = structlog.get_logger(__name__)

PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


class ModelError(RuntimeError):
    """A model that cannot be used, as one line."""


def available_providers() -> list[str]:
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        # onnxruntime-gpu ≥ 1.21 finds the CUDA/cuDNN libraries of pip wheels this way.
        try:
            ort.preload_dlls()
        except Exception as err:  # noqa: BLE001 - a missing CUDA install only narrows the choice
            log.debug("preload_dlls_failed", error=str(err))
    return list(ort.get_available_providers())


def tensorrt_libraries_present() -> bool:
    """onnxruntime-gpu lists TensorRT whenever its provider library is installed, even where
    TensorRT itself (libnvinfer) is not; asking for it then fails deep inside session creation.
    Check for the library first, so the fallback is a warning, not a failure."""
    for name in ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def choose_providers(
    wanted: Sequence[str], state_dir: Path, fp16: bool, available: list[str] | None = None
) -> tuple[list[Any], list[str]]:
    """Providers (with options) to pass to onnxruntime, and the names skipped."""
    have = set(available if available is not None else available_providers())
    chosen: list[Any] = []
    skipped: list[str] = []
    for key in wanted:
        name = PROVIDER_NAMES[key]
        if name not in have or (key == "tensorrt" and available is None and not tensorrt_libraries_present()):
            skipped.append(name)
            continue
        if key == "tensorrt":
            cache = state_dir / "tensorrt"
            cache.mkdir(parents=True, exist_ok=True)
            chosen.append(
                (
                    name,
                    {
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(cache),
                        "trt_timing_cache_enable": True,
                        "trt_timing_cache_path": str(cache),
                        "trt_fp16_enable": fp16,
                    },
                )
            )
        elif key == "cuda":
            chosen.append((name, {"cudnn_conv_algo_search": "HEURISTIC"}))
        else:
            chosen.append(name)
    if "CPUExecutionProvider" not in [c if isinstance(c, str) else c[0] for c in chosen]:
        chosen.append("CPUExecutionProvider")  # always the last resort
    return chosen, skipped


@dataclass(slots=True)
class ModelInfo:
    name: str
    version: str
    path: str
    providers: list[str]
    warm_up_ms: float


def open_session(path: Path, cfg: SessionOptions, state_dir: Path, name: str) -> Any:
    """An onnxruntime session on the preferred providers available, or ModelError."""
    import onnxruntime as ort

    if not path.is_file():
        raise ModelError(f"model {name}: {path} not found")
    providers, skipped = choose_providers(cfg.providers, state_dir, cfg.fp16)
    if skipped:
        log.warning(
            "providers_skipped",
            model=name,
            skipped=skipped,
            reason="not in this onnxruntime build, or its libraries (CUDA, TensorRT) are not installed",
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cfg.threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as err:  # noqa: BLE001 - onnxruntime raises several kinds for a bad file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"model {name}: {path} cannot be loaded: {first[:200]}") from None


def _check_io(
    name: str,
    session: Any,
    inputs: dict[str, tuple[int | str, ...]],
    outputs: dict[str, tuple[int | str, ...]],
) -> None:
    """Names and fixed dimensions must match; 'batch' dimensions may be anything."""
    for kind, got, want in (
        ("input", session.get_inputs(), inputs),
        ("output", session.get_outputs(), outputs),
    ):
        if len(got) != len(want):
            raise ModelError(f"model {name}: expected {len(want)} {kind}s, found {len(got)}")
        for g, (wname, wshape) in zip(got, want.items(), strict=True):
            if g.name != wname:
                raise ModelError(f"model {name}: {kind} is named {g.name!r}, expected {wname!r}")
            shape = tuple(g.shape)
            fixed_ok = len(shape) == len(wshape) and all(
                isinstance(w, str) or s == w for s, w in zip(shape, wshape, strict=True)
            )
            if not fixed_ok:
                raise ModelError(f"model {name}: {kind} shape {list(shape)} does not match {list(wshape)}")


class OnnxModel:
    """A checked, warmed-up onnxruntime session with one input and one output."""

    def __init__(
        self,
        path: Path,
        input_shape: tuple[int, ...],
        output_width: int,
        cfg: SessionOptions,
        state_dir: Path,
        name: str,
    ) -> None:
        self.session = open_session(path, cfg, state_dir, name)
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(
                f"model {name}: expected 1 input and 1 output, found {len(inputs)} and {len(outputs)}"
            )
        _check_io(
            name,
            self.session,
            {inputs[0].name: ("batch", *input_shape[1:])},
            {outputs[0].name: ("batch", output_width)},
        )
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        self.input_type = np.float16 if "float16" in inputs[0].type else np.float32
        meta = self.session.get_modelmeta().custom_metadata_map
        self.name = name
        self.version = str(meta.get("version", "unknown"))
        self.meta = meta
        self.providers = list(self.session.get_providers())
        self._cuda = self.providers[0] == "CUDAExecutionProvider"
        self._binding = self.session.io_binding() if self._cuda else None
        # Warm-up: the first runs allocate, pick kernels, build TensorRT engines.
        t0 = time.perf_counter()
        dummy = np.zeros((2, *input_shape[1:]), dtype=self.input_type)
        for _ in range(3):
            self.run(dummy)
        self.info = ModelInfo(
            name=name,
            version=self.version,
            path=str(path),
            providers=self.providers,
            warm_up_ms=round((time.perf_counter() - t0) * 1000, 1),
        )

    def run(self, x: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        x = np.ascontiguousarray(x, dtype=self.input_type)
        if self._binding is not None:
            # IO binding on CUDA: the output stays on the device until we copy it once.
            b = self._binding
            b.bind_cpu_input(self.input_name, x)
            b.bind_output(self.output_name, "cuda")
            self.session.run_with_iobinding(b)
            out = b.copy_outputs_to_cpu()[0]
            b.clear_binding_inputs()
            b.clear_binding_outputs()
        else:
            out = self.session.run([self.output_name], {self.input_name: x})[0]
        return np.asarray(out, dtype=np.float32)


TEMPORAL_FEATURES = 7
TEMPORAL_HIDDEN = 24


class TemporalModel:
    """The streaming GRU: one frame in, P(closed now) and a drowsiness score out, with its
    hidden state carried between frames (reset when the face is lost)."""

    def __init__(self, path: Path, cfg: SessionOptions, state_dir: Path) -> None:
        self.session = open_session(path, cfg, state_dir, "temporal")
        _check_io(
            "temporal",
            self.session,
            {"x": ("batch", 1, TEMPORAL_FEATURES), "h": (1, "batch", TEMPORAL_HIDDEN)},
            {"y": ("batch", 1, 2), "h_out": (1, "batch", TEMPORAL_HIDDEN)},
        )
        meta = self.session.get_modelmeta().custom_metadata_map
        self.version = str(meta.get("version", "unknown"))
        self.providers = list(self.session.get_providers())
        self.reset()
        t0 = time.perf_counter()
        for _ in range(3):
            self.step([0.0] * TEMPORAL_FEATURES)
        self.reset()
        self.info = ModelInfo(
            "temporal", self.version, str(path), self.providers, round((time.perf_counter() - t0) * 1000, 1)
        )

    def reset(self) -> None:
        self._h = np.zeros((1, 1, TEMPORAL_HIDDEN), dtype=np.float32)

    def step(self, vector: list[float]) -> tuple[float, float]:
        x = np.asarray(vector, dtype=np.float32).reshape(1, 1, TEMPORAL_FEATURES)
        y, self._h = self.session.run(["y", "h_out"], {"x": x, "h": self._h})
        return float(y[0, 0, 0]), float(y[0, 0, 1])


class EyeStateSession(OnnxModel):
    """P(eye closed) for a batch of eye inputs ``(N, EYE_CHANNELS, EYE_H, EYE_W)``."""

    def __init__(self, path: Path, cfg: SessionOptions, state_dir: Path) -> None:
        super().__init__(path, (1, EYE_CHANNELS, EYE_H, EYE_W), 1, cfg, state_dir, "eye_state")

    def predict(self, crops: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return self.run(crops)[:, 0]
