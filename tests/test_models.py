"""Models: training on real crops, export round trip and parity, variants, the runtime's
provider fallback and refusals, and the shipped model on held-out real frames."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_agent.config import EdgeConfig, ModelsConfig
from edge_agent.inference.runtime import (
    EyeStateModel,
    ModelError,
    choose_providers,
    default_model_path,
    load_eye_state,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "eye_state.onnx"
# Balanced accuracy of the shipped model v2.3 on the held-out people, measured (README, Models).
# C (WolfgangLanger_Pexels, 596 open / 210 closed crops): 0.978 on every machine so far; one
# closed crop moves it by 0.0024, one open crop by 0.0008, so the floor 0.97 is three closed or
# ten open crops below. Q (glasses, 2 closed crops), R (in the car, 8) and W (the woman, 2) are
# too thin alone: one of W's crops moves hers by 0.25 (measured 1.000 on the first machine, 0.750
# on AVX-512 ones). Pooled (410 open / 12 closed) one closed crop moves it by 0.042; measured
# 0.750 at the lowest (EAR alone: 0.500), and the floor is one crop below.
HELD_OUT_C_FLOOR = 0.97
HELD_OUT_THIN_POOLED_FLOOR = 0.70
THIN_POOLED_STEP = 1 / 24  # one closed crop of the 12, in balanced accuracy


@pytest.fixture(scope="module")
def checkpoint(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quickly trained checkpoint: the test is of the machinery, not of the accuracy."""
    from models.dataset import load_all, load_stills
    from models.eye_state import TrainConfig, run_training

    out = tmp_path_factory.mktemp("ckpt") / "eye_state.pt"
    report = run_training(
        load_all(prepared),
        out,
        TrainConfig(epochs=1, steps_per_epoch=3, batch=16),
        progress=False,
        stills=load_stills(prepared),
    )
    assert report["data"]["train_subjects"][:2] == ["A", "B"]
    assert len(report["data"]["train_subjects"]) == 10  # A, B and eight people from the stills
    # WolfgangLanger_Pexels, carphone, KPhotoAlbum's demo and saurongaze's GIF never train
    assert report["held_out"]["subject"] == "C,Q,R,W"
    assert not {"C", "Q", "R", "W"} & set(report["data"]["train_subjects"])
    assert set(report["held_out"]["by_subject"]) == {"C", "Q", "R", "W"}
    assert 0.1 <= report["held_out"]["ear_tuned_cut"]["cut"] <= 0.6
    assert report["held_out"]["ear_tuned_cut"]["people"] == ["A", "B"]  # never a held-out person
    assert all("ear_tuned" in v for v in report["held_out"]["by_subject"].values())
    assert all(0.1 <= f["ear_tuned"]["cut"] <= 0.6 for f in report["leave_one_subject_out"])
    assert len(report["data"]["sha256"]) == 64
    assert out.with_suffix(".json").is_file()
    return out


def test_prepared_data_is_split_by_subject(prepared: Path) -> None:
    from models.dataset import eye_samples, load_all

    data = load_all(prepared)
    assert {c.subject for c in data} == {"A", "B", "C", "Q", "R", "W"}
    x, y, openness, lids, _ = eye_samples(data, ["A"])
    assert x.shape[1:] == (24, 48) and x.dtype == np.uint8
    assert set(np.unique(y)) == {0, 1} and len(x) == len(y) == len(openness) == len(lids)


