"""Typed configuration of the edge agent: TOML file < environment < command line.

Sources, highest priority first: CLI overrides (``--set section.key=value``), environment
variables ``SLEEPSAFE_<KEY>`` / ``SLEEPSAFE_<SECTION>__<KEY>``, the TOML file
(``/etc/sleepsafe/edge.toml`` or ``--config``).  Unknown keys are errors everywhere: a typo in
a safety threshold must not be silently ignored.  Every threshold is in seconds, never frames.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)
from pydantic_settings import SettingsConfigDict

from sleepsafe.settings import (
    BrokerConfig,
    LoggingConfig,
    Section,
    TomlSettings,
    load_settings,
)

DEFAULT_CONFIG_PATH = Path("/etc/sleepsafe/edge.toml")


class SourceConfig(Section):
    uri: str = Field(
        "0",
        description="Camera index ('0'), device ('/dev/video0'), video file, rtsp:// / http:// URL, "
        "or a GStreamer pipeline ending in 'appsink' (Jetson CSI).",
    )
    width: int | None = Field(None, gt=0, description="Requested capture width (cameras only).")
    height: int | None = Field(None, gt=0, description="Requested capture height (cameras only).")
    fps: float | None = Field(None, gt=0, description="Requested capture rate (cameras only).")
    realtime: bool = Field(
        True, description="Pace a video file at its own frame rate, as a camera would deliver it."
    )
    on_eof: Literal["exit", "loop", "retry"] = Field(
        "exit",
        description="What `run` does when a video file ends: exit 0, loop it, or treat it as a lost "
        "camera and retry. Cameras and streams always retry.",
    )
    frame_timeout_s: float = Field(
        2.0, gt=0, description="No frame for this long while running sets CAMERA_LOST."
    )
    stream_timeout_s: float = Field(
        5.0, gt=0, description="A network stream that opens or delivers nothing this long has failed."
    )
    reconnect_initial_s: float = Field(0.5, gt=0, description="First retry delay after a source fails.")
    reconnect_max_s: float = Field(10.0, gt=0, description="Retry delay ceiling (exponential backoff).")


class LandmarkConfig(Section):
    type: Literal["mediapipe"] = Field("mediapipe", description="Landmark backend plugin.")
    max_faces: int = Field(
        3, ge=1, le=8, description="Faces searched per frame; the driver is the largest one."
    )
    min_detection_confidence: float = Field(0.5, ge=0, le=1, description="FaceMesh detection threshold.")
    min_tracking_confidence: float = Field(0.5, ge=0, le=1, description="FaceMesh tracking threshold.")


class DetectorConfig(Section):
    # Calibration of the open-eye EAR baseline.
    prior_open_ear: float = Field(
        0.28, gt=0.1, lt=0.6, description="Open-eye EAR used until this driver is calibrated."
    )
    min_open_ear: float = Field(
        0.18, gt=0, lt=0.6, description="Calibration never learns a baseline below this (drowsy start)."
    )
    max_open_ear: float = Field(0.45, gt=0, lt=1, description="Calibration never learns above this.")
    calibration_s: float = Field(
        3.0, gt=0, description="Seconds of accepted open-eye samples that make a calibration."
    )
    calibration_accept_ratio: float = Field(
        0.7,
        gt=0,
        lt=1.5,
        description="A sample counts as 'open' only when EAR ≥ this × the current baseline, and the "
        "head faces the road: closed or downcast eyes are never learned as open.",
    )
    calibration_quantile: float = Field(
        0.8, gt=0.5, le=1, description="Quantile of the accepted EAR samples taken as the open-eye EAR."
    )
    recalibrate_after_absent_s: float = Field(
        10.0, gt=0, description="A face absent this long may be a new driver: calibrate again."
    )
    # Eye-openness thresholds, as a share of the calibrated open-eye EAR.
    blink_close_ratio: float = Field(
        0.55, gt=0, lt=1, description="Openness below this starts a lid closure (blink candidate)."
    )
    blink_open_ratio: float = Field(
        0.65, gt=0, lt=1, description="Openness above this ends a closure (hysteresis)."
    )
    closed_ratio: float = Field(
        0.2, gt=0, lt=1, description="Openness at or below this is 'eyes ≥ 80 % shut' (PERCLOS P80)."
    )
    reopen_s: float = Field(
        0.1,
        ge=0,
        description="Eyes clearly open (openness ≥ `reopen_ratio`, or a look-down) this long, with no shut "
        "frame between, end a closure: a single noisy frame does not.",
    )
    reopen_ratio: float = Field(
        0.35,
        gt=0,
        lt=1,
        description="Openness a closed eye must reach to count as reopened. Frames between `closed_ratio` "
        "and this (landmark jitter on a dark, noisy infrared frame) neither end a closure nor count as shut.",
    )
    closure_hold_s: float = Field(
        0.4,
        ge=0,
        description="A closure ends anyway once no frame has been shut for this long, so eyes that hover "
        "half-open (a look-down, a laugh) never add up to a closure.",
    )
    blink_depth_ratio: float = Field(
        0.4, gt=0, lt=1, description="A blink must reach an openness this low (squints and smiles don't)."
    )
    blink_min_s: float = Field(0.03, ge=0, description="Shorter dips are landmark noise, not blinks.")
    blink_max_s: float = Field(0.5, gt=0, description="Longer closures are long blinks, not blinks.")
    microsleep_s: float = Field(1.0, gt=0, description="Eyes shut this long: MICROSLEEP alert.")
    sleep_s: float = Field(3.0, gt=0, description="Eyes shut this long: SLEEP alert (escalation).")
    look_down_pitch_deg: float = Field(
        12.0,
        gt=0,
        description="Head pitched down this far below neutral with irises still between the lids "
        "reads as looking down, not shut: closure timers do not run.",
    )
    iris_visible_min: float = Field(
        0.35,
        ge=0,
        le=1,
        description="Iris share between the lids above which low EAR is a squint/look-down, not shut.",
    )
    perclos_window_s: float = Field(60.0, gt=0, description="Rolling PERCLOS window.")
    perclos_min_coverage_s: float = Field(
        20.0, gt=0, description="PERCLOS is not judged before this much face time in the window."
    )
    perclos_drowsy: float = Field(0.15, gt=0, lt=1, description="PERCLOS at or above this: DROWSY.")
    perclos_recover: float = Field(0.10, gt=0, lt=1, description="PERCLOS below this ends DROWSY.")
    long_blinks_drowsy: int = Field(
        3, ge=1, description="This many long blinks (blink_max_s..microsleep_s) in the window: DROWSY."
    )
    yawn_mar: float = Field(0.5, gt=0, description="Inner-mouth aspect ratio above this is a yawn candidate.")
    yawn_min_s: float = Field(1.5, gt=0, description="Mouth open this long is a yawn (speech is shorter).")
    yawns_drowsy: int = Field(3, ge=1, description="This many yawns in `yawn_window_s`: DROWSY.")
    yawn_window_s: float = Field(300.0, gt=0, description="Window for counting yawns.")
    nod_pitch_deg: float = Field(
        15.0, gt=0, description="Pitch drop below neutral that, with a quick return, is a head nod."
    )
    nod_max_s: float = Field(1.5, gt=0, description="A longer head drop is not a nod.")
    distracted_yaw_deg: float = Field(30.0, gt=0, description="Head yaw off neutral beyond this: off road.")
    distracted_pitch_deg: float = Field(
        20.0, gt=0, description="Head pitch off neutral beyond this: off road."
    )
    distracted_gaze: float = Field(
        0.25, gt=0, description="Horizontal iris offset (eye widths) beyond this: gaze off road."
    )
    distracted_s: float = Field(3.0, gt=0, description="Off road this long: DISTRACTED.")
    distraction_filter_s: float = Field(
        0.25, gt=0, description="Time constant of the off-road filter (blinks never start a timer)."
    )
    no_face_s: float = Field(2.0, gt=0, description="No face this long: NO_FACE alert.")
    face_gap_s: float = Field(
        0.5, ge=0, description="A face lost for less than this keeps closure timers running."
    )
    cooldown_s: float = Field(
        30.0,
        ge=0,
        description="After DROWSY/DISTRACTED/NO_FACE ends, the same alert is not re-raised for this "
        "long. MICROSLEEP and SLEEP have no cooldown: they always alarm.",
    )
    hysteresis_s: float = Field(
        1.0, ge=0, description="DROWSY/DISTRACTED/NO_FACE conditions must be false this long to end."
    )
    escalation_window_s: float = Field(
        300.0, gt=0, description="A second MICROSLEEP within this long is raised as an emergency."
    )
    window_s: float = Field(2.0, ge=0, description="Per-frame features kept before each event (seconds).")

    @model_validator(mode="after")
    def _ordered(self) -> DetectorConfig:
        if self.blink_open_ratio < self.blink_close_ratio:
            raise ValueError("blink_open_ratio must be ≥ blink_close_ratio (hysteresis)")
        if self.reopen_ratio < self.closed_ratio:
            raise ValueError("reopen_ratio must be ≥ closed_ratio")
        if self.closure_hold_s < self.reopen_s:
            raise ValueError("closure_hold_s must be ≥ reopen_s")
        if self.sleep_s <= self.microsleep_s:
            raise ValueError("sleep_s must be greater than microsleep_s")
        if self.min_open_ear > self.max_open_ear:
            raise ValueError("min_open_ear must be ≤ max_open_ear")
        if self.perclos_recover > self.perclos_drowsy:
            raise ValueError("perclos_recover must be ≤ perclos_drowsy")
        return self


Provider = Literal["tensorrt", "cuda", "cpu"]


class ModelsConfig(Section):
    mode: Literal["off", "shadow", "on"] = Field(
        "shadow",
        description="off: EAR alone. shadow (default): the models run every frame and their outputs ride "
        "along in events, but never change an alert; where they and EAR disagree about shut eyes for "
        "`disagree_s`, a `disagreement` record is sent (the cases most worth a label). on: the eye-state "
        "model is fused with EAR for closure and blink decisions (docs/models.md).",
    )
    disagree_s: float = Field(
        0.5, gt=0, description="Shadow: models and EAR disagreeing this long make a `disagreement` record."
    )
    eye_state: Path | None = Field(
        None, description="Eye-state ONNX file (unset: the shipped model of `variant`)."
    )
    temporal_enabled: bool = Field(
        False,
        description="Also run the temporal GRU (closure-now probability, drowsiness score). Off by default: "
        "it does not beat EAR alone on the held-out people (docs/models.md).",
    )
    temporal: Path | None = Field(None, description="Temporal ONNX file (unset: the shipped one).")
    drowsy_score: float = Field(
        0.35, gt=0, lt=1, description="Temporal drowsiness score at or above which DROWSY is raised."
    )
    variant: Literal["fp32", "fp16", "int8"] = Field(
        "fp32", description="Shipped variant: fp32, fp16 (GPU/TensorRT) or int8 (CPU-only devices)."
    )
    providers: list[Provider] = Field(
        default_factory=lambda: ["tensorrt", "cuda", "cpu"],  # type: ignore[arg-type]
        description="Execution providers in order of preference; missing ones are skipped with a warning.",
    )
    fp16: bool = Field(False, description="Let TensorRT build fp16 engines.")
    threads: int = Field(
        1, ge=1, le=16, description="CPU threads per model (the landmark model needs the rest)."
    )
    closed_prob: float = Field(
        0.5, gt=0, lt=1, description="P(closed) at or above which the model agrees that an eye is shut."
    )
    strong_prob: float = Field(
        1.0,
        gt=0,
        le=1,
        description="P(closed) at which the model alone marks a half-shut eye as shut; 1 (default): "
        "never, since a model that has not seen the driver is sure in a look-down too (docs/models.md).",
    )
    strong_openness: float = Field(
        0.35, gt=0, lt=1, description="...as long as openness is at most this (EAR still has a say)."
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_enabled(cls, data: Any) -> Any:
        """``enabled = true|false`` (before ``mode``) still reads as ``mode = "on"|"off"``."""
        if isinstance(data, dict) and "enabled" in data and "mode" not in data:
            data = dict(data)
            on = data.pop("enabled")
            data["mode"] = "on" if str(on).lower() in ("true", "1", "yes", "on") else "off"
        return data

    @property
    def enabled(self) -> bool:
        """The models run (shadow or on)."""
        return self.mode != "off"


class MqttConfig(BrokerConfig):
    enabled: bool = Field(
        False, description="Publish events, telemetry and stats over MQTT (through the spool)."
    )
    inflight: int = Field(32, ge=1, le=1000, description="QoS 1 messages awaiting PUBACK at once.")
    spool_max_rows: int = Field(100_000, ge=10, description="Spool bound, in messages.")
    spool_max_mb: float = Field(256.0, gt=0, description="Spool bound, in MB of payload.")
    telemetry_interval_s: float = Field(10.0, gt=0, description="How often a telemetry summary is queued.")
    stats_interval_s: float = Field(
        60.0,
        gt=0,
        description="Runtime stats are published about this often (every k-th stats log line, k = "
        "this / the top-level stats_interval_s; QoS 0). On a cellular link they were most of the "
        "bytes at 10 s.",
    )
    protocol: Literal[1, 2] = Field(
        2,
        description="Schema version sent (docs/mqtt.md): 2, the compact one (the window as columns, "
        "blinks in telemetry); 1 for a sink that reads only v1.",
    )
    blink_events: bool = Field(
        False,
        description="Also send one event per blink (always so on protocol 1); off, blinks ride in "
        "telemetry. On for a vehicle collecting training data. The journal keeps every blink either way.",
    )
    await_receipt: bool = Field(
        False,
        description="Keep each event/telemetry row until the sink's receipt (end-to-end delivery, "
        "docs/sink.md), not just the broker's PUBACK; needs a sink that sends receipts (ours does).",
    )
    receipt_timeout_s: float = Field(
        60.0,
        gt=0,
        description="With await_receipt: a row with no receipt this long after PUBACK is sent again.",
    )
    drain_timeout_s: float = Field(
        5.0, ge=0, description="On a clean stop, wait up to this long for the spool to be delivered."
    )


class SoundConfig(Section):
    enabled: bool = Field(True, description="Play a tone through aplay/paplay when one is installed.")
    player: Literal["auto", "aplay", "paplay"] = Field("auto", description="Audio player to use.")
    frequency_hz: float = Field(2000.0, gt=20, lt=20000, description="Tone frequency.")
    duration_s: float = Field(0.8, gt=0, le=10, description="Tone length.")
    volume: float = Field(0.8, gt=0, le=1, description="Amplitude, 0-1.")
    min_severity: Literal["info", "warning", "critical", "emergency"] = Field(
        "warning", description="Quieter events are not sounded."
    )


class CommandConfig(Section):
    argv: list[str] = Field(
        default_factory=list,
        description="Hook run for each alert with the event JSON on stdin (empty: disabled).",
    )
    timeout_s: float = Field(5.0, gt=0, description="A hook running longer is killed.")
    min_severity: Literal["info", "warning", "critical", "emergency"] = Field(
        "warning", description="Quieter events do not run the hook."
    )


class GpioConfig(Section):
    chip: str | None = Field(None, description="GPIO chip, e.g. /dev/gpiochip0 (unset: disabled).")
    line: int = Field(0, ge=0, description="Line offset on the chip (buzzer or lamp).")
    active_low: bool = Field(False, description="Drive the line low to switch the output on.")
    pulse_s: float = Field(1.0, gt=0, description="How long the line stays on per alert.")
    min_severity: Literal["info", "warning", "critical", "emergency"] = Field(
        "critical", description="Quieter events do not drive the line."
    )


class AlertsConfig(Section):
    log: bool = Field(True, description="Log every event as a structured log line.")
    sound: SoundConfig = Field(default_factory=SoundConfig)  # type: ignore[arg-type]
    command: CommandConfig = Field(default_factory=CommandConfig)  # type: ignore[arg-type]
    gpio: GpioConfig = Field(default_factory=GpioConfig)  # type: ignore[arg-type]
    queue_size: int = Field(
        64, ge=1, description="Per-output queue; a stuck output drops its oldest alerts, never the frame."
    )


class JournalConfig(Section):
    """Bounds of the event journal (``state_dir/events.jsonl``): an SD card in a car that runs for
    years must not fill up, so the journal is rotated by size and old rotations are deleted."""

    max_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Rotate events.jsonl before a record would take it past this many bytes (a single "
        "larger record still goes whole into a fresh file): it becomes events.jsonl.1, older ones "
        "shift up (.1 is the newest).",
    )
    max_age_days: float = Field(
        30.0,
        gt=0,
        description="Rotated files not written for this many days are deleted (checked at start, at "
        "each rotation and hourly).",
    )
    keep: int = Field(
        5,
        ge=1,
        le=1000,
        description="Most rotated files kept (events.jsonl.1 .. .N); older ones are deleted.",
    )


def _default_state_dir() -> Path:
    # systemd's StateDirectory= sets $STATE_DIRECTORY; fall back to the FHS place.
    return Path(os.environ.get("STATE_DIRECTORY", "/var/lib/sleepsafe"))


class CaptureConfig(Section):
    eye_crops: bool = Field(
        False,
        description="Send each event's eye crops (both eyes, 24x48 grey pixels, every frame of its window) "
        "with the event, so the eye-state model can be retrained from fleet data. Personal data (the "
        "driver's eyes): off by default, and say so to the drivers before turning it on.",
    )


class AckButtonConfig(Section):
    """A push button on a GPIO input line with which the driver acknowledges the active alert."""

    chip: str | None = Field(None, description="GPIO chip of the button, e.g. /dev/gpiochip0 (unset: none).")
    line: int = Field(0, ge=0, description="Line offset of the button on the chip.")
    active_low: bool = Field(
        True, description="The button pulls the line to ground when pressed (usual, with the pull-up)."
    )
    bias: Literal["pull_up", "pull_down", "disabled", "as_is"] = Field(
        "pull_up", description="The line's bias resistor, where the chip has one."
    )
    debounce_s: float = Field(
        0.05, ge=0, le=1, description="Contact bounce shorter than this is ignored (the kernel's debounce)."
    )
    hold_off_s: float = Field(
        1.0, ge=0, le=60, description="Presses this soon after an accepted press count as the same press."
    )


class EdgeConfig(TomlSettings):
    """Everything the edge agent reads at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="SLEEPSAFE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    device_id: str = Field(
        "edge-0",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Unique id of this vehicle unit (used in events and MQTT topics; not 'fleet').",
    )

    @field_validator("device_id")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        from sleepsafe.protocol import RESERVED_DEVICE_IDS

        if v in RESERVED_DEVICE_IDS:
            raise ValueError(f"{v!r} is reserved for the sink's own topics")
        return v

    state_dir: Path = Field(
        default_factory=_default_state_dir, description="Events JSONL, alert tone, caches."
    )
    source: SourceConfig = Field(default_factory=SourceConfig)  # type: ignore[arg-type]
    landmarks: LandmarkConfig = Field(default_factory=LandmarkConfig)  # type: ignore[arg-type]
    detector: DetectorConfig = Field(default_factory=DetectorConfig)  # type: ignore[arg-type]
    models: ModelsConfig = Field(default_factory=ModelsConfig)  # type: ignore[arg-type]
    mqtt: MqttConfig = Field(default_factory=MqttConfig)  # type: ignore[arg-type]
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)  # type: ignore[arg-type]
    journal: JournalConfig = Field(default_factory=JournalConfig)  # type: ignore[arg-type]
    capture: CaptureConfig = Field(default_factory=CaptureConfig)  # type: ignore[arg-type]
    ack_button: AckButtonConfig = Field(default_factory=AckButtonConfig)  # type: ignore[arg-type]
    logging: LoggingConfig = Field(default_factory=LoggingConfig)  # type: ignore[arg-type]
    stats_interval_s: float = Field(10.0, gt=0, description="How often runtime stats are logged.")


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> EdgeConfig:
    """The edge agent's configuration (see :func:`load_settings`)."""
    return load_settings(EdgeConfig, path, overrides, DEFAULT_CONFIG_PATH)
