"""The edge models on ONNX Runtime: the shared sessions (sleepsafe.onnxmodels: provider choice,
checks, warm-up, IO binding) loaded from the agent's ModelsConfig, and the eye-state model fed
from a frame's landmarks.  A model that is missing, corrupt or of the wrong shape is refused
with one clear line (:class:`ModelError`) and the agent runs on EAR alone, saying so.  No torch
here: the edge runtime needs only onnxruntime and numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import structlog

from edge_agent.config import ModelsConfig
from edge_agent.perception.eyecrop import eye_crops
from sleepsafe.onnxmodels import (
    PROVIDER_NAMES,
    TEMPORAL_FEATURES,
    TEMPORAL_HIDDEN,
    EyeStateSession,
    ModelError,
    ModelInfo,
    OnnxModel,
    TemporalModel,
    available_providers,
    choose_providers,
    open_session,
    tensorrt_libraries_present,
)

__all__ = [
    "PROVIDER_NAMES",
    "TEMPORAL_FEATURES",
    "TEMPORAL_HIDDEN",
    "EyeStateModel",
    "ModelError",
    "ModelInfo",
    "OnnxModel",
    "TemporalModel",
    "available_providers",
    "choose_providers",
    "default_model_path",
    "load_eye_state",
    "load_temporal",
    "open_session",
    "tensorrt_libraries_present",
]

log = structlog.get_logger(__name__)


class EyeStateModel(EyeStateSession):
    """P(eye closed) for both eyes of a frame, as one batch of two."""

    def closed_prob(self, frame: npt.NDArray[np.uint8], points: npt.NDArray[np.float64]) -> float:
        """P(eyes closed) of a frame's driver, both eyes averaged."""
        return float(self.predict(eye_crops(frame, points)).mean())


def default_model_path(file: str) -> Path:
    """Models shipped in the repository (``models/``), or installed beside the package."""
    here = Path(__file__).resolve().parents[1]  # edge_agent/
    for candidate in (here.parent / "models" / file, here / "models" / file):
        if candidate.is_file():
            return candidate
    return here.parent / "models" / file


M = TypeVar("M", "EyeStateModel", "TemporalModel")


def _load(
    factory: Callable[[Path, ModelsConfig, Path], M],
    path: Path,
    cfg: ModelsConfig,
    state_dir: Path,
    fallback: str,
) -> M | None:
    """A model, or None and one error line saying what the agent does without it."""
    try:
        model = factory(path, cfg, state_dir)
    except ModelError as err:
        log.error("model_refused", error=str(err), fallback=fallback)
        return None
    info = model.info
    log.info(
        "model_loaded",
        name=info.name,
        version=info.version,
        path=info.path,
        providers=info.providers,
        warm_up_ms=info.warm_up_ms,
    )
    return model


def load_temporal(cfg: ModelsConfig, state_dir: Path) -> TemporalModel | None:
    return _load(
        TemporalModel,
        cfg.temporal or default_model_path("temporal.onnx"),
        cfg,
        state_dir,
        "no temporal model",
    )


def load_eye_state(cfg: ModelsConfig, state_dir: Path) -> EyeStateModel | None:
    files = {"fp32": "eye_state.onnx", "fp16": "eye_state.fp16.onnx", "int8": "eye_state.int8.onnx"}
    return _load(
        EyeStateModel, cfg.eye_state or default_model_path(files[cfg.variant]), cfg, state_dir, "EAR alone"
    )