def test_group_video_region_prepares_as_one_person(clips: Path, tmp_path: Path) -> None:
    """The woman's region of the three-person video runs through the agent as a clip of its own:
    every labelled frame has her face, and the lids drawn on frames we labelled shut are much
    closer together than on frames labelled open (labels off by a few frames would fail this)."""
    from models.dataset import REGIONS, SUBJECTS, ClipData, prepare

    clip = "example_multispeaker.mp4#left"
    assert clip in REGIONS and SUBJECTS[clip] == "L"
    (path,) = prepare(clips, REPO / "data" / "labels" / "eye_state.csv", tmp_path, clips=[clip])
    data = ClipData.load(path)
    labelled = data.labels >= 0
    assert (data.labels == 1).sum() >= 40 and (data.labels == 0).sum() >= 200
    assert (data.features[labelled, -1] > 0.5).all()  # a face in every labelled frame
    gap = np.abs(data.lids[:, :, 0, 1:-1, 1] - data.lids[:, :, 1, 1:-1, 1]).mean(axis=(1, 2))
    closed, open_ = np.median(gap[data.labels == 1]), np.median(gap[data.labels == 0])
    assert closed < 0.5 * open_, (closed, open_)


def test_export_round_trip_parity_metadata_and_variants(
    checkpoint: Path, prepared: Path, tmp_path: Path
) -> None:
    import onnx

    from edge_agent.perception.eyecrop import model_input
    from export.onnx_export import export_eye_state
    from models.dataset import eye_samples, load_all

    held = eye_samples(load_all(prepared), ["C"])
    labels = held.labels
    out = tmp_path / "eye_state.onnx"
    report = export_eye_state(
        checkpoint,
        out,
        fp16=True,
        int8=True,
        eval_inputs=model_input(held.crops, held.lids),
        eval_labels=labels,
    )
    variants = {f["variant"]: f for f in report["files"]}
    assert set(variants) == {"fp32", "fp16", "int8"}
    assert variants["fp32"]["parity_max_abs_diff_vs_torch"] <= 1e-4
    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    for key in (
        "name",
        "version",
        "input",
        "preprocessing",
        "training_metrics",
        "data_sha256",
        "exported_at",
        "torch",
        "onnx",
    ):
        assert key in meta, key
    assert model.opset_import[0].version >= 17
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param, "batch axis is dynamic"
    for f in report["files"]:
        card = json.loads((tmp_path / f["file"]).with_suffix(".json").read_text())
        assert card["sha256"] == f["sha256"] and card["accuracy_held_out"]["n"] == len(labels)
        m = EyeStateModel(tmp_path / f["file"], ModelsConfig(providers=["cpu"]), tmp_path)
        p = m.predict(np.zeros((5, 2, 24, 48), dtype=np.float32))
        assert p.shape == (5,) and np.all((p >= 0) & (p <= 1))


