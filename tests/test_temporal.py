"""The temporal GRU: synthetic timelines, training on real sequences, streaming export with the
state carried, the runtime, and the agent with it switched on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_agent.config import ModelsConfig
from edge_agent.inference.runtime import ModelError, TemporalModel, default_model_path

REPO = Path(__file__).resolve().parents[1]


def test_synthetic_timeline_targets_match_the_signal() -> None:
    from models.temporal import synthetic_timeline

    x, y = synthetic_timeline(np.random.default_rng(0), 20.0)
    assert x.shape[1] == 7 and y.shape == (len(x), 2)
    closed = y[:, 0] > 0.5
    assert closed.any() and (~closed).any()
    assert np.all(x[closed, 0] < 0.2)  # closed frames have low openness
    assert np.all((y[:, 1] >= 0) & (y[:, 1] <= 1))


@pytest.fixture(scope="module")
def temporal_ckpt(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from models.dataset import load_all
    from models.temporal import TemporalTrainConfig, run_training

    out = tmp_path_factory.mktemp("t") / "temporal.pt"
    report = run_training(load_all(prepared), out, TemporalTrainConfig(steps=3, batch=4), progress=False)
    assert report["held_out"]["subject"] == "C,Q,R,W" and report["data"]["train_subjects"] == ["A", "B"]
    assert set(report["held_out"]["by_subject"]) == {"C", "Q", "R", "W"}
    # EAR at a cut chosen on the training people's frames, beside the detector's fixed cut
    assert 0.1 <= report["held_out"]["ear_tuned"]["cut"] <= 0.6
    assert all("ear_tuned" in v for v in report["held_out"]["by_subject"].values())
    assert report["data"]["real_labelled_frames"] > 0
    return out


def test_streaming_export_parity_and_runtime(temporal_ckpt: Path, tmp_path: Path) -> None:
    import onnx

    from export.onnx_export import export_temporal

    out = tmp_path / "temporal.onnx"
    report = export_temporal(temporal_ckpt, out)
    card = report["files"][0]
    assert card["parity_max_abs_diff_vs_torch"] <= 1e-4
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert {"name", "version", "input", "data_sha256", "exported_at", "torch", "onnx"} <= set(meta)
    m = TemporalModel(out, ModelsConfig(providers=["cpu"]), tmp_path)
    seq = [[0.05, 0.02, 0.1, 0.0, 0.05, 0.9, 1.0]] * 10
    first = [m.step(v) for v in seq]
    m.reset()
    again = [m.step(v) for v in seq]
    assert first == again  # the state, not the session, carries history
    assert all(0.0 <= p <= 1.0 and 0.0 <= s <= 1.0 for p, s in first)


def test_temporal_refuses_a_model_of_another_shape(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="expected 2 inputs"):
        TemporalModel(default_model_path("eye_state.onnx"), ModelsConfig(providers=["cpu"]), tmp_path)


def test_agent_with_the_temporal_model_on(clips: Path, tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from edge_agent.config import load_config\n"
        "from edge_agent.replay import replay_clip\n"
        f"cfg = load_config(None, {{'state_dir': {str(tmp_path)!r}, "
        "'models': {'enabled': 'true', 'temporal_enabled': 'true', 'providers': ['cpu']}})\n"
        f"res = replay_clip(cfg, Path({str(clips / 'single_face.mp4')!r}))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(json.dumps(res.summary))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(summary["model_versions"]) == {"landmarks", "eye_state", "temporal"}
    assert summary["frames"] == 72