def export(*args: str) -> subprocess.CompletedProcess[str]:
    """`sleepsafe-export eye-state ARGS` in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "export.cli", "eye-state", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_export_refuses_bad_input_with_one_line(checkpoint: Path, tmp_path: Path) -> None:
    missing = export("--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m.onnx"))
    assert missing.returncode == 66 and missing.stderr.strip().endswith("not found")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    bad = export("--checkpoint", str(junk), "--out", str(tmp_path / "m.onnx"))
    assert bad.returncode == 66 and "not a readable torch checkpoint" in bad.stderr
    import torch

    wrong = tmp_path / "wrong.pt"
    torch.save({"arch": "ResNet50", "state_dict": {}}, wrong)
    arch = export("--checkpoint", str(wrong), "--out", str(tmp_path / "m.onnx"))
    assert arch.returncode != 0 and "architecture 'ResNet50', expected 'EyeStateNet'" in arch.stderr
    # A path under a regular file cannot be created, whoever runs the test (root included).
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    unwritable = export("--checkpoint", str(checkpoint), "--out", str(blocker / "sub" / "m.onnx"))
    assert unwritable.returncode == 73 and "cannot create" in unwritable.stderr
    assert len(unwritable.stderr.strip().splitlines()) == 1


def test_fold_models_are_kept_and_give_out_of_fold_probabilities(
    checkpoint: Path, prepared: Path, tmp_path: Path
) -> None:
    """Each leave-one-subject-out model is kept beside the checkpoint; it exports (fp32), is
    refused for int8 (no calibration inputs) in one line, and gives its person's probabilities
    to the temporal training, while the held-out person's come from the shipped ONNX."""
    from export.onnx_export import export_eye_state
    from models.cli import eye_probabilities
    from models.dataset import fold_path, load_all

    report = json.loads(checkpoint.with_suffix(".json").read_text())
    folds = {
        f["test_subject"]: fold_path(checkpoint, f["test_subject"]) for f in report["leave_one_subject_out"]
    }
    assert set(folds) == {"A", "B"} and all(p.is_file() for p in folds.values())
    onnx_path = tmp_path / "fold-A.onnx"
    card = export_eye_state(folds["A"], onnx_path)["files"][0]
    assert card["parity_max_abs_diff_vs_torch"] <= 1e-4
    assert card["version"].endswith("+loso-A")  # never passes for the shipped model
    refused = export("--checkpoint", str(folds["A"]), "--out", str(tmp_path / "x.onnx"), "--int8")
    assert refused.returncode == 65 and "no int8 calibration inputs" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    clips = load_all(prepared)
    probs, source = eye_probabilities(clips, SHIPPED, checkpoint)
    held_out = {s: SHIPPED.name for s in ("C", "Q", "R", "W")}
    assert source == {"A": folds["A"].name, "B": folds["B"].name, **held_out}
    plain, _ = eye_probabilities(clips, SHIPPED)
    a = next(c.clip for c in clips if c.subject == "A")
    c = next(c.clip for c in clips if c.subject == "C")
    assert not np.allclose(probs[a], plain[a])  # another model
    np.testing.assert_array_equal(probs[c], plain[c])


def test_provider_fallback_names_what_was_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chosen, skipped = choose_providers(
        ["tensorrt", "cuda", "cpu"], tmp_path, fp16=True, available=["CPUExecutionProvider"]
    )
    assert chosen == ["CPUExecutionProvider"]
    assert skipped == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    m = EyeStateModel(SHIPPED, ModelsConfig(providers=["tensorrt", "cuda", "cpu"]), tmp_path)
    assert m.providers == ["CPUExecutionProvider"]
    err = capsys.readouterr().err
    assert (
        "providers_skipped" in err and "TensorrtExecutionProvider" in err and "CUDAExecutionProvider" in err
    )


def test_gpu_provider_options_when_available(tmp_path: Path) -> None:
    chosen, skipped = choose_providers(
        ["tensorrt", "cuda", "cpu"],
        tmp_path,
        fp16=True,
        available=["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    assert not skipped
    trt = chosen[0]
    assert trt[0] == "TensorrtExecutionProvider"
    assert trt[1]["trt_engine_cache_path"] == str(tmp_path / "tensorrt") and trt[1]["trt_fp16_enable"] is True
    assert chosen[1][0] == "CUDAExecutionProvider" and chosen[2] == "CPUExecutionProvider"


def _bad_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "wrong", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_unusable_model_files_are_refused(tmp_path: Path) -> None:
    cfg = ModelsConfig(providers=["cpu"])
    with pytest.raises(ModelError, match="not found"):
        EyeStateModel(tmp_path / "missing.onnx", cfg, tmp_path)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(SHIPPED.read_bytes()[:500])
    with pytest.raises(ModelError, match="cannot be loaded"):
        EyeStateModel(corrupt, cfg, tmp_path)
    with pytest.raises(ModelError, match="input shape"):
        EyeStateModel(_bad_model(tmp_path / "wrong.onnx"), cfg, tmp_path)


def test_agent_runs_on_ear_alone_when_the_model_is_refused(clips: Path, tmp_path: Path) -> None:
    bad = _bad_model(tmp_path / "wrong.onnx")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "--set",
            f"state_dir={tmp_path}",
            "--set",
            "models.mode=on",
            "--set",
            f"models.eye_state={bad}",
            "--set",
            "logging.format=json",
            "replay",
            str(clips / "single_face.mp4"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert summary["models"] == "off" and summary["blinks"] == 1
    refused = [json.loads(x) for x in proc.stderr.splitlines() if '"model_refused"' in x]
    assert refused and "input shape" in refused[0]["error"] and refused[0]["fallback"] == "EAR alone"


def test_models_on_replay_reports_versions_and_providers(clips: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "--set",
            f"state_dir={tmp_path}",
            "--set",
            "models.mode=on",
            "--set",
            'models.providers=["cuda", "cpu"]',
            "replay",
            str(clips / "single_face.mp4"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    summary = lines[-1]
    assert summary["models"] == "on" and summary["providers"] == ["CPUExecutionProvider"]
    assert "eye_state" in summary["model_versions"]
    assert summary["frames"] == 72


def test_edge_runtime_never_imports_torch(clips: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from edge_agent.config import load_config\n"
        "from edge_agent.replay import replay_clip\n"
        f"cfg = load_config(None, {{'state_dir': {str(tmp_path)!r}, "
        "'models': {'enabled': 'true', 'providers': ['cpu']}})\n"
        f"res = replay_clip(cfg, Path({str(clips / 'single_face.mp4')!r}))\n"
        "assert res.summary['models'] == 'on'\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1] == "ok", proc.stderr[-2000:]


def _balanced(path: Path, prepared: Path) -> dict[str, tuple[float, float]]:
    """Per held-out person, and for the thin ones pooled ("thin"): (model, EAR alone) balanced
    accuracy on the same crops, as `sleepsafe-train score` reports them."""
    from models.dataset import load_all
    from models.score import score_eye_state

    report = score_eye_state(load_all(prepared), path)
    out = {
        s: (v["model"]["balanced_accuracy"], v["ear_only"]["balanced_accuracy"])
        for s, v in report["by_subject"].items()
    }
    thin = report["thin_pooled"]
    assert thin["people"] == ["Q", "R", "W"] and thin["crops"] == {"open": 410, "closed": 12}
    out["thin"] = (thin["model"]["balanced_accuracy"], thin["ear_only"]["balanced_accuracy"])
    return out


@pytest.fixture(scope="module")
def shipped_scores(prepared: Path) -> dict[str, tuple[float, float]]:
    """(shipped model, EAR alone) balanced accuracy on each held-out person's crops, computed once."""
    return _balanced(SHIPPED, prepared)


def test_shipped_model_on_held_out_real_frames(shipped_scores: dict[str, tuple[float, float]]) -> None:
    assert shipped_scores["C"][0] >= HELD_OUT_C_FLOOR
    assert shipped_scores["thin"][0] >= HELD_OUT_THIN_POOLED_FLOOR


@pytest.mark.xfail(
    strict=True,
    reason="measured: the shipped model (0.978) is still below EAR alone (0.989) on "
    "WolfgangLanger_Pexels: 26 open crops of 596 called shut, all downcast or laughing "
    "eyes that look shut in the crop (design note 17)",
)
def test_shipped_model_at_least_as_good_as_ear_alone_on_c(
    shipped_scores: dict[str, tuple[float, float]],
) -> None:
    model_bacc, ear_bacc = shipped_scores["C"]
    assert model_bacc >= ear_bacc


def test_shipped_model_better_than_ear_alone_on_the_thin_people(
    shipped_scores: dict[str, tuple[float, float]],
) -> None:
    """The in-car man, the man in glasses and the woman, pooled: FaceMesh draws their shut eyes
    half open, so EAR alone calls none of their 12 closed crops shut (0.500); the model, which
    never saw them, calls 6 of them shut and no open crop (0.750, measured). Asserted: at least
    one closed crop more than EAR, five below what was measured."""
    model_bacc, ear_bacc = shipped_scores["thin"]
    assert model_bacc >= ear_bacc + THIN_POOLED_STEP - 1e-9


def test_score_command_on_the_held_out_people(
    prepared: Path,
    shipped_scores: dict[str, tuple[float, float]],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """`sleepsafe-train score`: the shipped files on each held-out person, beside EAR at the
    detector's cut and at the cut learnt on the training people present (A and B here)."""
    from models.cli import main

    assert main(["score", "--data", str(prepared), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    eye = report["eye_state"]
    assert eye["version"] == "2.3.0" and eye["ear_tuned_cut"]["people"] == ["A", "B"]
    assert set(eye["by_subject"]) == {"C", "Q", "R", "W"}
    for s, (model, ear) in shipped_scores.items():
        got = eye["thin_pooled"] if s == "thin" else eye["by_subject"][s]
        assert got["model"]["balanced_accuracy"] == model
        assert got["ear_only"]["balanced_accuracy"] == ear
    assert eye["by_subject"]["W"]["crops"] == {"open": 64, "closed": 2}
    temporal = report["temporal"]["by_subject"]
    assert set(temporal) == {"C", "Q", "R", "W"} and temporal["W"]["frames"] == {"open": 32, "closed": 1}
    assert all("ear_tuned" in v for v in temporal.values())
    # The table names every person; a missing model is one line, not a traceback.
    assert main(["score", "--data", str(prepared), "--temporal-model", "none"]) == 0
    table = capsys.readouterr().out
    assert all(f"\n  {s} " in table for s in "CQRW") and "temporal" not in table
    assert main(["score", "--data", str(prepared), "--eye-model", str(tmp_path / "gone.onnx")]) == 65
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found" in err[0]


def test_int8_within_two_points_of_fp32(
    shipped_scores: dict[str, tuple[float, float]], prepared: Path
) -> None:
    """On C (one crop: 0.0024) and the thin people pooled (one crop: 0.042, so one may flip)."""
    int8 = _balanced(default_model_path("eye_state.int8.onnx"), prepared)
    assert abs(int8["C"][0] - shipped_scores["C"][0]) <= 0.02
    assert abs(int8["thin"][0] - shipped_scores["thin"][0]) <= THIN_POOLED_STEP + 1e-9


def test_synthetic_closure_shuts_a_real_open_eye(prepared: Path) -> None:
    """The training-only closure: the opening the lids enclose shrinks to a sliver, the picture
    changes inside it (the iris is painted over) and hardly outside it."""
    from edge_agent.perception.eyecrop import aperture_mask
    from models.dataset import eye_samples, load_all
    from models.synth import close_eye, usable

    data = eye_samples(load_all(prepared), ["A"])
    rng = np.random.default_rng(0)
    for i in np.flatnonzero(data.labels == 0)[::50]:
        crop, lids = data.crops[i], data.lids[i]
        assert usable(lids)
        shut, shut_lids = close_eye(crop, lids, rng)
        assert shut.shape == crop.shape and shut.dtype == np.uint8
        before, after = aperture_mask(lids), aperture_mask(shut_lids)
        assert after.sum() < 0.4 * before.sum()
        inside = before > 0.5
        change = np.abs(shut.astype(np.float32) - crop.astype(np.float32))
        assert change[inside].mean() > 3 * change[~inside].mean()
    assert not usable(np.zeros((2, 9, 2), dtype=np.float32))


def test_narrowed_eye_stays_open(prepared: Path) -> None:
    """The training-only hard negative (look-down, laugh): the opening shrinks by a fifth to
    three fifths, never to a sliver; the skin painted over the covered band changes the picture
    there, while outside the eye and deep in the gap that stays open (away from the new lid
    margin) the real eye is left much as it was."""
    from edge_agent.perception.eyecrop import aperture_mask
    from models.dataset import eye_samples, load_all
    from models.synth import narrow_eye, usable

    data = eye_samples(load_all(prepared), ["A"])
    rng = np.random.default_rng(0)
    covered_change, deep_change, outside_change = [], [], []
    for i in np.flatnonzero(data.labels == 0)[::50]:
        crop, lids = data.crops[i], data.lids[i]
        assert usable(lids)
        narrow, narrow_lids = narrow_eye(crop, lids, rng)
        assert narrow.shape == crop.shape and narrow.dtype == np.uint8
        if narrow is crop:  # an eye too small to narrow and still show open comes back as it was
            assert narrow_lids is lids
            continue
        before, after = aperture_mask(lids), aperture_mask(narrow_lids)
        assert 0.35 * before.sum() <= after.sum() <= 0.85 * before.sum()
        change = np.abs(narrow.astype(np.float32) - crop.astype(np.float32))
        kept = after > 0.9
        deep = kept & np.roll(kept, 2, axis=0)  # two rows below the new upper lid, at least
        covered_change.append(change[(before > 0.5) & (after < 0.1)].mean())
        deep_change.append(change[deep].mean())
        outside_change.append(change[before < 0.01].mean())
    assert len(covered_change) >= 5
    assert np.mean(covered_change) > 3 * np.mean(outside_change)
    assert np.mean(covered_change) > 1.5 * np.mean(deep_change)


def test_out_of_fold_threshold_maximises_balanced_accuracy() -> None:
    from models.eye_state import oof_threshold

    y = np.array([0, 0, 1, 1])
    assert oof_threshold(y, np.array([0.1, 0.3, 0.35, 0.9], dtype=np.float32))["threshold"] == 0.35
    ties = oof_threshold(y, np.array([0.1, 0.2, 0.8, 0.9], dtype=np.float32))
    assert ties["threshold"] == 0.5 and ties["balanced_accuracy"] == 1.0  # ties: nearest 0.5


def test_occluders_leave_the_open_eye_visible(prepared: Path) -> None:
    """The training-only occluders (hand, glasses rim, glare) change real crops, yet never hide
    most of the opening: the label stays true to the picture."""
    from edge_agent.perception.eyecrop import aperture_mask
    from models.dataset import eye_samples, load_all
    from models.eye_state import occlude

    data = eye_samples(load_all(prepared), ["A"])
    rng = np.random.default_rng(0)
    changed_share, hidden = [], []
    for i in np.flatnonzero(data.labels == 0)[::5]:
        crop = data.crops[i].astype(np.float32)
        opening = aperture_mask(data.lids[i])
        out = occlude(crop, opening, rng)
        assert out.shape == crop.shape
        diff = np.abs(out - crop) > 8.0
        changed_share.append(float(diff.mean()))
        inside = opening > 0.5
        hidden.append(float(diff[inside].mean()))
    changed_share_arr = np.array(changed_share)
    assert (changed_share_arr > 0.05).mean() > 0.2  # about a third of the crops get an occluder
    assert (changed_share_arr == 0).mean() > 0.4  # most stay as they were
    assert max(hidden) <= 0.6  # never most of the opening


def test_runtime_eye_input_has_the_opening_mask(clips: Path) -> None:
    """The runtime converts the lid points too (not only the EAR ones): the model's second
    channel is the eye opening, as in training."""
    import cv2

    from edge_agent.config import LandmarkConfig
    from edge_agent.perception.eyecrop import CHANNELS, eye_crops
    from edge_agent.perception.landmarks import create_backend, largest_face, to_rgb

    frame = cv2.imread(str(clips / "single_face.jpg"))
    backend = create_backend(LandmarkConfig())  # the agent's backend: not the full 478 points
    try:
        face = largest_face(backend.detect(to_rgb(frame), 0))
    finally:
        backend.close()
    assert face is not None
    x = eye_crops(frame, face.points)
    assert x.shape == (2, CHANNELS, 24, 48) and x.dtype == np.float32
    coverage = x[:, 1].mean(axis=(1, 2))
    assert np.all((coverage > 0.05) & (coverage < 0.5)), coverage  # an open eye, not the crop


def test_still_labels_refuse_bad_rows_with_one_line(tmp_path: Path, clips: Path) -> None:
    from models.dataset import prepare_stills, read_still_labels

    head = "image,x0,y0,x1,y1,label,subject,note\n"
    bad = {
        "single_face.jpg,0,0,10,10,sleepy,B,x\n": "label must be open or closed",
        "single_face.jpg,0,0,zero,10,open,B,x\n": "must be integers",
        "single_face.jpg,50,0,10,10,open,B,x\n": "empty region",
    }
    for row, message in bad.items():
        path = tmp_path / "stills.csv"
        path.write_text(head + row)
        with pytest.raises(ValueError, match=message) as err:
            read_still_labels(path)
        assert "stills.csv:2" in str(err.value) and "\n" not in str(err.value)
    path.write_text(head + "single_face.jpg,0,0,60,60,open,B,a corner without a face\n")
    with pytest.raises(ValueError, match="no face found"):
        prepare_stills(clips, path, tmp_path / "out")
    path.write_text(head + "absent.jpg,0,0,60,60,open,B,x\n")
    with pytest.raises(FileNotFoundError, match=r"absent\.jpg"):
        prepare_stills(clips, path, tmp_path / "out")


def test_ear_cut_is_chosen_per_person_and_prefers_the_detectors() -> None:
    """X shuts to 0.3 and opens to 0.6, Y to 0.1 and 0.5: every cut in 0.30-0.49 is perfect for
    both, and the tie goes to the cut nearest the detector's 0.2. Open-only people do not vote."""
    from models.eye_state import ear_cut

    openness = np.array([0.3, 0.6, 0.6, 0.1, 0.5, 0.5, 0.25], dtype=np.float32)
    labels = np.array([1, 0, 0, 1, 0, 0, 0])
    subjects = np.array(["X", "X", "X", "Y", "Y", "Y", "S"])
    cut = ear_cut(labels, openness, subjects, 0.2)
    assert cut == {"cut": 0.3, "mean_balanced_accuracy": 1.0, "people": ["X", "Y"]}
    with pytest.raises(ValueError, match="no training person with closed eyes"):
        ear_cut(np.zeros(7, dtype=np.int64), openness, subjects, 0.2)


def test_data_prepared_under_an_older_split_is_refused(prepared: Path, tmp_path: Path) -> None:
    """Carphone's man was subject D before he became R: an old prepared file would train him."""
    from models.dataset import ClipData, load_all

    car = next(c for c in load_all(prepared) if c.clip == "carphone_pristine.mp4")
    car.subject = "D"
    car.save(tmp_path)
    with pytest.raises(
        ValueError, match=r"carphone_pristine\.mp4 was prepared as subject D, now R; run prepare"
    ):
        load_all(tmp_path)
    assert ClipData.load(tmp_path / "carphone_pristine.mp4.npz").subject == "D"  # nothing rewritten


def test_training_refuses_a_still_named_like_a_held_out_person(prepared: Path, tmp_path: Path) -> None:
    from models.dataset import load_all, load_stills
    from models.eye_state import TrainConfig, run_training

    stills = load_stills(prepared)
    stills[0].subject = "R"  # carphone's man is R: a still of someone else must not train as R
    with pytest.raises(ValueError, match=r"held-out subject names \['R'\]"):
        run_training(
            load_all(prepared), tmp_path / "e.pt", TrainConfig(epochs=1), progress=False, stills=stills
        )
    assert not (tmp_path / "e.pt").exists()


def test_load_eye_state_falls_back_to_none(tmp_path: Path, make_cfg: Callable[..., EdgeConfig]) -> None:
    cfg = make_cfg(models={"enabled": "true", "eye_state": str(tmp_path / "absent.onnx")})
    assert load_eye_state(cfg.models, cfg.state_dir) is None
